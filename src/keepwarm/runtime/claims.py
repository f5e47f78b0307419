"""A loop's claims: the names it may try next, learnt from wake-ups, and the renames that take them.

The loop learns new pending names from inotify events (or a poll with back-off on shared storage)
and from a periodic relisting, keeps them in a heap (oldest first), and claims by renaming them into
its own folder, never parsing a file it has not claimed. A claim takes at most what the loop will
start at once, so that no task waits behind a busy loop while another loop is idle.
"""

from __future__ import annotations

import heapq
import os
import time
from pathlib import Path

from keepwarm._sys.watch import Watcher
from keepwarm.queue.taskqueue import TaskQueue

RECENT_NAMES = 65_536  # far more than a loop holds at once (max_batch_size, concurrency: at most 10,000)


class Claims:
    """The candidates one loop incarnation may claim, and the waits for more."""

    def __init__(
        self, queue: TaskQueue, owner: Path, watcher: Watcher, rescan_sec: float, interrupt_fd: int
    ) -> None:
        self.queue = queue
        self._owner_prefix = f"{owner}{os.sep}"
        self.watcher = watcher
        self.rescan_sec = rescan_sec
        self.interrupt_fd = interrupt_fd
        self._candidates: list[str] = []
        self._next_rescan = 0.0
        # The names this loop claimed lately (oldest first). A name can be learnt twice (a stale
        # candidate, then the event of its requeue): its second claim must not count as a win.
        self._recent: dict[str, None] = {}

    def take(self, limit: int) -> list[str]:
        """Claim up to ``limit`` tasks, oldest first, among the names known; [] if none was won."""
        claimed: list[str] = []
        candidates, recent = self._candidates, self._recent
        while candidates and len(claimed) < limit:
            name = heapq.heappop(candidates)
            path = self.queue.claim_into(name, self._owner_prefix, held=name in recent)
            if path is not None:
                claimed.append(path)
                recent[name] = None
        if claimed:
            while len(recent) > RECENT_NAMES:
                del recent[next(iter(recent))]
            self.watcher.found_work()
        return claimed

    def forget(self, claimed: str) -> None:
        """A task this loop sent back to ``pending/`` itself: claiming its name again is a new win."""
        self._recent.pop(os.path.basename(claimed), None)

    def wait(self, at_most: float | None = None) -> bool:
        """Block until new names, the next relisting, ``at_most`` seconds, or an interrupt.

        True when interrupted (a stop request); the names learnt are kept for ``take``.
        """
        timeout = max(0.0, self._next_rescan - time.monotonic())
        if at_most is not None:
            timeout = min(timeout, at_most)
        wakeup = self.watcher.wait(timeout, interrupt_fd=self.interrupt_fd)
        if wakeup.interrupted:
            _drain(self.interrupt_fd)
        for name in wakeup.names:
            if name[0] != ".":
                heapq.heappush(self._candidates, name)
        if wakeup.rescan or time.monotonic() >= self._next_rescan:
            self._candidates = self.queue.scan_pending()  # sorted, so already a heap
            self._next_rescan = time.monotonic() + self.rescan_sec
        return wakeup.interrupted


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
