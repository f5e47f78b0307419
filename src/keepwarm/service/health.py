"""Service health: a service's files turned into a verdict (``agi.service.health.v1``).

The verdict is computed from ``service.json``, ``supervisor.json``, the loops' heartbeats and folder
listings of the queue, so any process can ask, in milliseconds, without a live connection. Nothing
here writes. The SLA gate is in :mod:`keepwarm.service.gate`, the Prometheus text and the operator
snapshot in :mod:`keepwarm.service.exports`.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from keepwarm import __version__
from keepwarm.env import Env
from keepwarm.queue.listing import count_tasks
from keepwarm.queue.shareclock import Clock
from keepwarm.queue.state import (
    Condition,
    ConditionKind,
    LoopRow,
    RestartEntry,
    RestartReason,
    ServiceRecord,
    ServiceStatus,
    SupervisorState,
    app_change,
    is_planned,
    read_service_record,
    read_supervisor_state,
    settings_in_force,
    stale_heartbeat,
)
from keepwarm.queue.task import epoch_of, iso_of
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.runtime.heartbeat import Heartbeat, read_heartbeat
from keepwarm.service.clocks import rebase_heartbeat, rebase_supervisor_state
from keepwarm.service.liveness import SupervisorLiveness, current_supervisor_state, supervisor_liveness
from keepwarm.service.report import (
    AutoscaleHealth,
    CleanupPolicy,
    HealthModel,
    HealthReport,
    QueueHealth,
    SupervisorHealth,
    WorkerHealth,
)
from keepwarm.settings import ClusterSettings

_Section = TypeVar("_Section", bound=HealthModel)

STORAGE_LOW_BYTES = 64 * 1024  # less free space than this on the share reads as full

# What a loop's own end means when the supervisor has not (yet) named a reason for it.
_FUTURE_REASONS: dict[str, RestartReason] = {
    "finished": RestartReason.LOOP_FINISHED,
    "error": RestartReason.LOOP_ERROR,
    "cancelled": RestartReason.LOOP_CANCELLED,
}


@dataclass(frozen=True)
class _LoopGroups:
    """The slots of a report grouped by what their rows say."""

    rows: list[WorkerHealth]

    @property
    def healthy(self) -> list[str]:
        return [r.worker for r in self.rows if r.healthy]

    @property
    def unhealthy(self) -> list[str]:
        return [r.worker for r in self.rows if r.reason is not None]

    @property
    def pending(self) -> list[str]:
        return [r.worker for r in self.rows if r.pending]

    @property
    def starting(self) -> list[str]:
        """Pending, and not by plan."""
        return [r.worker for r in self.rows if r.pending and r.planned is None]

    @property
    def running(self) -> list[str]:
        return [r.worker for r in self.rows if r.future_state == "running"]

    @property
    def serving(self) -> int:
        """Loops that serve; one in a planned change (restart, recycle, scale) does: planned never alarms."""
        return len(self.healthy) + len(self.pending) - len(self.starting)


# ---------------------------------------------------------------------- the service


def evaluate_health(env: Env, *, now: float | None = None) -> HealthReport:
    """The service's health from its files alone: status word, loop rows, queue, supervisor.

    Reads ``service.json``, ``supervisor.json`` and the heartbeat of each slot in the loop table, and
    counts the queue from folder listings (no task file is opened, so 10,000 pending tasks cost a
    listing). ``now`` (epoch seconds) defaults to the clock, and the times other processes wrote are
    then moved onto it through the share's clock (``service.clocks``: hosts' clocks disagree); tests
    pass ``now`` for determinism, and the written times are then taken as they are.
    """
    clock = Clock.of_share(env.queue_dir, time.time()) if now is None else Clock.fixed(now)
    now = clock.now
    record = read_service_record(env.layout.service_record)
    beats = _heartbeats(env, read_supervisor_state(env.layout.supervisor_state), clock)
    # Read after the heartbeats: the supervisor publishes a planned change before it signals the loop,
    # so a loop's exit seen in its heartbeat is never judged by a loop table older than that exit.
    state = current_supervisor_state(record, read_supervisor_state(env.layout.supervisor_state))
    if state is not None:
        state = rebase_supervisor_state(state, env.layout.supervisor_state, clock)
    cluster = settings_in_force(env, record).cluster
    task_queue = TaskQueue(env.queue_dir, settings=cluster)
    liveness = supervisor_liveness(env, record, state, now=now)

    stopped = record is None or (record.desired == "stopped" and not liveness.alive)
    if stopped:
        state = None  # the loop table and ledger of a supervisor that is gone describe nothing live
    start_error = record.start_error if stopped and record is not None else None
    loops = _LoopGroups(
        [
            evaluate_loop(row, beats.get(row.slot), cluster, now)
            for row in sorted(state.loops if state else [], key=lambda r: _slot_order(r.slot))
        ]
    )
    window = [e for e in (state.restarts if state else []) if now - e.at <= cluster.restart_window_sec]
    slots = state.desired_slots if state else (record.slots if record else 0)
    conditions = _conditions(env, record, state, liveness, loops, start_error)
    queue = _queue_health(task_queue, clock)
    flowing = (
        queue.pending > 0
        or queue.running > 0
        or any(r.heartbeat_state == "processing" for r in loops.rows)
        or _worked_recently(task_queue, record, state, cluster, clock)
    )
    status = _status(start_error, stopped, liveness.alive and (slots == 0 or loops.serving > 0), conditions)
    if status is ServiceStatus.RUNNING and (loops.unhealthy or loops.starting):
        status = ServiceStatus.DEGRADED
    elif status is ServiceStatus.RUNNING and not flowing:
        status = ServiceStatus.IDLE
    supervisor = _supervisor_health(liveness)
    restarted = sorted({e.slot for e in window}, key=_slot_order)
    return HealthReport(
        timestamp=iso_of(now),
        app=env.app,
        target=env.app_target,
        namespace=env.namespace,
        status=status,
        backend=record.backend if record else cluster.backend,
        workers_running=loops.running,
        workers_pending=loops.pending,
        workers_restarted=restarted,
        workers_healthy=loops.healthy,
        workers_unhealthy=loops.unhealthy,
        workers_running_count=len(loops.running),
        workers_pending_count=len(loops.pending),
        workers_restarted_count=len(restarted),
        workers_healthy_count=len(loops.healthy),
        workers_unhealthy_count=len(loops.unhealthy),
        restart_reasons=dict(Counter(e.reason for e in window)),
        restart_rate=_restart_rate(window, slots),
        conditions=[str(c) for c in conditions],
        status_reason=_status_reason(status, start_error, env.app_target, supervisor, conditions, loops.rows),
        queue=queue,
        heartbeat_timeout_sec=cluster.heartbeat_timeout_sec,
        queue_dir=str(env.queue_dir),
        cleanup=_cleanup_policy(cluster),
        worker_health=loops.rows,
        supervisor=supervisor,
        autoscale=AutoscaleHealth.of(state.autoscale if state else None, cluster.autoscale),
        template=state.template if state and supervisor.alive else None,
        version=__version__,
    )


def _conditions(
    env: Env,
    record: ServiceRecord | None,
    state: SupervisorState | None,
    liveness: SupervisorLiveness,
    loops: _LoopGroups,
    start_error: str | None,
) -> list[Condition]:
    """The supervisor's own conditions, then what any reader sees: supervisor, storage, app, loops, start."""
    conditions = state.parsed_conditions() if state else []
    seen = _supervisor_conditions(record, liveness) + storage_conditions(env.queue_dir)
    conditions += [c for c in seen if c not in conditions]
    change = app_change(env, record)
    if change is not None:
        conditions.append(Condition(ConditionKind.APP, change))
    if loops.starting and not loops.healthy and not loops.unhealthy:
        conditions.append(Condition(ConditionKind.LOOPS_STARTING))
    if start_error is not None:
        conditions.append(Condition(ConditionKind.START_FAILED, start_error))
    return conditions


