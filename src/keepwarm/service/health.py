"""Service health: a service's files turned into a verdict (``agi.service.health.v1``) and an SLA gate.

The verdict is computed from ``service.json``, ``supervisor.json``, the loops' heartbeats and folder
listings of the queue, so any process can ask, in milliseconds, without a live connection. Nothing
here writes, except ``write_snapshot`` when an operator asks for the snapshot file.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from keepwarm import __version__
from keepwarm._sys.atomic import write_atomic
from keepwarm.env import Env, ensure_private_dir
from keepwarm.errors import KeepwarmError
from keepwarm.queue.state import (
    PLANNED_REASONS,
    FutureState,
    LoopRow,
    ServiceRecord,
    SupervisorState,
    app_change,
    read_service_record,
    read_supervisor_state,
    settings_in_force,
)
from keepwarm.queue.task import epoch_of
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.runtime.heartbeat import Heartbeat, HeartbeatState, read_heartbeat
from keepwarm.settings import ClusterSettings, ServiceHealthSettings

HEALTH_SCHEMA: Final = "agi.service.health.v1"
SNAPSHOT_SCHEMA = "keepwarm.operator_snapshot.v1"
SERVICE_FILE = "service.json"
SUPERVISOR_FILE = "supervisor.json"
SNAPSHOT_FILE = "service_operator_snapshot.json"

ServiceStatus = Literal["running", "idle", "degraded", "error", "stopped"]
STATUS_WORDS: tuple[ServiceStatus, ...] = ("running", "idle", "degraded", "error", "stopped")

MISSING_HEARTBEAT = "missing-heartbeat"
# What a loop's own end means when the supervisor has not (yet) named a reason for it.
_FUTURE_REASONS: dict[str, str] = {
    "finished": "loop-finished",
    "error": "loop-error",
    "cancelled": "loop-cancelled",
}


class _Model(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore", frozen=True)


class WorkerHealth(_Model):
    """One slot's row: healthy, or the reason it is not (``None`` while it is still starting)."""

    worker: str
    healthy: bool
    reason: str | None = None
    future_state: FutureState
    heartbeat_state: HeartbeatState | None = None
    heartbeat_age_sec: float | None = None
    incarnation: str
    pid: int | None = None
    host: str | None = None
    restarts: int = 0
    task_id: str | None = None
    task_age_sec: float | None = None
    last_reason: str | None = None
    start_error: str | None = None
    planned: str | None = None

    @property
    def pending(self) -> bool:
        """Not ready yet, but within its start grace or a planned change: neither healthy nor unhealthy."""
        return not self.healthy and self.reason is None


class QueueHealth(_Model):
    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    oldest_pending_age_sec: float | None = None


class CleanupPolicy(_Model):
    """The retention settings in effect."""

    done_ttl_hours: float
    done_max_files: int
    failed_ttl_hours: float
    failed_max_files: int
    heartbeat_ttl_hours: float
    heartbeat_max_files: int
    retention_min_age_sec: float


class SupervisorHealth(_Model):
    pid: int | None = None
    host: str | None = None
    incarnation: str | None = None
    alive: bool = False
    heartbeat_age_sec: float | None = None


