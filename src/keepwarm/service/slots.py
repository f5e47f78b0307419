"""A slot: one place for a loop in the service, and the state machine of the loop that fills it.

A slot is SCHEDULED (a loop starts at ``start_at``), HELD (no loop starts: the service stops, or a
dead supervisor's loop still finishes its task there), RUNNING (a loop fills it), STOPPING (the loop
was asked to stop after its task; killed at ``stop_deadline``) or KILLED (waiting to see it gone).
A loop's exit holds the slot until the supervisor schedules the next one.

The row is what ``supervisor.json`` shows of the slot; the phase is the supervisor's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from keepwarm.queue.state import LoopRow

if TYPE_CHECKING:
    from keepwarm.backends.base import LoopHandle


class SlotPhase(StrEnum):
    """Where a slot's loop is in its life, as the supervisor drives it."""

    SCHEDULED = "scheduled"  # no loop; one starts at ``start_at``
    HELD = "held"  # no loop, none started: the service stops, or a dead supervisor's loop still runs
    RUNNING = "running"  # a loop runs (starting until its first ready heartbeat: ``healthy_since``)
    STOPPING = "stopping"  # asked to stop after its task; killed at ``stop_deadline``
    KILLED = "killed"  # killed; waiting to see it gone


class EndedTask(StrEnum):
    """Why keepwarm itself ended a running task (its loop is killed; the event is named so)."""

    TASK_TIMEOUT = "task-timeout"  # published as failed
    CANCELLED = "cancelled"  # published as cancelled


def slot_name(index: int) -> str:
    """The name of the slot at ``index`` (``loop-0``, ``loop-1``, ...)."""
    return f"loop-{index}"


def slot_index(name: str) -> int:
    """The index in a slot's name; names without one sort last."""
    suffix = name.rpartition("-")[2]
    return int(suffix) if suffix.isdigit() else 1 << 30


@dataclass
class Slot:
    """A slot's live state inside the supervisor."""

    name: str
    row: LoopRow
    proc: LoopHandle | None = None
    phase: SlotPhase = SlotPhase.SCHEDULED
    start_at: float = 0.0  # SCHEDULED: when (monotonic) its next loop starts
    order: str = ""  # STOPPING, KILLED: why keepwarm ends the loop
    stop_deadline: float = 0.0  # STOPPING: when (monotonic) it is killed if still running
    crashes: int = 0
    healthy_since: float | None = None
    retiring: bool = False  # scaled down: the slot goes once its loop is gone
    fail_tasks: dict[str, EndedTask] = field(default_factory=dict)  # published once the loop is gone
    tasks_seen: int = 0
    beat_seen: tuple[str, int, str] | None = None  # the last heartbeat's (incarnation, seq, timestamp)
    beat_changed_at: float = 0.0  # when (monotonic, the supervisor's) the supervisor saw it change

    @property
    def alive(self) -> bool:
        """A loop fills the slot (until its exit is seen)."""
        return self.proc is not None

    @property
    def ordered(self) -> str | None:
        """The reason of the stop or kill keepwarm ordered, if it did."""
        return self.order if self.phase in (SlotPhase.STOPPING, SlotPhase.KILLED) else None

    @property
    def ready(self) -> bool:
        """A loop runs, reported ready, and nothing ordered it to end."""
        return self.phase is SlotPhase.RUNNING and self.healthy_since is not None

    def due(self, now: float) -> bool:
        """A loop should start in this slot now."""
        return self.phase is SlotPhase.SCHEDULED and self.start_at <= now

    def schedule(self, at: float) -> None:
        """No loop: start one at ``at`` (monotonic)."""
        self.phase, self.start_at = SlotPhase.SCHEDULED, at

    def hold(self) -> None:
        """No loop, and none to start until ``schedule``."""
        self.phase = SlotPhase.HELD

    def started(self, proc: LoopHandle) -> None:
        """A new loop fills the slot."""
        self.proc, self.phase, self.order = proc, SlotPhase.RUNNING, ""
        self.healthy_since = None
        self.tasks_seen = 0

    def stopping(self, reason: str, deadline: float) -> None:
        """The loop was asked to stop after its current task."""
        self.phase, self.order, self.stop_deadline = SlotPhase.STOPPING, reason, deadline

    def killed(self, reason: str | None = None) -> None:
        """The loop was killed (for ``reason``, else for the one of its stop)."""
        self.phase = SlotPhase.KILLED
        if reason is not None:
            self.order = reason

    def exited(self) -> None:
        """The loop is gone; the slot is held until the supervisor schedules the next one."""
        self.proc = None
        self.phase = SlotPhase.HELD