def _status(
    start_error: str | None, stopped: bool, serving: bool, conditions: list[Condition]
) -> ServiceStatus:
    """error, stopped, or RUNNING for a service that serves (refined to degraded or idle by the caller).

    A service whose supervisor is not alive, whose slots all fail, or whose Dask scheduler is unreachable
    (a ``cluster`` condition) is in error.
    """
    if start_error is not None:
        return ServiceStatus.ERROR
    if stopped:
        return ServiceStatus.STOPPED
    if not serving or any(c.kind is ConditionKind.CLUSTER for c in conditions):
        return ServiceStatus.ERROR
    return ServiceStatus.RUNNING


def _restart_rate(window: list[RestartEntry], slots: int) -> float:
    """Unplanned restarts per slot within the restart window."""
    return sum(1 for e in window if not is_planned(e.reason)) / max(slots, 1)


def _worked_recently(
    queue: TaskQueue,
    record: ServiceRecord | None,
    state: SupervisorState | None,
    cluster: ClusterSettings,
    clock: Clock,
) -> bool:
    """A task finished within ``idle_after_sec``, as the supervisor or the terminal folders say."""
    times = (state.last_task_at if state else None, _last_finish(queue, record, clock))
    finishes = [t for t in times if t is not None]
    return bool(finishes) and clock.now - max(finishes) <= cluster.idle_after_sec


