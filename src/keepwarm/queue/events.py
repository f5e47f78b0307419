"""``events.jsonl``: an append-only, size-bounded log of what happened to tasks and loops."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from keepwarm.queue.task import utc_now

MAX_EVENTS_BYTES = 8 * 1024 * 1024


class EventLog:
    """Appends one JSON object per line; rotates to ``events.jsonl.1`` past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = MAX_EVENTS_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def append(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"timestamp": utc_now(), "event": kind, **fields}, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode())
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))

    def read(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every event of the current file (optionally of one kind), oldest first."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if kind is None or event.get("event") == kind:
                events.append(event)
        return events