class HealthReport(_Model):
    """``agi.service.health.v1``: what ``health.json``, ``keepwarm health`` and the gate read."""

    model_config = ConfigDict(
        defer_build=True, extra="ignore", frozen=True, populate_by_name=True, serialize_by_alias=True
    )

    schema_: Literal["agi.service.health.v1"] = Field(default=HEALTH_SCHEMA, alias="schema")
    timestamp: str
    app: str
    target: str
    namespace: str
    status: ServiceStatus
    backend: str
    workers_running: list[str] = Field(default_factory=list)
    workers_pending: list[str] = Field(default_factory=list)
    workers_restarted: list[str] = Field(default_factory=list)
    workers_healthy: list[str] = Field(default_factory=list)
    workers_unhealthy: list[str] = Field(default_factory=list)
    workers_running_count: int = 0
    workers_pending_count: int = 0
    workers_restarted_count: int = 0
    workers_healthy_count: int = 0
    workers_unhealthy_count: int = 0
    restart_reasons: dict[str, int] = Field(default_factory=dict)
    restart_rate: float = 0.0
    conditions: list[str] = Field(default_factory=list)
    status_reason: str | None = None
    queue: QueueHealth = Field(default_factory=QueueHealth)
    heartbeat_timeout_sec: float
    queue_dir: str
    cleanup: CleanupPolicy
    worker_health: list[WorkerHealth] = Field(default_factory=list)
    supervisor: SupervisorHealth = Field(default_factory=SupervisorHealth)
    version: str

    def to_json_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, with ``schema`` under its own name."""
        return self.model_dump(mode="json", by_alias=True)


# ---------------------------------------------------------------------- evaluation


STORAGE_LOW_BYTES = 64 * 1024  # less free space than this on the share reads as full


def evaluate_health(env: Env, *, now: float | None = None) -> HealthReport:
    """The service's health from its files alone: status word, loop rows, queue, supervisor.

    Reads ``service.json``, ``supervisor.json`` and the heartbeat of each slot in the loop table, and
    counts the queue from folder listings (no task file is opened, so 10,000 pending tasks cost a
    listing). ``now`` (epoch seconds) defaults to the clock; tests pass it for determinism.
    """
    now = time.time() if now is None else now
    record = read_service_record(env.service_dir / SERVICE_FILE)
    beats = _heartbeats(env, read_supervisor_state(env.service_dir / SUPERVISOR_FILE))
    # Read after the heartbeats: the supervisor publishes a planned change before it signals the loop,
    # so a loop's exit seen in its heartbeat is never judged by a loop table older than that exit.
    state = _current_state(record, read_supervisor_state(env.service_dir / SUPERVISOR_FILE))
    cluster = settings_in_force(env, record).cluster
    task_queue = TaskQueue(env.queue_dir, settings=cluster)
    queue = _queue_health(task_queue, now)
    supervisor, supervisor_conditions = _supervisor_health(record, state, cluster, now)

    stopped = record is None or (record.desired == "stopped" and not supervisor.alive)
    if stopped:
        state = None  # the loop table and ledger of a supervisor that is gone describe nothing live
    rows = [
        evaluate_loop(row, beats.get(row.slot), cluster, now)
        for row in sorted(state.loops if state else [], key=lambda r: _slot_order(r.slot))
    ]

    healthy = [r.worker for r in rows if r.healthy]
    unhealthy = [r.worker for r in rows if r.reason is not None]
    pending = [r.worker for r in rows if r.pending]
    starting = [r.worker for r in rows if r.pending and r.planned is None]  # pending, not by plan
    running = [r.worker for r in rows if r.future_state == "running"]

    window = [e for e in (state.restarts if state else []) if now - e.at <= cluster.restart_window_sec]
    slots = state.desired_slots if state else (record.slots if record else 0)
    restarted = sorted({e.slot for e in window}, key=_slot_order)

    conditions = list(state.conditions) if state else []
    conditions += [
        c for c in supervisor_conditions + _storage_conditions(env.queue_dir) if c not in conditions
    ]
    change = app_change(env, record)
    if change is not None:
        conditions.append(f"app: {change}")
    if starting and not healthy and not unhealthy:
        conditions.append("loops-starting")
    start_failed = stopped and record is not None and record.start_error is not None
    if start_failed and record is not None:
        conditions.append(f"start-failed: {record.start_error}")

    last_task_at = max(
        [
            t
            for t in (state.last_task_at if state else None, _last_finish(task_queue, record))
            if t is not None
        ],
        default=None,
    )
    flowing = (
        queue.pending > 0
        or queue.running > 0
        or any(r.heartbeat_state == "processing" for r in rows)
        or (last_task_at is not None and now - last_task_at <= cluster.idle_after_sec)
    )
    # A loop in a planned change (restart, recycle, scale) counts as serving: planned is never alarming.
    serving = len(healthy) + len(pending) - len(starting)
    if start_failed:
        status: ServiceStatus = "error"
    elif stopped:
        status = "stopped"
    elif (
        not supervisor.alive
        or (slots > 0 and not serving)
        or any(c.startswith("cluster:") for c in conditions)
    ):
        status = "error"  # a "cluster:" condition: the Dask scheduler is unreachable
    elif unhealthy or starting:
        status = "degraded"
    else:
        status = "running" if flowing else "idle"

    return HealthReport(
        timestamp=_iso(now),
        app=env.app,
        target=env.app_target,
        namespace=env.namespace,
        status=status,
        backend=record.backend if record else cluster.backend,
        workers_running=running,
        workers_pending=pending,
        workers_restarted=restarted,
        workers_healthy=healthy,
        workers_unhealthy=unhealthy,
        workers_running_count=len(running),
        workers_pending_count=len(pending),
        workers_restarted_count=len(restarted),
        workers_healthy_count=len(healthy),
        workers_unhealthy_count=len(unhealthy),
        restart_reasons=dict(Counter(e.reason for e in window)),
        restart_rate=sum(1 for e in window if e.reason not in PLANNED_REASONS) / max(slots, 1),
        conditions=conditions,
        status_reason=_status_reason(
            status,
            record.start_error if start_failed and record is not None else None,
            env.app_target,
            supervisor,
            conditions,
            rows,
        ),
        queue=queue,
        heartbeat_timeout_sec=cluster.heartbeat_timeout_sec,
        queue_dir=str(env.queue_dir),
        cleanup=CleanupPolicy(
            done_ttl_hours=cluster.done_ttl_hours,
            done_max_files=cluster.done_max_files,
            failed_ttl_hours=cluster.failed_ttl_hours,
            failed_max_files=cluster.failed_max_files,
            heartbeat_ttl_hours=cluster.heartbeat_ttl_hours,
            heartbeat_max_files=cluster.heartbeat_max_files,
            retention_min_age_sec=cluster.retention_min_age_sec,
        ),
        worker_health=rows,
        supervisor=supervisor,
        version=__version__,
    )


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
    timeout = cluster.heartbeat_timeout_sec
    beat = heartbeat if heartbeat is not None and heartbeat.incarnation == row.incarnation else None
    beat_at = epoch_of(beat.timestamp) if beat else None
    age = max(0.0, now - beat_at) if beat_at is not None else None
    task_started = epoch_of(beat.task_started_at) if beat and beat.task_id else None
    in_grace = now - row.started_at <= timeout

    stopped = beat is not None and beat.state == "stopped"
    recycled = stopped and beat is not None and beat.stop_reason == "max-tasks"
    planned = row.planned or ("recycled" if recycled else None)
    ended = row.future_state in _FUTURE_REASONS or stopped
    ready = beat is not None and age is not None and beat.state not in ("starting", "stopped")
    reason = row.unhealthy_reason
    if reason is None and ended and planned is None:
        reason = _FUTURE_REASONS.get(row.future_state) or (
            "loop-error" if beat is not None and beat.error else "loop-finished"
        )
    if reason is None and not ended and age is not None and age > timeout:
        reason = f"stale-heartbeat({int(age)}s)"
    loading = beat is not None and beat.state == "starting" and age is not None and age <= timeout
    if reason is None and not ready and not ended and not in_grace and not loading:
        reason = MISSING_HEARTBEAT
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
    )


def _heartbeats(env: Env, state: SupervisorState | None) -> dict[str, Heartbeat]:
    """The heartbeat of each slot in the loop table, as its file says now."""
    beats = {}
    for row in state.loops if state else []:
        beat = read_heartbeat(env.queue_dir / "heartbeats" / f"{row.slot}.json")
        if beat is not None:
            beats[row.slot] = beat
    return beats


def _status_reason(
    status: ServiceStatus,
    start_error: str | None,
    app: str,
    supervisor: SupervisorHealth,
    conditions: list[str],
    rows: list[WorkerHealth],
) -> str | None:
    """Why the service is ``error`` or ``degraded``, in one line (``None`` for the other words)."""
    if status not in ("error", "degraded"):
        return None
    if start_error is not None:
        return f"start failed: {start_error}"
    if not supervisor.alive:
        who = f"the supervisor (pid {supervisor.pid} on {supervisor.host})"
        if "supervisor-dead" in conditions:
            return f"{who} is dead; keepwarm start {app} recovers the service"
        age = supervisor.heartbeat_age_sec
        since = "since it started" if age is None else f"for {age:.0f}s"
        return f"{who} has not written supervisor.json {since}"
    cluster = next((c for c in conditions if c.startswith("cluster:")), None)
    if cluster is not None:
        return cluster
    troubled = [r for r in rows if r.reason is not None or (r.pending and r.planned is None)]
    named = "; ".join(
        f"{r.worker} {r.reason or 'starting'}" + (f" ({r.start_error})" if r.start_error else "")
        for r in troubled
    )
    if status == "error":
        return "no loop is healthy" + (f": {named}" if named else "")
    return f"{len(troubled)} of {len(rows)} loops not healthy: {named}"


def _current_state(record: ServiceRecord | None, state: SupervisorState | None) -> SupervisorState | None:
    """``supervisor.json`` if it belongs to the supervisor ``service.json`` names (else it is stale)."""
    if state is None or record is None or record.supervisor is None:
        return state
    return state if state.incarnation == record.supervisor.incarnation else None


def _supervisor_health(
    record: ServiceRecord | None,
    state: SupervisorState | None,
    cluster: ClusterSettings,
    now: float,
) -> tuple[SupervisorHealth, list[str]]:
    """Alive = its pid exists (checked only on its own host) and its heartbeat is recent enough."""
    identity = record.supervisor if record else None
    pid = identity.pid if identity else (state.pid if state else None)
    host = identity.host if identity else (state.host if state else None)
    incarnation = identity.incarnation if identity else (state.incarnation if state else None)
    if pid is None:
        return SupervisorHealth(), []
    limit = max(cluster.heartbeat_timeout_sec, 3 * cluster.heartbeat_interval_sec)
    age = max(0.0, now - state.timestamp) if state else None
    if age is not None:
        fresh = age <= limit
    else:
        # Not written its first heartbeat yet: the same allowance, counted from its start.
        started = epoch_of(identity.started_at) if identity else None
        fresh = started is not None and now - started <= limit
    pid_exists = pid_alive(pid) if host == os.uname().nodename else None
    alive = fresh and pid_exists is not False
    conditions: list[str] = []
    if record is not None and record.desired == "running":
        if pid_exists is False:
            conditions.append("supervisor-dead")
        elif not fresh:
            conditions.append("supervisor-silent")
    supervisor = SupervisorHealth(
        pid=pid, host=host, incarnation=incarnation, alive=alive, heartbeat_age_sec=_round(age)
    )
    return supervisor, conditions


def _storage_conditions(queue_dir: Path) -> list[str]:
    """A full or read-only share, seen by any reader (the supervisor may be unable to write it down)."""
    try:
        stats = os.statvfs(queue_dir)
    except OSError:
        return []
    if stats.f_flag & os.ST_RDONLY:
        return [f"storage: the share holding {queue_dir} is read-only"]
    if stats.f_bavail * stats.f_frsize < STORAGE_LOW_BYTES:
        return [f"storage: the share holding {queue_dir} is full"]
    return []


def _last_finish(queue: TaskQueue, record: ServiceRecord | None) -> float | None:
    """When a terminal file last appeared: a folder's mtime changes with every link into it.

    Only changes after the supervisor started count (creating the folders is not work).
    """
    identity = record.supervisor if record else None
    since = epoch_of(identity.started_at) if identity else None
    times = []
    for folder in (queue.done, queue.failed):
        try:
            times.append(folder.stat().st_mtime)
        except FileNotFoundError:
            pass
    latest = max(times, default=None)
    return latest if latest is not None and since is not None and latest > since + 0.001 else None


def pid_alive(pid: int) -> bool:
    """True if a process with this pid runs on this host (whoever owns it); a zombie is dead."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def _queue_health(queue: TaskQueue, now: float) -> QueueHealth:
    counts = queue.counts(now)  # one listing of pending/, aged against the report's ``now``
    return QueueHealth(
        pending=counts.pending,
        running=counts.running,
        done=counts.done,
        failed=counts.failed,
        oldest_pending_age_sec=_round(counts.oldest_pending_age_sec),
    )


