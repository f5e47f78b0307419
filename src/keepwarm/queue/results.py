"""The result channel: wait for a task's terminal file without busy polling.

A waiter may pass a ``watch`` that ends the wait early; the service's own, which gives up when the
service cannot deliver, is :class:`keepwarm.service.delivery.DeliveryWatch`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from keepwarm._sys.watch import IN_CREATE, IN_MOVED_TO, Watcher, thread_watcher
from keepwarm.errors import KeepwarmError, ResultTimeout, TaskFailed
from keepwarm.queue.task import TASK_SUFFIX, TaskRecord
from keepwarm.queue.taskfiles import require_safe_id
from keepwarm.queue.taskqueue import TaskQueue

WATCH_INTERVAL_SEC = 0.25  # how often a waiter checks that the service can deliver, and its watch


def wait_for_records(
    queue: TaskQueue,
    task_ids: Iterable[str],
    timeout: float | None = None,
    progress: Callable[[int], None] | None = None,
    watch: Callable[[set[str]], None] | None = None,
    since: WatchToken | None = None,
) -> dict[str, TaskRecord]:
    """Block until every task has a terminal record (inotify, or polling with back-off).

    ``progress`` is called with the number of records collected so far as they arrive. ``watch`` (the
    service's ``DeliveryWatch``) is called with the ids still awaited every ``WATCH_INTERVAL_SEC``;
    what it raises ends the wait, unless every record has arrived meanwhile. ``since`` is the
    ``ResultWatch.token()`` taken before the tasks were submitted: when this thread's watch has seen
    every event since, their records need no first look.
    """
    remaining = set(task_ids)
    for task_id in remaining:
        require_safe_id(task_id)
    records: dict[str, TaskRecord] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    # Watch first, then look: a record published in between is seen by one or the other.
    results = result_watch(queue)
    _collect(queue, results.unseen_since(since, remaining), records, remaining)
    next_watch = time.monotonic()
    next_check = next_watch + WATCH_INTERVAL_SEC  # (result_watch has just checked the watch)
    while remaining:
        now = time.monotonic()
        left = None if deadline is None else deadline - now
        if left is not None and left <= 0:
            raise _timeout(queue, remaining, timeout)
        if now >= next_check:
            next_check = now + WATCH_INTERVAL_SEC
            if results.watcher.moved():  # the share was mounted again: watch, and look, afresh
                results = result_watch(queue)
                _collect(queue, set(remaining), records, remaining)
                continue
        if now >= next_watch:
            if watch is not None:
                try:
                    watch(remaining)
                except KeepwarmError:
                    _collect(queue, remaining, records, remaining)  # the last results beat the stop
                    if remaining:
                        raise
                    break
            next_watch = now + WATCH_INTERVAL_SEC
        wake = min(next_watch, next_check) - now
        left = wake if left is None else min(left, wake)
        arrived = results.wait(left, remaining)
        if arrived:
            _collect(queue, arrived, records, remaining)
            if progress is not None:
                progress(len(records))
    return records


WatchToken = tuple["ResultWatch", int]


class ResultWatch:
    """One thread's inotify watch on a queue's ``done/`` and ``failed/``, kept between waits.

    It remembers the record names its waits saw, so that a task submitted after the watch began (its
    ``token()`` taken first) is found without opening files that are not there yet, by its first wait
    and by any later one.
    When events may have been missed (a queue overflow, too many names kept, polling), the epoch
    changes and older tokens lose that shortcut.
    """

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.epoch = 0
        self._seen: set[str] = set()

    def token(self) -> WatchToken | None:
        """Take before submitting; None when the watch cannot vouch for later events (polling)."""
        return (self, self.epoch) if self.watcher.mode == "inotify" else None

    def unseen_since(self, since: WatchToken | None, wanted: set[str]) -> set[str]:
        """The ids among ``wanted`` whose records may exist without this watch having an event for
        them still to come: all of them, unless ``since`` vouches for every event since."""
        if since is None or since[0] is not self or since[1] != self.epoch:
            return set(wanted)
        return wanted & self._seen

    def wait(self, timeout: float | None, wanted: set[str]) -> set[str]:
        """Wait for records; the ids among ``wanted`` that may have arrived (all of them on a rescan)."""
        wakeup = self.watcher.wait(timeout)
        if wakeup.rescan:
            self._forget()
            return set(wanted)
        arrived = {name[: -len(TASK_SUFFIX)] for name in wakeup.names if name.endswith(TASK_SUFFIX)}
        self._seen |= arrived  # the wanted too: a handle may wait for its record again
        if len(self._seen) > SEEN_CAP:
            self._forget()
        return arrived & wanted

    def _forget(self) -> None:
        self._seen.clear()
        self.epoch += 1


SEEN_CAP = 65_536  # record names a watch keeps for later waits before it forgets them all
_result_watches = threading.local()


def result_watch(queue: TaskQueue) -> ResultWatch:
    """This thread's ``ResultWatch`` on ``queue`` (its watcher kept for the thread's life)."""
    try:
        watcher = thread_watcher((queue.done, queue.failed), IN_CREATE | IN_MOVED_TO)
    except FileNotFoundError:
        queue.ensure()  # the queue's folders are not made yet
        watcher = thread_watcher((queue.done, queue.failed), IN_CREATE | IN_MOVED_TO)
    watches: dict[int, ResultWatch] = _result_watches.__dict__.setdefault("by_watcher", {})
    found = watches.get(id(watcher))
    if found is None or found.watcher is not watcher:
        if len(watches) >= 32:  # watchers the thread cache closed
            watches.clear()
        found = watches[id(watcher)] = ResultWatch(watcher)
    return found


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

    def __init__(self, queue: TaskQueue, task_id: str, since: WatchToken | None = None) -> None:
        self.queue = queue
        self.task_id = task_id
        self.since = since  # this thread's result watch, taken before the task was submitted

    def __repr__(self) -> str:
        return f"TaskHandle({self.task_id!r})"

    def record(self, timeout: float | None = None) -> TaskRecord:
        return wait_for_records(self.queue, [self.task_id], timeout, since=self.since)[self.task_id]

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
