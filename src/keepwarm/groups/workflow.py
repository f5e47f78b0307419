"""Workflow runs: a batch of tasks under one execution id, tracked and stopped together.

``start_workflow`` queues the tasks of one run on a service and returns its execution id at once:
``<name>-<user>-<NNNN>``, where ``NNNN`` is allocated per namespace by creating the run's record
without clobbering (``os.link``), so two starts never get the same number, on one machine or on a
shared filesystem. Each run keeps a small record under the namespace's share::

    <share_dir>/<namespace>/workflows/<NNNN>.json     keepwarm.workflow.v1: the run, its task ids, its state

``workflow_status`` counts the run's tasks in the queue's folders (pending, running, done, failed,
cancelled); ``stop_workflow`` cancels the run's pending tasks, and only those, and marks it
``terminated``: a task already running finishes, and other runs are not touched.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keepwarm._sys.atomic import publish_new, write_atomic
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm._sys.locks import locked_file
from keepwarm.api import Service
from keepwarm.env import Env, login_name, namespace_root
from keepwarm.errors import InvalidTaskError, KeepwarmError, Remedy, WorkflowNotFound
from keepwarm.queue.task import TASK_SUFFIX, PartialTask, Task, TaskRecord, is_safe_id, utc_now
from keepwarm.queue.taskfiles import list_visible, task_id_from_name
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.settings import ClusterSettings, describe_error, is_safe_name

WORKFLOW_SCHEMA = "keepwarm.workflow.v1"
WORKFLOWS_DIR = "workflows"
_NUMBERED = re.compile(r"^(\d{4,})\.json$")
_NAME_MAX_LENGTH = 48  # leaves room in an execution id for "-<user>-<NNNN>"

WorkflowState = Literal["running", "completed", "failed", "terminated"]


class WorkflowProgress(BaseModel):
    """Where the run's tasks are. ``failed`` excludes ``cancelled``; ``missing`` were pruned by retention."""

    model_config = ConfigDict(frozen=True)

    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    missing: int = 0