# ---------------------------------------------------------------------- the gate


class GateCode(IntEnum):
    """``keepwarm health --gate`` exit codes, checked in this order (1 is the CLI's: the check failed)."""

    PASSED = 0
    CHECK_FAILED = 1
    UNHEALTHY = 2
    STATUS = 3
    IDLE = 4
    RESTART_RATE = 5
    PENDING_AGE = 6


class GateThresholds(_Model):
    """The SLA thresholds of ``[cluster.service_health]``, with any per-call overrides applied."""

    allow_idle: bool = False
    max_unhealthy: int = Field(default=0, ge=0)
    max_restart_rate: float = Field(default=0.25, ge=0)
    max_pending_age_sec: float | None = Field(default=None, ge=0)

    @classmethod
    def from_settings(
        cls,
        section: ServiceHealthSettings,
        *,
        allow_idle: bool | None = None,
        max_unhealthy: int | None = None,
        max_restart_rate: float | None = None,
        max_pending_age_sec: float | None = None,
    ) -> GateThresholds:
        """The section's values; each override that is not ``None`` replaces its value."""
        overrides = {
            "allow_idle": allow_idle,
            "max_unhealthy": max_unhealthy,
            "max_restart_rate": max_restart_rate,
            "max_pending_age_sec": max_pending_age_sec,
        }
        values = section.model_dump() | {k: v for k, v in overrides.items() if v is not None}
        return cls.model_validate(values)


