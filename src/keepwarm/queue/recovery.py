"""Moving tasks back and out: requeue what a dead owner held, cancel pending tasks, retry failed ones.

Every move goes through a claim folder in ``running/``, so a loop and this code never both take a
task, and a crash at any point leaves each task in exactly one state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm.errors import TaskNotFound
from keepwarm.queue.layout import REJECTION_SUFFIX
from keepwarm.queue.task import TASK_SCHEMA, TASK_SUFFIX, Task, is_safe_id, terminal_record, utc_now
from keepwarm.queue.taskfiles import (
    encode,
    list_visible,
    next_seq,
    peek_object,
    pending_name,
    read_regular,
    remove_if_empty,
    require_safe_id,
    task_id_from_name,
)
from keepwarm.settings import describe_error

if TYPE_CHECKING:
    from keepwarm.queue.taskqueue import TaskQueue

CANCEL_SLOT = "_cancel"
RETRY_SLOT = "_retry"


class RequeueResult(StrEnum):
    """What became of one task a dead owner held."""

    REQUEUED = "requeued"
    MAX_ATTEMPTS = "max-attempts"
    ALREADY_TERMINAL = "already-terminal"
    REJECTED = "rejected"


@dataclass(frozen=True)
class RequeueOutcome:
    """One task's requeue: what became of it, and at which attempt."""

    task_id: str
    outcome: RequeueResult
    attempt: int


class Retried(list[str]):
    """The ids ``retry`` sent back to ``pending/``, sorted; ``not_retried`` maps every other id it
    was given or found to why it was not retried."""

    def __init__(self, retried: Iterable[str] = (), not_retried: dict[str, str] | None = None) -> None:
        super().__init__(retried)
        self.not_retried = not_retried if not_retried is not None else {}


def requeue_owner(
    queue: TaskQueue, owner: Path, reason: str, *, count_attempt: bool = True
) -> list[RequeueOutcome]:
    """Send the tasks a dead (or stopped) owner held back to ``pending/``, keeping their order.

    The caller has confirmed the owner is dead. Each task's ``attempt`` grows by one unless the
    requeue comes from stop or drain; past ``max_attempts`` it fails with reason ``max-attempts``.
    A task that already has a terminal file is dropped, not run again.
    """
    outcomes: list[RequeueOutcome] = []
    try:
        names = sorted(os.listdir(owner))
    except FileNotFoundError:
        return outcomes
    slot = owner.name.partition(".")[0]
    for name in names:
        path = owner / name
        if name.startswith("."):
            os.unlink(path)  # a temp file the owner never finished
            continue
        outcome = _requeue_one(queue, path, slot, reason, count_attempt)
        if outcome is not None:
            outcomes.append(outcome)
    remove_if_empty(owner)
    return outcomes


def reject_task_file(queue: TaskQueue, path: Path, reason: str) -> Path:
    """``reject_file``, and a failed record for the task id the file's name carries, so that whoever
    waits for it learns why instead of waiting forever."""
    target = reject_file(queue, path, reason)
    task_id = task_id_from_name(path.name)
    if task_id is not None and is_safe_id(task_id) and path.name != queue.layout.terminal_name(task_id):
        # (no id, or the rejected file itself now sits where the record would go: no record)
        task = Task.model_validate({"schema": TASK_SCHEMA, "task_id": task_id})
        error = f"rejected: {reason} (the file is kept as failed/{path.name}, its reason beside it)"
        queue.publish_terminal(terminal_record(task, "failed", error=error))
    return target


def reject_file(queue: TaskQueue, path: Path, reason: str) -> Path:
    """Move an invalid file to ``failed/`` under its own name, unopened, with its reason beside it."""
    target = queue.failed / path.name
    try:
        os.link(path, target, follow_symlinks=False)  # never clobbers an earlier rejection
        os.unlink(path)
    except FileExistsError:
        target = queue.failed / f"{path.name}.{next_seq()}"
        os.rename(path, target)
    except OSError:  # a directory cannot be hard-linked
        os.rename(path, target)
    write_atomic(target.with_name(target.name + REJECTION_SUFFIX), (reason + "\n").encode())
    queue.events.append("rejected", file=path.name, reason=reason)
    return target


def requeue_claimed(queue: TaskQueue, path: Path, slot: str, reason: str) -> RequeueOutcome | None:
    """Send one task its live owner gives up on back to ``pending/``, its attempt counted (past
    ``max_attempts`` it fails with reason ``max-attempts``)."""
    return _requeue_one(queue, path, slot, reason, count_attempt=True)


def _requeue_one(
    queue: TaskQueue, path: Path, slot: str, reason: str, count_attempt: bool
) -> RequeueOutcome | None:
    task = queue.load_claimed(path)
    if task is None:
        return None
    if queue.terminal_path(task.task_id) is not None:
        path.unlink(missing_ok=True)
        queue.events.append("duplicate", task_id=task.task_id, during="requeue")
        return RequeueOutcome(task.task_id, RequeueResult.ALREADY_TERMINAL, task.attempt)
    history = {"attempt": task.attempt, "slot": slot, "outcome": reason, "at": utc_now()}
    task.attempts.append(history)
    if count_attempt:
        task.attempt += 1
    if task.attempt > task.max_attempts:
        error = f"max-attempts: {task.max_attempts} attempts ended without a result ({reason})"
        queue.finish(path, terminal_record(task, "failed", error=error, slot=slot))
        queue.events.append("max-attempts", task_id=task.task_id, reason=reason)
        return RequeueOutcome(task.task_id, RequeueResult.MAX_ATTEMPTS, task.max_attempts)
    write_atomic(path, encode(task.to_json_dict()), queue.durable)
    os.rename(path, queue.pending / path.name)
    queue.events.append("requeued", task_id=task.task_id, attempt=task.attempt, reason=reason)
    return RequeueOutcome(task.task_id, RequeueResult.REQUEUED, task.attempt)


