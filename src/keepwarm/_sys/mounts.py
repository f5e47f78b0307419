"""Which mount a path is on, as ``/proc/self/mountinfo`` tells it: to say why two processes that
name the same folder do not see the same one (a bind mount, another filesystem, another host)."""

from __future__ import annotations

import os
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in octal (``\\040``)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def describe_mount(path: str | os.PathLike[str]) -> str:
    """The mount ``path`` is on, for a message: ``SOURCE at MOUNT_POINT (FSTYPE)``, with the folder of
    its filesystem mounted there when it is not the filesystem's root (a bind mount); ``unknown``
    where mountinfo cannot be read (not Linux)."""
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    try:
        lines = MOUNTINFO.read_text().splitlines()
    except OSError:
        return "an unknown mount"
    for line in lines:
        fields = line.split()
        try:
            separator = fields.index("-")
        except ValueError:
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        fstype, source = fields[separator + 1], _unescape(fields[separator + 2])
        under = target == point or target.startswith(point.rstrip("/") + "/")
        if under and (best is None or len(point) >= best[0]):  # the last of equal points is on top
            of = f", its folder {root}" if root != "/" else ""
            best = (len(point), f"{source} at {point} ({fstype}{of})")
    return best[1] if best is not None else "an unknown mount"
