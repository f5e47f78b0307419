"""The sections of ``app_settings.toml`` that are tables of their own under ``[cluster]``: the SLA
gate's thresholds and autoscaling. ``keepwarm.settings`` builds the whole file from them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True, validate_default=True)


class ServiceHealthSettings(Section):
    """``[cluster.service_health]``: the SLA gate's thresholds (the reference's defaults)."""

    allow_idle: bool = Field(default=False, description="the gate passes an idle service")
    max_unhealthy: int = Field(
        default=0, ge=0, description="the gate fails with more unhealthy loops than this"
    )
    max_restart_rate: float = Field(
        default=0.25,
        ge=0,
        description="the gate fails above this many restarts per slot in the restart window",
    )
    max_pending_age_sec: float | None = Field(
        default=None,
        gt=0,
        description="the gate fails when the oldest pending task is older (default: not checked)",
    )


class AutoscaleSettings(Section):
    """``[cluster.autoscale]``: grow the loops under load, shrink them when idle (docs/autoscaling.md)."""

    enabled: bool = Field(default=False, description="the supervisor decides how many loops run")
    min_loops: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="never fewer loops (0: scale to zero, a cold start on the first task)",
    )
    max_loops: int = Field(default=8, ge=1, le=1024, description="never more loops")
    target_pending_per_loop: float = Field(
        default=10.0,
        gt=0,
        description="tasks pending or running per loop it aims at: loops = (pending + running) / this",
    )
    target_pending_age_sec: float | None = Field(
        default=None,
        gt=0,
        description="also grow while the oldest pending task is older than this (default: not used)",
    )
    scale_up_delay_sec: float = Field(
        default=2.0,
        ge=0,
        description="grow only to what the load needed for this long (a shorter burst starts nothing)",
    )
    scale_down_delay_sec: float = Field(
        default=120.0, ge=0, description="stop a loop only once it has been surplus for this long"
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscaleSettings:
        if self.min_loops > self.max_loops:
            raise ValueError(
                f"min_loops ({self.min_loops}) is above max_loops ({self.max_loops}): "
                "set min_loops <= max_loops"
            )
        return self
