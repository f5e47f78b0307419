"""keepwarm's core API: what every surface (CLI, web page, MCP, façade) calls."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError

from keepwarm.app import describe_args_error, load_args_model
from keepwarm.env import Env
from keepwarm.errors import (
    InvalidArgs,
    InvalidTaskError,
    KeepwarmError,
    ResultTimeout,
    ServiceNotRunning,
)
from keepwarm.queue.listing import QueueCounts, TaskRow
from keepwarm.queue.outcomes import Cancelled, TaskOutcome
from keepwarm.queue.recovery import Retried
from keepwarm.queue.results import TaskHandle, result_watch, value_of, wait_for_records
from keepwarm.queue.task import Task, TaskRecord, is_safe_id, parse_task_lines
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.service.control import CancelArgs, DrainArgs, RestartArgs, RollingRestartArgs, ScaleArgs
from keepwarm.service.delivery import DeliveryWatch
from keepwarm.service.exports import write_report, write_snapshot
from keepwarm.service.gate import GateResult, GateThresholds, evaluate_gate
from keepwarm.service.health import evaluate_health
from keepwarm.service.logs import LogTail, log_files
from keepwarm.service.report import HealthReport

P = ParamSpec("P")
T = TypeVar("T")


class Service:
    """One app's service: its queue and, once started, its supervisor and loops."""

    def __init__(self, env: Env, *, check_args: bool = True) -> None:
        self.env = env
        self.queue = TaskQueue.for_env(env)
        self._check = check_args

    @cached_property
    def _args_model(self) -> type[BaseModel] | None:
        return load_args_model(self.env) if self._check else None

    def check_args(self, args: dict[str, Any]) -> None:
        """Refuse args the app's ``args_model`` rejects (InvalidArgs, a ValueError, with the model's
        errors per field), before they reach the queue."""
        if self._args_model is not None:
            try:
                self._args_model.model_validate(args)
            except ValidationError as exc:
                fields = exc.errors(include_url=False, include_context=False, include_input=False)
                raise InvalidArgs(describe_args_error(exc), [dict(error) for error in fields]) from None

    @property
    def args_model(self) -> type[BaseModel] | None:
        """The app's ``args_model`` (None when it has none, or when args are not checked)."""
        return self._args_model

    def __repr__(self) -> str:
        return f"Service({self.env.app_target!r}, namespace={self.env.namespace!r})"

    def submit(
        self,
        args: dict[str, Any] | None = None,
        *,
        task_name: str = "task",
        execution_id: str | None = None,
        max_attempts: int | None = None,
        timeout_sec: float | None = None,
        plan: Any = None,
        queue_only: bool = False,
    ) -> TaskHandle:
        """Queue one task; the handle's ``result(timeout)`` waits for what ``work()`` returned.

        Refused (ServiceNotRunning, naming both ways out) when no service of the app is running;
        ``queue_only=True`` queues the task for the service's next start instead. The same rule as
        ``keepwarm submit --queue-only`` and MCP ``submit_task(queue_only=true)``. The args are
        checked against the app's ``args_model`` next: InvalidTaskError if refused.
        """
        if not queue_only:
            self.require_running_to_queue()
        self.check_args(args or {})
        task = self.queue.make_task(
            args,
            task_name=task_name,
            execution_id=execution_id,
            max_attempts=max_attempts,
            timeout_sec=timeout_sec,
            plan=plan,
        )
        since = result_watch(self.queue).token()  # before the task exists: its record is an event
        self.queue.submit([task])
        return TaskHandle(self.queue, task.task_id, since)

    def submit_many(self, tasks: Iterable[dict[str, Any]], *, queue_only: bool = False) -> list[TaskHandle]:
        """Queue many partial tasks (``{"args": ..., "task_name": ...}``), all or none.

        Refused (ServiceNotRunning) when no service is running, unless ``queue_only=True``: as for
        :meth:`submit`.
        """
        if not queue_only:
            self.require_running_to_queue()
        return self._submit_numbered(enumerate(tasks, start=1), "task")

    def submit_jsonl(
        self, text: str, source: str = "TASKS.jsonl", *, queue_only: bool = False, **defaults: Any
    ) -> list[TaskHandle]:
        """Queue the tasks of a JSONL text (one partial task per line), all or none.

        ``defaults`` (``task_name``, ``execution_id``, ``max_attempts``, ``timeout_sec``) fill what a
        line leaves out. Errors name ``source`` and the line. Refused (ServiceNotRunning) when no
        service is running, unless ``queue_only=True``: as for :meth:`submit`.
        """
        if not queue_only:
            self.require_running_to_queue()
        try:
            lines = parse_task_lines(text, source)
        except ValueError as exc:
            raise InvalidTaskError(str(exc)) from None
        if not lines:
            raise InvalidTaskError(f"{source}: no tasks (one JSON object per line)")
        for _, obj in lines:
            for key, value in defaults.items():
                if value is not None:
                    obj.setdefault(key, value)
        return self._submit_numbered(lines, source)

    def submit_planned(
        self,
        plans: Iterable[dict[str, Any] | None],
        args: dict[str, Any] | None = None,
        *,
        task_name: str = "task",
        execution_id: str | None = None,
        queue_only: bool = False,
    ) -> list[tuple[Task, Path]]:
        """Queue one task per plan, all with the same args, all or none; each task with its pending file.

        Refused (ServiceNotRunning) when no service is running, unless ``queue_only=True``, then
        (InvalidTaskError) when the app's ``args_model`` rejects the args: as for :meth:`submit`.
        """
        if not queue_only:
            self.require_running_to_queue()
        tasks = [
            self.queue.make_task(args or {}, task_name=task_name, execution_id=execution_id, plan=plan)
            for plan in plans
        ]
        self.check_args(args or {})
        return self.queue.publish(tasks)

    def _submit_numbered(self, lines: Iterable[tuple[int, dict[str, Any]]], source: str) -> list[TaskHandle]:
        since = result_watch(self.queue).token()
        submitted = self.queue.submit_partials(lines, source=source, check_args=self.check_args)
        return [TaskHandle(self.queue, task.task_id, since) for task in submitted]

    def require_running(self) -> None:
        """ServiceNotRunning, saying how to start it, unless the service's supervisor is alive."""
        from keepwarm.service import lifecycle

        lifecycle.live_supervisor(self.env)

    def require_running_to_queue(self) -> None:
        """The one check of every submit (submit, submit_many, submit_jsonl, AGI.submit, the CLI, MCP)
        and start_workflow: ServiceNotRunning, naming both ways out (start it, or queue for its next
        start), unless the service's supervisor is alive."""
        try:
            self.require_running()
        except ServiceNotRunning as exc:
            advice = "queue the tasks for its next start with --queue-only (queue_only=True), or start it"
            remedy = None if exc.remedy is None else replace(exc.remedy, advice=advice)
            raise ServiceNotRunning(exc.problem, remedy=remedy) from None

    def wait(
        self,
        task_ids: Iterable[str],
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[TaskRecord]:
        """The tasks' terminal records, in order, once every one has finished.

        Gives up with ResultTimeout after ``timeout`` seconds, and with ServiceCannotDeliver when
        the service stops during the wait or every loop keeps failing to start (the tasks stay
        queued). A service that is not running yet is waited for. ``progress`` is called with the
        number of records collected so far as they arrive.
        """
        ids = list(task_ids)
        records = wait_for_records(self.queue, ids, timeout, progress, watch=DeliveryWatch(self.env))
        return [records[task_id] for task_id in ids]

    def record(self, task_id: str, timeout: float | None = None) -> TaskRecord:
        """Wait for a task's terminal record (TaskNotFound if no such task is anywhere in the queue);
        gives up as :meth:`wait` does."""
        self.queue.locate(task_id)
        return self.wait([task_id], timeout)[0]

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """Wait for a task's result: what ``work()`` returned, or TaskFailed with the remote error and
        traceback. Gives up as :meth:`wait` does."""
        return value_of(self.record(task_id, timeout))

    def outcome(
        self, task_id: str, timeout: float | None = 0.0, *, watch_delivery: bool = False
    ) -> TaskOutcome:
        """A task's outcome once it has finished, else where it is, waiting up to ``timeout`` seconds
        (None: until it finishes) for it to finish; never raises for how the task ended.

        TaskNotFound if no such task is anywhere in the queue. With ``watch_delivery``, the wait
        gives up with ServiceCannotDeliver as :meth:`wait` does.
        """
        self.queue.locate(task_id)
        watch = DeliveryWatch(self.env) if watch_delivery else None
        gave_up = None
        try:
            record: TaskRecord | None = wait_for_records(self.queue, [task_id], timeout, watch=watch)[task_id]
        except ResultTimeout as exc:
            gave_up, record = str(exc), self.queue.read_record(task_id)
        if record is None:
            return TaskOutcome(task_id, self.queue.locate(task_id).state, gave_up=gave_up)
        return TaskOutcome.of(record)

    def handle(self, task_id: str) -> TaskHandle:
        self.queue.locate(task_id)
        return TaskHandle(self.queue, task_id)

    def tasks(self, state: str | None = None, limit: int = 100) -> list[TaskRow]:
        """Rows of tasks, at most ``limit`` per state (one of ``TASK_STATES``), newest finished first."""
        return self.queue.list_tasks(state, limit)

    def cancel(self, task_ids: Iterable[str] = (), execution_id: str | None = None) -> Cancelled:
        """Cancel tasks by id or execution id; returns the ids cancelled, a list whose
        ``not_cancelled`` says where each other id given is (its state, or ``not found``).

        With a live supervisor, running tasks are cancelled too (their loop is restarted); without
        one, only pending tasks can be.
        """
        from keepwarm.service import lifecycle

        ids = list(task_ids)
        named = [task_id for task_id in ids if is_safe_id(task_id)]  # any other id is "not found"
        if not named and ids and execution_id is None:
            return Cancelled([], dict.fromkeys(ids, "not found"))
        try:
            ack = lifecycle.command(self.env, CancelArgs(task_ids=named, execution_id=execution_id))
            cancelled = [*ack.result.get("cancelled", []), *ack.result.get("running_cancelled", [])]
        except ServiceNotRunning:
            cancelled = self.queue.cancel(named, execution_id)
        return Cancelled(
            cancelled, {task_id: self._where(task_id) for task_id in ids if task_id not in cancelled}
        )

    def _where(self, task_id: str) -> str:
        try:
            return self.queue.locate(task_id).state
        except KeepwarmError:
            return "not found"

    def retry(self, task_ids: Iterable[str] = (), *, failed: bool = False) -> Retried:
        """Send failed or cancelled tasks (or, with ``failed=True``, all of them) back to the queue.

        Returns the ids retried, a list whose ``not_retried`` says why each other one was not (not
        found among failed tasks, a rejected file, not a task record): those are skipped, never fatal.
        """
        return self.queue.retry(task_ids, all_failed=failed)

    # ------------------------------------------------------------------ service mode

    def start(
        self, *, slots: int | None = None, timeout: float | None = None, backend: str | None = None
    ) -> HealthReport:
        """Start the supervisor and its loops; returns once every loop is ready (or raises).

        ``backend`` ("local" or "dask") overrides ``[cluster] backend`` for this start.
        """
        from keepwarm.service import lifecycle

        lifecycle.start_service(self.env, slots=slots, timeout=timeout, backend=backend)
        return self.status()

    def run_foreground(self, *, slots: int | None = None, backend: str | None = None) -> int:
        """Run the supervisor in this process (systemd, containers) until it stops; its exit code."""
        from keepwarm.service import lifecycle

        return lifecycle.run_foreground(self.env, slots=slots, backend=backend)

    @property
    def supervisor_log(self) -> Path:
        """The supervisor's log file."""
        from keepwarm.service import lifecycle

        return lifecycle.supervisor_log(self.env)

    def stop(self, *, timeout: float | None = None, shutdown: bool | None = None) -> dict[str, Any]:
        """Stop from any process: loops finish their task within ``timeout``, the rest is requeued.

        ``shutdown`` (default ``[cluster] shutdown_on_stop``) also shuts down a Dask cluster keepwarm
        started; ``False`` leaves it running for the next start.
        """
        from keepwarm.service import lifecycle

        return lifecycle.stop_service(self.env, timeout=timeout, shutdown=shutdown).model_dump()

    def status(self) -> HealthReport:
        """The service's state from its files alone (read-only, milliseconds)."""
        return evaluate_health(self.env)

    def health(
        self,
        *,
        output: Path | None = None,
        allow_idle: bool | None = None,
        max_unhealthy: int | None = None,
        max_restart_rate: float | None = None,
        max_pending_age_sec: float | None = None,
    ) -> tuple[HealthReport, GateResult]:
        """The health report and the SLA gate's verdict (``[cluster.service_health]``, overridable)."""
        report = evaluate_health(self.env)
        thresholds = GateThresholds.from_settings(
            self.env.settings.cluster.service_health,
            allow_idle=allow_idle,
            max_unhealthy=max_unhealthy,
            max_restart_rate=max_restart_rate,
            max_pending_age_sec=max_pending_age_sec,
        )
        if output is not None:
            write_report(report, output)
        return report, evaluate_gate(report, thresholds)

    def snapshot(self) -> Path:
        """Write ``service_operator_snapshot.json`` to the log dir; its path."""
        return write_snapshot(self.env)

    def logs(self, loop: str | None = None) -> LogTail:
        """The service's logs that exist (``loop``'s only, else the supervisor's and every loop's),
        to read their last lines and follow what is appended."""
        return LogTail(log_files(self.env.log_dir, loop))

    def scale(self, slots: int | None = None, *, auto: bool = False) -> dict[str, Any]:
        """Run ``slots`` loops from now on; returns ``{"from": N, "to": M}``.

        With autoscaling on (``[cluster.autoscale]``) the count is pinned until ``scale(auto=True)``
        hands it back to the autoscaler; the answer then also says so under ``autoscale``.
        """
        from keepwarm.service import lifecycle

        if (slots is None) == (not auto):
            raise ValueError("scale needs exactly one of: a number of loops, or auto=True")
        return lifecycle.command(self.env, ScaleArgs(slots=slots, auto=auto)).result

    def drain(self) -> str:
        """Serve until nothing is pending or running, then stop."""
        from keepwarm.service import lifecycle

        return lifecycle.command(self.env, DrainArgs()).message

    def restart(self, slot: str | None = None, *, rolling: bool = False) -> str:
        """Restart one loop gracefully, or all of them one at a time (``rolling``)."""
        from keepwarm.service import lifecycle

        if rolling == (slot is not None):
            raise ValueError("restart needs exactly one of: a slot, or rolling=True")
        if rolling:
            return lifecycle.command(self.env, RollingRestartArgs()).message
        return lifecycle.command(self.env, RestartArgs(slot=slot)).message

    def counts(self) -> QueueCounts:
        return self.queue.counts()

    async def astart(self, **options: Any) -> HealthReport:
        return await _in_thread(self.start, **options)

    async def astop(self, **options: Any) -> dict[str, Any]:
        return await _in_thread(self.stop, **options)

    async def astatus(self) -> HealthReport:
        return await _in_thread(self.status)

    async def ahealth(self, **options: Any) -> tuple[HealthReport, GateResult]:
        return await _in_thread(self.health, **options)

    async def ascale(self, slots: int) -> dict[str, Any]:
        return await _in_thread(self.scale, slots)

    async def adrain(self) -> str:
        return await _in_thread(self.drain)

    async def arestart(self, slot: str | None = None, *, rolling: bool = False) -> str:
        return await _in_thread(self.restart, slot, rolling=rolling)

    async def acancel(self, task_ids: Iterable[str] = (), execution_id: str | None = None) -> Cancelled:
        return await _in_thread(self.cancel, list(task_ids), execution_id)

    async def asubmit(
        self, args: dict[str, Any] | None = None, *, queue_only: bool = False, **options: Any
    ) -> TaskHandle:
        """:meth:`submit` off the event loop: refused when no service is running unless ``queue_only``."""
        return await _in_thread(self.submit, args, queue_only=queue_only, **options)

    async def aresult(self, task_id: str, timeout: float | None = None) -> Any:
        return await _in_thread(self.result, task_id, timeout)


async def _in_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking call off the event loop (asyncio is imported here: the sync CLI never needs it)."""
    import asyncio

    return await asyncio.to_thread(function, *args, **kwargs)


__all__ = ["Service", "Task"]
