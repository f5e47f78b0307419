"""The health report for other tools: ``health.json`` anywhere, Prometheus text, the operator snapshot.

Nothing here judges: each export renders a :class:`HealthReport` (and a gate's verdict) as it is.
"""

from __future__ import annotations

import json
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
    """The report as Prometheus text exposition: the ``keepwarm_service_*`` gauges of :mod:`.metrics`."""
    # Imported here: prometheus_client takes ~0.1 s to import, and keepwarm.api imports this module.
    from keepwarm.service.metrics import render, service_families

    return render(service_families([(report, gate)]))


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
