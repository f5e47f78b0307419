"""A running in-process service: its handle, its state, the tasks it started, the live ones."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Generator, Hashable
from contextvars import Context, ContextVar
from datetime import UTC, datetime
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, cast, overload

from keepwarm.errors import ServiceTaskStopped
from keepwarm.inprocess.shutdown import ShutdownOnce, guard_shutdowns

P = ParamSpec("P")
A = ParamSpec("A")
T = TypeVar("T")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

ServiceStatus = Literal["starting", "running", "stopping", "stopped", "failed"]

# The service whose factory (or anything it started) is running; tasks created there belong to it.
_owner: ContextVar[ServiceHandle[Any] | None] = ContextVar("keepwarm_service_owner", default=None)
_live: list[ServiceHandle[Any]] = []  # starting, running or stopping, oldest first


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
        self._shutdowns: list[ShutdownOnce] = []
        self._stop_waiters = 0  # stop() calls waiting: they raise the service's error, so it is told
        track_tasks(self.loop)
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
        self._shutdowns = guard_shutdowns(instance)
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
        untrack_tasks(self.loop)
        if self.error is not None and self.started_at is not None and not self._stop_waiters:
            self.loop.call_exception_handler(  # nobody waits to be told: say it, never swallow it
                {
                    "message": f"service {self.name} failed and was stopped: {self.error!r}; call "
                    f"{self.name}() to start a new instance (await handle.stop() to get the error raised)",
                    "exception": self.error,
                }
            )


def live_services() -> list[ServiceHandle[Any]]:
    """The running event loop's services that are starting, running or stopping, oldest first."""
    loop = asyncio.get_running_loop()
    _live[:] = [handle for handle in _live if not handle.loop.is_closed()]
    return [handle for handle in _live if handle.loop is loop]


class TaskTracker:
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


def track_tasks(loop: asyncio.AbstractEventLoop) -> None:
    current = loop.get_task_factory()
    if not isinstance(current, TaskTracker):
        loop.set_task_factory(TaskTracker(current))


def untrack_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Give the loop its own task factory back once it has no live service."""
    current = loop.get_task_factory()
    if isinstance(current, TaskTracker) and not any(handle.loop is loop for handle in _live):
        loop.set_task_factory(current.inner)
