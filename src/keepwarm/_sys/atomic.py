"""Publishing files so that readers never see half of one.

Every file is written to a temp name (``.<name>.<random>.tmp``, in the same folder unless the caller
names another folder of the same filesystem) and then renamed (replace) or renamed without clobber
(``renameat2(RENAME_NOREPLACE)``; a hard link where the filesystem lacks it) to its final name.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable
from pathlib import Path

from keepwarm._sys.entropy import random_hex

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_NO_RENAMEAT2 = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


def temp_name(folder: str | Path, final_name: str) -> str:
    """A temp path beside ``final_name``: starts with ``.`` and ends with ``.tmp`` so scanners skip it.

    The suffix only has to differ between this process's writers of one name (``O_EXCL`` refuses a
    clash): ``random_hex`` costs no system call, unlike ``secrets``.
    """
    return f"{folder}{os.sep}.{final_name}.{random_hex(32)}.tmp"


def write_temp(folder: str | Path, final_name: str, data: bytes, durable: bool = False) -> str:
    """Write ``data`` to a temp file beside ``final_name`` (removed again if the write fails)."""
    return _write_temp(folder, final_name, data, durable)


def _write_temp(folder: str | Path, final_name: str, data: bytes, durable: bool) -> str:
    tmp = temp_name(folder, final_name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        written = os.write(fd, data)
        if written < len(data):  # a short write: the rest, piece by piece
            view = memoryview(data)[written:]
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


def fsync_dir(folder: str | Path) -> None:
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


def publish_new(
    path: str | Path, data: bytes, durable: bool = False, temp_dir: str | Path | None = None
) -> bool:
    """Publish ``data`` at ``path`` unless a file is already there; True when this call won.

    The temp file is written in ``temp_dir`` (default: ``path``'s folder; it must be on the same
    filesystem), then moved without clobber, so that two publishers racing for one name cannot
    overwrite each other: one ``renameat2(RENAME_NOREPLACE)`` where the filesystem has it, else
    ``os.link`` and an unlink.
    """
    folder, name = os.path.split(path)
    tmp = _write_temp(temp_dir or folder, name, data, durable)
    try:
        won = _move_no_clobber(tmp, os.fspath(path))
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if durable and won:
        fsync_dir(folder)
    return won


def _move_no_clobber(tmp: str, path: str) -> bool:
    source, target = os.fsencode(tmp), os.fsencode(path)
    if _renameat2(_AT_FDCWD, source, _AT_FDCWD, target, _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        _unlink_quietly(tmp)
        return False
    if err not in _NO_RENAMEAT2:
        raise OSError(err, os.strerror(err), path)
    try:
        os.link(tmp, path)
    except FileExistsError:
        # A retried link on a network filesystem can report EEXIST to the process that won.
        if not _same_file(tmp, path):
            _unlink_quietly(tmp)
            return False
    _unlink_quietly(tmp)
    return True


def _load_renameat2() -> Callable[[int, bytes, int, bytes, int], int]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    function = getattr(libc, "renameat2", None)
    if function is None:  # a libc older than glibc 2.28: the link fallback for every publish

        def unavailable(*_: object) -> int:
            ctypes.set_errno(errno.ENOSYS)
            return -1

        return unavailable
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_renameat2 = _load_renameat2()


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
