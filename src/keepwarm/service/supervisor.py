"""The supervisor: the one long-lived process per service that owns its loops.

It watches every loop (a process exit is seen at once through a pidfd; heartbeats every tick),
restarts what is unhealthy with back-off, requeues what a dead loop held, enforces task timeouts
and memory limits, obeys control commands, and writes ``supervisor.json``, ``health.json`` and
``events.jsonl`` — whether or not anybody is calling the API.

This module is the process and its tick; a slot's states are in ``slots``, the decisions in
``policy``, the heartbeats judged in ``watchdog``, a loop's exit in ``exits``, the commands in
``commands``, what a dead supervisor left in ``leftovers``, the files it writes in ``publish``.

Run as a process by ``keepwarm start`` (detached, holding ``service.lock``), or in the foreground
with ``keepwarm start APP --foreground``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Literal

from keepwarm._sys.child import child_parser, report
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm._sys.watch import IN_MOVED_TO, Watcher
from keepwarm.backends import make_backend
from keepwarm.backends.base import LoopBackend, LoopHandle
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.queue.state import (
    Condition,
    LoopRow,
    RestartEntry,
    RestartReason,
    is_planned,
    read_service_record,
    read_supervisor_state,
)
from keepwarm.queue.task import utc_now
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.runtime.heartbeat import Heartbeat, read_heartbeat
from keepwarm.runtime.template import TemplateWatch
from keepwarm.service.autoscale import Autoscaler
from keepwarm.service.commands import obey_commands
from keepwarm.service.exits import loop_exited
from keepwarm.service.leftovers import Leftovers
from keepwarm.service.publish import Publisher
from keepwarm.service.scaling import autoscale_tick, resize
from keepwarm.service.slots import Slot, SlotPhase, slot_name
from keepwarm.service.watchdog import check_backend, check_loops

log = logging.getLogger("keepwarm.service.supervisor")

KILL_GRACE_SEC = 10.0  # after a kill at the stop deadline, how long a loop may take to be seen gone
STARTING_TICK_SEC = 0.02  # a loop is starting: its first ready heartbeat is seen at once


class Supervisor:
    """One service's supervisor: its slots, its tick, and what it publishes."""

    def __init__(
        self, env: Env, incarnation: str, *, slots: int | None = None, backend: str | None = None
    ) -> None:
        self.env = env
        self.layout = env.layout
        self.backend = make_backend(env, backend)
        self.failure: str | None = None  # why the supervisor gives up (its backend is gone for good)
        self.shutdown_cluster: bool | None = None  # stop --shutdown/--no-shutdown
        self.orphan_backend: LoopBackend = self.backend
        self.settings = env.settings.cluster
        self.incarnation = incarnation
        self.host = os.uname().nodename
        self.queue = TaskQueue.for_env(env).ensure()
        self.events = self.queue.events
        self.control_dir = ensure_private_dir(self.layout.control)
        scaling = self.settings.autoscale
        self.autoscaler = Autoscaler(scaling) if scaling.enabled else None
        self.next_autoscale = 0.0
        self.desired = slots if slots is not None else self.settings.slots
        if self.autoscaler is not None:  # from min_loops, or the count start asked for, within bounds
            self.desired = self.autoscaler.bounded(slots if slots is not None else scaling.min_loops)
        self.slots: dict[str, Slot] = {}
        self.ledger: list[RestartEntry] = []
        self.mode: Literal["running", "draining", "stopping", "stopped"] = "running"
        self.rolling: list[str] = []
        self.rolling_current: str | None = None
        self.conditions: list[Condition] = []
        self.last_task_at: float | None = None
        self.started_at = utc_now()
        self.leftovers: Leftovers | None = None
        self.publisher = Publisher(self)
        self.template_watch = TemplateWatch(self.backend, self.publisher.write_state)  # [cluster] preload
        self.stop_timeout = self.settings.stop_timeout_sec
        self._stop_requested = False
        self.backend_lost_at: float | None = None
        self.storage_spared_until = 0.0  # stale heartbeats are spared until then (a storage fault)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.tick = min(max(self.settings.heartbeat_interval_sec / 2, 0.05), 1.0)

    # ------------------------------------------------------------------ entry

    def request_stop(self) -> None:
        """Stop at the next tick (safe from a signal handler)."""
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
        previous = read_service_record(self.layout.service_record)
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
        self.publisher.write_record("running")
        for index in range(self.desired):
            self.add_slot(slot_name(index))
        self._recover_leftovers()
        with Watcher([self.control_dir], mask=IN_MOVED_TO) as watcher:
            while not self._stop_requested:
                self._wait(watcher)
                self._reap()
                obey_commands(self)
                if self._stop_requested:
                    break
                check_loops(self)
                self._settle_leftovers()
                autoscale_tick(self)
                self._start_due()
                self._advance_rolling()
                self._check_drain()
                check_backend(self, time.monotonic())
                self.template_watch.record(self.events, self.conditions)
                self.publisher.periodic()
        self._shutdown()
        return 1 if self.failure else 0

    def _wait(self, watcher: Watcher) -> None:
        timeout = self.tick
        if any(slot.alive and slot.healthy_since is None for slot in self.slots.values()):
            timeout = STARTING_TICK_SEC
        now = time.monotonic()
        for slot in self.slots.values():
            if slot.phase is SlotPhase.SCHEDULED:
                timeout = min(timeout, max(0.0, slot.start_at - now))
        poller = select.poll()
        loop_fds = [s.proc.wake_fd for s in self.slots.values() if s.proc is not None]
        for fd in [self._wake_r, watcher.fileno(), *loop_fds]:
            if fd is not None and fd >= 0:
                poller.register(fd, select.POLLIN)
        poller.poll(int(timeout * 1000))
        watcher.discard_pending()
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # ------------------------------------------------------------------ slots

    def add_slot(self, name: str, planned: str | None = None) -> Slot:
        """A new slot, its loop due now."""
        row = LoopRow(slot=name, incarnation="-", host=self.host, started_at=time.time(), planned=planned)
        slot = self.slots[name] = Slot(name, row)
        slot.schedule(time.monotonic())
        return slot

    def drop_slot(self, slot: Slot) -> None:
        """Forget a slot scaled away (its loop is gone): the loop table without it is published
        before its heartbeat goes, so no reader sees its row without a heartbeat (missing-heartbeat)."""
        self.slots.pop(slot.name, None)
        self.publisher.write_state()
        self.layout.queue.heartbeat(slot.name).unlink(missing_ok=True)

    def heartbeat(self, slot: Slot) -> Heartbeat | None:
        """The slot's last heartbeat, whichever incarnation wrote it."""
        return read_heartbeat(self.layout.queue.heartbeat(slot.name))

    def _spawn(self, slot: Slot) -> None:
        proc = self.backend.spawn(slot.name, max_tasks=self.settings.max_tasks_per_loop)
        slot.started(proc)
        slot.row = slot.row.model_copy(
            update={
                "incarnation": proc.incarnation,
                "pid": proc.pid,
                "host": self.host,
                "future_state": "pending",
                "started_at": time.time(),
                "exit_code": None,
                "forked": bool(getattr(proc, "forked", False)),
            }
        )
        log.info("slot %s: started incarnation %s (%s)", slot.name, proc.incarnation, _where(proc))

    def _start_due(self) -> None:
        if self.mode not in ("running", "draining"):
            return
        now = time.monotonic()
        for slot in list(self.slots.values()):
            if not slot.alive and slot.due(now):
                self._spawn(slot)

    def kill(self, slot: Slot, reason: str) -> None:
        """Kill a loop now (frozen, stale, past its task's timeout, or cancelled)."""
        if slot.proc is None or slot.phase is SlotPhase.KILLED:
            return
        self._order(slot, reason)
        slot.killed(str(reason))
        log.warning("slot %s: killing %s: %s", slot.name, _where(slot.proc), reason)
        slot.proc.kill()

    def retire(self, slot: Slot, reason: str, *, again: bool = False) -> None:
        """Ask a loop to stop after its current task; killed at ``stop_timeout_sec``.

        A loop already ordered to end is left alone, unless ``again`` (the service stops).
        """
        if slot.proc is None or (slot.ordered is not None and not again):
            return
        self._order(slot, reason)
        slot.stopping(str(reason), time.monotonic() + self.stop_timeout)
        log.info("slot %s: stopping %s gracefully: %s", slot.name, _where(slot.proc), reason)
        slot.proc.stop()

    def _order(self, slot: Slot, reason: str) -> None:
        """A planned end is published before the loop is signalled, so no reader ever sees the
        loop's exit without knowing it was planned."""
        planned = str(reason) if is_planned(reason) else None
        if slot.row.planned != planned:
            slot.row = slot.row.model_copy(update={"planned": planned})
            self.publisher.write_state()

    # ------------------------------------------------------------------ exits

    def _reap(self) -> None:
        for slot in list(self.slots.values()):
            if slot.proc is None:
                continue
            code = slot.proc.poll()
            if code is not None:
                loop_exited(self, slot, code)
            elif slot.phase is SlotPhase.STOPPING and time.monotonic() > slot.stop_deadline:
                log.warning(
                    "slot %s: did not stop within %ss; killing", slot.name, self.settings.stop_timeout_sec
                )
                slot.killed()
                slot.proc.kill()

    # ------------------------------------------------------------------ what an earlier supervisor left

    def _recover_leftovers(self) -> None:
        """Claims left by loops of an earlier supervisor: requeued once their loop is confirmed dead."""
        previous = read_supervisor_state(self.layout.supervisor_state)
        if previous is not None and previous.mode != "stopped":
            # A supervisor that died: its restarts stay on record (and in restart_rate) for their window.
            self.ledger = list(previous.restarts)
            pinned = previous.autoscale.pinned if previous.autoscale else None
            if self.autoscaler is not None and pinned is not None:  # the operator's pin outlives it
                self.autoscaler.pin(pinned)
                resize(self, pinned)
            for row in previous.loops:
                if row.slot in self.slots:
                    same = self.slots[row.slot]
                    same.row = same.row.model_copy(update={"restarts": row.restarts})
        self.leftovers = Leftovers(
            self.queue,
            self.orphan_backend,
            previous,
            self.settings.stop_timeout_sec,
            log_level=logging.WARNING,
        )
        self.leftovers.stop_loops()
        self._settle_leftovers()

    def _settle_leftovers(self) -> None:
        """Settle what an earlier supervisor left; a slot whose earlier loop still finishes its task
        waits for it (that loop writes the slot's heartbeat)."""
        if self.leftovers is None:
            return
        still_running = self.leftovers.settle("supervisor-restart")
        now = time.monotonic()
        for slot in self.slots.values():
            if slot.alive:
                continue
            if slot.name in still_running:
                slot.hold()
            elif slot.phase is SlotPhase.HELD and self.mode != "stopping":
                slot.schedule(now)
        if self.leftovers.settled and self.orphan_backend is not self.backend:
            self.orphan_backend.retire()  # the backend of the previous start, now unused
            self.orphan_backend = self.backend

    # ------------------------------------------------------------------ rolling restart, drain

    def _advance_rolling(self) -> None:
        if not self.rolling or self.mode != "running":
            return
        current = self.slots.get(self.rolling_current or "")
        if current is not None:
            if current.ready:
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
        self.retire(self.slots[name], RestartReason.ROLLING_RESTART)

    def _check_drain(self) -> None:
        if self.mode == "draining":
            counts = self.queue.counts()
            if counts.pending == 0 and counts.running == 0:
                log.info("drained: no pending or running task; stopping")
                self._stop_requested = True

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        self.mode = "stopping"
        log.info(
            "stopping %d loops (they finish their current task within %ss)",
            len(self.slots),
            self.settings.stop_timeout_sec,
        )
        self.publisher.write_state()
        for slot in self.slots.values():
            if slot.alive:
                self.retire(slot, RestartReason.STOP, again=True)
        self._wait_for_loops(time.monotonic() + self.stop_timeout)
        self._settle_leftovers()
        for slot in self.slots.values():
            self.layout.queue.heartbeat(slot.name).unlink(missing_ok=True)
        self.backend.close(shutdown=self.shutdown_cluster)
        self.mode = "stopped"
        self.publisher.write_state()
        if self.failure is not None:  # service.json still says "running": status reads "error"
            self.events.append("failed", incarnation=self.incarnation, error=self.failure)
            log.error("supervisor %s gave up: %s; the next start recovers", self.incarnation, self.failure)
            return
        self.publisher.write_health()
        self.publisher.write_record("stopped")
        self.events.append("stopped", incarnation=self.incarnation)
        log.info("supervisor %s stopped", self.incarnation)

    def _wait_for_loops(self, deadline: float) -> None:
        """Wait for every loop to exit; kill those still running at ``deadline``."""
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
                    loop_exited(self, slot, code)
            time.sleep(0.01)


