"""Another process's times, moved onto the reader's clock through the share's (``queue.shareclock``).

``supervisor.json`` and a loop's heartbeat carry times their writer read from its own clock, which may
be 30 s off the reader's on another host. A reader that judges ages (health, status, a submit's "is
the service running") first rebases each such time: the file's age on the share's clock, plus how long
before writing the file the time was on its writer's clock, counted back from the reader's ``now``.
Then ``now - t`` is a true age, and no verdict compares two hosts' wall clocks.
"""

from __future__ import annotations

from pathlib import Path

from keepwarm.queue.shareclock import Clock
from keepwarm.queue.state import SupervisorState
from keepwarm.queue.task import epoch_of, iso_of
from keepwarm.runtime.heartbeat import Heartbeat


def rebase(clock: Clock, file_age: float, written_at: float, at: float) -> float:
    """``at``, on the clock of the process that wrote a file ``file_age`` ago (share's clock) at its
    ``written_at``, moved onto ``clock.now``'s clock."""
    return clock.now - file_age - (written_at - at)


def rebase_supervisor_state(state: SupervisorState, path: Path, clock: Clock) -> SupervisorState:
    """``supervisor.json`` (read from ``path``) with its heartbeat, loop starts, restarts, last task and
    last autoscale decision on the reader's clock; unchanged without a share clock."""
    file_age = clock.file_age(path)
    if file_age is None:
        return state
    written = state.timestamp

    def moved(at: float) -> float:
        return rebase(clock, file_age, written, at)

    update: dict[str, object] = {
        "timestamp": moved(written),
        "loops": [row.model_copy(update={"started_at": moved(row.started_at)}) for row in state.loops],
        "restarts": [entry.model_copy(update={"at": moved(entry.at)}) for entry in state.restarts],
        "last_task_at": None if state.last_task_at is None else moved(state.last_task_at),
    }
    decision = state.autoscale.last_decision if state.autoscale is not None else None
    if state.autoscale is not None and decision is not None:
        last = decision.model_copy(update={"at": moved(decision.at)})
        update["autoscale"] = state.autoscale.model_copy(update={"last_decision": last})
    return state.model_copy(update=update)


def rebase_heartbeat(beat: Heartbeat, path: Path, clock: Clock) -> Heartbeat:
    """A loop's heartbeat (read from ``path``) with its timestamp and its task's start on the reader's
    clock, the task's start from the loop's own monotonic count of its run when it reports one;
    unchanged without a share clock."""
    written = epoch_of(beat.timestamp)
    file_age = clock.file_age(path)
    if written is None or file_age is None:
        return beat
    update = {"timestamp": iso_of(rebase(clock, file_age, written, written))}
    started = epoch_of(beat.task_started_at)
    if beat.task_running_sec is not None:
        started = written - beat.task_running_sec
    if started is not None:
        update["task_started_at"] = iso_of(rebase(clock, file_age, written, started))
    return beat.model_copy(update=update)
