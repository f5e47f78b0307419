"""Cleaning up after a dead supervisor: stop the loops it left, requeue their tasks once they are gone.

One routine for both who find a dead supervisor: the next supervisor (a step each tick, its slots
waiting for a loop that still finishes its task) and ``stop`` (the same steps, waited for).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from keepwarm._sys.procs import process_alive
from keepwarm.queue.state import LoopRow, SupervisorState
from keepwarm.queue.taskfiles import list_visible
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.runtime.heartbeat import read_heartbeat

if TYPE_CHECKING:
    from keepwarm.backends.base import LoopBackend

log = logging.getLogger("keepwarm.service.leftovers")


@dataclass(frozen=True)
class LeftClaim:
    """A claim folder in ``running/`` a dead supervisor's loop (or a canceller) left."""

    pid: int | None
    incarnation: str  # the loop's; "" for a canceller's or retrier's claim folder (``_<pid>-<seq>``)

    @property
    def by_canceller(self) -> bool:
        return not self.incarnation


class Leftovers:
    """What a dead supervisor left: its loops that still run, and every claim in ``running/``."""

    def __init__(
        self,
        queue: TaskQueue,
        backend: LoopBackend,
        state: SupervisorState | None,
        stop_timeout: float,
        *,
        log_level: int = logging.DEBUG,  # of each requeue: a supervisor logs it, stop says it once
    ) -> None:
        self.queue = queue
        self.log_level = log_level
        self.backend = backend
        rows = state.loops if state is not None else []
        self.loops: list[LoopRow] = [row for row in rows if self._alive(row.pid, row.slot, row.incarnation)]
        self.found = len(self.loops)
        self.claims: dict[Path, LeftClaim] = {
            queue.owner_dir(row.slot, row.incarnation): LeftClaim(row.pid, row.incarnation)
            for row in self.loops
        }
        pids = {f"{row.slot}.{row.incarnation}": row.pid for row in rows}
        for owner in list_visible(queue.running):
            slot, _, incarnation = owner.partition(".")
            if slot.startswith("_"):
                self.claims[queue.running / owner] = LeftClaim(_int_prefix(incarnation), "")
            else:
                pid = pids.get(owner) or _heartbeat_pid(queue, slot, incarnation)
                self.claims[queue.running / owner] = LeftClaim(pid, incarnation)
        self.deadline = time.monotonic() + stop_timeout
        self.requeued = 0

    @property
    def settled(self) -> bool:
        """Every loop is gone and every claim requeued."""
        return not self.loops and not self.claims

    def stop_loops(self) -> None:
        """Ask each loop left to finish its task and exit (its supervisor is gone)."""
        for row in self.loops:
            self.backend.stop_orphan(row.pid, row.slot, row.incarnation)

    def settle(self, reason: str, *, count_attempt: bool = True) -> set[str]:
        """One step, without waiting: kill loops past the deadline, requeue the claims of loops gone.

        Returns the slots whose loop still runs (its slot waits for it: it writes that slot's
        heartbeat). A canceller's claim waits for the canceller, which is short-lived and never killed;
        its tasks are requeued without an attempt spent.
        """
        past_deadline = time.monotonic() > self.deadline
        self.loops = [row for row in self.loops if self._alive(row.pid, row.slot, row.incarnation)]
        if past_deadline:
            for row in self.loops:
                self.backend.kill_orphan(row.pid, row.slot, row.incarnation)
        running: set[str] = set()
        for owner, claim in list(self.claims.items()):
            slot = owner.name.partition(".")[0]
            if owner.is_dir():  # else its owner finished and removed its folder: nothing to requeue
                if claim.by_canceller and claim.pid is not None and process_alive(claim.pid):
                    continue
                if not claim.by_canceller and self._alive(claim.pid, slot, claim.incarnation):
                    running.add(slot)
                    if past_deadline:
                        self.backend.kill_orphan(claim.pid, slot, claim.incarnation)
                    continue
                self._requeue(owner, reason, count_attempt and not claim.by_canceller)
            del self.claims[owner]
        return running

    def stop_and_requeue(self, reason: str, kill_grace: float) -> None:
        """Stop the loops, kill them at the deadline, then requeue every claim left (no attempt spent).

        A kill is delivered asynchronously: claims are requeued once the loops are gone, or
        ``kill_grace`` seconds after the kill at the latest.
        """
        self.stop_loops()
        give_up: float | None = None
        while not self.settled:
            self.settle(reason, count_attempt=False)
            now = time.monotonic()
            if give_up is None and now > self.deadline:
                give_up = now + kill_grace
            if give_up is not None and now > give_up:
                break
            time.sleep(0.02)
        for owner in list(self.claims):
            self._requeue(owner, reason, count_attempt=False)
        self.claims.clear()

    def _requeue(self, owner: Path, reason: str, count_attempt: bool) -> None:
        outcomes = self.queue.requeue(owner, reason, count_attempt=count_attempt)
        self.requeued += len(outcomes)
        if outcomes:
            log.log(self.log_level, "requeued %d tasks left by %s", len(outcomes), owner.name)

    def _alive(self, pid: int | None, slot: str, incarnation: str) -> bool:
        return self.backend.loop_alive(pid, slot, incarnation)


def _heartbeat_pid(queue: TaskQueue, slot: str, incarnation: str) -> int | None:
    """The pid of a loop the dead supervisor had not recorded yet (it died moments after starting
    it): the loop's heartbeat, written before its first claim, names it. Without it the loop would
    look dead, and its claims be requeued while it still works on them."""
    beat = read_heartbeat(queue.layout.heartbeat(slot))
    return beat.pid if beat is not None and beat.incarnation == incarnation else None


def _int_prefix(text: str) -> int | None:
    digits = text.partition("-")[0]
    return int(digits) if digits.isdigit() else None
