"""An instance's shutdown methods, each made to run once whoever calls it first."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import Any

SHUTDOWN_METHODS = ("shutdown", "aclose", "close")  # the first one an instance has is its shutdown


class ShutdownOnce:
    """One shutdown method of an instance, run once: every later call shares the first call's outcome.

    Put in the method's place on the instance, so that the user's own cleanup and keepwarm's compose
    (the reference documents' ``service_future.cancel(); await db_pool.close()``): whoever calls first
    runs it, the other waits for that run instead of running it a second time.
    """

    def __init__(self, method: Callable[..., Any]) -> None:
        self.method = method
        self.called = False
        self._result: Any = None  # what the first call returned; an async shutdown's run as a task
        self._error: Exception | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.called:
            self.called = True
            try:
                result = self.method(*args, **kwargs)
            except Exception as error:
                self._error = error
                raise
            # a task runs it to its end even if the caller that began it is cancelled
            self._result = asyncio.ensure_future(result) if inspect.isawaitable(result) else result
        if self._error is not None:
            raise self._error
        return asyncio.shield(self._result) if isinstance(self._result, asyncio.Future) else self._result


def guard_shutdowns(instance: object) -> list[ShutdownOnce]:
    """The instance's shutdown methods, in SHUTDOWN_METHODS order, each made to run once.

    Each replaces its method on the instance where the instance allows it (``__slots__``, frozen and
    validating classes refuse); there keepwarm cannot see the user's own call, only run its own.
    """
    shutdowns = []
    for name in SHUTDOWN_METHODS:
        method = getattr(instance, name, None)
        if callable(method):
            if isinstance(method, ShutdownOnce):
                method = method.method  # an instance served again by a new service: a fresh run
            shutdown = ShutdownOnce(method)
            with contextlib.suppress(AttributeError, TypeError, ValueError):
                setattr(instance, name, shutdown)
            shutdowns.append(shutdown)
    return shutdowns
