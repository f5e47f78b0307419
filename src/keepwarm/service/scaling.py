"""Changing how many loops a service runs: ``keepwarm scale`` and the autoscaler's decisions.

Both are planned changes: a new slot starts as ``scale-up`` and a surplus loop stops after its
current task as ``scale-down``, so neither counts in ``restart_rate``, reads as an unplanned reason,
or trips the gate. The autoscaler's own policy is in :mod:`keepwarm.service.autoscale`; this module
gives it what the supervisor sees and carries out what it decides.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from keepwarm.queue.state import Condition, ConditionKind, RestartReason
from keepwarm.service.autoscale import Fleet, Load
from keepwarm.service.slots import Slot, slot_index, slot_name

if TYPE_CHECKING:
    from keepwarm.service.supervisor import Supervisor

log = logging.getLogger("keepwarm.service.supervisor")

AUTOSCALE_EVERY_SEC = 0.5  # how often the autoscaler reads the queue (a listing of its folders)


def resize(supervisor: Supervisor, target: int, *, idle_only: bool = False) -> int:
    """Keep ``target`` loops: slots stopping for a scale-down are kept again first, then new slots
    start; surplus loops, highest slot first, stop after their current task. ``idle_only`` leaves a
    loop that is working on a task for a later call. Returns the number of loops kept."""
    slots = supervisor.slots
    kept = [slot for slot in slots.values() if not slot.retiring]
    for slot in sorted((s for s in slots.values() if s.retiring), key=lambda s: slot_index(s.name)):
        if len(kept) >= target:
            break
        slot.retiring = False  # its loop still stops; the slot starts a new one after
        kept.append(slot)
    index = 0
    while len(kept) < target:
        while slot_name(index) in slots:
            index += 1
        kept.append(supervisor.add_slot(slot_name(index), planned=str(RestartReason.SCALE_UP)))
    for slot in sorted(kept, key=lambda s: slot_index(s.name), reverse=True):
        if len(kept) <= target:
            break
        if idle_only and _busy(supervisor, slot):
            continue
        kept.remove(slot)
        slot.retiring = True
        if slot.alive:
            supervisor.retire(slot, RestartReason.SCALE_DOWN)
        else:
            supervisor.drop_slot(slot)
    supervisor.desired = len(kept)
    supervisor.publisher.write_record("running")
    return len(kept)


def _busy(supervisor: Supervisor, slot: Slot) -> bool:
    beat = supervisor.heartbeat(slot)
    return beat is not None and beat.incarnation == slot.row.incarnation and bool(beat.task_id or beat.batch)


def _placed(supervisor: Supervisor) -> int:
    """Loops that hold a place on the backend: those kept, and those still finishing their task."""
    return sum(1 for slot in supervisor.slots.values() if slot.alive or not slot.retiring)


def fleet_of(supervisor: Supervisor, capacity: int | None = None) -> Fleet:
    """The loops the supervisor keeps: how many, how many still start, and a failing start's error."""
    kept = [slot for slot in supervisor.slots.values() if not slot.retiring]
    starting = [slot for slot in kept if slot.healthy_since is None]
    failing = next(
        (
            slot.row.start_error or slot.row.last_reason or "a loop exits before it is ready"
            for slot in starting
            if slot.crashes > 0
        ),
        None,
    )
    return Fleet(current=len(kept), starting=len(starting), failing=failing, capacity=capacity)


def autoscale_tick(supervisor: Supervisor, now: float | None = None) -> None:
    """Let the autoscaler decide from the queue now, and carry its decision out."""
    autoscaler = supervisor.autoscaler
    if autoscaler is None or supervisor.mode != "running":
        return
    now = time.monotonic() if now is None else now
    if now < supervisor.next_autoscale:
        return
    supervisor.next_autoscale = now + AUTOSCALE_EVERY_SEC
    counts = supervisor.queue.counts()
    load = Load(counts.pending, counts.running, counts.oldest_pending_age_sec)
    fleet = fleet_of(supervisor, capacity=supervisor.backend.fit(_placed(supervisor)))
    decision = autoscaler.decide(load, fleet, now)
    supervisor.conditions = [c for c in supervisor.conditions if c.kind is not ConditionKind.AUTOSCALE_HELD]
    if autoscaler.held is not None:
        supervisor.conditions.append(Condition(ConditionKind.AUTOSCALE_HELD, autoscaler.held))
    if decision is None:
        return
    target, why = decision
    kept = resize(supervisor, target, idle_only=target < fleet.current)
    supervisor.backend.fit(_placed(supervisor))  # a new loop's worker starts with it
    if kept == fleet.current:
        return  # every surplus loop is busy: the next tick tries again
    autoscaler.decided(fleet.current, kept, why)
    supervisor.events.append("autoscale", **{"from": fleet.current, "to": kept, "why": why})
    log.info("autoscale: %d -> %d loops (%s)", fleet.current, kept, why)
    supervisor.publisher.soon()
