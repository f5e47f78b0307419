"""One claimed task's way through a loop: parsed and checked, then its outcome published once.

This is the hot path, so each step does its work once: the file is read with one ``open`` and one
``fstat``, parsed once, checked for what cannot travel as JSON from its text (the full check only
when the text could hold it), and the terminal record is encoded once, straight from the task's
fields, with the result's JSON and size checked on that same encoding.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from keepwarm.app import App, describe_args_error
from keepwarm.errors import STORAGE_ERRNOS
from keepwarm.queue.task import Task, TaskItem, TaskStatus, terminal_fields, utc_now
from keepwarm.queue.taskfiles import MAX_JSON_DEPTH, encode, json_problem
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.runtime.heartbeat import HeartbeatWriter

log = logging.getLogger("keepwarm.runtime.loop")

STORAGE_RETRY_MAX_SEC = 2.0


@dataclass(slots=True)
class Started:
    """A claimed task, parsed and checked, ready for ``work``: its file, the task, what work gets."""

    claimed: str
    task: Task
    item: TaskItem
    claimed_at: str


class Outcome:
    """What became of one task: a value, or an error (with its traceback), and the status to record."""

    __slots__ = ("error", "ok", "status", "traceback", "value")

    def __init__(
        self,
        ok: bool,
        value: Any = None,
        error: str | None = None,
        tb: str | None = None,
        status: TaskStatus | None = None,
    ) -> None:
        self.ok, self.value, self.error, self.traceback = ok, value, error, tb
        self.status: TaskStatus = status or ("done" if ok else "failed")

    @classmethod
    def failure(cls, exc: BaseException, context: str = "") -> Outcome:
        error = f"{type(exc).__name__}: {exc}{context}"
        return cls(False, error=error, tb="".join(traceback.format_exception(exc)))


class TaskSteps:
    """Begin and complete the tasks of one loop incarnation."""

    def __init__(
        self,
        queue: TaskQueue,
        heartbeat: HeartbeatWriter,
        slot: str,
        incarnation: str,
        stopping: threading.Event,
    ) -> None:
        self.queue = queue
        self.heartbeat = heartbeat
        self.slot = slot
        self.incarnation = incarnation
        self.stopping = stopping
        self.max_result_bytes = queue.settings.max_result_bytes
        self.app: App | None = None
        self.handled = 0

    def begin(self, claimed: str) -> Started | None:
        """Parse a claimed file and hand back what ``work`` needs, or None if it was dealt with."""
        claimed_at = utc_now()
        task = self.queue.load_claimed(claimed)
        if task is None:
            return None
        if self.queue.has_terminal(task.task_id):
            # Already finished (e.g. resubmitted by hand): never run a task's side effects twice.
            os.unlink(claimed)
            self.queue.events.append("duplicate", task_id=task.task_id, slot=self.slot, during="claim")
            return None
        self.heartbeat.task_started(task.task_id, task.timeout_sec, claimed_at)
        try:
            args = self.app.validate_args(task.args) if self.app else task.args
        except ValidationError as exc:
            started = Started(claimed, task, _item_of(task, task.args), claimed_at)
            self.complete(started, Outcome(ok=False, error=describe_args_error(exc)), 0.0)
            return None
        return Started(claimed, task, _item_of(task, args), claimed_at)

    def complete(
        self,
        started: Started,
        outcome: Outcome,
        runtime: float,
        *,
        producer: str = "work()",
        batch_size: int | None = None,
    ) -> None:
        """Publish ``started``'s terminal record (the result checked as JSON on its one encoding)."""
        task = started.task
        fields = task.to_json_dict()
        common: dict[str, Any] = {
            "slot": self.slot,
            "incarnation": self.incarnation,
            "claimed_at": started.claimed_at,
            "runtime_sec": round(runtime, 6),
            "batch_size": batch_size,
        }
        data = self._encode_done(fields, outcome.value, common, producer) if outcome.ok else None
        if isinstance(data, str):
            outcome, data = Outcome(False, error=data), None
        if data is None:
            data = encode(
                terminal_fields(
                    fields, outcome.status, error=outcome.error, traceback=outcome.traceback, **common
                )
            )
        self._publish(started.claimed, task.task_id, outcome.status, data)
        self.heartbeat.task_finished(task.task_id, outcome.ok)
        self.handled += 1

    def _encode_done(
        self, fields: dict[str, Any], value: Any, common: dict[str, Any], producer: str
    ) -> bytes | str:
        """The done record's bytes, or why the result cannot travel (not JSON, too deep, too large).

        The full check (a walk of the value, its own encoding) runs only when the record's one
        encoding failed, or holds enough brackets or bytes that the result might be refused.
        """
        try:
            data: bytes | None = encode(terminal_fields(fields, "done", result=value, **common))
        except (ValueError, TypeError, RecursionError):
            data = None
        if (
            data is not None
            and data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH
            and len(data) <= self.max_result_bytes
        ):
            return data
        problem = json_problem(value, f"{producer}'s result ({type(value).__name__})")
        if problem is None:
            size = len(encode(value))
            if size > self.max_result_bytes:
                problem = f"result is {size} bytes, over max_result_bytes ({self.max_result_bytes})"
        return data if problem is None and data is not None else problem or "result is not JSON"

    def _publish(self, claimed: str, task_id: str, status: TaskStatus, data: bytes) -> None:
        """Publish a terminal record; while storage refuses, keep the task and retry."""
        delay = 0.05
        while True:
            try:
                self.queue.finish_encoded(claimed, task_id, status, data)
                self.heartbeat.storage_error = None
                return
            except OSError as exc:
                if exc.errno not in STORAGE_ERRNOS:
                    raise
                self.heartbeat.storage_error = f"cannot publish task {task_id}: {exc.strerror}"
                log.warning("slot %s: %s; retrying in %.2fs", self.slot, self.heartbeat.storage_error, delay)
                if self.stopping.wait(delay):
                    return  # the claim stays in running/ and is requeued on the way out
                delay = min(delay * 2, STORAGE_RETRY_MAX_SEC)

    def requeue(self, started: Started, reason: str) -> None:
        """Send a started task back to ``pending/`` for another attempt (counted), as after a crash."""
        self.queue.requeue_claimed(Path(started.claimed), self.slot, reason)
        self.heartbeat.task_finished(started.task.task_id, ok=False, counted=False)
        self.handled += 1


def _item_of(task: Task, args: Any) -> TaskItem:
    """What ``work()`` receives for ``task``: the validated ``args``, every other field the task's own."""
    return TaskItem(
        task_id=task.task_id,
        task_name=task.task_name,
        args=args,
        plan=task.plan,
        attempt=task.attempt,
        max_attempts=task.max_attempts,
        execution_id=task.execution_id,
        created_at=task.created_at,
        timeout_sec=task.timeout_sec,
    )
