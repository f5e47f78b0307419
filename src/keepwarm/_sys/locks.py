"""An exclusive lock on a file that writers replace by rename, for one read-modify-write at a time.

The lock is an ``flock`` on the file itself: no lock file is left beside it. A writer replaces the
file (temp file and rename) while it holds the lock, so a waiter that then gets the lock may hold the
old inode: it checks that the path still names the inode it locked, and locks the new one if not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked_file(path: Path, *, create: bool = False) -> Iterator[None]:
    """Hold an exclusive flock on the file ``path`` names, once the lock is ours.

    ``create``: make an empty file when there is none (an empty file must mean "nothing yet" to its
    readers); else a missing file raises ``FileNotFoundError``, as other ``OSError``s are raised.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    while True:
        fd = os.open(path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield
                return
        finally:
            os.close(fd)  # releases the lock