class GateResult(_Model):
    """The gate's verdict: ``code`` is the first failed check; ``reasons`` lists every failed check."""

    code: int
    passed: bool
    reasons: list[str]
    thresholds: GateThresholds


def evaluate_gate(report: HealthReport, thresholds: GateThresholds) -> GateResult:
    """Check a report against SLA thresholds, in DESIGN's order; the first failed check is the code."""
    failures: list[tuple[GateCode, str]] = []
    if report.workers_unhealthy_count > thresholds.max_unhealthy:
        names = ", ".join(f"{r.worker} ({r.reason})" for r in report.worker_health if r.reason)
        failures.append(
            (
                GateCode.UNHEALTHY,
                f"{report.workers_unhealthy_count} unhealthy loops, over max_unhealthy = "
                f"{thresholds.max_unhealthy}: {names}",
            )
        )
    if report.status in ("error", "degraded", "stopped"):
        detail = f" ({', '.join(report.conditions)})" if report.conditions else ""
        failures.append((GateCode.STATUS, f"status is {report.status}{detail}"))
    if report.status == "idle" and not thresholds.allow_idle:
        failures.append((GateCode.IDLE, "status is idle and allow_idle = false"))
    if report.restart_rate > thresholds.max_restart_rate:
        failures.append(
            (
                GateCode.RESTART_RATE,
                f"restart rate {report.restart_rate:g} per slot over max_restart_rate = "
                f"{thresholds.max_restart_rate:g}",
            )
        )
    oldest = report.queue.oldest_pending_age_sec
    limit = thresholds.max_pending_age_sec
    if limit is not None and oldest is not None and oldest > limit:
        failures.append(
            (
                GateCode.PENDING_AGE,
                f"oldest pending task waited {oldest:.0f}s, over max_pending_age_sec = {limit:g}",
            )
        )
    code = failures[0][0] if failures else GateCode.PASSED
    return GateResult(
        code=int(code),
        passed=not failures,
        reasons=[reason for _, reason in failures],
        thresholds=thresholds,
    )