# ---------------------------------------------------------------------- helpers


def _where(proc: LoopHandle) -> str:
    how = ", forked" if getattr(proc, "forked", False) else ""  # [cluster] preload: from the template
    return f"pid {proc.pid}{how}" if proc.pid is not None else f"{type(proc).__name__} {proc.incarnation}"


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
    """``python -m keepwarm.service.supervisor``: the process ``keepwarm start`` spawns."""
    parser = child_parser("keepwarm.service.supervisor", __doc__)
    parser.add_argument("--incarnation", required=True)
    parser.add_argument("--slots", type=int)
    parser.add_argument("--backend", choices=["local", "dask"], help="default: [cluster] backend")
    parser.add_argument("--lock-fd", type=int, help="the flock on service.lock handed over by start")
    parser.add_argument("--detach", action="store_true", help="fork, report the supervisor's pid, and return")
    options = parser.parse_args(argv)
    if options.detach and os.fork() > 0:
        # The starter waits for this first process only; the supervisor is reparented to init, so no
        # caller ever holds it as an unreaped child.
        return 0
    if options.detach:
        report("detached", pid=os.getpid())
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s supervisor pid={os.getpid()} %(levelname)s %(message)s"
    )
    env = Env.of_child(options)
    lock_fd = options.lock_fd
    if lock_fd is None:
        lock_fd = acquire_lock(env.layout.lock)
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