class WorkflowRecord(BaseModel):
    """``workflows/<NNNN>.json``: one run, as started, and its outcome once known."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_: str = Field(default=WORKFLOW_SCHEMA, alias="schema")
    execution_id: str
    name: str
    user: str
    namespace: str
    app: str
    app_dir: str
    share_dir: str
    queue_dir: str
    created_at: str
    task_ids: list[str]
    queued_at: str | None = None  # every task is in the queue: until then, missing tasks are not yet queued
    state: WorkflowState = "running"
    ended_at: str | None = None
    progress: WorkflowProgress | None = None  # the counts when the run ended, kept once its files are pruned


class WorkflowStatus(BaseModel):
    """A run's progress and state: ``running``, ``completed`` (every task done), ``failed`` (every task
    finished, at least one not done) or ``terminated`` (stopped)."""

    model_config = ConfigDict(frozen=True)

    execution_id: str
    name: str
    user: str
    namespace: str
    app: str
    state: WorkflowState
    total: int
    progress: WorkflowProgress
    created_at: str
    ended_at: str | None = None
    cancelled: list[str] = Field(default_factory=list)  # set by stop_workflow: the ids it cancelled
    already_ended: bool = False  # set by stop_workflow: the run had ended before, nothing was stopped

    @property
    def finished(self) -> bool:
        return self.state != "running"


# ---------------------------------------------------------------------- start


def start_workflow(
    service: Service,
    count: int | None = None,
    args: dict[str, Any] | None = None,
    *,
    tasks: Iterable[dict[str, Any]] | None = None,
    name: str | None = None,
    queue_only: bool = False,
) -> WorkflowStatus:
    """Queue a run of ``count`` tasks with ``args`` (or the partial ``tasks``) and return at once.

    Every task is validated (and its args checked by the app's ``args_model``) before an execution
    id is allocated; nothing is queued if one is refused. Refused (ServiceNotRunning) when the
    service is not running, as ``submit`` is, unless ``queue_only``: the tasks then wait for it.
    """
    env = service.env
    name = name or env.app_target
    if not is_safe_name(name, max_length=_NAME_MAX_LENGTH) or ".." in name:
        raise InvalidTaskError(
            f"workflow name {name!r}: use 1-48 letters, digits, '_', '-', '.' (first a letter or digit)"
        )
    if tasks is None:
        if count is None or count < 1:
            raise InvalidTaskError(f"a workflow needs at least one task (count = {count})")
        try:
            service.check_args(args or {})
        except ValueError as exc:
            raise InvalidTaskError(str(exc)) from None
        partials = [{"args": dict(args or {})} for _ in range(count)]
    else:
        if count is not None or args is not None:
            raise InvalidTaskError("give either count and args, or tasks: not both")
        partials = list(tasks)
        if not partials:
            raise InvalidTaskError("a workflow needs at least one task")
    prepared = _prepare(service, partials, name)
    if not queue_only:
        service.require_running_to_queue()  # submit's check, and its message
    folder = ensure_private_dir(env.share_root / env.namespace / WORKFLOWS_DIR)
    record = WorkflowRecord(
        execution_id="",
        name=name,
        user=login_name()[:32],
        namespace=env.namespace,
        app=env.app_target,
        app_dir=str(env.app_dir),
        share_dir=str(env.share_root),
        queue_dir=str(env.queue_dir),
        created_at=utc_now(),
        task_ids=[task.task_id for task in prepared],
    )
    record, path = _allocate(folder, record)
    for task in prepared:
        task.execution_id = record.execution_id
    try:
        service.queue.submit(prepared)
    except BaseException:
        service.queue.cancel(record.task_ids)  # whatever was queued before the failure
        path.unlink(missing_ok=True)
        raise
    with locked_file(folder / ".lock", create=True):
        record = _read(path, record.execution_id)
        record = record.model_copy(update={"queued_at": utc_now()})
        write_atomic(path, _encode(record))
        if record.state == "terminated":  # stopped while its tasks were being queued
            service.queue.cancel(record.task_ids, record.execution_id)
    return _status_of(record, _progress(service.queue, record.task_ids))


def _prepare(service: Service, partials: list[dict[str, Any]], name: str) -> list[Task]:
    """Validate every partial task and build it; InvalidTaskError naming the task otherwise."""
    tasks = []
    for number, obj in enumerate(partials, start=1):
        if not isinstance(obj, dict):
            raise InvalidTaskError(f"task {number}: expected a JSON object with 'args'")
        try:
            partial = PartialTask.model_validate({"task_name": name, **obj})
            service.check_args(partial.args)
        except ValidationError as exc:
            problems = "; ".join(describe_error(e) for e in exc.errors())
            raise InvalidTaskError(f"task {number}: {problems}") from None
        except ValueError as exc:
            raise InvalidTaskError(f"task {number}: {exc}") from None
        if partial.execution_id is not None:
            raise InvalidTaskError(f"task {number}: execution_id is the workflow's own; leave it out")
        tasks.append(service.queue.make_task(**partial.model_dump()))
    return tasks


def _allocate(folder: Path, record: WorkflowRecord) -> tuple[WorkflowRecord, Path]:
    """Publish the record under the next free number; the first ``os.link`` to a name wins it."""
    number = max((int(m.group(1)) for n in list_visible(folder) if (m := _NUMBERED.match(n))), default=0)
    while True:
        number += 1
        execution_id = f"{record.name}-{record.user}-{number:04d}"
        if not is_safe_id(execution_id):
            raise InvalidTaskError(f"execution id {execution_id!r} is not a safe id; choose a shorter name")
        claimed = record.model_copy(update={"execution_id": execution_id})
        path = folder / f"{number:04d}.json"
        if publish_new(path, _encode(claimed)):
            return claimed, path


# ---------------------------------------------------------------------- status and stop


def workflow_status(
    execution_id: str, *, namespace: str | None = None, share_dir: str | os.PathLike[str] | None = None
) -> WorkflowStatus:
    """A run's progress, counted in its queue's folders, and its state.

    The first call that finds every task finished records the outcome in the run's record, so the
    answer stays the same after retention prunes the task files.
    """
    return _current(*_find(execution_id, namespace, share_dir))


def stop_workflow(
    execution_id: str, *, namespace: str | None = None, share_dir: str | os.PathLike[str] | None = None
) -> WorkflowStatus:
    """Cancel the run's pending tasks, and only those, and mark it ``terminated``.

    A running task finishes; tasks of other runs are not touched. A run that has already ended
    (completed, failed or terminated) is left as it was: nothing is cancelled, and the answer says
    ``already_ended``.
    """
    folder, path, record = _find(execution_id, namespace, share_dir)
    status = _current(folder, path, record)  # a run whose tasks have all finished is recorded as ended
    if status.finished:
        return status.model_copy(update={"already_ended": True})
    with locked_file(folder / ".lock", create=True):
        record = _read(path, execution_id)
        if record.state != "running":  # it ended between the look above and the lock
            return _current(folder, path, record).model_copy(update={"already_ended": True})
        queue = _queue_of(record)
        cancelled = queue.cancel(record.task_ids, execution_id)
        record = record.model_copy(update={"state": "terminated", "ended_at": utc_now()})
        write_atomic(path, _encode(record))
    status = _status_of(record, _progress(queue, record.task_ids))
    return status.model_copy(update={"cancelled": cancelled})


def list_workflows(
    *, namespace: str | None = None, share_dir: str | os.PathLike[str] | None = None, limit: int = 20
) -> list[WorkflowStatus]:
    """The namespace's most recent runs, newest first, each with its live state and progress, as
    ``workflow_status`` gives them."""
    share, name = namespace_root(namespace, share_dir)
    folder = share / name / WORKFLOWS_DIR
    numbered = sorted(
        ((int(m.group(1)), n) for n in list_visible(folder) if (m := _NUMBERED.match(n))), reverse=True
    )
    runs = []
    for _, file_name in numbered[:limit]:
        path = folder / file_name
        try:
            record = WorkflowRecord.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            continue
        runs.append(_current(folder, path, record))
    return runs


async def astart_workflow(
    service: Service, count: int | None = None, args: dict[str, Any] | None = None, **options: Any
) -> WorkflowStatus:
    import asyncio

    return await asyncio.to_thread(start_workflow, service, count, args, **options)


async def aworkflow_status(execution_id: str, **options: Any) -> WorkflowStatus:
    import asyncio

    return await asyncio.to_thread(workflow_status, execution_id, **options)


async def astop_workflow(execution_id: str, **options: Any) -> WorkflowStatus:
    import asyncio

    return await asyncio.to_thread(stop_workflow, execution_id, **options)


# ---------------------------------------------------------------------- internals


def _current(folder: Path, path: Path, record: WorkflowRecord) -> WorkflowStatus:
    """The run's status now; the first look that finds every task finished records the outcome."""
    if record.state != "running" and record.progress is not None:
        return _status_of(record, record.progress)
    progress = _progress(_queue_of(record), record.task_ids)
    if record.state == "running" and record.queued_at and progress.pending == progress.running == 0:
        with locked_file(folder / ".lock", create=True):
            record = _read(path, record.execution_id)
            if record.state == "running":
                # A missing task's file was pruned by retention after it ended: it is not a failure.
                state: WorkflowState = "failed" if progress.failed or progress.cancelled else "completed"
                record = record.model_copy(
                    update={"state": state, "ended_at": utc_now(), "progress": progress}
                )
                write_atomic(path, _encode(record))
    return _status_of(record, progress)


def _find(
    execution_id: str, namespace: str | None, share_dir: str | os.PathLike[str] | None
) -> tuple[Path, Path, WorkflowRecord]:
    share, name = namespace_root(namespace, share_dir)
    folder = share / name / WORKFLOWS_DIR
    number = execution_id.rpartition("-")[2]
    if not is_safe_id(execution_id) or not number.isdigit():
        raise WorkflowNotFound(
            f"{execution_id!r} is not an execution id: ids look like mycode_project-alice-0001"
        )
    path = folder / f"{int(number):04d}.json"
    return folder, path, _read(path, execution_id, where=f"namespace {name!r} ({folder})")


def _read(path: Path, execution_id: str, where: str = "") -> WorkflowRecord:
    try:
        record = WorkflowRecord.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        record = None
    if record is None or record.execution_id != execution_id:
        raise WorkflowNotFound(
            f"no workflow run {execution_id!r} in {where or path.parent}",
            remedy=Remedy(
                "a run belongs to the namespace that started it",
                "pass --namespace (or set KEEPWARM_NAMESPACE), "
                "and --share-dir if its app sets [cluster] share_dir",
                arguments={"execution_id": execution_id, "namespace": "<the namespace that started it>"},
            ),
        )
    return record


def _queue_of(record: WorkflowRecord) -> TaskQueue:
    """The run's queue, with its app's settings when the app is still where it was."""
    try:
        settings = Env(
            record.app_dir, share_dir=record.share_dir, namespace=record.namespace
        ).settings.cluster
    except KeepwarmError:
        settings = ClusterSettings()
    return TaskQueue(Path(record.queue_dir), settings=settings)


def _progress(queue: TaskQueue, task_ids: list[str]) -> WorkflowProgress:
    """Each task's state from folder listings, in the order tasks move (pending, running, terminal),
    so a task that moves while we look is still counted, once, in its latest state."""
    wanted = set(task_ids)
    pending = {i for n in list_visible(queue.pending) if (i := task_id_from_name(n)) in wanted}
    running = {
        i
        for owner in list_visible(queue.running)
        for n in list_visible(queue.running / owner)
        if (i := task_id_from_name(n)) in wanted
    }
    done = {n[: -len(TASK_SUFFIX)] for n in list_visible(queue.done) if n.endswith(TASK_SUFFIX)} & wanted
    ended = {n[: -len(TASK_SUFFIX)] for n in list_visible(queue.failed) if n.endswith(TASK_SUFFIX)} & wanted
    ended -= done
    cancelled = {i for i in ended if _status_in(queue, i) == "cancelled"}
    running -= done | ended
    pending -= done | ended | running
    return WorkflowProgress(
        pending=len(pending),
        running=len(running),
        done=len(done),
        failed=len(ended) - len(cancelled),
        cancelled=len(cancelled),
        missing=len(wanted - pending - running - done - ended),
    )


def _status_in(queue: TaskQueue, task_id: str) -> str | None:
    try:
        record: TaskRecord | None = queue.read_record(task_id)
    except (OSError, ValidationError):
        return None
    return record.status if record is not None else None


def _status_of(record: WorkflowRecord, progress: WorkflowProgress) -> WorkflowStatus:
    """The run's fields of the status's names, with its total and its ``progress`` now."""
    fields = {**dict(record), "total": len(record.task_ids), "progress": progress}
    return WorkflowStatus.model_validate(fields)


def _encode(record: WorkflowRecord) -> bytes:
    return record.model_dump_json(by_alias=True, indent=1).encode()