# ---------------------------------------------------------------------- exports


def write_report(report: HealthReport, path: Path) -> Path:
    """Publish the report as JSON at ``path``, creating its missing folders (mode 0700).

    A path that cannot be written (a file where a folder should be, no permission, a full disk) is one
    KeepwarmError naming the path and the cause; nothing half-written is left behind.
    """
    try:
        ensure_private_dir(path.parent)
        write_atomic(path, json.dumps(report.to_json_dict(), indent=2).encode())
    except OSError as exc:
        cause = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        raise KeepwarmError(
            f"cannot write the health report to {path} ({cause}); give a path in a folder you can write"
        ) from None
    return path


def to_prometheus(report: HealthReport, gate: GateResult | None = None) -> str:
    """The report as Prometheus text exposition: ``keepwarm_service_*`` gauges labelled by app, namespace."""
    base = {"app": report.app, "namespace": report.namespace}
    out: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[dict[str, str], float | None]]) -> None:
        metric = f"keepwarm_service_{name}"
        out.append(f"# HELP {metric} {_escape_help(help_text)}")
        out.append(f"# TYPE {metric} gauge")
        for labels, value in samples:
            if value is not None:
                out.append(f"{metric}{_labels(base | labels)} {_number(value)}")

    queue = report.queue
    up = 0 if report.status in ("stopped", "error") else 1
    gauge("up", "1 while the service serves (status running, idle or degraded)", [({}, up)])
    gauge(
        "status",
        "1 for the service's current status word, 0 for the others",
        [({"status": word}, int(word == report.status)) for word in STATUS_WORDS],
    )
    gauge("workers_healthy", "loops that are healthy", [({}, report.workers_healthy_count)])
    gauge("workers_unhealthy", "loops that have an unhealthy reason", [({}, report.workers_unhealthy_count)])
    gauge("workers_pending", "loops still starting, within their grace", [({}, report.workers_pending_count)])
    gauge("restart_rate", "restarts per slot within the restart window", [({}, report.restart_rate)])
    gauge("queue_pending", "tasks waiting in pending/", [({}, queue.pending)])
    gauge("queue_running", "tasks claimed by a loop", [({}, queue.running)])
    gauge("queue_done", "terminal files in done/", [({}, queue.done)])
    gauge("queue_failed", "terminal files in failed/", [({}, queue.failed)])
    gauge(
        "oldest_pending_age_seconds",
        "age of the oldest pending task (0 when none is pending)",
        [({}, queue.oldest_pending_age_sec or 0.0)],
    )
    gauge(
        "supervisor_heartbeat_age_seconds",
        "seconds since the supervisor's last heartbeat",
        [({}, report.supervisor.heartbeat_age_sec)],
    )
    gauge(
        "heartbeat_age_seconds",
        "seconds since each loop's last heartbeat",
        [({"worker": row.worker}, row.heartbeat_age_sec) for row in report.worker_health],
    )
    gauge(
        "worker_healthy",
        "1 when the loop is healthy",
        [({"worker": row.worker}, int(row.healthy)) for row in report.worker_health],
    )
    if gate is not None:
        gauge("gate_code", "the SLA gate's exit code (0 passed)", [({}, gate.code)])
    return "\n".join(out) + "\n"


