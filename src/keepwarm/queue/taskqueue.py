"""The file queue: one folder per task state, ownership by rename, terminal files without clobber.

Layout under ``<service_dir>/queue``::

    pending/<seq>-<task_id>.task.json      seq: a 20-digit nanosecond timestamp (FIFO per submitter)
    running/<slot>.<incarnation>/<name>    a claimed task: the folder is its owner
    done/<task_id>.task.json               terminal records of finished tasks
    failed/<task_id>.task.json             terminal records of failed and cancelled tasks, and
                                           rejected files under their own name (+ .rejection.txt)
    heartbeats/<slot>.json

This module knows files and renames only: not loops, health or processes.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from keepwarm._sys.atomic import fsync_dir, publish_new, write_atomic, write_temp
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm.env import Env
from keepwarm.errors import InvalidTaskError, QueueFull, Remedy, TaskNotFound, storage_error
from keepwarm.queue.events import EventLog
from keepwarm.queue.task import (
    TASK_SCHEMA,
    TASK_SUFFIX,
    PartialTask,
    Task,
    TaskRecord,
    TaskStatus,
    is_safe_id,
    iso_of,
    new_task_id,
    utc_now,
)
from keepwarm.settings import ClusterSettings, describe_error

REJECTION_SUFFIX = ".rejection.txt"
CANCEL_SLOT = "_cancel"
RETRY_SLOT = "_retry"

_seq_lock = threading.Lock()
_last_seq = 0


def next_seq() -> int:
    """A nanosecond timestamp, strictly increasing within this process."""
    global _last_seq
    with _seq_lock:
        _last_seq = max(time.time_ns(), _last_seq + 1)
        return _last_seq


def pending_name(seq: int, task_id: str) -> str:
    return f"{seq:020d}-{task_id}{TASK_SUFFIX}"


def task_id_from_name(name: str) -> str | None:
    """The task id a queue file name carries (``<seq>-<id>.task.json`` or ``<id>.task.json``)."""
    if not name.endswith(TASK_SUFFIX):
        return None
    stem = name[: -len(TASK_SUFFIX)]
    seq, dash, rest = stem.partition("-")
    return rest if dash and seq.isdigit() and len(seq) == 20 else stem


def seq_from_name(name: str) -> int | None:
    head = name[:20]
    return int(head) if len(name) > 20 and head.isdigit() and name[20] == "-" else None


@dataclass(frozen=True)
class QueueCounts:
    pending: int
    running: int
    done: int
    failed: int
    oldest_pending_age_sec: float | None


@dataclass(frozen=True)
class TaskLocation:
    task_id: str
    state: str  # pending | running | done | failed
    path: Path
    owner: str | None = None  # running/<owner>/


class Retried(list[str]):
    """The ids ``retry`` sent back to ``pending/``, sorted; ``not_retried`` maps every other id it
    was given or found to why it was not retried."""

    def __init__(self, retried: Iterable[str] = (), not_retried: dict[str, str] | None = None) -> None:
        super().__init__(retried)
        self.not_retried = not_retried if not_retried is not None else {}


@dataclass(frozen=True)
class RequeueOutcome:
    task_id: str
    outcome: str  # requeued | max-attempts | already-terminal | rejected
    attempt: int


class TaskQueue:
    """One service's queue. Cheap to construct; every method works from the files alone."""

    def __init__(
        self,
        root: Path,
        *,
        settings: ClusterSettings | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.root = root
        self.settings = settings or ClusterSettings()
        self.events = events or EventLog(root.parent / "events.jsonl")
        self.pending = root / "pending"
        self.running = root / "running"
        self.done = root / "done"
        self.failed = root / "failed"
        self.heartbeats = root / "heartbeats"

    @classmethod
    def for_env(cls, env: Env) -> TaskQueue:
        return cls(env.queue_dir, settings=env.settings.cluster)

    @property
    def durable(self) -> bool:
        return self.settings.durable

    def ensure(self) -> TaskQueue:
        """Create the queue's folders (mode 0700) if they are missing."""
        for folder in (self.pending, self.running, self.done, self.failed, self.heartbeats):
            ensure_private_dir(folder)
        return self

    # ------------------------------------------------------------------ submit

    def make_task(
        self,
        args: dict[str, Any] | None = None,
        *,
        task_name: str = "task",
        execution_id: str | None = None,
        max_attempts: int | None = None,
        timeout_sec: float | None = None,
        task_id: str | None = None,
        plan: Any = None,
    ) -> Task:
        """Build a valid task, filling in what the caller left out; InvalidTaskError otherwise."""
        try:
            return Task(
                schema=TASK_SCHEMA,
                task_id=new_task_id() if task_id is None else task_id,
                task_name=task_name,
                args=args if args is not None else {},
                plan=plan,
                execution_id=execution_id,
                max_attempts=self.settings.max_attempts if max_attempts is None else max_attempts,
                timeout_sec=self.settings.task_timeout_sec if timeout_sec is None else timeout_sec,
            )
        except ValidationError as exc:
            problems = "; ".join(describe_error(e) for e in exc.errors())
            raise InvalidTaskError(f"invalid task: {problems}") from None

    def submit(self, tasks: Iterable[Task]) -> list[Task]:
        """Publish tasks to ``pending/`` in order; refuse all of them if ``max_pending`` would be passed."""
        return [task for task, _ in self.publish(tasks)]

    def publish(self, tasks: Iterable[Task]) -> list[tuple[Task, Path]]:
        """``submit``, returning each task with the path of its pending file."""
        batch = list(tasks)
        for task in batch:
            problem = json_problem(task.args, f"task {task.task_id}: args") or json_problem(
                task.plan, f"task {task.task_id}: plan"
            )
            if problem:
                raise InvalidTaskError(f"{problem}; nothing was queued")
        encoded = [encode(task.to_json_dict()) for task in batch]
        for task, data in zip(batch, encoded, strict=True):
            if len(data) > self.settings.max_task_bytes:
                raise InvalidTaskError(
                    f"task {task.task_id} is {len(data)} bytes, over max_task_bytes "
                    f"({self.settings.max_task_bytes}); pass large inputs by reference (a path)"
                )
        limit = self.settings.max_pending
        if limit is not None:
            pending = self.count_pending()
            if pending + len(batch) > limit:
                raise QueueFull(
                    f"queue {self.pending} holds {pending} pending tasks; {len(batch)} more would pass "
                    f"max_pending = {limit}. Wait for the loops to catch up, add loops, or raise "
                    "[cluster] max_pending"
                )
        if not self.pending.is_dir():
            self.ensure()
        # All or nothing: every task is written to a temp file first (where a full or read-only share
        # fails), and only then renamed into pending/ (a rename needs no space).
        staged: list[tuple[Task, Path]] = []
        try:
            for task, data in zip(batch, encoded, strict=True):
                staged.append((task, write_temp(self.pending, task.task_id, data, self.durable)))
        except OSError as exc:
            for _, temp in staged:
                temp.unlink(missing_ok=True)
            raise storage_error(exc, self.pending, "nothing was queued") from None
        published = []
        for task, temp in staged:
            path = self.pending / pending_name(next_seq(), task.task_id)
            os.rename(temp, path)
            published.append((task, path))
        if self.durable:
            fsync_dir(self.pending)
        return published

    def submit_partials(
        self,
        lines: Iterable[tuple[int, dict[str, Any]]],
        *,
        source: str = "task",
        check_args: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[Task]:
        """Validate numbered partial tasks (``--file`` lines) and submit them all, or none.

        Errors name ``source`` and the line; ``check_args`` may refuse a line's args (ValueError).
        """
        tasks = []
        for number, obj in lines:
            where = f"{source} line {number}" if source != "task" else f"task {number}"
            try:
                partial = PartialTask.model_validate(obj)
                if check_args is not None:
                    check_args(partial.args)
            except ValidationError as exc:
                problems = "; ".join(describe_error(e) for e in exc.errors())
                raise InvalidTaskError(f"{where}: {problems}") from None
            except ValueError as exc:
                raise InvalidTaskError(f"{where}: {exc}") from None
            tasks.append(self.make_task(**partial.model_dump()))
        return self.submit(tasks)

    # ------------------------------------------------------------------ claim (loop side)

    def owner_dir(self, slot: str, incarnation: str) -> Path:
        return self.running / f"{slot}.{incarnation}"

    def scan_pending(self) -> list[str]:
        """Names of the pending files (temp files skipped), oldest first. Lists; never parses."""
        try:
            return sorted(name for name in os.listdir(self.pending) if name[0] != ".")
        except FileNotFoundError:
            return []

    def claim(self, name: str, owner: Path) -> Path | None:
        """Move ``pending/name`` into ``owner``; the path if this caller won, None if another did."""
        target = owner / name
        try:
            os.rename(self.pending / name, target)
        except FileNotFoundError:
            # A retried rename on a network filesystem can report ENOENT to the winner.
            return target if os.path.lexists(target) else None
        return target

    def reject(self, path: Path, reason: str, **fields: Any) -> Path:
        """Move an invalid file to ``failed/`` under its own name, unopened, with its reason beside it."""
        target = self.failed / path.name
        try:
            os.link(path, target, follow_symlinks=False)  # never clobbers an earlier rejection
            os.unlink(path)
        except FileExistsError:
            target = self.failed / f"{path.name}.{next_seq()}"
            os.rename(path, target)
        except OSError:  # a directory cannot be hard-linked
            os.rename(path, target)
        write_atomic(target.with_name(target.name + REJECTION_SUFFIX), (reason + "\n").encode())
        self.events.append("rejected", file=path.name, reason=reason, **fields)
        return target

    # ------------------------------------------------------------------ terminal files

    def terminal_path(self, task_id: str) -> Path | None:
        _require_safe_id(task_id)
        for folder in (self.done, self.failed):
            path = folder / f"{task_id}{TASK_SUFFIX}"
            if os.path.lexists(path):
                return path
        return None

    def publish_terminal(self, record: dict[str, Any]) -> bool:
        """Publish a terminal record; False (a duplicate) if the task already has one.

        The link into the record's own folder refuses a second file there; the other folder is
        checked first, so a task never ends both done and failed.
        """
        name = f"{record['task_id']}{TASK_SUFFIX}"
        folder, other = (self.done, self.failed) if record["status"] == "done" else (self.failed, self.done)
        if os.path.lexists(other / name):
            return False
        return publish_new(folder / name, encode(record), self.durable)

    def finish(self, claimed: Path, record: dict[str, Any]) -> bool:
        """Publish the terminal record of a claimed task, then release the claim."""
        won = self.publish_terminal(record)
        if not won:
            self.events.append("duplicate", task_id=record["task_id"], status=record["status"])
        os.unlink(claimed)
        return won

    def read_record(self, task_id: str) -> TaskRecord | None:
        path = self.terminal_path(task_id)
        if path is None:
            return None
        return TaskRecord.model_validate_json(read_regular(path, self.settings.max_result_bytes * 2))

    # ------------------------------------------------------------------ requeue and cancel

    def requeue(self, owner: Path, reason: str, *, count_attempt: bool = True) -> list[RequeueOutcome]:
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
            outcome = self._requeue_one(path, slot, reason, count_attempt)
            if outcome is not None:
                outcomes.append(outcome)
        try:
            os.rmdir(owner)
        except OSError:
            pass
        return outcomes

    def _requeue_one(self, path: Path, slot: str, reason: str, count_attempt: bool) -> RequeueOutcome | None:
        task = self.load_claimed(path)
        if task is None:
            return None
        if self.terminal_path(task.task_id) is not None:
            path.unlink(missing_ok=True)
            self.events.append("duplicate", task_id=task.task_id, during="requeue")
            return RequeueOutcome(task.task_id, "already-terminal", task.attempt)
        history = {"attempt": task.attempt, "slot": slot, "outcome": reason, "at": utc_now()}
        task.attempts.append(history)
        if count_attempt:
            task.attempt += 1
        if task.attempt > task.max_attempts:
            error = f"max-attempts: {task.max_attempts} attempts ended without a result ({reason})"
            record = terminal_record(task, "failed", error=error, slot=slot)
            self.finish(path, record)
            self.events.append("max-attempts", task_id=task.task_id, reason=reason)
            return RequeueOutcome(task.task_id, "max-attempts", task.max_attempts)
        write_atomic(path, encode(task.to_json_dict()), self.durable)
        os.rename(path, self.pending / path.name)
        self.events.append("requeued", task_id=task.task_id, attempt=task.attempt, reason=reason)
        return RequeueOutcome(task.task_id, "requeued", task.attempt)

    def load_claimed(self, path: Path) -> Task | None:
        """Parse a claimed file; an invalid one is rejected to ``failed/`` and None returned."""
        problem = check_regular_file(path, self.settings.max_task_bytes)
        if problem is None:
            try:
                with open(path, "rb", opener=_open_no_follow) as handle:
                    task = Task.model_validate_json(handle.read())
            except ValidationError as exc:
                problem = _describe_task_error(exc)
            except (OSError, RecursionError) as exc:
                problem = f"unreadable: {exc}"
            else:
                expected = task_id_from_name(path.name)
                if expected is not None and expected != task.task_id:
                    problem = _name_problem(expected, task.task_id)
                else:
                    problem = json_problem(task.args, "args") or json_problem(task.plan, "plan")
                    if problem is None:
                        return self._with_defaults(task)
        self.reject(path, problem)
        self._fail_rejected(path.name, problem)
        return None

    def _fail_rejected(self, name: str, problem: str) -> None:
        """Give a rejected task whose file name carries a safe id a failed terminal record, so that
        whoever waits for it learns why instead of waiting forever."""
        task_id = task_id_from_name(name)
        if task_id is None or not is_safe_id(task_id) or name == f"{task_id}{TASK_SUFFIX}":
            return  # no id, or the rejected file itself now sits where the record would go
        task = Task.model_validate({"schema": TASK_SCHEMA, "task_id": task_id})
        error = f"rejected: {problem} (the file is kept as failed/{name}, its reason beside it)"
        self.publish_terminal(terminal_record(task, "failed", error=error))

    def _with_defaults(self, task: Task) -> Task:
        """A file written by another tool gets ``[cluster]``'s defaults for what it left out."""
        if task.timeout_sec is None:
            task.timeout_sec = self.settings.task_timeout_sec
        if "max_attempts" not in task.model_fields_set:
            task.max_attempts = self.settings.max_attempts
        return task

    def cancel(self, task_ids: Iterable[str] = (), execution_id: str | None = None) -> list[str]:
        """Cancel pending tasks by id or by execution id; returns the ids cancelled.

        A task is cancelled by claiming it like a loop would, so a loop and a canceller never both
        take it. Running tasks are left to their loop.
        """
        wanted = set(task_ids)
        for task_id in wanted:
            _require_safe_id(task_id)
        names = [n for n in self.scan_pending() if task_id_from_name(n) in wanted]
        if execution_id is not None:
            names = sorted(set(names) | set(self._pending_of_execution(execution_id)))
        if not names:
            return []
        owner = ensure_private_dir(self.owner_dir(CANCEL_SLOT, f"{os.getpid()}-{next_seq()}"))
        try:
            cancelled = self._cancel_claimed(names, owner, execution_id)
        finally:
            _remove_if_empty(owner)
        if cancelled:
            self.events.append("cancelled", task_ids=cancelled, execution_id=execution_id)
        return cancelled

    def _cancel_claimed(self, names: list[str], owner: Path, execution_id: str | None) -> list[str]:
        cancelled = []
        for name in names:
            claimed = self.claim(name, owner)
            if claimed is None:
                continue
            task = self.load_claimed(claimed)
            if task is None:
                continue
            reason = f"cancelled execution {execution_id}" if execution_id else "cancelled"
            self.finish(claimed, terminal_record(task, "cancelled", error=reason, slot=CANCEL_SLOT))
            cancelled.append(task.task_id)
        return cancelled

    def retry(self, task_ids: Iterable[str] = (), *, all_failed: bool = False) -> Retried:
        """Send failed or cancelled tasks back to ``pending/`` as fresh attempts; the ids retried, with
        why each other one was not (``not_retried``).

        ``all_failed`` takes every ``*.task.json`` in ``failed/``: rejected files and anything else
        that is not a task record are skipped and named, the rest retried. The new task file is
        written before the terminal record goes, inside a claim folder, so a crash at any point
        leaves the task either failed or pending, never lost.
        """
        wanted = set(task_ids)
        for task_id in wanted:
            _require_safe_id(task_id)
        if all_failed:
            wanted |= {n[: -len(TASK_SUFFIX)] for n in list_visible(self.failed) if n.endswith(TASK_SUFFIX)}
        retried, not_retried = [], {}
        owner = ensure_private_dir(self.owner_dir(RETRY_SLOT, f"{os.getpid()}-{next_seq()}"))
        try:
            for task_id in sorted(wanted):
                why = self._retry_one(task_id, owner)
                if why is None:
                    retried.append(task_id)
                else:
                    not_retried[task_id] = why
        finally:
            _remove_if_empty(owner)
        if retried:
            self.events.append("retried", task_ids=retried)
        return Retried(retried, not_retried)

    def _retry_one(self, task_id: str, owner: Path) -> str | None:
        """Retry one failed task; None once it is pending again, else why it cannot be retried."""
        terminal = self.failed / f"{task_id}{TASK_SUFFIX}"
        where = f"failed/{terminal.name}"
        rejection = terminal.with_name(terminal.name + REJECTION_SUFFIX)
        if os.path.lexists(rejection):
            reason = rejection.read_text(errors="replace").strip()
            return f"{where} is a rejected file ({reason}), not a task: fix it and submit it again"
        try:
            record = json.loads(read_regular(terminal, self.settings.max_result_bytes * 2))
        except FileNotFoundError:
            try:
                state = self.locate(task_id).state
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
        write_atomic(owner / name, encode(task.to_json_dict()), self.durable)
        os.unlink(terminal)
        os.rename(owner / name, self.pending / name)
        return None

    def _pending_of_execution(self, execution_id: str) -> Iterator[str]:
        # Reads pending files without claiming them: only to select, never to run.
        for name in self.scan_pending():
            head = self._peek(self.pending / name)
            if head is not None and head.get("execution_id") == execution_id:
                yield name

    # ------------------------------------------------------------------ inspection

    def count_pending(self) -> int:
        try:
            return sum(1 for name in os.listdir(self.pending) if name[0] != ".")
        except FileNotFoundError:
            return 0

    def counts(self, now: float | None = None) -> QueueCounts:
        """Tasks per state, from folder listings alone (no file is opened); the oldest pending task's
        age is taken at ``now`` (epoch seconds, default the clock)."""
        pending = self.scan_pending_unsorted()
        # Names start with a zero-padded nanosecond seq, so the smallest name is the oldest task
        # (checking the smallest first spares a parse of 100,000 names).
        oldest = min(pending, default=None)
        if oldest is not None and seq_from_name(oldest) is None:
            oldest = min((name for name in pending if seq_from_name(name) is not None), default=None)
        seq = seq_from_name(oldest) if oldest else None
        clock_ns = time.time_ns() if now is None else now * 1e9
        age = max(0.0, (clock_ns - seq) / 1e9) if seq is not None else None
        running = sum(len(names) for _, names in self._running_listing())
        return QueueCounts(
            pending=len(pending),
            running=running,
            done=_count_terminal(self.done),
            failed=_count_terminal(self.failed),
            oldest_pending_age_sec=age,
        )

    def scan_pending_unsorted(self) -> list[str]:
        try:
            return [name for name in os.listdir(self.pending) if name[0] != "."]
        except FileNotFoundError:
            return []

    def _running_listing(self) -> Iterator[tuple[str, list[str]]]:
        try:
            owners = os.listdir(self.running)
        except FileNotFoundError:
            return
        for owner in owners:
            try:
                names = [n for n in os.listdir(self.running / owner) if n[0] != "."]
            except (FileNotFoundError, NotADirectoryError):
                continue
            yield owner, names

    def locate(self, task_id: str) -> TaskLocation:
        """Where a task is now; TaskNotFound if nowhere.

        A terminal record wins. Otherwise the task is looked for in the order tasks move (pending,
        running, terminal), so one that moves while we look is still found; a second pass covers the
        rare backward moves (requeue, retry).
        """
        terminal = self.terminal_path(task_id)  # a record wins over any stale copy
        if terminal is not None:
            return TaskLocation(task_id, terminal.parent.name, terminal)
        for _ in range(2):
            for name in self.scan_pending_unsorted():
                if task_id_from_name(name) == task_id:
                    return TaskLocation(task_id, "pending", self.pending / name)
            for owner, names in self._running_listing():
                for name in names:
                    if task_id_from_name(name) == task_id:
                        return TaskLocation(task_id, "running", self.running / owner / name, owner)
            terminal = self.terminal_path(task_id)
            if terminal is not None:
                return TaskLocation(task_id, terminal.parent.name, terminal)
        raise TaskNotFound(
            f"no task {task_id!r} in {self.root}", remedy=Remedy("list tasks with", "keepwarm tasks APP")
        )

    def list_tasks(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Summaries of tasks, at most ``limit`` per state, newest terminal records first.

        A row's ``state`` is one of ``TASK_STATES`` (a cancelled task is ``cancelled``, though its
        record is in ``failed/``); ``at`` is ISO-8601 UTC: when it was submitted (pending, running)
        or finished (done, failed, cancelled).
        """
        rows: list[dict[str, Any]] = []
        if state in (None, "pending"):
            rows += [self._queued_row(self.pending / name, "pending") for name in self.scan_pending()[:limit]]
        if state in (None, "running"):
            for owner, names in self._running_listing():
                for name in sorted(names)[:limit]:
                    rows.append(self._queued_row(self.running / owner / name, "running") | {"owner": owner})
        for folder in (self.done, self.failed):
            wanted = (folder.name,) if folder is self.done else ("failed", "cancelled")
            if state is not None and state not in wanted:
                continue
            for path in _newest_terminal(folder, limit):
                try:
                    record = TaskRecord.model_validate_json(
                        read_regular(path, self.settings.max_result_bytes * 2)
                    )
                except (OSError, ValidationError):
                    continue
                if state in (None, record.status):
                    rows.append(
                        {
                            "task_id": record.task_id,
                            "task_name": record.task_name,
                            "state": record.status,
                            "at": record.finished_at,
                            "runtime_sec": record.runtime_sec,
                            "error": record.error,
                        }
                    )
        return rows

    def _queued_row(self, path: Path, state: str) -> dict[str, Any]:
        """A pending or running task's row: read to show, never to run."""
        seq = seq_from_name(path.name)
        task = self._peek(path)
        name = task.get("task_name") if task is not None else None
        return {
            "task_id": task_id_from_name(path.name),
            "task_name": name if isinstance(name, str) else None,
            "state": state,
            "at": iso_of(seq / 1e9) if seq is not None else None,
        }

    def _peek(self, path: Path) -> dict[str, Any] | None:
        """A queued file's JSON object, or None (gone, unreadable, not an object). Never claims it."""
        try:
            with open(path, "rb", opener=_open_no_follow) as handle:
                value = json.loads(handle.read(self.settings.max_task_bytes))
        except (OSError, ValueError, RecursionError):
            return None
        return value if isinstance(value, dict) else None


def terminal_record(
    task: Task,
    status: TaskStatus,
    *,
    result: Any = None,
    error: str | None = None,
    traceback: str | None = None,
    slot: str | None = None,
    incarnation: str | None = None,
    claimed_at: str | None = None,
    runtime_sec: float | None = None,
) -> dict[str, Any]:
    """The terminal file's content: the task, its outcome, and the history of its attempts."""
    finished_at = utc_now()
    record = task.to_json_dict()
    this_attempt = {"attempt": task.attempt, "slot": slot, "outcome": status, "at": finished_at}
    record.update(
        status=status,
        result=result,
        error=error,
        traceback=traceback,
        claim={"slot": slot, "incarnation": incarnation, "claimed_at": claimed_at},
        finished_at=finished_at,
        runtime_sec=runtime_sec,
        attempts=[*task.attempts, this_attempt],
    )
    return record


def _name_problem(named: str, task_id: str) -> str:
    """Why a file name does not match its task_id: often a hand-written sequence of the wrong length."""
    seq, _, rest = named.partition("-")
    if seq.isdigit() and rest == task_id:
        padded = f"{seq.zfill(20)}-{task_id}{TASK_SUFFIX}, " if len(seq) < 20 else ""
        return (
            f"file name {named}{TASK_SUFFIX} starts with a {len(seq)}-digit sequence, but a sequence "
            f"must be 20 digits ({padded}or no sequence: {task_id}{TASK_SUFFIX})"
        )
    return f"file name says task {named!r} but task_id is {task_id!r}"


def _require_safe_id(task_id: str) -> None:
    if not is_safe_id(task_id):
        raise TaskNotFound(
            f"{task_id!r} is not a task id: ids are 1-128 letters, digits, '_', '-', '.' (no '/' or '..')"
        )


def encode(obj: Any) -> bytes:
    """Compact JSON; NaN and infinities are refused (they are not JSON)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


MAX_JSON_DEPTH = 64  # args and results nested deeper than this are refused: readers stop at 200 levels


def json_problem(value: Any, what: str) -> str | None:
    """Why ``value`` cannot travel through the queue as JSON, or None when it can.

    Refused: NaN and infinities (``1e400`` parses as one), lone surrogates (not UTF-8), other objects,
    and nesting deeper than ``MAX_JSON_DEPTH`` levels, which a reader would refuse later.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"{what} is nested deeper than {MAX_JSON_DEPTH} levels"
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    try:
        encode(value)
    except ValueError as exc:  # UnicodeEncodeError is a ValueError too
        return f"{what} is not valid JSON: {exc}"
    except TypeError as exc:
        return f"{what} is not JSON: {exc}"
    return None


def check_regular_file(path: Path, max_bytes: int) -> str | None:
    """Why ``path`` cannot be a task file without opening it, or None if it may be read."""
    name = path.name
    if name.endswith(".task.pkl"):
        return "pickle task files are never deserialized; submit JSON (*.task.json) instead"
    if not name.endswith(TASK_SUFFIX):
        return f"not a task file: expected a name ending in {TASK_SUFFIX}"
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        return f"{kind}: task files must be regular files"
    if info.st_size > max_bytes:
        return f"oversized: {info.st_size} bytes, over max_task_bytes ({max_bytes})"
    return None


def _describe_task_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        return f"invalid JSON: {errors[0]['msg']}"
    if any(e["loc"] == ("schema",) for e in errors):
        return f"wrong schema: expected {TASK_SCHEMA!r}"
    return "invalid task: " + "; ".join(describe_error(e) for e in errors)


def read_regular(path: Path, max_bytes: int) -> bytes:
    """A regular file's bytes, never following a symlink nor blocking on a FIFO (OSError otherwise)."""
    with open(path, "rb", opener=_open_no_follow) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise OSError(f"{path.name} is {info.st_size} bytes, over the limit of {max_bytes}")
        return handle.read()


def _open_no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def _remove_if_empty(folder: Path) -> None:
    try:
        os.rmdir(folder)
    except OSError:
        pass  # not empty after a failure: the supervisor requeues it once this process is gone


def list_visible(folder: Path) -> list[str]:
    """The names in ``folder`` that are not temp files (no leading dot), sorted; [] if it is gone."""
    try:
        return sorted(n for n in os.listdir(folder) if n[0] != ".")
    except (FileNotFoundError, NotADirectoryError):
        return []


def _count_terminal(folder: Path) -> int:
    try:
        return sum(1 for n in os.listdir(folder) if n[0] != "." and not n.endswith(REJECTION_SUFFIX))
    except FileNotFoundError:
        return 0


def _newest_terminal(folder: Path, limit: int) -> list[Path]:
    entries = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.endswith(TASK_SUFFIX) and entry.name[0] != ".":
                    entries.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
    except FileNotFoundError:
        return []
    entries.sort(reverse=True)
    return [Path(p) for _, p in entries[:limit]]
