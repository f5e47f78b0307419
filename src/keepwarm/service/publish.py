"""What the supervisor writes for everybody else to read.

``supervisor.json`` (its live state, every heartbeat interval and at once on a change),
``health.json`` with the SLA gate's verdict in ``events.jsonl`` when it changes, ``service.json``,
and retention in small batches.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Literal

from keepwarm import __version__
from keepwarm.errors import STORAGE_ERRNOS
from keepwarm.queue.layout import SUPERVISOR_LOG
from keepwarm.queue.retention import enforce_retention
from keepwarm.queue.state import (
    Condition,
    ConditionKind,
    ServiceRecord,
    SupervisorIdentity,
    SupervisorState,
    read_service_record,
    write_state,
)
from keepwarm.queue.task import utc_now
from keepwarm.service.scaling import fleet_of
from keepwarm.service.slots import slot_index

if TYPE_CHECKING:
    from keepwarm.service.supervisor import Supervisor

log = logging.getLogger("keepwarm.service.supervisor")

HEALTH_EVERY_SEC = 2.0


class Publisher:
    """Writes a supervisor's files: when they are due, and at once when asked."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.layout = supervisor.layout
        self.settings = supervisor.settings
        self._next_state = 0.0
        self._next_health = 0.0
        self._next_retention = 0.0
        self._last_gate: int | None = None

    def soon(self) -> None:
        """Write ``supervisor.json`` at the end of this tick (a loop changed: start may wait for it)."""
        self._next_state = 0.0

    def periodic(self) -> None:
        """Write what is due: the state, health, and one batch of retention."""
        now = time.monotonic()
        if now >= self._next_state:
            self._next_state = now + self.settings.heartbeat_interval_sec
            self.write_state()
        if now >= self._next_health:
            self._next_health = now + HEALTH_EVERY_SEC
            self.write_health()
        if now >= self._next_retention:
            self._next_retention = now + self._enforce_retention()

    def write_state(self) -> None:
        """Write ``supervisor.json``; a share that cannot be written becomes a storage condition."""
        supervisor = self.supervisor
        try:
            write_state(self.layout.supervisor_state, self._state())
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS:
                raise
            condition = Condition(ConditionKind.STORAGE, f"cannot write to the share ({exc.strerror})")
            if condition not in supervisor.conditions:
                log.error("%s; loops are not judged by heartbeats until it is writable again", condition)
                supervisor.conditions.append(condition)
            return
        supervisor.conditions = [c for c in supervisor.conditions if c.kind is not ConditionKind.STORAGE]

    def _state(self) -> SupervisorState:
        supervisor = self.supervisor
        autoscaler = supervisor.autoscaler
        window = time.time() - self.settings.restart_window_sec
        supervisor.ledger = [entry for entry in supervisor.ledger if entry.at >= window]
        return SupervisorState(
            pid=os.getpid(),
            host=supervisor.host,
            incarnation=supervisor.incarnation,
            timestamp=time.time(),
            mode=supervisor.mode,
            desired_slots=supervisor.desired,
            loops=[slot.row for slot in sorted(supervisor.slots.values(), key=lambda s: slot_index(s.name))],
            restarts=supervisor.ledger,
            conditions=[str(c) for c in supervisor.conditions],
            last_task_at=supervisor.last_task_at,
            autoscale=None if autoscaler is None else autoscaler.state(fleet_of(supervisor)),
            template=supervisor.template_watch.seen,
            version=__version__,
        )

    def write_health(self) -> None:
        """Write ``health.json``; record the SLA gate's verdict in ``events.jsonl`` when it changes."""
        from keepwarm.service.gate import GateThresholds, evaluate_gate
        from keepwarm.service.health import evaluate_health

        try:
            report = evaluate_health(self.supervisor.env)
            write_state(self.layout.health, report)
            verdict = evaluate_gate(report, GateThresholds.from_settings(self.settings.service_health))
            if verdict.code != self._last_gate:
                self._last_gate = verdict.code
                self.supervisor.events.append(
                    "gate", code=verdict.code, status=report.status, reasons=verdict.reasons
                )
        except OSError as exc:
            log.warning("health.json not written: %s", exc)

    def write_record(self, desired: Literal["running", "stopped"]) -> None:
        """Write ``service.json``: what the service should be, and that this supervisor runs it."""
        supervisor, env = self.supervisor, self.supervisor.env
        record = read_service_record(self.layout.service_record)
        identity = SupervisorIdentity(
            pid=os.getpid(),
            host=supervisor.host,
            incarnation=supervisor.incarnation,
            started_at=supervisor.started_at,
            log=str(env.log_dir / SUPERVISOR_LOG),
        )
        stopped = desired == "stopped"
        write_state(
            self.layout.service_record,
            ServiceRecord(
                app=env.app_target,
                namespace=env.namespace,
                desired=desired,
                backend=supervisor.backend.name,
                cluster=supervisor.backend.record(),
                slots=supervisor.desired,
                supervisor=identity,
                started_at=record.started_at if record and stopped else supervisor.started_at,
                stopped_at=utc_now() if stopped else None,
                app_dir=str(env.app_dir),
                settings=env.settings.model_dump(mode="json"),
                version=__version__,
            ),
        )

    def _enforce_retention(self) -> float:
        """One small batch of retention; seconds until the next (soon while a backlog remains)."""
        every = self.settings.retention_interval_sec
        try:
            report = enforce_retention(
                self.supervisor.queue, self.settings, live_slots=set(self.supervisor.slots)
            )
        except OSError as exc:
            log.warning("retention skipped: %s", exc)
            return every
        if report.removed:
            log.info(
                "retention removed %d done, %d failed, %d heartbeat files",
                report.done,
                report.failed,
                report.heartbeats,
            )
        return min(1.0, every) if report.more else every
