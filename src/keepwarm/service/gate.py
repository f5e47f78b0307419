"""The SLA gate: a health report checked against ``[cluster.service_health]`` thresholds.

``keepwarm health --gate`` exits with the first failed check's code; fleets gate each member with it.
"""

from __future__ import annotations

from enum import IntEnum

from pydantic import Field

from keepwarm.queue.state import ServiceStatus
from keepwarm.service.report import HealthModel, HealthReport
from keepwarm.settings_sections import ServiceHealthSettings


class GateCode(IntEnum):
    """``keepwarm health --gate`` exit codes, checked in this order (1 is the CLI's: the check failed)."""

    PASSED = 0
    CHECK_FAILED = 1
    UNHEALTHY = 2
    STATUS = 3
    IDLE = 4
    RESTART_RATE = 5
    PENDING_AGE = 6


class GateThresholds(HealthModel):
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


class GateResult(HealthModel):
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
    if report.status in (ServiceStatus.ERROR, ServiceStatus.DEGRADED, ServiceStatus.STOPPED):
        detail = f" ({', '.join(report.conditions)})" if report.conditions else ""
        failures.append((GateCode.STATUS, f"status is {report.status}{detail}"))
    if report.status == ServiceStatus.IDLE and not thresholds.allow_idle:
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
