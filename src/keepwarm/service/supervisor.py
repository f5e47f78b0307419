"""The supervisor: the one long-lived process per service that owns its loops.

It watches every loop (a process exit is seen at once through a pidfd; heartbeats every tick),
restarts what is unhealthy with back-off, requeues what a dead loop held, enforces task timeouts
and memory limits, obeys control commands, and writes ``supervisor.json``, ``health.json`` and
``events.jsonl`` — whether or not anybody is calling the API.

Run as a process by ``keepwarm start`` (detached, holding ``service.lock``), or in the foreground
with ``keepwarm start APP --foreground``.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from keepwarm import __version__
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm._sys.watch import IN_MOVED_TO, Watcher
from keepwarm.backends.local import LocalBackend, LoopProcess, process_running
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.queue.retention import enforce_retention
from keepwarm.queue.state import (
    PLANNED_REASONS,
    FutureState,
    LoopRow,
    RestartEntry,
    ServiceRecord,
    SupervisorIdentity,
    SupervisorState,
    read_service_record,
    read_supervisor_state,
    write_state,
)
from keepwarm.queue.task import epoch_of, utc_now
from keepwarm.queue.taskqueue import TaskQueue, list_visible, task_id_from_name, terminal_record
from keepwarm.runtime.heartbeat import Heartbeat, read_heartbeat
from keepwarm.runtime.loop import CANCEL_MARKER
from keepwarm.service.control import Ack, Command, acknowledge, pending_commands

log = logging.getLogger("keepwarm.service.supervisor")

HEALTH_EVERY_SEC = 2.0
KILL_GRACE_SEC = 10.0  # after a kill at the stop deadline, how long a loop may take to be seen gone
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.EACCES})


if TYPE_CHECKING:
    from keepwarm.backends.dask import DaskBackend, DaskLoop

    LoopHandle = LoopProcess | DaskLoop
    Backend = LocalBackend | DaskBackend


def make_backend(env: Env, name: str | None = None) -> Backend:
    """The backend named (else ``[cluster] backend``): Dask is imported only when it is chosen."""
    if (name or env.settings.cluster.backend) == "dask":
        from keepwarm.backends.dask import DaskBackend

        return DaskBackend(env)
    return LocalBackend(env)


def slot_name(index: int) -> str:
    return f"loop-{index}"


@dataclass
class Slot:
    """A slot's live state inside the supervisor (the row is what ``supervisor.json`` shows)."""

    name: str
    row: LoopRow
    proc: LoopHandle | None = None
    crashes: int = 0
    next_start: float | None = 0.0
    healthy_since: float | None = None
    ordered: str | None = None  # the reason of a stop or kill keepwarm ordered
    graceful_deadline: float | None = None
    retiring: bool = False
    fail_tasks: dict[str, str] = field(default_factory=dict)  # task_id -> terminal status to publish
    tasks_seen: int = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None


