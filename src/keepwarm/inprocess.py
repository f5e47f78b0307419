"""In-process services: an async factory started once whose instance serves many calls until stopped.

``@service_task`` turns an async factory into a service: each call returns a ``ServiceHandle`` at
once while the factory runs as a task of the caller's event loop, so whatever it starts (servers,
background tasks, pools) keeps running between calls. ``@function_task`` is the stateless
counterpart: every call runs the function afresh, with retries built on tenacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Hashable
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import Context, ContextVar
from datetime import UTC, datetime
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, cast, overload

import tenacity

from keepwarm.errors import KeepwarmError

P = ParamSpec("P")
A = ParamSpec("A")
T = TypeVar("T")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

ServiceStatus = Literal["starting", "running", "stopping", "stopped", "failed"]
SHUTDOWN_METHODS = ("shutdown", "aclose", "close")  # the first one an instance has is its shutdown

# The service whose factory (or anything it started) is running; tasks created there belong to it.
_owner: ContextVar[ServiceHandle[Any] | None] = ContextVar("keepwarm_service_owner", default=None)
_scope: ContextVar[AsyncExitStack | None] = ContextVar("keepwarm_service_scope", default=None)
_live: list[ServiceHandle[Any]] = []  # starting, running or stopping, oldest first


class ServiceTaskStopped(KeepwarmError):
    """The service was stopped (or its start cancelled): its instance serves no more calls."""


class ServiceHandle(Generic[T]):
    """One instance of a service task: await it for the instance, ``cancel()`` or ``stop()`` to end it.

    Made by calling a ``@service_task`` function, never directly.
    """

    def __init__(
        self, name: str, key: Hashable | None, factory: Callable[..., Any], start: Callable[[], Awaitable[T]]
    ) -> None:
        self.name = name
        self.key = key
        self.factory = factory
        self.calls = 0
        self.started_at: datetime | None = None
        self.cold_start_sec: float | None = None
        self.error: BaseException | None = None
        self.loop = asyncio.get_running_loop()
        self._status: ServiceStatus = "starting"
        self._instance: T | None = None
        self._started = asyncio.Event()  # set once the start has ended, however it ended
        self._stop_requested = asyncio.Event()
        self._running_since: float | None = None
        self._stopping_since: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shutdowns: list[_ShutdownOnce] = []
        self._stop_waiters = 0  # stop() calls waiting: they raise the service's error, so it is told
        _track_tasks(self.loop)
        self._task = self.loop.create_task(self._run(start), name=f"keepwarm service {name}")
        self._task.add_done_callback(self._finished)
        _live.append(self)

    @property
    def status(self) -> ServiceStatus:
        return self._status

    @property
    def uptime(self) -> float:
        """Seconds the instance has served: from the end of its start to now, or to the start of its stop."""
        if self._running_since is None:
            return 0.0
        end = time.monotonic() if self._stopping_since is None else self._stopping_since
        return end - self._running_since

    def done(self) -> bool:
        """True once the service has stopped or failed."""
        return self._status in ("stopped", "failed")

    def __repr__(self) -> str:
        key = "" if self.key is None else f" key={self.key!r}"
        return f"<ServiceHandle {self.name}{key} {self._status} calls={self.calls} uptime={self.uptime:.3f}s>"

    def __await__(self) -> Generator[Any, None, T]:
        return self._instance_once_started().__await__()

    async def _instance_once_started(self) -> T:
        await self._started.wait()
        if self._status == "running":
            return cast(T, self._instance)
        if self.error is not None and self.started_at is None:
            raise self.error  # the start failed: its own exception, as a future would raise it
        if self.error is not None:
            raise ServiceTaskStopped(
                f"service {self.name} failed ({self.error!r}) and serves no more calls; "
                f"call {self.name}() again to start a new instance"
            ) from self.error
        raise ServiceTaskStopped(
            f"service {self.name} is {self._status}; call {self.name}() again to start a new instance"
        )

    @overload
    async def call(
        self, method: Callable[Concatenate[T, A], Awaitable[R]], /, *args: A.args, **kwargs: A.kwargs
    ) -> R: ...
    @overload
    async def call(
        self, method: Callable[Concatenate[T, A], R], /, *args: A.args, **kwargs: A.kwargs
    ) -> R: ...
    async def call(self, method: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Serve one call: ``method(instance, *args, **kwargs)``, awaited if async, counted in ``calls``.

        Waits for the start if it is still running; raises ``ServiceTaskStopped`` once the service ended.
        The tasks the call creates belong to the service, like those its start created.
        """
        instance = await self
        owner = _owner.set(self)
        try:
            result = method(instance, *args, **kwargs)
            return await result if inspect.isawaitable(result) else result
        finally:
            _owner.reset(owner)
            self.calls += 1

    def cancel(self) -> bool:
        """Ask the service to stop, like ``Future.cancel()``; False if it is already stopping or ended.

        A start in progress is cancelled; a running instance is shut down by its own task.
        """
        if self._status not in ("starting", "running"):
            return False
        if self._status == "starting":
            self._task.cancel()
        self._stop_requested.set()  # also stops an instance whose factory swallowed the cancellation
        self._status = "stopping"
        return True

    async def stop(self) -> None:
        """Stop the service and wait until its shutdown has run and its tasks have ended.

        Raises what made a started service fail: its shutdown's error, or a task of its that crashed.
        """
        self.cancel()
        self._stop_waiters += 1
        try:
            await asyncio.wait({self._task})
        finally:
            self._stop_waiters -= 1
        if self.error is not None and self.started_at is not None:
            raise self.error

    async def _run(self, start: Callable[[], Awaitable[T]]) -> None:
        _owner.set(self)
        begun = time.monotonic()
        try:
            instance = await start()
        except asyncio.CancelledError:
            await self._end_tasks()  # a stop during the start: nothing to shut down but what it began
            return
        except Exception as error:
            self._fail(error)
            await self._end_tasks()
            return
        self._instance = instance
        self._shutdowns = _guard_shutdowns(instance)
        self.cold_start_sec = time.monotonic() - begun
        self.started_at = datetime.now(UTC)
        self._running_since = time.monotonic()
        self._status = "running"
        self._started.set()
        try:
            await self._stop_requested.wait()
        finally:  # a stop request, or the event loop cancelling its tasks as it closes
            self._status = "stopping"
            self._stopping_since = time.monotonic()
            try:
                await self._shut_down()
            except Exception as error:
                self._fail(error)
            await self._end_tasks()

    async def _shut_down(self) -> None:
        """Run the instance's shutdown, or wait for the one its user already called: it runs once."""
        called = [shutdown for shutdown in self._shutdowns if shutdown.called]
        for shutdown in called or self._shutdowns[:1]:
            result = shutdown()
            if inspect.isawaitable(result):
                await result

    async def _end_tasks(self) -> None:
        """Cancel what the service started and its own shutdown did not end, and wait for it.

        A task that raises something else than its cancellation fails the service.
        """
        while leftovers := [task for task in self._tasks if not task.done()]:
            for task in leftovers:
                task.cancel()
            for outcome in await asyncio.gather(*leftovers, return_exceptions=True):
                if isinstance(outcome, Exception):
                    self._fail(outcome)

    def _adopt(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task._log_traceback:
            # Not retrieved yet. Whoever handles it (an await, gather, wait, wait_for, a done callback
            # such as asyncio's own server's) does so in the wake-ups its end scheduled: two turns of
            # the loop. asyncio has no public "retrieved" flag; _log_traceback is the one it logs by.
            self.loop.call_soon(self.loop.call_soon, self._crashed_unless_handled, task)

    def _crashed_unless_handled(self, task: asyncio.Task[Any]) -> None:
        if task._log_traceback:
            self._fail(cast(BaseException, task.exception()))
            self.cancel()

    def _fail(self, error: BaseException) -> None:
        """Record the error that makes the service fail; any error after that one is reported, not lost."""
        if self.error is None and not self.done():
            self.error = error
            return
        before = "ended" if self.error is None else f"failed with {self.error!r}"
        self.loop.call_exception_handler(
            {"message": f"service {self.name}: {error!r}, raised after it had {before}", "exception": error}
        )

    def _finished(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fail(cast(BaseException, task.exception()))
        self._status = "failed" if self.error is not None else "stopped"
        self._started.set()
        if self in _live:
            _live.remove(self)
        _untrack_tasks(self.loop)
        if self.error is not None and self.started_at is not None and not self._stop_waiters:
            self.loop.call_exception_handler(  # nobody waits to be told: say it, never swallow it
                {
                    "message": f"service {self.name} failed and was stopped: {self.error!r}; call "
                    f"{self.name}() to start a new instance (await handle.stop() to get the error raised)",
                    "exception": self.error,
                }
            )


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


def live_services() -> list[ServiceHandle[Any]]:
    """The running event loop's services that are starting, running or stopping, oldest first."""
    loop = asyncio.get_running_loop()
    _live[:] = [handle for handle in _live if not handle.loop.is_closed()]
    return [handle for handle in _live if handle.loop is loop]


@asynccontextmanager
async def service_scope() -> AsyncIterator[None]:
    """Stop, on leaving the block, every service started in it, latest first, even if the block raises."""
    async with AsyncExitStack() as stack:
        token = _scope.set(stack)
        try:
            yield
        finally:
            _scope.reset(token)


class _ShutdownOnce:
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


def _guard_shutdowns(instance: object) -> list[_ShutdownOnce]:
    """The instance's shutdown methods, in SHUTDOWN_METHODS order, each made to run once.

    Each replaces its method on the instance where the instance allows it (``__slots__``, frozen and
    validating classes refuse); there keepwarm cannot see the user's own call, only run its own.
    """
    shutdowns = []
    for name in SHUTDOWN_METHODS:
        method = getattr(instance, name, None)
        if callable(method):
            if isinstance(method, _ShutdownOnce):
                method = method.method  # an instance served again by a new service: a fresh run
            shutdown = _ShutdownOnce(method)
            with contextlib.suppress(AttributeError, TypeError, ValueError):
                setattr(instance, name, shutdown)
            shutdowns.append(shutdown)
    return shutdowns


class _TaskTracker:
    """The loop's task factory, wrapped: a task created in a service's context joins that service.

    So the tasks a factory starts (and the tasks they start) can be cancelled when the service stops.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        if self.inner is None:
            task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        else:
            task = self.inner(loop, coro, **kwargs)
        context: Context | None = kwargs.get("context")
        owner = _owner.get() if context is None else context.get(_owner)
        if owner is not None:
            owner._adopt(task)
        return task


def _track_tasks(loop: asyncio.AbstractEventLoop) -> None:
    current = loop.get_task_factory()
    if not isinstance(current, _TaskTracker):
        loop.set_task_factory(_TaskTracker(current))


def _untrack_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Give the loop its own task factory back once it has no live service."""
    current = loop.get_task_factory()
    if isinstance(current, _TaskTracker) and not any(handle.loop is loop for handle in _live):
        loop.set_task_factory(current.inner)


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