def _cleanup_policy(cluster: ClusterSettings) -> CleanupPolicy:
    """The retention settings of ``cluster``: each policy field reads the setting of its name."""
    return CleanupPolicy.model_validate(cluster, from_attributes=True)


# ---------------------------------------------------------------------- one loop


def evaluate_loop(
    row: LoopRow, heartbeat: Heartbeat | None, cluster: ClusterSettings, now: float
) -> WorkerHealth:
    """One slot's row from its loop-table entry and its heartbeat file (``None`` if there is none).

    The reason, first match wins: the supervisor's ``unhealthy_reason``; the loop's own end
    (``future_state`` finished, error or cancelled, or a heartbeat that says ``stopped``), unless the
    end was planned (the row's ``planned``, or a loop that recycled itself after ``max_tasks_per_loop``);
    ``stale-heartbeat(<N>s)`` when this incarnation's heartbeat is older than the timeout;
    ``missing-heartbeat`` when no heartbeat of this incarnation says ready once the grace (one
    heartbeat timeout from the slot's start) is over and the loop is not visibly loading (a fresh
    ``starting`` heartbeat: a slow ``start()``). Without a reason, a slot that is not ready yet is
    pending (starting, or in a planned change), any other is healthy.
    """
    beat = heartbeat if heartbeat is not None and heartbeat.incarnation == row.incarnation else None
    beat_at = epoch_of(beat.timestamp) if beat else None
    age = max(0.0, now - beat_at) if beat_at is not None else None
    task_started = epoch_of(beat.task_started_at) if beat and beat.task_id else None
    stopped = beat is not None and beat.state == "stopped"
    recycled = stopped and beat is not None and beat.stop_reason == "max-tasks"
    planned = row.planned or (str(RestartReason.RECYCLED) if recycled else None)
    ready = beat is not None and age is not None and beat.state not in ("starting", "stopped")
    reason = row.unhealthy_reason
    if reason is None:
        reason = _loop_reason(row, beat, age, cluster.heartbeat_timeout_sec, now, planned=planned)
    return WorkerHealth(
        worker=row.slot,
        healthy=reason is None and ready,
        reason=reason,
        future_state=row.future_state,
        heartbeat_state=beat.state if beat else None,
        heartbeat_age_sec=_round(age),
        incarnation=row.incarnation,
        pid=row.pid if row.pid is not None else (beat.pid if beat else None),
        host=row.host or (beat.host if beat else None),
        restarts=row.restarts,
        task_id=beat.task_id if beat else None,
        task_age_sec=_round(max(0.0, now - task_started) if task_started is not None else None),
        last_reason=row.last_reason,
        start_error=row.start_error or (beat.error if beat is not None and stopped else None),
        planned=planned,
        forked=row.forked,
    )


def _loop_reason(
    row: LoopRow,
    beat: Heartbeat | None,
    age: float | None,
    timeout: float,
    now: float,
    *,
    planned: str | None,
) -> str | None:
    """Why a slot the supervisor has not judged is unhealthy, from its own end and its heartbeat."""
    if row.future_state in _FUTURE_REASONS or (beat is not None and beat.state == "stopped"):
        if planned is not None:
            return None
        ended_with = _FUTURE_REASONS.get(row.future_state)
        if ended_with is None:
            ended_with = (
                RestartReason.LOOP_ERROR if beat is not None and beat.error else RestartReason.LOOP_FINISHED
            )
        return str(ended_with)
    if age is not None and age > timeout:
        return stale_heartbeat(age)
    ready = beat is not None and age is not None and beat.state != "starting"
    loading = beat is not None and beat.state == "starting" and age is not None and age <= timeout
    in_grace = now - row.started_at <= timeout
    if not ready and not loading and not in_grace:
        return str(RestartReason.MISSING_HEARTBEAT)
    return None


def _heartbeats(env: Env, state: SupervisorState | None, clock: Clock) -> dict[str, Heartbeat]:
    """The heartbeat of each slot in the loop table, as its file says now, on ``clock``."""
    beats = {}
    for row in state.loops if state else []:
        path = env.layout.queue.heartbeat(row.slot)
        beat = read_heartbeat(path)
        if beat is not None:
            beats[row.slot] = rebase_heartbeat(beat, path, clock)
    return beats


