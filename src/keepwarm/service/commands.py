"""The supervisor's answers to control commands, apart from its tick.

Each handler takes the command's checked arguments, changes what the supervisor should do (the
tick carries it out), and returns the acknowledgement the sender waits for.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from keepwarm.errors import KeepwarmError
from keepwarm.queue.state import RestartReason
from keepwarm.queue.taskfiles import list_visible, task_id_from_name
from keepwarm.runtime.serving import CANCEL_MARKER
from keepwarm.service.control import (
    Ack,
    AckOutcome,
    CancelArgs,
    Command,
    CommandArgs,
    DrainArgs,
    RestartArgs,
    RollingRestartArgs,
    ScaleArgs,
    StopArgs,
    acknowledge,
    pending_commands,
)
from keepwarm.service.scaling import resize
from keepwarm.service.slots import EndedTask, slot_index

if TYPE_CHECKING:
    from keepwarm.service.slots import Slot
    from keepwarm.service.supervisor import Supervisor

log = logging.getLogger("keepwarm.service.supervisor")

MAX_SLOTS = 1024


def obey_commands(supervisor: Supervisor) -> None:
    """Answer every command waiting in ``control/``, oldest first, and record each in the events."""
    control_dir = supervisor.control_dir
    for path, command, problem in pending_commands(control_dir):
        if command is None:
            invalid = Ack(
                id=path.name.split(".")[0], command="?", ok=False, outcome=AckOutcome.INVALID, message=problem
            )
            acknowledge(control_dir, path, invalid)
            continue
        if command.supervisor_incarnation != supervisor.incarnation:
            ack = Ack(
                id=command.id,
                command=command.command,
                ok=False,
                outcome=AckOutcome.STALE,
                message=f"meant for supervisor {command.supervisor_incarnation}, "
                f"not {supervisor.incarnation}; not obeyed",
            )
        else:
            ack = obey(supervisor, command)
        supervisor.events.append("command", command=command.command, id=command.id, outcome=ack.outcome)
        acknowledge(control_dir, path, ack)


def obey(supervisor: Supervisor, command: Command) -> Ack:
    """Carry out one command meant for this supervisor; a supervisor never dies of a command."""
    try:
        reply = _handle(supervisor, command.arguments())
    except (KeyError, ValueError, TypeError, KeepwarmError) as exc:
        return Ack(
            id=command.id, command=command.command, ok=False, outcome=AckOutcome.INVALID, message=str(exc)
        )
    except Exception as exc:
        log.exception("command %s failed", command.command)
        return Ack(
            id=command.id, command=command.command, ok=False, outcome=AckOutcome.FAILED, message=repr(exc)
        )
    return Ack(
        id=command.id,
        command=command.command,
        ok=True,
        outcome=reply.outcome,
        message=reply.message,
        result=reply.result,
    )


@dataclass(frozen=True)
class _Reply:
    """What a handler that carried its command out tells the sender."""

    outcome: AckOutcome
    message: str
    result: dict[str, object] = field(default_factory=dict)


def _handle(supervisor: Supervisor, args: CommandArgs) -> _Reply:
    match args:
        case StopArgs():
            return _stop(supervisor, args)
        case DrainArgs():
            supervisor.mode = "draining"
            return _Reply(AckOutcome.ACCEPTED, "serving until pending and running are empty, then stopping")
        case ScaleArgs():
            return _scale(supervisor, args)
        case RestartArgs():
            return _restart(supervisor, args)
        case RollingRestartArgs():
            supervisor.rolling = sorted(supervisor.slots, key=slot_index)
            supervisor.rolling_current = None
            message = f"restarting {len(supervisor.rolling)} loops one at a time"
            return _Reply(AckOutcome.ACCEPTED, message)
        case CancelArgs():
            return _cancel(supervisor, args)


def _stop(supervisor: Supervisor, args: StopArgs) -> _Reply:
    if args.timeout is not None:
        supervisor.stop_timeout = args.timeout
    if args.shutdown is not None:
        supervisor.shutdown_cluster = args.shutdown
    supervisor.request_stop()
    return _Reply(AckOutcome.ACCEPTED, "stopping")


def _scale(supervisor: Supervisor, args: ScaleArgs) -> _Reply:
    autoscaler = supervisor.autoscaler
    if args.auto:
        if autoscaler is None:
            raise ValueError(
                "autoscaling is off for this service: set [cluster.autoscale] enabled = true, "
                "then start the service again"
            )
        autoscaler.pin(None)
        supervisor.publisher.write_state()  # before the answer: a status read after it shows it
        low, high = autoscaler.settings.min_loops, autoscaler.settings.max_loops
        said = f"on again, between {low} and {high} loops"
        return _Reply(AckOutcome.DONE, f"autoscaling {said}", {"from": supervisor.desired, "autoscale": said})
    target = args.slots
    if target is None or not 1 <= target <= MAX_SLOTS:
        raise ValueError(f"slots must be between 1 and {MAX_SLOTS}, got {target}")
    before = supervisor.desired
    resize(supervisor, target)
    result: dict[str, object] = {"from": before, "to": target}
    if autoscaler is not None:
        autoscaler.pin(target)
        supervisor.publisher.write_state()
        result["autoscale"] = f"paused at {target} loops until `keepwarm scale APP --auto`"
    return _Reply(AckOutcome.DONE, f"{before} -> {target} loops", result)


def _restart(supervisor: Supervisor, args: RestartArgs) -> _Reply:
    slot = supervisor.slots.get(args.slot)
    if slot is None:
        raise ValueError(f"no slot {args.slot!r}; slots: {', '.join(sorted(supervisor.slots))}")
    supervisor.retire(slot, RestartReason.OPERATOR_RESTART)
    return _Reply(AckOutcome.ACCEPTED, f"restarting {args.slot}")


def _cancel(supervisor: Supervisor, args: CancelArgs) -> _Reply:
    cancelled = supervisor.queue.cancel(args.task_ids, args.execution_id)
    running: list[str] = []
    for slot in supervisor.slots.values():
        running += _cancel_running(supervisor, slot, args)
    message = f"cancelled {len(cancelled)} pending and {len(running)} running"
    return _Reply(AckOutcome.DONE, message, {"cancelled": cancelled, "running_cancelled": running})


def _cancel_running(supervisor: Supervisor, slot: Slot, args: CancelArgs) -> list[str]:
    """Cancel the slot's running tasks the command names; their ids.

    An async loop cancels a task itself (its other tasks go on); a synchronous ``work()`` cannot be
    interrupted, so its loop is restarted and the task published as cancelled.
    """
    if slot.proc is None:
        return []
    owner = supervisor.queue.owner_dir(slot.name, slot.proc.incarnation)
    beat = supervisor.heartbeat(slot)
    in_loop = beat is not None and beat.incarnation == slot.proc.incarnation and beat.cancels_in_loop
    running: list[str] = []
    for name in list_visible(owner):
        task_id = task_id_from_name(name)
        if task_id is None or not (
            task_id in args.task_ids
            or (args.execution_id and _execution_of(owner / name) == args.execution_id)
        ):
            continue
        running.append(task_id)
        if in_loop:
            (owner / f"{CANCEL_MARKER}{task_id}").touch()
        else:
            slot.fail_tasks[task_id] = EndedTask.CANCELLED
    if EndedTask.CANCELLED in slot.fail_tasks.values():
        supervisor.kill(slot, RestartReason.LOOP_CANCELLED)
    return running


def _execution_of(path: Path) -> str | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value.get("execution_id") if isinstance(value, dict) else None
