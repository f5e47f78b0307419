"""A loop's exit, as the supervisor handles it: why it ended, its tasks, and its restart.

The tasks keepwarm itself ended (past their timeout, or cancelled while running) are published as
such; the rest are requeued. An unplanned end restarts after the back-off (``policy``), a planned one
at once; a retired slot goes, and nothing restarts while the service stops.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from keepwarm.queue.state import RestartEntry, is_planned
from keepwarm.queue.task import terminal_record
from keepwarm.queue.taskfiles import list_visible, task_id_from_name
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.service import policy
from keepwarm.service.slots import EndedTask

if TYPE_CHECKING:
    from keepwarm.service.slots import Slot
    from keepwarm.service.supervisor import Supervisor

log = logging.getLogger("keepwarm.service.supervisor")


def loop_exited(supervisor: Supervisor, slot: Slot, code: int) -> None:
    """The slot's loop exited with ``code``: settle its tasks, record why, restart it when due."""
    proc = slot.proc
    assert proc is not None
    beat = supervisor.heartbeat(slot)
    backend_reason = proc.exit_reason()
    reason = str(
        policy.exit_reason(
            ordered=slot.ordered,
            backend_reason=backend_reason,
            code=code,
            stop_reason=beat.stop_reason if beat is not None else None,
        )
    )
    future = policy.future_state_after_exit(
        code=code, ordered=slot.ordered is not None, backend_reason=backend_reason
    )
    planned = is_planned(reason)
    owner = supervisor.queue.owner_dir(slot.name, proc.incarnation)
    settle_claims(supervisor.queue, slot, owner, reason, count_attempt=not planned and not slot.fail_tasks)
    proc.close()
    start_error = beat.error if beat is not None and beat.incarnation == proc.incarnation else None
    log.log(
        logging.INFO if planned else logging.WARNING,
        "slot %s: incarnation %s exited with %s (%s)%s",
        slot.name,
        proc.incarnation,
        _describe_exit(code),
        reason,
        f": {start_error}" if start_error else "",
    )
    slot.exited()
    supervisor.publisher.soon()
    slot.row = slot.row.model_copy(
        update={
            "future_state": future,
            "exit_code": code,
            "last_reason": reason,
            "unhealthy_reason": None if planned else reason,
            "planned": reason if planned else None,
            "start_error": start_error or slot.row.start_error,
        }
    )
    if slot.retiring or supervisor.mode == "stopping":
        if slot.retiring:
            supervisor.drop_slot(slot)
        return
    _restart_later(supervisor, slot, reason, proc.incarnation, code)


def _restart_later(supervisor: Supervisor, slot: Slot, reason: str, incarnation: str, code: int) -> None:
    """Record the restart, and schedule it: at once if planned, else after the back-off."""
    supervisor.ledger.append(
        RestartEntry(slot=slot.name, at=time.time(), reason=reason, incarnation=incarnation)
    )
    supervisor.events.append("restart", slot=slot.name, reason=reason, incarnation=incarnation, exit=code)
    slot.row = slot.row.model_copy(update={"restarts": slot.row.restarts + 1})
    delay = 0.0
    if not is_planned(reason):
        delay = policy.restart_delay(
            slot.crashes, supervisor.settings.restart_backoff_sec, supervisor.settings.restart_backoff_max_sec
        )
        slot.crashes += 1
    slot.schedule(time.monotonic() + delay)
    slot.fail_tasks = {}


def settle_claims(queue: TaskQueue, slot: Slot, owner: Path, reason: str, *, count_attempt: bool) -> None:
    """The slot's loop is confirmed dead: publish what keepwarm decided for its tasks, requeue the rest."""
    ended = []
    for name in list_visible(owner):
        status = slot.fail_tasks.get(task_id_from_name(name) or "")
        task = None if status is None else queue.load_claimed(owner / name)
        if task is not None and status is not None:
            ended.append((name, task, status))
    timeouts = [t.timeout_sec for _, t, s in ended if s is EndedTask.TASK_TIMEOUT and t.timeout_sec]
    for name, task, status in ended:
        if status is EndedTask.TASK_TIMEOUT:
            record = terminal_record(
                task, "failed", error=_timeout_error(task.timeout_sec, timeouts), slot=slot.name
            )
        else:
            record = terminal_record(task, "cancelled", error="cancelled while running", slot=slot.name)
        queue.finish(owner / name, record)
        queue.events.append(str(status), task_id=task.task_id, slot=slot.name)
    for outcome in queue.requeue(owner, reason, count_attempt=count_attempt):
        log.info(
            "slot %s: task %s %s (attempt %d)", slot.name, outcome.task_id, outcome.outcome, outcome.attempt
        )


def _timeout_error(timeout_sec: float | None, batch_timeouts: list[float]) -> str:
    """A task-timeout's error: the task's own timeout, or its batch's smallest (where the batch ended)."""
    if len(batch_timeouts) < 2:
        return f"task-timeout: ran past its timeout of {timeout_sec}s"
    return (
        f"task-timeout: its work_batch() call, a batch of {len(batch_timeouts)}, ran past "
        f"{min(batch_timeouts)}s, the smallest timeout of its tasks"
    )


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
