"""Autoscaling: how many loops a service runs, decided by its supervisor at each tick.

The supervisor gives the autoscaler what it already reads (tasks pending and running, the oldest
pending task's age, how many loops it runs and how many of them are still starting) and the
autoscaler answers with the number of loops to run, and why. What it decides is the operator's
``[cluster.autoscale]``:

- **the load's need**: ``ceil((pending + running) / target_pending_per_loop)`` loops, and, with
  ``target_pending_age_sec``, as many more as bring the oldest pending task's age back under the
  target (the loops now, times how far over it the age is);
- **no oscillation**: it grows only to what the load needed for all of the last
  ``scale_up_delay_sec`` (a burst shorter than that, which the loops drain anyway, starts nothing),
  and shrinks only to the most the load needed over the last ``scale_down_delay_sec``; a loop still
  starting counts as one that serves; from zero loops, a task starts one at once (a cold start);
- **bounds**: never below ``min_loops`` nor above ``max_loops``;
- **no crash loop fed**: while a loop fails to start, it does not grow (``held`` says why);
- **the operator wins**: ``keepwarm scale APP N`` pins the count until ``keepwarm scale APP --auto``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from keepwarm.queue.state import AutoscaleDecision, AutoscaleState
from keepwarm.settings_sections import AutoscaleSettings


@dataclass(frozen=True)
class Load:
    """What the queue holds now."""

    pending: int
    running: int
    oldest_pending_age_sec: float | None = None


@dataclass(frozen=True)
class Fleet:
    """The service's loops now: ``current`` counts every slot kept (``starting`` among them)."""

    current: int
    starting: int = 0
    failing: str | None = None  # why a loop fails to start, when one does
    capacity: int | None = None  # the most loops the backend places (a cluster keepwarm joined)


def needed_loops(load: Load, current: int, settings: AutoscaleSettings) -> tuple[int, str]:
    """The loops this instant's load calls for (before the bounds), and why, in words."""
    ongoing = load.pending + load.running
    target = settings.target_pending_per_loop
    needed = math.ceil(ongoing / target)
    why = f"backlog {load.pending}, {load.running} running: target {target:g} per loop"
    age, target_age = load.oldest_pending_age_sec, settings.target_pending_age_sec
    if target_age is not None and age is not None and age > target_age and load.pending:
        by_age = math.ceil(max(current, 1) * age / target_age)
        if by_age > needed:
            needed = by_age
            why = f"oldest pending task {age:.1f}s old: target {target_age:g}s"
    return needed, why


class Autoscaler:
    """One service's autoscaling: the recent needs, the pin, and the last decision."""

    def __init__(self, settings: AutoscaleSettings) -> None:
        self.settings = settings
        self.pinned: int | None = None
        self.last: AutoscaleDecision | None = None
        self.held: str | None = None
        self.desired: int | None = None
        self._needs: deque[tuple[float, int]] = deque()
        self._since: float | None = None  # the first need of the current observation
        self._load = Load(0, 0)

    def bounded(self, loops: int) -> int:
        return min(max(loops, self.settings.min_loops), self.settings.max_loops)

    def pin(self, loops: int | None) -> None:
        """``keepwarm scale APP N`` (None: ``--auto``, autoscaling again, from fresh observations)."""
        self.pinned = loops
        self._needs.clear()
        self._since = None

    def decide(self, load: Load, fleet: Fleet, now: float | None = None) -> tuple[int, str] | None:
        """The loops to run instead of ``fleet.current``, and why; None to keep them."""
        now = time.monotonic() if now is None else now
        self._load = load
        self.desired = fleet.current
        if self.pinned is not None:
            self.held = None
            return None
        settings = self.settings
        needed, why = needed_loops(load, fleet.current, settings)
        self._needs.append((now, needed))
        if self._since is None:
            self._since = now
        horizon = now - max(settings.scale_up_delay_sec, settings.scale_down_delay_sec)
        while len(self._needs) > 1 and self._needs[1][0] <= horizon:  # keep the one in force then
            self._needs.popleft()
        target = self._target(fleet.current, now)
        self.held = None
        if target > fleet.current and fleet.failing is not None:
            self.held = f"not growing while a loop fails to start: {fleet.failing}"
            return None
        if fleet.capacity is not None and target > fleet.capacity:
            self.held = (
                f"the cluster places {fleet.capacity} loops (workers offering the loop resource): "
                f"{target} cannot run there; add workers to the cluster"
            )
            target = max(fleet.capacity, fleet.current)
        if target == fleet.current:
            return None
        self.desired = target
        if target < fleet.current:
            why = f"{why}; surplus for {settings.scale_down_delay_sec:g}s"
        if target == settings.min_loops and needed < target:
            why = f"{why}; min_loops {settings.min_loops}"
        elif target == settings.max_loops and needed > target:
            why = f"{why}; max_loops {settings.max_loops}"
        return target, why

    def _target(self, current: int, now: float) -> int:
        """The count the needs of the delay windows justify (``current`` if none)."""
        bounded = self.bounded(current)
        if bounded != current:  # out of bounds (the settings changed, or a pin was lifted)
            return bounded
        latest = self._needs[-1][1]
        if current == 0 and latest > 0:
            return self.bounded(latest)  # nothing serves: a cold start does not wait
        up = self._sustained(now, self.settings.scale_up_delay_sec, min)
        if up is not None and up > current:
            return self.bounded(up)
        down = self._sustained(now, self.settings.scale_down_delay_sec, max)
        if down is not None and down < current:
            return self.bounded(down)
        return current

    def _sustained(self, now: float, delay: float, pick: Callable[[list[int]], int]) -> int | None:
        """``pick`` of the needs in force over the last ``delay`` seconds (the one observed at or
        before its start included), once they were observed for that long."""
        start = now - delay
        if self._since is None or self._since > start:
            return None  # not observed for that long yet
        before = [need for at, need in self._needs if at <= start][-1:]
        return pick(before + [need for at, need in self._needs if at > start])

    def decided(self, before: int, after: int, why: str) -> None:
        """Remember a decision carried out (``at`` in epoch seconds)."""
        self.last = AutoscaleDecision(at=time.time(), from_loops=before, to_loops=after, why=why)

    def state(self, fleet: Fleet) -> AutoscaleState:
        """What ``supervisor.json`` (and so health) shows of autoscaling."""
        settings = self.settings
        return AutoscaleState(
            min_loops=settings.min_loops,
            max_loops=settings.max_loops,
            desired=self.pinned if self.pinned is not None else (self.desired or fleet.current),
            current=fleet.current,
            starting=fleet.starting,
            pinned=self.pinned,
            held=self.held,
            pending=self._load.pending,
            running=self._load.running,
            target_pending_per_loop=settings.target_pending_per_loop,
            target_pending_age_sec=settings.target_pending_age_sec,
            last_decision=self.last,
        )