def cancel_pending(
    queue: TaskQueue, task_ids: Iterable[str] = (), execution_id: str | None = None
) -> list[str]:
    """Cancel pending tasks by id or by execution id; returns the ids cancelled.

    A task is cancelled by claiming it like a loop would, so a loop and a canceller never both
    take it. Running tasks are left to their loop.
    """
    wanted = set(task_ids)
    for task_id in wanted:
        require_safe_id(task_id)
    names = [n for n in queue.scan_pending() if task_id_from_name(n) in wanted]
    if execution_id is not None:
        names = sorted(set(names) | set(_pending_of_execution(queue, execution_id)))
    if not names:
        return []
    owner = ensure_private_dir(queue.owner_dir(CANCEL_SLOT, f"{os.getpid()}-{next_seq()}"))
    try:
        cancelled = _cancel_claimed(queue, names, owner, execution_id)
    finally:
        remove_if_empty(owner)
    if cancelled:
        queue.events.append("cancelled", task_ids=cancelled, execution_id=execution_id)
    return cancelled


def _cancel_claimed(queue: TaskQueue, names: list[str], owner: Path, execution_id: str | None) -> list[str]:
    cancelled = []
    for name in names:
        claimed = queue.claim(name, owner)
        if claimed is None:
            continue
        task = queue.load_claimed(claimed)
        if task is None:
            continue
        reason = f"cancelled execution {execution_id}" if execution_id else "cancelled"
        queue.finish(claimed, terminal_record(task, "cancelled", error=reason, slot=CANCEL_SLOT))
        cancelled.append(task.task_id)
    return cancelled


def _pending_of_execution(queue: TaskQueue, execution_id: str) -> Iterator[str]:
    # Reads pending files without claiming them: only to select, never to run.
    for name in queue.scan_pending():
        head = peek_object(queue.pending / name, queue.settings.max_task_bytes)
        if head is not None and head.get("execution_id") == execution_id:
            yield name


def retry_failed(queue: TaskQueue, task_ids: Iterable[str] = (), *, all_failed: bool = False) -> Retried:
    """Send failed or cancelled tasks back to ``pending/`` as fresh attempts; the ids retried, with
    why each other one was not (``not_retried``).

    ``all_failed`` takes every ``*.task.json`` in ``failed/``: rejected files and anything else
    that is not a task record are skipped and named, the rest retried. The new task file is
    written before the terminal record goes, inside a claim folder, so a crash at any point
    leaves the task either failed or pending, never lost.
    """
    wanted = set(task_ids)
    for task_id in wanted:
        require_safe_id(task_id)
    if all_failed:
        wanted |= {n[: -len(TASK_SUFFIX)] for n in list_visible(queue.failed) if n.endswith(TASK_SUFFIX)}
    retried, not_retried = [], {}
    owner = ensure_private_dir(queue.owner_dir(RETRY_SLOT, f"{os.getpid()}-{next_seq()}"))
    try:
        for task_id in sorted(wanted):
            why = _retry_one(queue, task_id, owner)
            if why is None:
                retried.append(task_id)
            else:
                not_retried[task_id] = why
    finally:
        remove_if_empty(owner)
    if retried:
        queue.events.append("retried", task_ids=retried)
    return Retried(retried, not_retried)


def _retry_one(queue: TaskQueue, task_id: str, owner: Path) -> str | None:
    """Retry one failed task; None once it is pending again, else why it cannot be retried."""
    terminal = queue.failed / queue.layout.terminal_name(task_id)
    where = f"failed/{terminal.name}"
    rejection = terminal.with_name(terminal.name + REJECTION_SUFFIX)
    if os.path.lexists(rejection):
        reason = rejection.read_text(errors="replace").strip()
        return f"{where} is a rejected file ({reason}), not a task: fix it and submit it again"
    try:
        record = json.loads(read_regular(terminal, queue.settings.max_result_bytes * 2))
    except FileNotFoundError:
        try:
            state = queue.locate(task_id).state
        except TaskNotFound:
            return "not found among failed tasks, nor anywhere else in the queue"
        return f"not found among failed tasks: it is {state} (only failed or cancelled tasks retry)"
    except (OSError, ValueError, RecursionError) as exc:
        return f"{where} is not a task record ({exc}): fix or remove it"
    if not isinstance(record, dict) or record.get("task_id") != task_id or "status" not in record:
        return f"{where} is not a task record (no task_id {task_id!r} and status): fix or remove it"
    error = record.get("error")
    if isinstance(error, str) and error.startswith("rejected: "):
        return f"its task file was {error}: fix that file and submit it again"
    try:
        task = Task.model_validate(
            {k: v for k, v in record.items() if k in Task.model_fields or k == "schema"}
        )
    except ValidationError as exc:
        problems = "; ".join(describe_error(e) for e in exc.errors())
        return f"{where} is not a valid task record ({problems}): fix or remove it"
    task.attempts = [*task.attempts, {"outcome": "retried", "at": utc_now()}]
    task.attempt = 1
    name = pending_name(next_seq(), task_id)
    write_atomic(owner / name, encode(task.to_json_dict()), queue.durable)
    os.unlink(terminal)
    os.rename(owner / name, queue.pending / name)
    return None