def _status_reason(
    status: ServiceStatus,
    start_error: str | None,
    app: str,
    supervisor: SupervisorHealth,
    conditions: list[Condition],
    rows: list[WorkerHealth],
) -> str | None:
    """Why the service is ``error`` or ``degraded``, in one line (``None`` for the other words)."""
    if status not in (ServiceStatus.ERROR, ServiceStatus.DEGRADED):
        return None
    if start_error is not None:
        return f"start failed: {start_error}"
    if not supervisor.alive:
        who = f"the supervisor (pid {supervisor.pid} on {supervisor.host})"
        if any(c.kind is ConditionKind.SUPERVISOR_DEAD for c in conditions):
            return f"{who} is dead; keepwarm start {app} recovers the service"
        age = supervisor.heartbeat_age_sec
        since = "since it started" if age is None else f"for {age:.0f}s"
        return f"{who} has not written supervisor.json {since}"
    cluster = next((c for c in conditions if c.kind is ConditionKind.CLUSTER), None)
    if cluster is not None:
        return str(cluster)
    troubled = [r for r in rows if r.reason is not None or (r.pending and r.planned is None)]
    named = "; ".join(
        f"{r.worker} {r.reason or 'starting'}" + (f" ({r.start_error})" if r.start_error else "")
        for r in troubled
    )
    if status is ServiceStatus.ERROR:
        return "no loop is healthy" + (f": {named}" if named else "")
    return f"{len(troubled)} of {len(rows)} loops not healthy: {named}"


# ---------------------------------------------------------------------- supervisor, storage, queue


def _supervisor_health(liveness: SupervisorLiveness) -> SupervisorHealth:
    """The report's supervisor section, from the one liveness answer."""
    if liveness.pid is None:
        return SupervisorHealth()
    return _section(SupervisorHealth, liveness, age="heartbeat_age_sec")


def _supervisor_conditions(record: ServiceRecord | None, liveness: SupervisorLiveness) -> list[Condition]:
    """``supervisor-dead`` or ``supervisor-silent`` for a service that should run."""
    if record is None or record.desired != "running" or liveness.pid is None:
        return []
    if liveness.pid_exists is False:
        return [Condition(ConditionKind.SUPERVISOR_DEAD)]
    if not liveness.fresh:
        return [Condition(ConditionKind.SUPERVISOR_SILENT)]
    return []


def storage_conditions(queue_dir: Path) -> list[Condition]:
    """A full or read-only share, seen by any reader (the supervisor may be unable to write it down)."""
    try:
        stats = os.statvfs(queue_dir)
    except OSError:
        return []
    if stats.f_flag & os.ST_RDONLY:
        return [Condition(ConditionKind.STORAGE, f"the share holding {queue_dir} is read-only")]
    if stats.f_bavail * stats.f_frsize < STORAGE_LOW_BYTES:
        return [Condition(ConditionKind.STORAGE, f"the share holding {queue_dir} is full")]
    return []


def _last_finish(queue: TaskQueue, record: ServiceRecord | None, clock: Clock) -> float | None:
    """When a terminal file last appeared, on ``clock.now``'s clock: a folder's mtime (the share's
    clock) changes with every link into it.

    Only changes after the supervisor started count (creating the folders is not work).
    """
    identity = record.supervisor if record else None
    since = epoch_of(identity.started_at) if identity else None
    times = []
    for folder in (queue.done, queue.failed):
        age = clock.file_age(folder)
        try:
            times.append(folder.stat().st_mtime if age is None else clock.now - age)
        except FileNotFoundError:
            pass
    latest = max(times, default=None)
    return latest if latest is not None and since is not None and latest > since + 0.001 else None


def _queue_health(queue: TaskQueue, clock: Clock) -> QueueHealth:
    counts = count_tasks(queue, clock.now, clock=clock)  # one listing of pending/, aged on ``clock``
    return _section(QueueHealth, counts, age="oldest_pending_age_sec")


def _section(model: type[_Section], source: object, *, age: str) -> _Section:
    """The report section ``model`` from the attributes of its field names in ``source``, the age
    ``age`` rounded to the millisecond."""
    values = {name: getattr(source, name) for name in model.model_fields}
    return model(**values | {age: _round(values[age])})


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _slot_order(slot: str) -> tuple[str, int, str]:
    """``loop-2`` before ``loop-10``."""
    match = re.fullmatch(r"(.*?)(\d+)", slot)
    return (match.group(1), int(match.group(2)), slot) if match else (slot, -1, slot)
