"""Looking at a queue without touching it: where a task is, rows of tasks per state, counts.

Counts come from folder listings alone; rows of queued tasks read their files to show them, never
to run them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from keepwarm.errors import Remedy, TaskNotFound
from keepwarm.queue.shareclock import Clock
from keepwarm.queue.task import TaskRecord, TaskState, epoch_of, iso_of
from keepwarm.queue.taskfiles import (
    count_terminal,
    newest_terminal,
    peek_object,
    read_regular,
    seq_from_name,
    task_id_from_name,
)

if TYPE_CHECKING:
    from keepwarm.queue.taskqueue import TaskQueue


@dataclass(frozen=True)
class QueueCounts:
    """Tasks per state, and the age of the oldest pending one."""

    pending: int
    running: int
    done: int
    failed: int  # failed and cancelled: both records sit in failed/
    oldest_pending_age_sec: float | None


@dataclass(frozen=True)
class TaskLocation:
    """Where a task is now: its state (pending, running, done or failed) and file."""

    task_id: str
    state: TaskState
    path: Path
    owner: str | None = None  # running/<owner>/


@dataclass(frozen=True)
class TaskRow:
    """One task of a listing; ``at`` (a UTC ``datetime``, one type for every state) is when it was
    submitted (pending, running) or finished (done, failed, cancelled). JSON gives it as ISO-8601."""

    task_id: str | None
    task_name: str | None
    state: TaskState
    at: datetime | None
    owner: str | None = None  # running tasks only: running/<owner>/
    runtime_sec: float | None = None  # finished tasks only
    error: str | None = None  # finished tasks only

    def to_json_dict(self) -> dict[str, Any]:
        """The row as ``keepwarm tasks --json`` prints it: each state with its own fields."""
        row: dict[str, Any] = {
            "task_id": self.task_id,
            "task_name": self.task_name,
            "state": self.state.value,
            "at": None if self.at is None else iso_of(self.at.timestamp()),
        }
        if self.state is TaskState.RUNNING:
            row["owner"] = self.owner
        elif self.state.finished:
            row |= {"runtime_sec": self.runtime_sec, "error": self.error}
        return row


def utc_datetime(epoch: float | None) -> datetime | None:
    """A row's time: epoch seconds as an aware UTC ``datetime`` (None stays None)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def scan_pending_unsorted(queue: TaskQueue) -> list[str]:
    """Names of the pending files (temp files skipped), in no order."""
    try:
        return [name for name in os.listdir(queue.pending) if name[0] != "."]
    except FileNotFoundError:
        return []


def running_listing(queue: TaskQueue) -> Iterator[tuple[str, list[str]]]:
    """Each claim folder of ``running/`` with the names of the tasks it holds."""
    try:
        owners = os.listdir(queue.running)
    except FileNotFoundError:
        return
    for owner in owners:
        try:
            names = [n for n in os.listdir(queue.running / owner) if n[0] != "."]
        except (FileNotFoundError, NotADirectoryError):
            continue
        yield owner, names


def count_tasks(queue: TaskQueue, now: float | None = None, *, clock: Clock | None = None) -> QueueCounts:
    """Tasks per state, from folder listings alone (no file is opened); the oldest pending task's
    age is taken at ``now`` (epoch seconds, default the clock) from the submit time in its name, or,
    with a share ``clock``, from its file's mtime on the share's clock (its submitter's clock may
    disagree with the reader's)."""
    pending = scan_pending_unsorted(queue)
    # Names start with a zero-padded nanosecond seq, so the smallest name is the oldest task
    # (checking the smallest first spares a parse of 100,000 names).
    oldest = min(pending, default=None)
    if oldest is not None and seq_from_name(oldest) is None:
        oldest = min((name for name in pending if seq_from_name(name) is not None), default=None)
    seq = seq_from_name(oldest) if oldest else None
    clock_ns = time.time_ns() if now is None else now * 1e9
    age = max(0.0, (clock_ns - seq) / 1e9) if seq is not None else None
    on_share = clock.file_age(queue.pending / oldest) if clock is not None and oldest is not None else None
    age = age if on_share is None else on_share
    # A claim outlives its terminal record by one unlink: such a task is done, not running.
    running = sum(
        1
        for _, names in running_listing(queue)
        for name in names
        if not queue.has_terminal(task_id_from_name(name) or name)
    )
    return QueueCounts(
        pending=len(pending),
        running=running,
        done=count_terminal(queue.done),
        failed=count_terminal(queue.failed),
        oldest_pending_age_sec=age,
    )


