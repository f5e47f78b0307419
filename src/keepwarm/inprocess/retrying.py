"""``@function_task``: a function run afresh on every call, retried through tenacity."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast, overload

import tenacity

P = ParamSpec("P")
A = ParamSpec("A")
T = TypeVar("T")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


@overload
def function_task(fn: F, /) -> F: ...
@overload
def function_task(
    *,
    attempts: int = 1,
    backoff: float = 0.0,
    max_backoff: float = 30.0,
    timeout: float | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
) -> Callable[[F], F]: ...
def function_task(
    fn: F | None = None,
    /,
    *,
    attempts: int = 1,
    backoff: float = 0.0,
    max_backoff: float = 30.0,
    timeout: float | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
) -> F | Callable[[F], F]:
    """Run a function afresh on every call, retrying it through tenacity (sync or async alike).

    ``attempts`` counts the first try; the waits between them start at ``backoff`` seconds and
    double up to ``max_backoff``; only exceptions matching ``retry_on`` are retried, and the last
    one is raised as is. ``timeout`` bounds each attempt of an async function: an attempt that
    overruns is cancelled and raises ``TimeoutError``, retried like any other exception.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1 (the first try counts), not {attempts}")
    if backoff < 0 or max_backoff < 0:
        raise ValueError(f"backoff and max_backoff must not be negative, not {backoff} and {max_backoff}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive seconds, or None for no limit, not {timeout}")
    policy: dict[str, Any] = {
        "stop": tenacity.stop_after_attempt(attempts),
        "wait": tenacity.wait_exponential(multiplier=backoff, max=max_backoff),
        "retry": tenacity.retry_if_exception_type(retry_on),
        "reraise": True,
    }

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            async def attempt_async(*args: Any, **kwargs: Any) -> Any:
                async with asyncio.timeout(timeout):
                    return await fn(*args, **kwargs)

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                return await tenacity.AsyncRetrying(**policy)(attempt_async, *args, **kwargs)

            return cast(F, run_async)
        if timeout is not None:
            raise TypeError(
                f"timeout= needs an async function: {fn!r} is synchronous and cannot be interrupted; "
                "make it `async def` or drop timeout="
            )

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            return tenacity.Retrying(**policy)(fn, *args, **kwargs)

        return cast(F, run_sync)

    return decorate if fn is None else decorate(fn)
