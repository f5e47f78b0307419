"""The result channel: wait for a task's terminal file without busy polling, and give up when the
service that should produce it cannot."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from keepwarm._sys.watch import IN_CREATE, IN_MOVED_TO, thread_watcher
from keepwarm.errors import KeepwarmError, ResultTimeout, TaskFailed
from keepwarm.queue.task import TASK_SUFFIX, TaskRecord
from keepwarm.queue.taskqueue import TaskQueue

if TYPE_CHECKING:
    from keepwarm.env import Env

WATCH_INTERVAL_SEC = 0.25  # how often a waiter checks that the service can still deliver
FAILED_STARTS = 2  # failed starts in a row, in every slot, that mean the loops cannot start


class ServiceCannotDeliver(KeepwarmError):
    """A wait gave up: the service stopped, or every loop keeps failing to start. The tasks stay queued."""


def wait_for_records(
    queue: TaskQueue,
    task_ids: Iterable[str],
    timeout: float | None = None,
    progress: Callable[[int], None] | None = None,
    watch: Callable[[set[str]], None] | None = None,
) -> dict[str, TaskRecord]:
    """Block until every task has a terminal record (inotify, or polling with back-off).

    ``progress`` is called with the number of records collected so far as they arrive. ``watch`` (a
    :class:`DeliveryWatch`) is called with the ids still awaited every ``WATCH_INTERVAL_SEC``; what it
    raises ends the wait, unless every record has arrived meanwhile.
    """
    remaining = set(task_ids)
    records: dict[str, TaskRecord] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    _collect(queue, remaining, records, remaining)
    if not remaining:
        return records
    if not queue.done.is_dir():
        queue.ensure()
    watcher = thread_watcher((queue.done, queue.failed), IN_CREATE | IN_MOVED_TO)
    watcher.discard_pending()
    _collect(queue, remaining, records, remaining)  # what finished before the watch was current
    next_watch = time.monotonic()
    while remaining:
        now = time.monotonic()
        left = None if deadline is None else deadline - now
        if left is not None and left <= 0:
            raise _timeout(queue, remaining, timeout)
        if watch is not None:
            if now >= next_watch:
                try:
                    watch(remaining)
                except KeepwarmError:
                    _collect(queue, remaining, records, remaining)  # the last results beat the stop
                    if remaining:
                        raise
                    break
                next_watch = now + WATCH_INTERVAL_SEC
            left = next_watch - now if left is None else min(left, next_watch - now)
        wakeup = watcher.wait(left)
        if wakeup.rescan:
            _collect(queue, remaining, records, remaining)
            continue
        seen = {name[: -len(TASK_SUFFIX)] for name in wakeup.names if name.endswith(TASK_SUFFIX)}
        _collect(queue, seen & remaining, records, remaining)
        if progress is not None:
            progress(len(records))
    return records


def _collect(
    queue: TaskQueue, candidates: set[str], records: dict[str, TaskRecord], remaining: set[str]
) -> None:
    for task_id in list(candidates):
        try:
            record = queue.read_record(task_id)
        except (OSError, ValidationError):
            record = None  # removed by retention between the event and the read, or not a record
        if record is not None:
            records[task_id] = record
            remaining.discard(task_id)


def _timeout(queue: TaskQueue, remaining: set[str], timeout: float | None) -> ResultTimeout:
    first = sorted(remaining)[0]
    try:
        state = queue.locate(first).state
    except Exception:
        state = "unknown"
    return ResultTimeout(
        f"{_which(remaining)} has no result after {timeout}s; it is {state}. "
        "Wait longer (--timeout) or check that the service's loops are running"
    )


class DeliveryWatch:
    """Whether the service can still deliver what a waiter waits for; raises ServiceCannotDeliver if not.

    It cannot when it stops during the wait (it was seen running, and its supervisor is gone), or when
    every loop keeps failing to start: each slot's last ``FAILED_STARTS`` incarnations said
    ``start failed`` with no loop healthy meanwhile. A service that never ran during the wait is waited
    for: its tasks were queued for the next start.
    """

    def __init__(self, env: Env) -> None:
        self.env = env
        self._seen_running = False
        self._failed_starts: dict[str, dict[str, str]] = {}  # slot -> incarnation -> its start error

    def __call__(self, remaining: set[str]) -> None:
        # The state files and heartbeats only (no queue listing): cheap at any queue size.
        from keepwarm.runtime.heartbeat import read_heartbeat
        from keepwarm.service.health import evaluate_loop
        from keepwarm.service.lifecycle import ServiceNotRunning, live_supervisor

        name = self.env.app_target
        try:
            state = live_supervisor(self.env)
        except ServiceNotRunning:
            if self._seen_running:
                raise ServiceCannotDeliver(
                    f"service {name!r} stopped running while waiting for {_which(remaining)}; the "
                    f"tasks stay queued: start the service (keepwarm start {name}), then collect the "
                    f"results with keepwarm result {name} TASK_ID"
                ) from None
            return
        self._seen_running = True
        now = time.time()
        beats = {
            row.slot: read_heartbeat(self.env.queue_dir / "heartbeats" / f"{row.slot}.json")
            for row in state.loops
        }
        cluster = self.env.settings.cluster
        if not state.loops or any(
            evaluate_loop(row, beats[row.slot], cluster, now).healthy for row in state.loops
        ):
            self._failed_starts.clear()
            return
        for slot, beat in beats.items():
            if beat is not None and beat.state == "stopped" and beat.error:
                self._failed_starts.setdefault(slot, {})[beat.incarnation] = beat.error
        failing = {slot: self._failed_starts.get(slot, {}) for slot in beats}
        if all(len(starts) >= FAILED_STARTS for starts in failing.values()):
            errors = "; ".join(f"{slot}: {list(starts.values())[-1]}" for slot, starts in failing.items())
            raise ServiceCannotDeliver(
                f"every loop of service {name!r} keeps failing to start ({errors}) while waiting for "
                f"{_which(remaining)}; the tasks stay queued: fix the app, then restart the service "
                f"(keepwarm stop {name}, keepwarm start {name}); logs: keepwarm logs {name}"
            )


def _which(remaining: set[str]) -> str:
    first = sorted(remaining)[0]
    return f"task {first}" + (f" (and {len(remaining) - 1} more)" if len(remaining) > 1 else "")


def value_of(record: TaskRecord) -> Any:
    """The value ``work()`` returned, or TaskFailed with the remote error and traceback."""
    if record.status == "done":
        return record.result
    raise TaskFailed(record.task_id, record.status, record.error, record.traceback)


class TaskHandle:
    """A submitted task: ``result(timeout)`` gives the value ``work()`` returned."""

    def __init__(self, queue: TaskQueue, task_id: str) -> None:
        self.queue = queue
        self.task_id = task_id

    def __repr__(self) -> str:
        return f"TaskHandle({self.task_id!r})"

    def record(self, timeout: float | None = None) -> TaskRecord:
        return wait_for_records(self.queue, [self.task_id], timeout)[self.task_id]

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task; its result, or TaskFailed carrying the remote error and traceback."""
        return value_of(self.record(timeout))

    async def aresult(self, timeout: float | None = None) -> Any:
        import asyncio

        return await asyncio.to_thread(self.result, timeout)

    def done(self) -> bool:
        return self.queue.terminal_path(self.task_id) is not None

    @property
    def state(self) -> str:
        return self.queue.locate(self.task_id).state
