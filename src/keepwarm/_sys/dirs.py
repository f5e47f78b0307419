"""Folders only their owner may enter."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and every missing parent with mode 0700 (``mkdir -p`` would use the umask)."""
    missing = []
    folder = path
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not folder.is_dir():  # a file where a folder should be
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)) from None
    return path
