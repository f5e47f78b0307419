"""A service's log files: which there are, their last lines, then what is appended to them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from keepwarm.queue.layout import SUPERVISOR_LOG, loop_log_name

FOLLOW_POLL_SEC = 0.25


@dataclass(frozen=True)
class LogChunk:
    """Text of one log file: its last lines, or what was appended since it was last read."""

    path: Path
    text: str


def log_files(log_dir: Path, loop: str | None = None) -> list[Path]:
    """The logs that exist: ``loop``'s own, or the supervisor's then every loop's, by name."""
    names = (
        [loop_log_name(loop)]
        if loop
        else [SUPERVISOR_LOG, *sorted(p.name for p in log_dir.glob(loop_log_name("loop-*")))]
    )
    return [log_dir / name for name in names if (log_dir / name).is_file()]


class LogTail:
    """The last lines of some log files, then what is appended to them (a rotated file is read anew)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self._offsets: dict[Path, int] = {}

    def last_lines(self, lines: int) -> list[LogChunk]:
        """Each file's last ``lines`` lines, joined by newlines; following starts from their end."""
        chunks = []
        for path in self.paths:
            text = path.read_text(errors="replace")
            chunks.append(LogChunk(path, "\n".join(text.splitlines()[-lines:] if lines else [])))
            self._offsets[path] = len(text.encode())
        return chunks

    def follow(self, poll_sec: float = FOLLOW_POLL_SEC) -> Iterator[LogChunk]:
        """What is appended to each file from now on (or since :meth:`last_lines`), forever."""
        for path in self.paths:
            self._offsets.setdefault(path, path.stat().st_size if path.exists() else 0)
        while True:
            time.sleep(poll_sec)
            for path in self.paths:
                chunk = self._appended(path)
                if chunk is not None:
                    yield chunk

    def _appended(self, path: Path) -> LogChunk | None:
        size = path.stat().st_size if path.exists() else 0
        if size < self._offsets[path]:
            self._offsets[path] = 0  # rotated
        if size <= self._offsets[path]:
            return None
        with open(path, "rb") as handle:
            handle.seek(self._offsets[path])
            text = handle.read().decode(errors="replace")
        self._offsets[path] = size
        return LogChunk(path, text)
