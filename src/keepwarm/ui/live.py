"""The live view's memory: health reports sampled over time, as series the page can chart.

The page samples ``Service.status()`` at each refresh; this keeps the last samples of one service (ten
minutes at most) and derives throughput (terminal files per second between two samples) and the
series of loops, pending tasks and throughput the page draws on one chart. No I/O, no Streamlit.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keepwarm.service.report import HealthReport

WINDOW_SEC = 600.0  # what the live view keeps and draws: the last ten minutes
MAX_SAMPLES = 600  # ten minutes at the fastest refresh (1 s)


def clock(at: float) -> str:
    """``HH:MM:SS`` of epoch seconds ``at``, the server's local time: "as of" on what the page read."""
    return time.strftime("%H:%M:%S", time.localtime(at))


@dataclass(frozen=True)
class Sample:
    """One refresh: when, the queue's counts, and each loop's heartbeat age."""

    at: float
    pending: int
    running: int
    finished: int  # done + failed, as counted in the folders
    heartbeat_ages: dict[str, float | None]

    @classmethod
    def of(cls, report: HealthReport, at: float) -> Sample:
        queue = report.queue
        ages = {row.worker: row.heartbeat_age_sec for row in report.worker_health}
        return cls(at, queue.pending, queue.running, queue.done + queue.failed, ages)

    @property
    def loops(self) -> int:
        """The loops the report listed, starting ones included (one heartbeat age each)."""
        return len(self.heartbeat_ages)


@dataclass
class LiveHistory:
    """The samples of one service (the page keeps one per app), oldest first, the last ``WINDOW_SEC``."""

    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def add(self, sample: Sample) -> None:
        if self.samples and sample.at <= self.samples[-1].at:
            return  # two renders of the same instant add nothing
        self.samples.append(sample)
        while self.samples[0].at < sample.at - WINDOW_SEC:
            self.samples.popleft()

    @property
    def eventful(self) -> bool:
        """Something to chart: a loop was up, or the queue moved, in the samples kept. A stopped,
        idle service's flat lines are not redrawn at every refresh (the browser's cost, not ours)."""
        if not self.samples:
            return False
        first = self.samples[0]
        counts = (first.pending, first.running, first.finished)
        return any(s.heartbeat_ages or (s.pending, s.running, s.finished) != counts for s in self.samples)

    def throughput(self) -> list[tuple[float, float]]:
        """``(at, tasks finished per second since the previous sample)``, never negative."""
        pairs = zip(self.samples, list(self.samples)[1:], strict=False)
        return [(b.at, max(0, b.finished - a.finished) / (b.at - a.at)) for a, b in pairs]

    def recent_throughput(self, window_sec: float = 10.0) -> float | None:
        """Tasks finished per second over the last ``window_sec`` (None before two samples)."""
        if len(self.samples) < 2:
            return None
        last = self.samples[-1]
        first = next(s for s in self.samples if s.at >= last.at - window_sec or s is last)
        if first is last:
            first = self.samples[-2]
        return max(0, last.finished - first.finished) / (last.at - first.at)

    def fleet_series(self) -> list[tuple[float, str, float]]:
        """``(at, series, value)`` rows of the loops, the pending tasks and the throughput over time:
        what the live view draws on one chart (throughput from the second sample on)."""
        rows = [(s.at, "loops", float(s.loops)) for s in self.samples]
        rows += [(s.at, "pending", float(s.pending)) for s in self.samples]
        rows += [(at, "tasks/s", rate) for at, rate in self.throughput()]
        return rows
