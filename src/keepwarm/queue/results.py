"""The result channel: wait for a task's terminal file without busy polling.

A waiter may pass a ``watch`` that ends the wait early; the service's own, which gives up when the
service cannot deliver, is :class:`keepwarm.service.delivery.DeliveryWatch`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from keepwarm._sys.watch import IN_CREATE, IN_MOVED_TO, Watcher, thread_watcher
from keepwarm.errors import KeepwarmError, ResultTimeout, TaskFailed
from keepwarm.queue.task import TASK_SUFFIX, TaskRecord
from keepwarm.queue.taskfiles import require_safe_id
from keepwarm.queue.taskqueue import TaskQueue

WATCH_INTERVAL_SEC = 0.25  # how often a waiter checks that the service can still deliver


def wait_for_records(
    queue: TaskQueue,
    task_ids: Iterable[str],
    timeout: float | None = None,
    progress: Callable[[int], None] | None = None,
    watch: Callable[[set[str]], None] | None = None,
) -> dict[str, TaskRecord]:
    """Block until every task has a terminal record (inotify, or polling with back-off).

    ``progress`` is called with the number of records collected so far as they arrive. ``watch`` (the
    service's ``DeliveryWatch``) is called with the ids still awaited every ``WATCH_INTERVAL_SEC``;
    what it raises ends the wait, unless every record has arrived meanwhile.
    """
    remaining = set(task_ids)
    for task_id in remaining:
        require_safe_id(task_id)
    records: dict[str, TaskRecord] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    # Watch first, then look: a record published in between is seen by one or the other. The watcher
    # is this thread's, kept between waits; events left from an earlier wait only cost a lookup.
    watcher = _watcher(queue)
    _collect(queue, remaining, records, remaining)
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
        if seen & remaining:
            _collect(queue, seen & remaining, records, remaining)
            if progress is not None:
                progress(len(records))
    return records


def _watcher(queue: TaskQueue) -> Watcher:
    try:
        return thread_watcher((queue.done, queue.failed), IN_CREATE | IN_MOVED_TO)
    except OSError:
        if queue.done.is_dir() and queue.failed.is_dir():
            raise
        queue.ensure()  # the queue's folders are not made yet
        return thread_watcher((queue.done, queue.failed), IN_CREATE | IN_MOVED_TO)


def _collect(
    queue: TaskQueue, candidates: set[str], records: dict[str, TaskRecord], remaining: set[str]
) -> None:
    for task_id in list(candidates):
        record = queue.read_terminal(task_id)
        if record is not None:
            records[task_id] = record
            remaining.discard(task_id)


def _timeout(queue: TaskQueue, remaining: set[str], timeout: float | None) -> ResultTimeout:
    first = sorted(remaining)[0]
    try:
        state: str = queue.locate(first).state
    except Exception:
        state = "unknown"
    return ResultTimeout(
        f"{describe_awaited(remaining)} has no result after {timeout}s; it is {state}. "
        "Wait longer (--timeout) or check that the service's loops are running"
    )


def describe_awaited(remaining: set[str]) -> str:
    """The tasks still awaited, for a message: ``task <first id> (and N more)``."""
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