def locate_task(queue: TaskQueue, task_id: str) -> TaskLocation:
    """Where a task is now; TaskNotFound if nowhere.

    A terminal record wins. Otherwise the task is looked for in the order tasks move (pending,
    running, terminal), so one that moves while we look is still found; a second pass covers the
    rare backward moves (requeue, retry).
    """
    terminal = queue.terminal_path(task_id)  # a record wins over any stale copy
    if terminal is not None:
        return TaskLocation(task_id, TaskState(terminal.parent.name), terminal)
    for _ in range(2):
        for name in scan_pending_unsorted(queue):
            if task_id_from_name(name) == task_id:
                return TaskLocation(task_id, TaskState.PENDING, queue.pending / name)
        for owner, names in running_listing(queue):
            for name in names:
                if task_id_from_name(name) == task_id:
                    return TaskLocation(task_id, TaskState.RUNNING, queue.running / owner / name, owner)
        terminal = queue.terminal_path(task_id)
        if terminal is not None:
            return TaskLocation(task_id, TaskState(terminal.parent.name), terminal)
    raise TaskNotFound(
        f"no task {task_id!r} in {queue.root}", remedy=Remedy("list tasks with", "keepwarm tasks APP")
    )


def list_task_rows(queue: TaskQueue, state: str | None = None, limit: int = 100) -> list[TaskRow]:
    """Rows of tasks, at most ``limit`` per state, newest terminal records first.

    A row's ``state`` is a ``TaskState`` (a cancelled task is ``cancelled``, though its record is in
    ``failed/``).
    """
    rows: list[TaskRow] = []
    if state in (None, TaskState.PENDING):
        rows += [_queued_row(queue, queue.pending / name, None) for name in queue.scan_pending()[:limit]]
    if state in (None, TaskState.RUNNING):
        for owner, names in running_listing(queue):
            rows += [
                _queued_row(queue, queue.running / owner / name, owner) for name in sorted(names)[:limit]
            ]
    for folder, wanted in (
        (queue.done, (TaskState.DONE,)),
        (queue.failed, (TaskState.FAILED, TaskState.CANCELLED)),
    ):
        if state is None or state in wanted:
            rows += _finished_rows(queue, folder, state, limit)
    return rows


def _finished_rows(queue: TaskQueue, folder: Path, state: str | None, limit: int) -> list[TaskRow]:
    rows = []
    for path in newest_terminal(folder, limit):
        try:
            record = TaskRecord.model_validate_json(read_regular(path, queue.settings.max_result_bytes * 2))
        except (OSError, ValidationError):
            continue
        if state in (None, record.state):
            rows.append(
                TaskRow(
                    task_id=record.task_id,
                    task_name=record.task_name,
                    state=record.state,
                    at=utc_datetime(epoch_of(record.finished_at)),
                    runtime_sec=record.runtime_sec,
                    error=record.error,
                )
            )
    return rows


def _queued_row(queue: TaskQueue, path: Path, owner: str | None) -> TaskRow:
    """A pending (no owner) or running task's row: read to show, never to run."""
    seq = seq_from_name(path.name)
    task = peek_object(path, queue.settings.max_task_bytes)
    name = task.get("task_name") if task is not None else None
    return TaskRow(
        task_id=task_id_from_name(path.name),
        task_name=name if isinstance(name, str) else None,
        state=TaskState.PENDING if owner is None else TaskState.RUNNING,
        at=utc_datetime(seq / 1e9 if seq is not None else None),
        owner=owner,
    )