class SnapshotSummary(_Model):
    tracked: int
    healthy: int
    unhealthy: int
    late: int  # stale heartbeats
    missing: int  # missing heartbeats
    max_heartbeat_age_sec: float | None
    example_reasons: list[str]


class OperatorSnapshot(_Model):
    """``service_operator_snapshot.json``: the ORCHESTRATE page's EXPORT snapshot."""

    model_config = ConfigDict(
        defer_build=True, extra="ignore", frozen=True, populate_by_name=True, serialize_by_alias=True
    )

    schema_: str = Field(default=SNAPSHOT_SCHEMA, alias="schema")
    timestamp: str
    app: str
    namespace: str
    status: ServiceStatus
    thresholds: GateThresholds
    summary: SnapshotSummary
    worker_health: list[WorkerHealth]


def operator_snapshot(report: HealthReport, thresholds: GateThresholds) -> dict[str, Any]:
    """The operator snapshot: status, the thresholds in effect, a summary and the worker rows."""
    rows = report.worker_health
    reasons = [r.reason for r in rows if r.reason]
    ages = [r.heartbeat_age_sec for r in rows if r.heartbeat_age_sec is not None]
    summary = SnapshotSummary(
        tracked=len(rows),
        healthy=sum(1 for r in rows if r.healthy),
        unhealthy=len(reasons),
        late=sum(1 for reason in reasons if reason.startswith("stale-heartbeat")),
        missing=sum(1 for reason in reasons if reason == MISSING_HEARTBEAT),
        max_heartbeat_age_sec=max(ages, default=None),
        example_reasons=list(dict.fromkeys(reasons))[:3],
    )
    snapshot = OperatorSnapshot(
        timestamp=report.timestamp,
        app=report.app,
        namespace=report.namespace,
        status=report.status,
        thresholds=thresholds,
        summary=summary,
        worker_health=rows,
    )
    return snapshot.model_dump(mode="json", by_alias=True)


def write_snapshot(
    env: Env,
    report: HealthReport | None = None,
    thresholds: GateThresholds | None = None,
    *,
    now: float | None = None,
) -> Path:
    """Write the operator snapshot to ``<log_dir>/service_operator_snapshot.json`` (atomically).

    Evaluates the health and reads the app's gate thresholds when they are not given.
    """
    report = report if report is not None else evaluate_health(env, now=now)
    if thresholds is None:
        thresholds = GateThresholds.from_settings(env.settings.cluster.service_health)
    path = ensure_private_dir(env.log_dir) / SNAPSHOT_FILE
    data = json.dumps(operator_snapshot(report, thresholds), indent=1)
    write_atomic(path, data.encode())
    return path


# ---------------------------------------------------------------------- small helpers


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _slot_order(slot: str) -> tuple[str, int, str]:
    """``loop-2`` before ``loop-10``."""
    match = re.fullmatch(r"(.*?)(\d+)", slot)
    return (match.group(1), int(match.group(2)), slot) if match else (slot, -1, slot)


_LABEL_ESCAPES = str.maketrans({"\\": r"\\", '"': r"\"", "\n": r"\n"})


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{key}="{value.translate(_LABEL_ESCAPES)}"' for key, value in labels.items()) + "}"


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
