"""``@service_task``: an async factory made a service, started on call; ``service_scope`` to stop them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from typing import Any, Generic, ParamSpec, TypeVar, overload

from keepwarm.inprocess.handle import ServiceHandle, live_services

P = ParamSpec("P")
A = ParamSpec("A")
T = TypeVar("T")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

_scope: ContextVar[AsyncExitStack | None] = ContextVar("keepwarm_service_scope", default=None)


class ServiceTask(Generic[P, T]):
    """An async factory made a service: each call returns a ``ServiceHandle`` while the start runs."""

    def __init__(self, factory: Callable[P, Awaitable[T]], *, key: Hashable | None = None) -> None:
        if not inspect.iscoroutinefunction(factory):
            raise TypeError(
                f"@service_task needs an async def factory, and {factory!r} is not one; "
                "make it `async def`, or use @function_task for plain functions"
            )
        functools.update_wrapper(self, factory)
        self.factory = factory
        self.key = key

    def __repr__(self) -> str:
        key = "" if self.key is None else f" key={self.key!r}"
        return f"<service_task {getattr(self.factory, '__name__', self.factory)!r}{key}>"

    def options(self, *, key: Hashable | None) -> ServiceTask[P, T]:
        """The same service task with another key: ``await start_server.options(key="api")(8080)``."""
        return ServiceTask(self.factory, key=key)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> ServiceHandle[T]:
        """Return a handle at once: the live instance with this key, else a new one whose start begins."""
        if self.key is not None:
            for handle in live_services():
                if handle.factory is self.factory and handle.key == self.key and handle.status != "stopping":
                    return handle
        name = getattr(self.factory, "__name__", repr(self.factory))
        handle = ServiceHandle(name, self.key, self.factory, functools.partial(self.factory, *args, **kwargs))
        scope = _scope.get()
        if scope is not None:
            scope.push_async_callback(handle.stop)
        return handle


@overload
def service_task(factory: Callable[P, Awaitable[T]], /) -> ServiceTask[P, T]: ...
@overload
def service_task(
    *, key: Hashable | None = None
) -> Callable[[Callable[P, Awaitable[T]]], ServiceTask[P, T]]: ...
def service_task(
    factory: Callable[P, Awaitable[T]] | None = None, /, *, key: Hashable | None = None
) -> ServiceTask[P, T] | Callable[[Callable[P, Awaitable[T]]], ServiceTask[P, T]]:
    """Make an async factory a persistent in-process service: ``@service_task`` or ``@service_task(key=...)``.

    Each call starts a new instance unless ``key`` names one that is starting or running.
    """
    if factory is not None:
        return ServiceTask(factory, key=key)
    return functools.partial(ServiceTask, key=key)


@asynccontextmanager
async def service_scope() -> AsyncIterator[None]:
    """Stop, on leaving the block, every service started in it, latest first, even if the block raises."""
    async with AsyncExitStack() as stack:
        token = _scope.set(stack)
        try:
            yield
        finally:
            _scope.reset(token)
