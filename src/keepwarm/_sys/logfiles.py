"""Log files of keepwarm's processes: one generation of rotation, and the last lines for an error."""

from __future__ import annotations

import os
from pathlib import Path

MAX_LOG_BYTES = 10 * 1024 * 1024


def rotated(path: Path, max_bytes: int = MAX_LOG_BYTES) -> Path:
    """Move a log past ``max_bytes`` to ``<name>.1`` (one generation kept); returns ``path``."""
    try:
        if path.stat().st_size > max_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass
    return path


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log, to quote in an error ("(no log)" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
