"""Publishing files so that readers never see half of one.

Every file is written to a temp name in the same folder (``.<name>.<random>.tmp``) and then renamed
(replace) or hard-linked (no clobber) to its final name.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def temp_name(folder: Path, final_name: str) -> Path:
    """A temp path beside ``final_name``: starts with ``.`` and ends with ``.tmp`` so scanners skip it."""
    return folder / f".{final_name}.{secrets.token_hex(4)}.tmp"


def write_temp(folder: Path, final_name: str, data: bytes, durable: bool = False) -> Path:
    """Write ``data`` to a temp file beside ``final_name`` (removed again if the write fails)."""
    return _write_temp(folder, final_name, data, durable)


def _write_temp(folder: Path, final_name: str, data: bytes, durable: bool) -> Path:
    tmp = temp_name(folder, final_name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def fsync_dir(folder: Path) -> None:
    """Make a rename or link in ``folder`` survive a machine crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``path``, replacing any previous file in one step."""
    tmp = _write_temp(path.parent, path.name, data, durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def publish_new(path: Path, data: bytes, durable: bool = False) -> bool:
    """Publish ``data`` at ``path`` unless a file is already there; True when this call won.

    Uses ``os.link`` so that two publishers racing for one name cannot overwrite each other.
    """
    tmp = _write_temp(path.parent, path.name, data, durable)
    try:
        os.link(tmp, path)
    except FileExistsError:
        # A retried link on a network filesystem can report EEXIST to the process that won.
        if not _same_file(tmp, path):
            _unlink_quietly(tmp)
            return False
    _unlink_quietly(tmp)
    if durable:
        fsync_dir(path.parent)
    return True


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