class Supervisor:
    def __init__(
        self, env: Env, incarnation: str, *, slots: int | None = None, backend: str | None = None
    ) -> None:
        self.env = env
        self.backend = make_backend(env, backend)
        self.failure: str | None = None  # why the supervisor gives up (its backend is gone for good)
        self.shutdown_cluster: bool | None = None  # stop --shutdown/--no-shutdown
        self.orphan_backend: Backend = self.backend
        self.settings = env.settings.cluster
        self.incarnation = incarnation
        self.host = os.uname().nodename
        self.queue = TaskQueue.for_env(env).ensure()
        self.events = self.queue.events
        self.control_dir = ensure_private_dir(env.service_dir / "control")
        self.state_path = env.service_dir / "supervisor.json"
        self.record_path = env.service_dir / "service.json"
        self.health_path = env.service_dir / "health.json"
        self.desired = slots if slots is not None else self.settings.slots
        self.slots: dict[str, Slot] = {}
        self.ledger: list[RestartEntry] = []
        self.mode: Literal["running", "draining", "stopping", "stopped"] = "running"
        self.rolling: list[str] = []
        self.rolling_current: str | None = None
        self.conditions: list[str] = []
        self.last_task_at: float | None = None
        self.started_at = utc_now()
        self.orphans: dict[Path, tuple[int | None, str]] = {}  # owner -> (pid, cmdline marker)
        self._orphan_deadline = time.monotonic() + self.settings.stop_timeout_sec
        self._stop_requested = False
        self._next_state = 0.0
        self._next_health = 0.0
        self._next_retention = 0.0
        self._last_gate: int | None = None
        self._backend_lost_at: float | None = None
        self.stop_timeout = self.settings.stop_timeout_sec
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        interval = self.settings.heartbeat_interval_sec
        self.tick = min(max(interval / 2, 0.05), 1.0)

    # ------------------------------------------------------------------ entry

    def request_stop(self) -> None:
        self._stop_requested = True
        self.wake()

    def wake(self) -> None:
        """Make the main loop look now (safe from a signal handler or another thread)."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def run(self) -> int:
        """Serve until a stop command or signal; returns the process exit code."""
        log.info(
            "supervisor %s of %s (namespace %s) starting %d loops; queue %s",
            self.incarnation,
            self.env.app_target,
            self.env.namespace,
            self.desired,
            self.queue.root,
        )
        previous = read_service_record(self.record_path)
        if previous is not None and previous.backend != self.backend.name:
            # Loops an earlier supervisor left are judged by the backend they run on.
            self.orphan_backend = make_backend(self.env, previous.backend)
        try:
            self.backend.open(self.incarnation, self.wake, self.desired)
        except Exception as exc:
            log.error("%s", exc, exc_info=not isinstance(exc, KeepwarmError))
            self.events.append("start-failed", incarnation=self.incarnation, error=str(exc))
            self.backend.close()
            return 1
        self._write_record("running")
        for index in range(self.desired):
            self._add_slot(slot_name(index))
        self._recover_orphans()
        with Watcher([self.control_dir], mask=IN_MOVED_TO) as watcher:
            while not self._stop_requested:
                self._wait(watcher)
                self._reap()
                self._obey_commands()
                if self._stop_requested:
                    break
                self._check_loops()
                self._check_orphans()
                if not self.orphans and self.orphan_backend is not self.backend:
                    self.orphan_backend.retire()  # the backend of the previous start, now unused
                    self.orphan_backend = self.backend
                self._start_due()
                self._advance_rolling()
                self._check_drain()
                self._periodic()
        self._shutdown()
        return 1 if self.failure else 0

    # ------------------------------------------------------------------ waiting

    def _wait(self, watcher: Watcher) -> None:
        timeout = self.tick
        if any(slot.alive and slot.healthy_since is None for slot in self.slots.values()):
            timeout = 0.02  # a loop is starting: see its first ready heartbeat at once
        now = time.monotonic()
        for slot in self.slots.values():
            if not slot.alive and slot.next_start is not None:
                timeout = min(timeout, max(0.0, slot.next_start - now))
        poller = select.poll()
        for fd in [
            self._wake_r,
            watcher.fileno(),
            *(
                s.proc.wake_fd
                for s in self.slots.values()
                if s.proc is not None and s.proc.wake_fd is not None
            ),
        ]:
            if fd >= 0:
                poller.register(fd, select.POLLIN)
        poller.poll(int(timeout * 1000))
        watcher.discard_pending()
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # ------------------------------------------------------------------ slots

    def _add_slot(self, name: str, planned: str | None = None) -> Slot:
        row = LoopRow(slot=name, incarnation="-", host=self.host, started_at=time.time(), planned=planned)
        slot = self.slots[name] = Slot(name, row, next_start=time.monotonic())
        return slot

    def _spawn(self, slot: Slot) -> None:
        proc = self.backend.spawn(slot.name, max_tasks=self.settings.max_tasks_per_loop)
        slot.proc = proc
        slot.row = slot.row.model_copy(
            update={
                "incarnation": proc.incarnation,
                "pid": proc.pid,
                "host": self.host,
                "future_state": "pending",
                "started_at": time.time(),
                "exit_code": None,
            }
        )
        slot.next_start = None
        slot.healthy_since = None
        slot.ordered = None
        slot.graceful_deadline = None
        slot.tasks_seen = 0
        log.info("slot %s: started incarnation %s (%s)", slot.name, proc.incarnation, _where(proc))

    def _start_due(self) -> None:
        if self.mode not in ("running", "draining"):
            return
        now = time.monotonic()
        for slot in list(self.slots.values()):
            if not slot.alive and slot.next_start is not None and slot.next_start <= now:
                self._spawn(slot)

    def _kill(self, slot: Slot, reason: str) -> None:
        """Kill a loop now (frozen, stale, past its task's timeout, or cancelled)."""
        if slot.proc is None or (slot.ordered is not None and slot.graceful_deadline is None):
            return
        self._order(slot, reason)
        slot.graceful_deadline = None
        log.warning("slot %s: killing %s: %s", slot.name, _where(slot.proc), reason)
        slot.proc.kill()

    def _retire(self, slot: Slot, reason: str) -> None:
        """Ask a loop to stop after its current task; killed at ``stop_timeout_sec``."""
        if slot.proc is None or slot.ordered is not None:
            return
        self._order(slot, reason)
        slot.graceful_deadline = time.monotonic() + self.stop_timeout
        log.info("slot %s: stopping %s gracefully: %s", slot.name, _where(slot.proc), reason)
        slot.proc.stop()

    def _order(self, slot: Slot, reason: str) -> None:
        """Record why keepwarm ends a loop; a planned end is published before the loop is signalled,
        so no reader ever sees the loop's exit without knowing it was planned."""
        slot.ordered = reason
        planned = reason if reason in PLANNED_REASONS else None
        if slot.row.planned != planned:
            slot.row = slot.row.model_copy(update={"planned": planned})
            self._write_state()

    # ------------------------------------------------------------------ exits

    def _reap(self) -> None:
        for slot in list(self.slots.values()):
            if slot.proc is None:
                continue
            code = slot.proc.poll()
            if code is None:
                if slot.graceful_deadline is not None and time.monotonic() > slot.graceful_deadline:
                    log.warning(
                        "slot %s: did not stop within %ss; killing", slot.name, self.settings.stop_timeout_sec
                    )
                    slot.graceful_deadline = None
                    slot.proc.kill()
                continue
            self._loop_exited(slot, code)

    def _loop_exited(self, slot: Slot, code: int) -> None:
        assert slot.proc is not None
        beat = self._heartbeat(slot)
        backend_reason = slot.proc.exit_reason()
        if slot.ordered is not None:
            reason = slot.ordered
        elif backend_reason is not None:
            reason = backend_reason
        elif code == 0 and beat is not None and beat.stop_reason == "max-tasks":
            reason = "recycled"
        elif code == 0:
            reason = "loop-finished"
        else:
            reason = "loop-error"
        future: FutureState = "finished" if code == 0 else ("cancelled" if slot.ordered else "error")
        if backend_reason == "worker-lost":
            future = "lost"
        planned = reason in PLANNED_REASONS
        owner = self.queue.owner_dir(slot.name, slot.proc.incarnation)
        self._settle_claims(slot, owner, reason, count_attempt=not planned and not slot.fail_tasks)
        slot.proc.close()
        start_error = beat.error if beat is not None and beat.incarnation == slot.proc.incarnation else None
        log.log(
            logging.INFO if planned else logging.WARNING,
            "slot %s: incarnation %s exited with %s (%s)%s",
            slot.name,
            slot.proc.incarnation,
            _describe_exit(code),
            reason,
            f": {start_error}" if start_error else "",
        )
        old_incarnation = slot.proc.incarnation
        slot.proc = None
        self._next_state = 0.0
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
        if slot.retiring or self.mode == "stopping":
            if slot.retiring:
                self._drop_slot(slot)
            return
        self.ledger.append(
            RestartEntry(slot=slot.name, at=time.time(), reason=reason, incarnation=old_incarnation)
        )
        self.events.append("restart", slot=slot.name, reason=reason, incarnation=old_incarnation, exit=code)
        slot.row = slot.row.model_copy(update={"restarts": slot.row.restarts + 1})
        if planned:
            delay = 0.0
        else:
            delay = 0.0 if slot.crashes == 0 else self._backoff(slot.crashes)
            slot.crashes += 1
        slot.next_start = time.monotonic() + delay
        slot.fail_tasks = {}

    def _backoff(self, crashes: int) -> float:
        base = self.settings.restart_backoff_sec
        return float(min(base * 2 ** (crashes - 1), self.settings.restart_backoff_max_sec))

    def _settle_claims(self, slot: Slot, owner: Path, reason: str, count_attempt: bool) -> None:
        """The loop is confirmed dead: publish what keepwarm decided, requeue the rest."""
        for name in list_visible(owner):
            task_id = task_id_from_name(name)
            status = slot.fail_tasks.get(task_id or "")
            if status is None:
                continue
            task = self.queue.load_claimed(owner / name)
            if task is None:
                continue
            error = (
                f"task-timeout: ran past its timeout of {task.timeout_sec}s"
                if status == "task-timeout"
                else "cancelled while running"
            )
            record = terminal_record(
                task, "cancelled" if status == "cancelled" else "failed", error=error, slot=slot.name
            )
            self.queue.finish(owner / name, record)
            self.events.append(status, task_id=task.task_id, slot=slot.name)
        for outcome in self.queue.requeue(owner, reason, count_attempt=count_attempt):
            log.info(
                "slot %s: task %s %s (attempt %d)",
                slot.name,
                outcome.task_id,
                outcome.outcome,
                outcome.attempt,
            )

    def _drop_slot(self, slot: Slot) -> None:
        self.slots.pop(slot.name, None)
        (self.queue.heartbeats / f"{slot.name}.json").unlink(missing_ok=True)

    # ------------------------------------------------------------------ health of live loops

    def _heartbeat(self, slot: Slot) -> Heartbeat | None:
        return read_heartbeat(self.queue.heartbeats / f"{slot.name}.json")

    def _check_loops(self) -> None:
        now_wall = time.time()
        now = time.monotonic()
        storage_fault = any(c.startswith("storage") for c in self.conditions)
        for slot in list(self.slots.values()):
            if slot.proc is None or (slot.ordered is not None and slot.graceful_deadline is None):
                continue
            beat = self._heartbeat(slot)
            timeout = self.settings.heartbeat_timeout_sec
            if beat is None or beat.incarnation != slot.proc.incarnation:
                # The first heartbeat comes after the interpreter started (or, on Dask, after a worker
                # took the loop): it gets the start's allowance, not a heartbeat's.
                allowance = max(timeout, self.settings.start_timeout_sec)
                if now_wall - slot.row.started_at > allowance and not storage_fault:
                    self._kill(slot, "missing-heartbeat")
                continue
            age = now_wall - (epoch_of(beat.timestamp) or 0.0)
            if age > timeout and not storage_fault:
                self._kill(slot, f"stale-heartbeat({int(age)}s)")
                continue
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
                    self._next_state = 0.0  # publish the change now: start is waiting for it
                if now - slot.healthy_since > self.settings.restart_reset_sec:
                    slot.crashes = 0
            seen = beat.tasks_done + beat.tasks_failed
            if seen > slot.tasks_seen:
                slot.tasks_seen = seen
                self.last_task_at = now_wall
            if beat.task_id and beat.task_started_at and beat.task_timeout_sec:
                running_for = now_wall - (epoch_of(beat.task_started_at) or now_wall)
                if running_for > beat.task_timeout_sec + max(1.0, self.settings.heartbeat_interval_sec):
                    slot.fail_tasks[beat.task_id] = "task-timeout"
                    self._kill(slot, "task-timeout")
                    continue
            limit = self.settings.max_memory_mb
            if limit and beat.rss_bytes and beat.rss_bytes > limit * 1024 * 1024:
                self._retire(slot, "memory-limit")

    # ------------------------------------------------------------------ orphans from an earlier supervisor

    def _recover_orphans(self) -> None:
        """Claims left by loops of an earlier supervisor: requeued once their loop is confirmed dead."""
        previous = read_supervisor_state(self.state_path)
        if previous is not None and previous.mode != "stopped":
            # A supervisor that died: its restarts stay on record (and in restart_rate) for their window.
            self.ledger = list(previous.restarts)
            for row in previous.loops:
                if row.slot in self.slots:
                    same = self.slots[row.slot]
                    same.row = same.row.model_copy(update={"restarts": row.restarts})
        pids = {f"{row.slot}.{row.incarnation}": row.pid for row in previous.loops} if previous else {}
        for row in previous.loops if previous else []:
            if self.orphan_backend.loop_alive(row.pid, row.slot, row.incarnation):
                # Its supervisor is gone: it finishes its task and exits.
                self.orphan_backend.stop_orphan(row.pid, row.slot, row.incarnation)
                self.orphans.setdefault(
                    self.queue.owner_dir(row.slot, row.incarnation), (row.pid, row.incarnation)
                )
        for owner in list_visible(self.queue.running):
            slot, _, incarnation = owner.partition(".")
            if slot.startswith("_"):  # a canceller's claim folder: <pid>-<seq>
                self.orphans[self.queue.running / owner] = (_int_prefix(incarnation), "")
            else:
                self.orphans[self.queue.running / owner] = (pids.get(owner), incarnation)
        self._check_orphans()

    def _check_orphans(self) -> None:
        now = time.monotonic()
        for owner, (pid, marker) in list(self.orphans.items()):
            slot = self.slots.get(owner.name.partition(".")[0])
            finished = not owner.is_dir()  # its owner finished and removed its folder: nothing to requeue
            if not finished and not marker and pid is not None and process_running(pid):
                continue  # a canceller or retrier: short-lived, never killed by keepwarm
            if (
                not finished
                and marker
                and self.orphan_backend.loop_alive(pid, owner.name.partition(".")[0], marker)
            ):
                # Still finishing its task after its supervisor died: its slot waits for it (it
                # writes that slot's heartbeat), and it gets stop_timeout_sec before it is killed.
                if slot is not None and not slot.alive:
                    slot.next_start = None
                if now > self._orphan_deadline:
                    self.orphan_backend.kill_orphan(pid, owner.name.partition(".")[0], marker)
                continue
            del self.orphans[owner]
            if slot is not None and not slot.alive and slot.next_start is None and self.mode != "stopping":
                slot.next_start = now
            if finished:
                continue
            planned = owner.name.startswith("_")
            outcomes = self.queue.requeue(owner, "supervisor-restart", count_attempt=not planned)
            if outcomes:
                log.warning("requeued %d tasks left by %s", len(outcomes), owner.name)

    # ------------------------------------------------------------------ commands

    def _obey_commands(self) -> None:
        for path, command, problem in pending_commands(self.control_dir):
            if command is None:
                acknowledge(
                    self.control_dir,
                    path,
                    Ack(
                        id=path.name.split(".")[0], command="?", ok=False, outcome="invalid", message=problem
                    ),
                )
                continue
            if command.supervisor_incarnation != self.incarnation:
                ack = Ack(
                    id=command.id,
                    command=command.command,
                    ok=False,
                    outcome="stale",
                    message=f"meant for supervisor {command.supervisor_incarnation}, "
                    f"not {self.incarnation}; not obeyed",
                )
            else:
                ack = self._obey(command)
            self.events.append("command", command=command.command, id=command.id, outcome=ack.outcome)
            acknowledge(self.control_dir, path, ack)

    def _obey(self, command: Command) -> Ack:
        handlers: dict[str, Callable[[Command], Ack]] = {
            "stop": self._cmd_stop,
            "drain": self._cmd_drain,
            "scale": self._cmd_scale,
            "restart": self._cmd_restart,
            "rolling-restart": self._cmd_rolling,
            "cancel": self._cmd_cancel,
        }
        try:
            return handlers[command.command](command)
        except (KeyError, ValueError, TypeError, KeepwarmError) as exc:
            return Ack(id=command.id, command=command.command, ok=False, outcome="invalid", message=str(exc))
        except Exception as exc:  # a supervisor never dies of a command
            log.exception("command %s failed", command.command)
            return Ack(id=command.id, command=command.command, ok=False, outcome="failed", message=repr(exc))

    def _cmd_stop(self, command: Command) -> Ack:
        if "timeout" in command.args:
            self.stop_timeout = float(command.args["timeout"])
        if command.args.get("shutdown") is not None:
            self.shutdown_cluster = bool(command.args["shutdown"])
        self._stop_requested = True
        return Ack(id=command.id, command="stop", ok=True, outcome="accepted", message="stopping")

    def _cmd_drain(self, command: Command) -> Ack:
        self.mode = "draining"
        return Ack(
            id=command.id,
            command="drain",
            ok=True,
            outcome="accepted",
            message="serving until pending and running are empty, then stopping",
        )

    def _cmd_scale(self, command: Command) -> Ack:
        target = int(command.args["slots"])
        if not 1 <= target <= 1024:
            raise ValueError(f"slots must be between 1 and 1024, got {target}")
        before = self.desired
        self.desired = target
        for index in range(target):
            name = slot_name(index)
            if name not in self.slots:
                self._add_slot(name, planned="scale-up")
            self.slots[name].retiring = False
        for name, slot in list(self.slots.items()):
            if _slot_index(name) >= target:
                slot.retiring = True
                if slot.alive:
                    self._retire(slot, "scale-down")
                else:
                    self._drop_slot(slot)
        self._write_record("running")
        return Ack(
            id=command.id,
            command="scale",
            ok=True,
            outcome="done",
            message=f"{before} -> {target} loops",
            result={"from": before, "to": target},
        )

    def _cmd_restart(self, command: Command) -> Ack:
        name = str(command.args["slot"])
        slot = self.slots.get(name)
        if slot is None:
            raise ValueError(f"no slot {name!r}; slots: {', '.join(sorted(self.slots))}")
        self._retire(slot, "operator-restart")
        return Ack(
            id=command.id, command="restart", ok=True, outcome="accepted", message=f"restarting {name}"
        )

    def _cmd_rolling(self, command: Command) -> Ack:
        self.rolling = sorted(self.slots, key=_slot_index)
        self.rolling_current = None
        return Ack(
            id=command.id,
            command="rolling-restart",
            ok=True,
            outcome="accepted",
            message=f"restarting {len(self.rolling)} loops one at a time",
        )

    def _cmd_cancel(self, command: Command) -> Ack:
        task_ids = [str(t) for t in command.args.get("task_ids", [])]
        execution_id = command.args.get("execution_id")
        cancelled = self.queue.cancel(task_ids, execution_id)
        running: list[str] = []
        for slot in self.slots.values():
            if slot.proc is None:
                continue
            owner = self.queue.owner_dir(slot.name, slot.proc.incarnation)
            beat = self._heartbeat(slot)
            in_loop = beat is not None and beat.incarnation == slot.proc.incarnation and beat.cancels_in_loop
            for name in list_visible(owner):
                task_id = task_id_from_name(name)
                if task_id is None or not (
                    task_id in task_ids or (execution_id and _execution_of(owner / name) == execution_id)
                ):
                    continue
                running.append(task_id)
                if in_loop:  # an async loop cancels the task itself; its other tasks go on
                    (owner / f"{CANCEL_MARKER}{task_id}").touch()
                else:  # a synchronous work() cannot be interrupted: its loop is restarted
                    slot.fail_tasks[task_id] = "cancelled"
            if any(v == "cancelled" for v in slot.fail_tasks.values()):
                self._kill(slot, "loop-cancelled")
        return Ack(
            id=command.id,
            command="cancel",
            ok=True,
            outcome="done",
            message=f"cancelled {len(cancelled)} pending and {len(running)} running",
            result={"cancelled": cancelled, "running_cancelled": running},
        )

    def _advance_rolling(self) -> None:
        if not self.rolling or self.mode != "running":
            return
        current = self.slots.get(self.rolling_current or "")
        if current is not None:
            if current.alive and current.healthy_since is not None and current.ordered is None:
                self.rolling.remove(current.name)
                self.rolling_current = None
            return
        ready = [s for s in self.slots.values() if s.alive and s.healthy_since is not None]
        if len(ready) < len(self.slots):
            return  # never below N-1 ready: wait until every loop is ready before taking the next
        name = self.rolling[0]
        if name not in self.slots:
            self.rolling.pop(0)
            return
        self.rolling_current = name
        self._retire(self.slots[name], "rolling-restart")

    def _check_drain(self) -> None:
        if self.mode == "draining":
            counts = self.queue.counts()
            if counts.pending == 0 and counts.running == 0:
                log.info("drained: no pending or running task; stopping")
                self._stop_requested = True

    # ------------------------------------------------------------------ files

    def _periodic(self) -> None:
        now = time.monotonic()
        self._check_backend(now)
        if now >= self._next_state:
            self._next_state = now + self.settings.heartbeat_interval_sec
            self._write_state()
        if now >= self._next_health:
            self._next_health = now + HEALTH_EVERY_SEC
            self._write_health()
        if now >= self._next_retention:
            self._next_retention = now + self._enforce_retention()

    def _check_backend(self, now: float) -> None:
        """A backend that stays unusable (the Dask scheduler gone) for a heartbeat timeout ends the
        supervisor with an error: status says ``error`` and the next ``start`` recovers."""
        problem = self.backend.check()
        self.conditions = [c for c in self.conditions if not c.startswith("cluster")]
        if problem is None:
            self._backend_lost_at = None
            return
        self.conditions.append(f"cluster: {problem}")
        if self._backend_lost_at is None:
            self._backend_lost_at = now
            log.error(
                "%s; giving up in %ss unless it comes back", problem, self.settings.heartbeat_timeout_sec
            )
        elif now - self._backend_lost_at > self.settings.heartbeat_timeout_sec:
            self.failure = problem
            self._stop_requested = True

    def _enforce_retention(self) -> float:
        """One small batch of retention; seconds until the next (soon while a backlog remains)."""
        try:
            report = enforce_retention(self.queue, self.settings, live_slots=set(self.slots))
        except OSError as exc:
            log.warning("retention skipped: %s", exc)
            return self.settings.retention_interval_sec
        if report.removed:
            log.info(
                "retention removed %d done, %d failed, %d heartbeat files",
                report.done,
                report.failed,
                report.heartbeats,
            )
        return (
            min(1.0, self.settings.retention_interval_sec)
            if report.more
            else self.settings.retention_interval_sec
        )

    def _state(self) -> SupervisorState:
        window = time.time() - self.settings.restart_window_sec
        self.ledger = [entry for entry in self.ledger if entry.at >= window]
        return SupervisorState(
            pid=os.getpid(),
            host=self.host,
            incarnation=self.incarnation,
            timestamp=time.time(),
            mode=self.mode,
            desired_slots=self.desired,
            loops=[slot.row for slot in sorted(self.slots.values(), key=lambda s: _slot_index(s.name))],
            restarts=self.ledger,
            conditions=self.conditions,
            last_task_at=self.last_task_at,
            version=__version__,
        )

    def _write_state(self) -> None:
        try:
            write_state(self.state_path, self._state())
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS:
                raise
            condition = f"storage: cannot write to the share ({exc.strerror})"
            if condition not in self.conditions:
                log.error("%s; loops are not judged by heartbeats until it is writable again", condition)
                self.conditions.append(condition)
            return
        self.conditions = [c for c in self.conditions if not c.startswith("storage")]

    def _write_health(self) -> None:
        """Write ``health.json``; record the SLA gate's verdict in ``events.jsonl`` when it changes."""
        from keepwarm.service.health import GateThresholds, evaluate_gate, evaluate_health

        try:
            report = evaluate_health(self.env)
            write_state(self.health_path, report)
            verdict = evaluate_gate(report, GateThresholds.from_settings(self.settings.service_health))
            if verdict.code != self._last_gate:
                self._last_gate = verdict.code
                self.events.append("gate", code=verdict.code, status=report.status, reasons=verdict.reasons)
        except OSError as exc:
            log.warning("health.json not written: %s", exc)

    def _write_record(self, desired: Literal["running", "stopped"]) -> None:
        record = read_service_record(self.record_path)
        identity = SupervisorIdentity(
            pid=os.getpid(),
            host=self.host,
            incarnation=self.incarnation,
            started_at=self.started_at,
            log=str(self.env.log_dir / "supervisor.log"),
        )
        write_state(
            self.record_path,
            ServiceRecord(
                app=self.env.app_target,
                namespace=self.env.namespace,
                desired=desired,
                backend=self.backend.name,
                cluster=self.backend.record(),
                slots=self.desired,
                supervisor=identity,
                started_at=record.started_at if record and desired == "stopped" else self.started_at,
                stopped_at=utc_now() if desired == "stopped" else None,
                app_dir=str(self.env.app_dir),
                settings=self.env.settings.model_dump(mode="json"),
                version=__version__,
            ),
        )

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        self.mode = "stopping"
        log.info(
            "stopping %d loops (they finish their current task within %ss)",
            len(self.slots),
            self.settings.stop_timeout_sec,
        )
        self._write_state()
        for slot in self.slots.values():
            if slot.alive:
                slot.ordered = None
                self._retire(slot, "stop")
        deadline = time.monotonic() + self.stop_timeout
        killed: set[str] = set()
        while any(slot.alive for slot in self.slots.values()):
            now = time.monotonic()
            for slot in self.slots.values():
                if slot.proc is None:
                    continue
                code = slot.proc.poll()
                if code is None and now > deadline and slot.name not in killed:
                    killed.add(slot.name)
                    slot.proc.kill()
                if code is None and now > deadline + KILL_GRACE_SEC:
                    log.error("slot %s: still not gone %ss after it was killed", slot.name, KILL_GRACE_SEC)
                    code = -signal.SIGKILL
                if code is not None:
                    slot.retiring = False
                    self._loop_exited(slot, code)
            time.sleep(0.01)
        self._check_orphans()
        for slot in self.slots.values():
            (self.queue.heartbeats / f"{slot.name}.json").unlink(missing_ok=True)
        self.backend.close(shutdown=self.shutdown_cluster)
        self.mode = "stopped"
        self._write_state()
        if self.failure is not None:  # service.json still says "running": status reads "error"
            self.events.append("failed", incarnation=self.incarnation, error=self.failure)
            log.error("supervisor %s gave up: %s; the next start recovers", self.incarnation, self.failure)
            return
        self._write_health()
        self._write_record("stopped")
        self.events.append("stopped", incarnation=self.incarnation)
        log.info("supervisor %s stopped", self.incarnation)


# ---------------------------------------------------------------------- helpers


def _where(proc: LoopHandle) -> str:
    return f"pid {proc.pid}" if proc.pid is not None else f"{type(proc).__name__} {proc.incarnation}"


def _slot_index(name: str) -> int:
    suffix = name.rpartition("-")[2]
    return int(suffix) if suffix.isdigit() else 1 << 30


def _int_prefix(text: str) -> int | None:
    digits = text.partition("-")[0]
    return int(digits) if digits.isdigit() else None


def _execution_of(path: Path) -> str | None:
    import json

    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value.get("execution_id") if isinstance(value, dict) else None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def acquire_lock(lock_path: Path) -> int | None:
    """Open and flock ``service.lock``; the fd if this process now holds it, None if another does."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keepwarm.service.supervisor", description=__doc__)
    parser.add_argument("--app", required=True)
    parser.add_argument("--share-dir")
    parser.add_argument("--namespace")
    parser.add_argument("--incarnation", required=True)
    parser.add_argument("--slots", type=int)
    parser.add_argument("--backend", choices=["local", "dask"], help="default: [cluster] backend")
    parser.add_argument("--lock-fd", type=int, help="the flock on service.lock handed over by start")
    parser.add_argument("--detach", action="store_true", help="fork, print the supervisor's pid, and return")
    options = parser.parse_args(argv)
    if options.detach and os.fork() > 0:
        # The starter waits for this first process only; the supervisor is reparented to init, so no
        # caller ever holds it as an unreaped child.
        return 0
    if options.detach:
        print(os.getpid(), flush=True)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s supervisor pid={os.getpid()} %(levelname)s %(message)s"
    )
    env = Env(options.app, share_dir=options.share_dir, namespace=options.namespace)
    lock_fd = options.lock_fd
    if lock_fd is None:
        lock_fd = acquire_lock(env.service_dir / "service.lock")
        if lock_fd is None:
            log.error("service %s is already running (service.lock is held)", env.app_target)
            return 1
    os.set_inheritable(lock_fd, False)  # loops must not hold the lock after the supervisor dies
    supervisor = Supervisor(env, options.incarnation, slots=options.slots, backend=options.backend)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: supervisor.request_stop())
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
