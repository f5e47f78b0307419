"""The health report for other tools: ``health.json`` anywhere, Prometheus text, the operator snapshot.

Nothing here judges: each export renders a :class:`HealthReport` (and a gate's verdict) as it is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm.env import Env
from keepwarm.errors import HealthReportNotWritten
from keepwarm.queue.state import RestartReason, ServiceStatus
from keepwarm.service.gate import GateResult, GateThresholds
from keepwarm.service.health import evaluate_health
from keepwarm.service.report import HealthModel, HealthReport, WorkerHealth

SNAPSHOT_SCHEMA = "keepwarm.operator_snapshot.v1"
SNAPSHOT_FILE = "service_operator_snapshot.json"


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
        raise HealthReportNotWritten(
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
    up = int(ServiceStatus(report.status).serving)
    gauge("up", "1 while the service serves (status running, idle or degraded)", [({}, up)])
    gauge(
        "status",
        "1 for the service's current status word, 0 for the others",
        [({"status": word}, int(word == report.status)) for word in ServiceStatus],
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
    scaling = report.autoscale
    gauge("loops", "loops the service keeps (starting ones included)", [({}, len(report.worker_health))])
    gauge(
        "loops_desired",
        "loops the autoscaler wants (absent without autoscaling)",
        [({}, scaling.desired if scaling.enabled else None)],
    )
    if gate is not None:
        gauge("gate_code", "the SLA gate's exit code (0 passed)", [({}, gate.code)])
    return "\n".join(out) + "\n"


class SnapshotSummary(HealthModel):
    tracked: int
    healthy: int
    unhealthy: int
    late: int  # stale heartbeats
    missing: int  # missing heartbeats
    max_heartbeat_age_sec: float | None
    example_reasons: list[str]


class OperatorSnapshot(HealthModel):
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

    def to_json_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data, with ``schema`` under its own name."""
        return self.model_dump(mode="json", by_alias=True)


def operator_snapshot(report: HealthReport, thresholds: GateThresholds) -> OperatorSnapshot:
    """The operator snapshot: status, the thresholds in effect, a summary and the worker rows."""
    rows = report.worker_health
    reasons = [r.reason for r in rows if r.reason]
    kinds = [RestartReason.parse(reason) for reason in reasons]
    ages = [r.heartbeat_age_sec for r in rows if r.heartbeat_age_sec is not None]
    summary = SnapshotSummary(
        tracked=len(rows),
        healthy=sum(1 for r in rows if r.healthy),
        unhealthy=len(reasons),
        late=kinds.count(RestartReason.STALE_HEARTBEAT),
        missing=kinds.count(RestartReason.MISSING_HEARTBEAT),
        max_heartbeat_age_sec=max(ages, default=None),
        example_reasons=list(dict.fromkeys(reasons))[:3],
    )
    return OperatorSnapshot(
        timestamp=report.timestamp,
        app=report.app,
        namespace=report.namespace,
        status=report.status,
        thresholds=thresholds,
        summary=summary,
        worker_health=rows,
    )


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
    data = json.dumps(operator_snapshot(report, thresholds).to_json_dict(), indent=1)
    write_atomic(path, data.encode())
    return path


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
