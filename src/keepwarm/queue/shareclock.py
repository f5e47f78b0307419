"""Ages on one clock: the share's own, never one host's wall clock against another's.

A process writes a time it read from its own clock (a heartbeat's ``timestamp``, a task's start);
another process, maybe on a host whose clock is 30 s off, judges how old it is. Comparing that time
with the reader's ``time.time()`` measures the skew between the two hosts as much as the age. The share
stamps every file it stores with its own clock (the mtime, set by the kernel or file server that holds
the share), so a reader learns "now" on that clock by writing a probe file of its own and reading its
mtime, and a file's age is the probe's mtime minus the file's. A time the writer put inside the file
is aged through the file it came in: the file's age on the share's clock plus how long before writing
the file the event was, on the writer's own clock.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROBE_PREFIX = ".clock-"  # a dot name: no queue listing counts it
PROBE_EVERY_SEC = 1.0  # how long a probe's offset between the reader's clock and the share's holds
_offsets: dict[str, tuple[float, float]] = {}  # folder -> (share minus reader seconds, monotonic when)


@dataclass(frozen=True)
class Clock:
    """Ages of what other processes wrote, judged at one instant.

    ``share_now`` is the share's time at the probe (None: the share cannot be written, or the caller
    gave ``now`` itself, as tests do: written times are then taken as they are, on ``now``'s clock).
    """

    now: float  # the reader's epoch seconds: the report's timestamp
    share_now: float | None = None

    @classmethod
    def fixed(cls, now: float) -> Clock:
        """Written times judged against ``now`` (a caller that vouches for one clock: tests)."""
        return cls(now)

    @classmethod
    def of_share(cls, folder: Path, now: float) -> Clock:
        """The share holding ``folder``; ``now`` is the reader's clock. The share is probed at most
        every ``PROBE_EVERY_SEC`` per folder: in between, its time is the reader's plus the offset
        the last probe measured (a submit's liveness check would otherwise write a file each time)."""
        key = str(folder)
        known = _offsets.get(key)
        ticked = time.monotonic()
        if known is not None and ticked - known[1] < PROBE_EVERY_SEC:
            return cls(now, now + known[0])
        share_now = share_time(folder)
        if share_now is None:
            _offsets.pop(key, None)
            return cls(now)
        if len(_offsets) >= 256:
            _offsets.clear()
        _offsets[key] = (share_now - time.time(), ticked)
        return cls(now, share_now + (now - time.time()))

    def file_age(self, path: Path) -> float | None:
        """How long ago ``path`` was last written, on the share's clock (None: no share clock, or no
        file)."""
        if self.share_now is None:
            return None
        try:
            return max(0.0, self.share_now - path.stat().st_mtime)
        except OSError:
            return None


def share_time(folder: Path) -> float | None:
    """The share's clock now: the mtime the share stamps on a probe file this host writes in ``folder``
    (one byte, rewritten in place: the file server sets the time of a write, where a utime may carry
    the client's; a truncation would cost 30 times more on ext4). None when it cannot be written (a
    read-only or full share)."""
    probe = folder / f"{PROBE_PREFIX}{os.uname().nodename}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        os.pwrite(fd, b"\n", 0)
        return os.fstat(fd).st_mtime
    except OSError:
        return None
    finally:
        os.close(fd)
