"""Can the service still deliver what a waiter waits for? A watch for ``wait_for_records``."""

from __future__ import annotations

import time

from keepwarm.env import Env
from keepwarm.errors import ServiceCannotDeliver, ServiceNotRunning
from keepwarm.queue.results import describe_awaited
from keepwarm.runtime.heartbeat import read_heartbeat
from keepwarm.service.health import evaluate_loop

FAILED_STARTS = 2  # failed starts in a row, in every slot, that mean the loops cannot start


class DeliveryWatch:
    """Whether the service can still deliver what a waiter waits for; raises ServiceCannotDeliver if not.

    It cannot when it stops during the wait (it was seen running, and its supervisor is gone), or when
    every loop keeps failing to start: each slot's last ``FAILED_STARTS`` incarnations said
    ``start failed`` with no loop healthy meanwhile. A service that never ran during the wait is waited
    for: its tasks were queued for the next start.
    """

    def __init__(self, env: Env) -> None:
        self.env = env
        self._seen_running = False
        self._failed_starts: dict[str, dict[str, str]] = {}  # slot -> incarnation -> its start error

    def __call__(self, remaining: set[str]) -> None:
        """Return while the service can deliver; else raise ServiceCannotDeliver saying what to do."""
        from keepwarm.service.lifecycle import live_supervisor  # the supervisor's code, only when waiting

        # The state files and heartbeats only (no queue listing): cheap at any queue size.
        name, awaited = self.env.app_target, describe_awaited(remaining)
        try:
            state = live_supervisor(self.env)
        except ServiceNotRunning:
            if self._seen_running:
                raise ServiceCannotDeliver(
                    f"service {name!r} stopped running while waiting for {awaited}; the "
                    f"tasks stay queued: start the service (keepwarm start {name}), then collect the "
                    f"results with keepwarm result {name} TASK_ID"
                ) from None
            return
        self._seen_running = True
        now = time.time()
        beats = {row.slot: read_heartbeat(self.env.layout.queue.heartbeat(row.slot)) for row in state.loops}
        cluster = self.env.settings.cluster
        if not state.loops or any(
            evaluate_loop(row, beats[row.slot], cluster, now).healthy for row in state.loops
        ):
            self._failed_starts.clear()
            return
        for slot, beat in beats.items():
            if beat is not None and beat.state == "stopped" and beat.error:
                self._failed_starts.setdefault(slot, {})[beat.incarnation] = beat.error
        failing = {slot: self._failed_starts.get(slot, {}) for slot in beats}
        if all(len(starts) >= FAILED_STARTS for starts in failing.values()):
            errors = "; ".join(f"{slot}: {list(starts.values())[-1]}" for slot, starts in failing.items())
            raise ServiceCannotDeliver(
                f"every loop of service {name!r} keeps failing to start ({errors}) while waiting for "
                f"{awaited}; the tasks stay queued: fix the app, then restart the service "
                f"(keepwarm stop {name}, keepwarm start {name}); logs: keepwarm logs {name}"
            )
