"""The file queue: one folder per task state, ownership by rename, terminal files without clobber.

The folders are ``queue/layout.py``'s ``QueueLayout``: ``pending/``, ``running/<slot>.<incarnation>/``
(a claimed task: the folder is its owner), ``done/``, ``failed/`` (terminal records of failed and
cancelled tasks, and rejected files under their own name, with ``.rejection.txt`` beside them) and
``heartbeats/``.

This module submits, claims and publishes; ``recovery.py`` requeues, cancels and retries; ``listing.py``
locates, lists and counts. ``TaskQueue`` offers all of them. It knows files and renames only: not
loops, health or processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from keepwarm._sys.atomic import fsync_dir, publish_new, write_temp
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm.errors import InvalidTaskError, QueueFull, storage_error
from keepwarm.queue.events import EventLog
from keepwarm.queue.layout import QueueLayout, events_path_of_queue
from keepwarm.queue.listing import (
    QueueCounts,
    TaskLocation,
    TaskRow,
    count_tasks,
    list_task_rows,
    locate_task,
    scan_pending_unsorted,
)
from keepwarm.queue.recovery import (
    RequeueOutcome,
    Retried,
    cancel_pending,
    reject_file,
    reject_task_file,
    requeue_claimed,
    requeue_owner,
    retry_failed,
)
from keepwarm.queue.task import (
    TASK_SCHEMA,
    TASK_SUFFIX,
    PartialTask,
    Task,
    TaskRecord,
    new_task_id,
)
from keepwarm.queue.taskfiles import (
    MAX_JSON_DEPTH,
    describe_task_error,
    encode,
    json_problem,
    list_visible,
    loads_plain,
    name_problem,
    next_seq,
    pending_name,
    read_claimed,
    read_regular,
    require_safe_id,
    task_id_from_name,
)
from keepwarm.settings import ClusterSettings, describe_error

if TYPE_CHECKING:
    from keepwarm.env import Env


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
        self.layout = QueueLayout(root)
        self.settings = settings or ClusterSettings()
        self.events = events or EventLog(events_path_of_queue(root))
        self.pending = self.layout.pending
        self.running = self.layout.running
        self.done = self.layout.done
        self.failed = self.layout.failed
        self.heartbeats = self.layout.heartbeats
        self._pending_prefix = f"{self.pending}{os.sep}"
        self._done_prefix = f"{self.done}{os.sep}"
        self._failed_prefix = f"{self.failed}{os.sep}"

    @classmethod
    def for_env(cls, env: Env) -> TaskQueue:
        """The queue of ``env``'s service, with its ``[cluster]`` settings."""
        return cls(env.queue_dir, settings=env.settings.cluster)

    @property
    def durable(self) -> bool:
        """Whether writes are fsynced (``[cluster] durable``)."""
        return self.settings.durable

    def ensure(self) -> TaskQueue:
        """Create the queue's folders (mode 0700) if they are missing."""
        for folder in self.layout.folders:
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
        return [task for task, _ in self._publish(tasks)]

    def publish(self, tasks: Iterable[Task]) -> list[tuple[Task, Path]]:
        """``submit``, returning each task with the path of its pending file."""
        return [(task, Path(path)) for task, path in self._publish(tasks)]

    def _publish(self, tasks: Iterable[Task]) -> list[tuple[Task, str]]:
        batch = list(tasks)
        encoded = self._encode_batch(batch)
        self._refuse_past_max_pending(len(batch))
        # All or nothing: every task is written to a temp file first (where a full or read-only share
        # fails), and only then renamed into pending/ (a rename needs no space).
        staged: list[tuple[Task, str]] = []
        try:
            for task, data in zip(batch, encoded, strict=True):
                staged.append((task, self._write_pending_temp(task.task_id, data)))
        except OSError as exc:
            for _, temp in staged:
                _unlink_if_there(temp)
            raise storage_error(exc, self.pending, "nothing was queued") from None
        published = []
        for task, temp in staged:
            path = self._pending_prefix + pending_name(next_seq(), task.task_id)
            os.rename(temp, path)
            published.append((task, path))
        if self.durable:
            fsync_dir(self.pending)
        return published

    def _write_pending_temp(self, task_id: str, data: bytes) -> str:
        try:
            return write_temp(self.pending, task_id, data, self.durable)
        except FileNotFoundError:  # the queue's folders are not made yet (or were removed)
            self.ensure()
            return write_temp(self.pending, task_id, data, self.durable)

    def _encode_batch(self, batch: list[Task]) -> list[bytes]:
        """Each task's file content; InvalidTaskError for the first one that cannot be queued.

        Each task is encoded once; ``json_problem`` runs only for a task whose encoding failed or
        holds enough brackets that its args or plan might be nested too deep.
        """
        encoded = [self._encode_task(task) for task in batch]
        for task, data in zip(batch, encoded, strict=True):
            if len(data) > self.settings.max_task_bytes:
                raise InvalidTaskError(
                    f"task {task.task_id} is {len(data)} bytes, over max_task_bytes "
                    f"({self.settings.max_task_bytes}); pass large inputs by reference (a path)"
                )
        return encoded

    @staticmethod
    def _encode_task(task: Task) -> bytes:
        try:
            data: bytes | None = encode(task.to_json_dict())
        except (ValueError, TypeError, RecursionError):
            data = None
        if data is not None and data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
            return data
        problem = json_problem(task.args, f"task {task.task_id}: args") or json_problem(
            task.plan, f"task {task.task_id}: plan"
        )
        if problem or data is None:
            raise InvalidTaskError(f"{problem or f'task {task.task_id} is not JSON'}; nothing was queued")
        return data

    def _refuse_past_max_pending(self, adding: int) -> None:
        """QueueFull if ``adding`` more tasks would pass ``[cluster] max_pending``."""
        limit = self.settings.max_pending
        if limit is None:
            return
        pending = self.count_pending()
        if pending + adding > limit:
            raise QueueFull(
                f"queue {self.pending} holds {pending} pending tasks; {adding} more would pass "
                f"max_pending = {limit}. Wait for the loops to catch up, add loops, or raise "
                "[cluster] max_pending"
            )

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
        """``running/<slot>.<incarnation>/``: where that loop incarnation's claims go."""
        return self.layout.owner_dir(slot, incarnation)

    def scan_pending(self) -> list[str]:
        """Names of the pending files (temp files skipped), oldest first. Lists; never parses."""
        return list_visible(self.pending)

    def claim(self, name: str, owner: Path) -> Path | None:
        """Move ``pending/name`` into ``owner``; the path if this caller won, None if another did."""
        claimed = self.claim_into(name, f"{owner}{os.sep}")
        return None if claimed is None else Path(claimed)

    def claim_into(self, name: str, owner_prefix: str, *, held: bool = False) -> str | None:
        """``claim`` with paths as strings (``owner_prefix`` ends with a separator): a loop's hot path.

        ``held``: the owner claimed this name before and may still hold it, so finding it in the
        owner's folder after an ENOENT is no win (the name was a stale duplicate).
        """
        target = owner_prefix + name
        try:
            os.rename(self._pending_prefix + name, target)
        except FileNotFoundError:
            # A retried rename on a network filesystem can report ENOENT to the winner.
            return target if not held and os.path.lexists(target) else None
        return target

    def reject(self, path: Path, reason: str) -> Path:
        """Move an invalid file to ``failed/``, unopened, with its reason beside it: see ``reject_file``."""
        return reject_file(self, path, reason)

    # ------------------------------------------------------------------ terminal files

    def terminal_path(self, task_id: str) -> Path | None:
        require_safe_id(task_id)
        for folder in (self.done, self.failed):
            path = folder / self.layout.terminal_name(task_id)
            if os.path.lexists(path):
                return path
        return None

    def publish_terminal(self, record: TaskRecord) -> bool:
        """Publish a terminal record; False (a duplicate) if the task already has one.

        The link into the record's own folder refuses a second file there; the other folder is
        checked first, so a task never ends both done and failed.
        """
        return self._publish_terminal_bytes(record.task_id, record.status, encode(record.to_json_dict()))

    def _publish_terminal_bytes(
        self, task_id: str, status: str, data: bytes, temp_dir: str | None = None
    ) -> bool:
        name = task_id + TASK_SUFFIX
        folder, other = self._done_prefix, self._failed_prefix
        if status != "done":
            folder, other = other, folder
        if os.path.lexists(other + name):
            return False
        return publish_new(folder + name, data, self.durable, temp_dir)

    def finish(self, claimed: Path, record: TaskRecord) -> bool:
        """Publish the terminal record of a claimed task, then release the claim."""
        return self.finish_encoded(claimed, record.task_id, record.status, encode(record.to_json_dict()))

    def finish_encoded(self, claimed: str | Path, task_id: str, status: str, data: bytes) -> bool:
        """``finish`` with the record already encoded; its temp file is written beside the claim."""
        won = self._publish_terminal_bytes(task_id, status, data, os.path.dirname(claimed))
        if not won:
            self.events.append("duplicate", task_id=task_id, status=status)
        os.unlink(claimed)
        return won

    def has_terminal(self, task_id: str) -> bool:
        """Whether a (safe, already checked) task id has a terminal file: two ``lstat`` and no more."""
        name = task_id + TASK_SUFFIX
        return os.path.lexists(self._done_prefix + name) or os.path.lexists(self._failed_prefix + name)

    def read_terminal(self, task_id: str) -> TaskRecord | None:
        """A (safe, already checked) task's terminal record, or None when it has none yet (or it is
        unreadable: removed by retention between a look and the read, or not a record).

        Opens the record in ``done/``, then in ``failed/``: no ``lstat`` before the reads.
        """
        name = task_id + TASK_SUFFIX
        limit = self.settings.max_result_bytes * 2
        for prefix in (self._done_prefix, self._failed_prefix):
            try:
                return TaskRecord.model_validate_json(read_regular(prefix + name, limit))
            except FileNotFoundError:
                continue
            except (OSError, ValidationError):
                return None
        return None

    def read_record(self, task_id: str) -> TaskRecord | None:
        path = self.terminal_path(task_id)
        if path is None:
            return None
        return TaskRecord.model_validate_json(read_regular(path, self.settings.max_result_bytes * 2))

    def load_claimed(self, path: str | Path) -> Task | None:
        """Parse a claimed file; an invalid one is rejected to ``failed/`` and None returned."""
        problem = self._parse_claimed(path)
        if isinstance(problem, Task):
            return problem
        reject_task_file(self, Path(path), problem)
        return None

    def _parse_claimed(self, path: str | Path) -> Task | str:
        raw = read_claimed(path, self.settings.max_task_bytes)
        if isinstance(raw, str):
            return raw
        task = self._parse_plain(raw)
        plain = task is not None
        if task is None:  # the JSON parser's verdict and messages, and the full JSON check below
            try:
                task = Task.model_validate_json(raw)
            except ValidationError as exc:
                return describe_task_error(exc)
            except RecursionError as exc:
                return f"unreadable: {exc}"
        expected = task_id_from_name(os.path.basename(path))
        if expected is not None and expected != task.task_id:
            return name_problem(expected, task.task_id)
        problem = None if plain else json_problem(task.args, "args") or json_problem(task.plan, "plan")
        return problem if problem is not None else self._with_defaults(task)

    @staticmethod
    def _parse_plain(raw: bytes) -> Task | None:
        """The task, when its text is plain JSON (``loads_plain``) and valid; else None."""
        value = loads_plain(raw)
        if not isinstance(value, dict):
            return None
        try:
            return Task.model_validate(value)
        except ValidationError:
            return None

    def _with_defaults(self, task: Task) -> Task:
        """A file written by another tool gets ``[cluster]``'s defaults for what it left out."""
        if task.timeout_sec is None:
            task.timeout_sec = self.settings.task_timeout_sec
        if "max_attempts" not in task.model_fields_set:
            task.max_attempts = self.settings.max_attempts
        return task

    # ------------------------------------------------------------------ requeue, cancel, retry

    def requeue(self, owner: Path, reason: str, *, count_attempt: bool = True) -> list[RequeueOutcome]:
        """Send the tasks a dead (or stopped) owner held back to ``pending/``: see ``requeue_owner``."""
        return requeue_owner(self, owner, reason, count_attempt=count_attempt)

    def requeue_claimed(self, path: Path, slot: str, reason: str) -> RequeueOutcome | None:
        """Send one claimed task back to ``pending/`` for another attempt: see ``requeue_claimed``."""
        return requeue_claimed(self, path, slot, reason)

    def cancel(self, task_ids: Iterable[str] = (), execution_id: str | None = None) -> list[str]:
        """Cancel pending tasks by id or by execution id; the ids cancelled: see ``cancel_pending``."""
        return cancel_pending(self, task_ids, execution_id)

    def retry(self, task_ids: Iterable[str] = (), *, all_failed: bool = False) -> Retried:
        """Send failed or cancelled tasks back to ``pending/``: see ``retry_failed``."""
        return retry_failed(self, task_ids, all_failed=all_failed)

    # ------------------------------------------------------------------ inspection

    def count_pending(self) -> int:
        """How many tasks wait in ``pending/`` (temp files skipped)."""
        return len(scan_pending_unsorted(self))

    def scan_pending_unsorted(self) -> list[str]:
        """Names of the pending files (temp files skipped), in no order."""
        return scan_pending_unsorted(self)

    def counts(self, now: float | None = None) -> QueueCounts:
        """Tasks per state, from folder listings alone: see ``count_tasks``."""
        return count_tasks(self, now)

    def locate(self, task_id: str) -> TaskLocation:
        """Where a task is now; TaskNotFound if nowhere: see ``locate_task``."""
        return locate_task(self, task_id)

    def list_tasks(self, state: str | None = None, limit: int = 100) -> list[TaskRow]:
        """Rows of tasks, at most ``limit`` per state, newest terminal records first (``list_task_rows``)."""
        return list_task_rows(self, state, limit)


def _unlink_if_there(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
