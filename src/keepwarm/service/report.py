"""The health report's schema, ``agi.service.health.v1``: what ``health.json``, ``keepwarm health``,
the gate and the exports read. Evaluated from a service's files by :mod:`keepwarm.service.health`."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from keepwarm.queue.state import (
    AutoscaleState,
    Condition,
    ConditionKind,
    FutureState,
    ServiceStatus,
    TemplateState,
)
from keepwarm.queue.task import iso_of
from keepwarm.runtime.heartbeat import HeartbeatState
from keepwarm.settings_sections import AutoscaleSettings

HEALTH_SCHEMA: Final = "agi.service.health.v1"


class HealthModel(BaseModel):
    """The base of the health documents: frozen, and lenient to fields a newer keepwarm adds."""

    model_config = ConfigDict(defer_build=True, extra="ignore", frozen=True)


class WorkerHealth(HealthModel):
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
    forked: bool = False  # forked from the preloaded template ([cluster] preload); else spawned

    @property
    def pending(self) -> bool:
        """Not ready yet, but within its start grace or a planned change: neither healthy nor unhealthy."""
        return not self.healthy and self.reason is None


class QueueHealth(HealthModel):
    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    oldest_pending_age_sec: float | None = None


class CleanupPolicy(HealthModel):
    """The retention settings in effect."""

    done_ttl_hours: float
    done_max_files: int
    failed_ttl_hours: float
    failed_max_files: int
    heartbeat_ttl_hours: float
    heartbeat_max_files: int
    retention_min_age_sec: float


class SupervisorHealth(HealthModel):
    pid: int | None = None
    host: str | None = None
    incarnation: str | None = None
    alive: bool = False
    heartbeat_age_sec: float | None = None


class AutoscaleDecisionHealth(HealthModel):
    """The last autoscaling decision: when (ISO UTC), from and to how many loops, and why."""

    model_config = ConfigDict(defer_build=True, extra="ignore", frozen=True, populate_by_name=True)

    at: str
    from_loops: int = Field(alias="from")
    to_loops: int = Field(alias="to")
    why: str


class AutoscaleHealth(HealthModel):
    """``autoscale``: off, or what the supervisor's autoscaler decided and from what (its state in
    ``supervisor.json``). ``desired`` is the pinned count while ``keepwarm scale APP N`` pins one."""

    enabled: bool = False
    min_loops: int | None = None
    max_loops: int | None = None
    desired: int | None = None
    current: int | None = None
    starting: int | None = None
    pinned: int | None = None
    held: str | None = None  # why it does not grow although the load calls for it
    pending: int | None = None
    running: int | None = None
    target_pending_per_loop: float | None = None
    target_pending_age_sec: float | None = None
    last_decision: AutoscaleDecisionHealth | None = None

    @classmethod
    def of(cls, block: AutoscaleState | None, scaling: AutoscaleSettings) -> AutoscaleHealth:
        """A live supervisor's autoscaling state; without one, what the settings in force say."""
        if block is None:
            if not scaling.enabled:
                return cls()
            bounds = scaling.model_dump(
                include={"min_loops", "max_loops", "target_pending_per_loop", "target_pending_age_sec"}
            )
            return cls(enabled=True, **bounds)
        last = block.last_decision
        decision = None
        if last is not None:
            decision = AutoscaleDecisionHealth(
                at=iso_of(last.at), from_loops=last.from_loops, to_loops=last.to_loops, why=last.why
            )
        return cls(enabled=True, **block.model_dump(exclude={"last_decision"}), last_decision=decision)

    def summary(self) -> str | None:
        """One line for people: ``autoscaling 2–8, now 5 (backlog 340, target 50 per loop)``."""
        if not self.enabled:
            return None
        bounds = f"autoscaling {self.min_loops}–{self.max_loops}"
        if self.current is None:
            return f"{bounds} (the service is not running)"
        if self.pinned is not None:
            return f"{bounds}, pinned at {self.pinned} by keepwarm scale (--auto resumes), now {self.current}"
        target = f"target {self.target_pending_per_loop:g} per loop"
        line = f"{bounds}, now {self.current} (backlog {self.pending}, {target})"
        if self.starting:
            line += f", {self.starting} starting"
        return f"{line}; held: {self.held}" if self.held else line


class HealthReport(HealthModel):
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
    conditions: list[str] = Field(default_factory=list)  # each a Condition, as written
    status_reason: str | None = None
    queue: QueueHealth = Field(default_factory=QueueHealth)
    heartbeat_timeout_sec: float
    queue_dir: str
    cleanup: CleanupPolicy
    worker_health: list[WorkerHealth] = Field(default_factory=list)
    supervisor: SupervisorHealth = Field(default_factory=SupervisorHealth)
    autoscale: AutoscaleHealth = Field(default_factory=AutoscaleHealth)
    template: TemplateState | None = None  # the preloaded template, while one serves the loops
    version: str

    def to_json_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, with ``schema`` under its own name."""
        return self.model_dump(mode="json", by_alias=True)

    def condition(self, kind: ConditionKind) -> Condition | None:
        """The report's first condition of this kind, or None."""
        return next((c for c in map(Condition.parse, self.conditions) if c.kind is kind), None)
