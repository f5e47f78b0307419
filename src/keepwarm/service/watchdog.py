"""The supervisor's watch over its live loops (each heartbeat judged, and acted on) and its backend.

A loop that never beats or stops beating is killed (not while the share cannot be written: then
heartbeats prove nothing); a task past its timeout kills its loop; a loop over its memory limit is
retired after its task. The thresholds are ``policy``'s. A backend that stays unusable for a
heartbeat timeout ends the supervisor with an error.

A loop may run on a host whose clock disagrees with the supervisor's: its heartbeat is judged by its
progress (a new ``seq``) timed on the supervisor's own monotonic clock, and its task by the run time the
loop counts on its own monotonic clock, never by the loop's wall-clock times against the supervisor's.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from keepwarm.queue.state import Condition, ConditionKind, RestartReason
from keepwarm.queue.task import epoch_of
from keepwarm.service import policy
from keepwarm.service.health import storage_conditions
from keepwarm.service.slots import EndedTask, SlotPhase

if TYPE_CHECKING:
    from keepwarm.runtime.heartbeat import Heartbeat
    from keepwarm.service.slots import Slot
    from keepwarm.service.supervisor import Supervisor

log = logging.getLogger("keepwarm.service.supervisor")


def check_loops(supervisor: Supervisor) -> None:
    """Judge every live loop by its heartbeat; kill or retire those that need it."""
    # The supervisor's own failed write, or the share seen full or read-only now (a write of its own
    # can succeed on a full share, in a block another writer freed), and for a heartbeat timeout after
    # the fault is gone: a loop that could not write its heartbeat needs that long to write it again.
    now = time.monotonic()
    if any(c.kind is ConditionKind.STORAGE for c in supervisor.conditions) or storage_conditions(
        supervisor.env.queue_dir
    ):
        supervisor.storage_spared_until = now + supervisor.settings.heartbeat_timeout_sec
    storage_fault = now < supervisor.storage_spared_until
    for slot in list(supervisor.slots.values()):
        if slot.proc is None or slot.phase is SlotPhase.KILLED:
            continue
        now_wall = time.time()
        beat = supervisor.heartbeat(slot)
        if beat is None or beat.incarnation != slot.proc.incarnation:
            if not storage_fault and policy.first_heartbeat_overdue(
                started_for=now_wall - slot.row.started_at,
                heartbeat_timeout_sec=supervisor.settings.heartbeat_timeout_sec,
                start_timeout_sec=supervisor.settings.start_timeout_sec,
            ):
                supervisor.kill(slot, RestartReason.MISSING_HEARTBEAT)
            continue
        age = beat_age(slot, beat, now)
        stale = policy.stale_heartbeat_reason(age, supervisor.settings.heartbeat_timeout_sec)
        if stale is not None and not storage_fault:
            supervisor.kill(slot, stale)
            continue
        _judge_beat(supervisor, slot, beat, now_wall, age)


def beat_age(slot: Slot, beat: Heartbeat, now: float) -> float:
    """Seconds (on the supervisor's monotonic clock ``now``) since the supervisor saw ``slot``'s
    heartbeat change; a heartbeat seen for the first time is new."""
    seen = (beat.incarnation, beat.seq, beat.timestamp)
    if seen != slot.beat_seen:
        slot.beat_seen, slot.beat_changed_at = seen, now
    return now - slot.beat_changed_at


def _judge_beat(supervisor: Supervisor, slot: Slot, beat: Heartbeat, now_wall: float, age: float) -> None:
    """A fresh heartbeat (seen changing ``age`` seconds ago): the loop's readiness, its tasks, its
    task's timeout, its memory."""
    now = time.monotonic()
    if beat.state in ("ready", "processing"):
        if slot.healthy_since is None:
            slot.healthy_since = now
            slot.row = slot.row.model_copy(  # where it runs, as the loop itself reports
                update={
                    "future_state": "running",
                    "unhealthy_reason": None,
                    "planned": slot.row.planned if slot.ordered else None,  # ordered meanwhile
                    "start_error": None,
                    "pid": beat.pid,
                    "host": beat.host,
                }
            )
            supervisor.publisher.soon()  # start is waiting for it
        if policy.crash_count_resets(now - slot.healthy_since, supervisor.settings.restart_reset_sec):
            slot.crashes = 0
    seen = beat.tasks_done + beat.tasks_failed
    if seen > slot.tasks_seen:
        slot.tasks_seen = seen
        supervisor.last_task_at = now_wall
    if beat.task_id and beat.task_started_at and beat.task_timeout_sec:
        if beat.task_running_sec is not None:  # the loop's own count, and the time since it said so
            running_for = beat.task_running_sec + age
        else:  # a loop of an earlier keepwarm: its clock against this one's
            running_for = now_wall - (epoch_of(beat.task_started_at) or now_wall)
        if policy.task_overdue(
            running_for=running_for,
            task_timeout_sec=beat.task_timeout_sec,
            heartbeat_interval_sec=supervisor.settings.heartbeat_interval_sec,
        ):
            for task_id in beat.batch or [beat.task_id]:  # a work_batch() call ends for all its tasks
                slot.fail_tasks[task_id] = EndedTask.TASK_TIMEOUT
            supervisor.kill(slot, RestartReason.TASK_TIMEOUT)
            return
    if policy.over_memory_limit(beat.rss_bytes, supervisor.settings.max_memory_mb):
        supervisor.retire(slot, RestartReason.MEMORY_LIMIT)


def check_backend(supervisor: Supervisor, now: float) -> None:
    """A backend that stays unusable (the Dask scheduler gone) for a heartbeat timeout ends the
    supervisor with an error: status says ``error`` and the next ``start`` recovers."""
    problem = supervisor.backend.check()
    supervisor.conditions = [c for c in supervisor.conditions if c.kind is not ConditionKind.CLUSTER]
    if problem is None:
        supervisor.backend_lost_at = None
        return
    supervisor.conditions.append(Condition(ConditionKind.CLUSTER, problem))
    if supervisor.backend_lost_at is None:
        supervisor.backend_lost_at = now
        log.error(
            "%s; giving up in %ss unless it comes back", problem, supervisor.settings.heartbeat_timeout_sec
        )
    elif now - supervisor.backend_lost_at > supervisor.settings.heartbeat_timeout_sec:
        supervisor.failure = problem
        supervisor.request_stop()
