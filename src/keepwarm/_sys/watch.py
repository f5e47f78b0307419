"""Wake-ups when files appear in a folder: inotify on local Linux filesystems, polling elsewhere.

inotify does not see changes made by another host on a shared filesystem, so the filesystem type
is checked with statfs(2) and shared ones are polled with back-off. ``KEEPWARM_WATCH=poll`` forces
polling.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000  # the kernel removed a watch: its folder was deleted, or unmounted
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
NEW_FILE_EVENTS = IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE

_EVENT_HEADER = struct.Struct("iIII")
_READ_SIZE = 65536
_LARGEST_EVENT = _EVENT_HEADER.size + 256  # a header and NAME_MAX + 1 bytes of name
POLL_MIN_SEC = 0.002
POLL_MAX_SEC = 0.25
MOVED_CHECK_SEC = 0.25  # how often a reused thread watcher checks that its folders are still at their paths

# statfs(2) f_type magic numbers of network and cluster filesystems, where inotify does not see what
# other hosts write (FUSE covers sshfs, glusterfs, virtiofs and friends).
_SHARED_FS = {
    0x6969: "nfs",
    0x517B: "smb",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x00C36400: "ceph",
    0x65735546: "fuse",
    0x01021997: "9p",
    0x0BD00BD0: "lustre",
    0x47504653: "gpfs",
    0x5346414F: "afs",
    0x6B414653: "kafs",
    0x7461636F: "ocfs2",
    0x01161970: "gfs2",
    0x19920407: "orangefs",
    0xAAD7AAEA: "panfs",
    0x786F4256: "vboxsf",
    0x73757245: "coda",
}


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]  # f_type comes first


def filesystem_magic(path: Path) -> int | None:
    """statfs(2)'s ``f_type`` of the filesystem holding ``path``, None if it cannot be read."""
    buffer = _Statfs()
    if _inotify_libc().statfs(os.fsencode(path), ctypes.byref(buffer)) != 0:
        return None
    return int(buffer.f_type) & 0xFFFFFFFF


_LOCAL_FS = {
    0xEF53: "ext4",
    0x01021994: "tmpfs",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x794C7630: "overlay",
}


def filesystem_type(path: Path) -> str | None:
    """A name for the filesystem holding ``path`` (``ext4``, ``nfs``, ...; else its magic in hex)."""
    magic = filesystem_magic(path)
    if magic is None:
        return None
    return _SHARED_FS.get(magic) or _LOCAL_FS.get(magic) or hex(magic)


def inotify_usable(path: Path) -> bool:
    """True when inotify sees every change to ``path``: Linux, a local filesystem, not disabled."""
    if not sys.platform.startswith("linux") or os.environ.get("KEEPWARM_WATCH") == "poll":
        return False
    magic = filesystem_magic(path)
    return magic is not None and magic not in _SHARED_FS


_libc: ctypes.CDLL | None = None


def _inotify_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


@dataclass
class Wakeup:
    """What a wait saw: new names, or that the caller must rescan (polling, overflow, interrupt)."""

    names: list[str] = field(default_factory=list)
    rescan: bool = False
    interrupted: bool = False


class Watcher:
    """Waits for new files in ``folders``; one inotify instance, or polling with back-off."""

    def __init__(self, folders: list[Path], mask: int = NEW_FILE_EVENTS) -> None:
        missing = [folder for folder in folders if not os.path.isdir(folder)]
        if missing:  # (statfs would fail and the watch fall back to polling for good)
            raise FileNotFoundError(errno.ENOENT, "cannot watch a missing folder", str(missing[0]))
        self.folders = folders
        self._identities = [_identity(folder) for folder in folders]
        self.checked_at = time.monotonic()  # when thread_watcher last asked moved()
        self.lost = False  # a folder's watch was removed, or its path names another: it polls from then on
        self.mode = "inotify" if folders and inotify_usable(folders[0]) else "poll"
        self._fd = -1
        self._wds: dict[int, Path] = {}
        self._poll_delay = POLL_MIN_SEC
        self._poller: tuple[int | None, select.poll] | None = None  # (interrupt fd, poll object)
        if self.mode == "inotify":
            libc = _inotify_libc()
            self._fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if self._fd < 0:
                self.mode = "poll"
                return
            for folder in folders:
                wd = libc.inotify_add_watch(self._fd, os.fsencode(folder), mask | IN_ONLYDIR)
                if wd < 0:
                    err = ctypes.get_errno()
                    self.close()
                    raise OSError(err, f"cannot watch {folder}: {os.strerror(err)}")
                self._wds[wd] = folder

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fileno(self) -> int:
        return self._fd

    def moved(self) -> bool:
        """Whether a watched path now names another folder (the share was mounted again, or the folder
        made again): an inotify watch stays on the old one and sees nothing new."""
        if not self.lost:
            try:
                self.lost = [_identity(folder) for folder in self.folders] != self._identities
            except OSError:
                self.lost = True
        return self.lost

    def found_work(self) -> None:
        """Reset the polling back-off: work is flowing."""
        self._poll_delay = POLL_MIN_SEC

    def wait(self, timeout: float | None, interrupt_fd: int | None = None) -> Wakeup:
        """Block until a new file, ``timeout`` seconds, or a byte on ``interrupt_fd``."""
        if self.mode == "poll" or self.lost:
            delay = self._poll_delay if timeout is None else min(self._poll_delay, timeout)
            self._poll_delay = min(self._poll_delay * 2, POLL_MAX_SEC)
            interrupted = _wait_readable([interrupt_fd] if interrupt_fd is not None else [], delay)
            return Wakeup(rescan=True, interrupted=bool(interrupted))
        ready = self._wait_readable(interrupt_fd, timeout)  # events already queued: readable at once
        wakeup = self._drain() if self._fd in ready else Wakeup()
        wakeup.interrupted = interrupt_fd is not None and interrupt_fd in ready
        return wakeup

    def _wait_readable(self, interrupt_fd: int | None, timeout: float | None) -> list[int]:
        """``_wait_readable`` on the inotify fd (and ``interrupt_fd``), with one poll object kept."""
        if self._poller is None or self._poller[0] != interrupt_fd:
            poller = select.poll()
            for fd in (self._fd, interrupt_fd):
                if fd is not None:
                    poller.register(fd, select.POLLIN)
            self._poller = (interrupt_fd, poller)
        # To the nearest millisecond (poll's unit): a batch's wait for more tasks ends on time, not up
        # to a millisecond late; a waiter woken a little early waits again for what is left.
        millis = None if timeout is None else max(0, round(timeout * 1000))
        return [fd for fd, _ in self._poller[1].poll(millis)]

    def discard_pending(self) -> None:
        """Forget events queued so far (a reused watcher's old news); the caller checks afresh."""
        if self.mode == "inotify":
            self._drain()

    def drain(self) -> Wakeup:
        """The events queued so far, without blocking (for an event loop's reader on ``fileno()``);
        a rescan when polling."""
        if self.mode == "poll":
            return Wakeup(rescan=True)
        return self._drain()

    def _drain(self) -> Wakeup:
        wakeup = Wakeup()
        while True:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return wakeup
            offset = 0
            while offset < len(data):
                _wd, event_mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
                offset += _EVENT_HEADER.size
                name = data[offset : offset + length].rstrip(b"\0")
                offset += length
                if event_mask & IN_Q_OVERFLOW:
                    wakeup.rescan = True
                elif event_mask & IN_IGNORED:  # what the folder held now is unknown
                    wakeup.rescan = self.lost = True
                elif name:
                    wakeup.names.append(os.fsdecode(name))
            if len(data) < _READ_SIZE - _LARGEST_EVENT:
                return wakeup  # room was left for another event: the queue is empty (no read for EAGAIN)


_thread_watchers = threading.local()


def thread_watcher(folders: tuple[Path, ...], mask: int = NEW_FILE_EVENTS) -> Watcher:
    """A watcher on ``folders`` kept for this thread's life and reused.

    Closing an inotify instance waits for an RCU grace period (milliseconds), so a caller that
    waits often (a result waiter) keeps one per thread instead of opening one per wait. One whose
    watch was lost, or whose folders moved (``Watcher.moved``, looked at most every
    ``MOVED_CHECK_SEC``: two stats), is replaced.
    """
    cache: dict[tuple[tuple[Path, ...], int], Watcher] = _thread_watchers.__dict__.setdefault("by_key", {})
    watcher = cache.get((folders, mask))
    if watcher is not None and watcher.mode == "inotify" and _moved_now(watcher):
        del cache[(folders, mask)]
        watcher.close()
        watcher = None
    if watcher is None:
        if len(cache) >= 16:
            cache.pop(next(iter(cache))).close()
        watcher = cache[(folders, mask)] = Watcher(list(folders), mask)
    # A watcher handed out again starts a new wait: a polling one backs off from the shortest delay
    # again (a result wait on a shared filesystem first polled after the previous wait's 250 ms).
    watcher.found_work()
    return watcher


def _moved_now(watcher: Watcher) -> bool:
    if watcher.lost:
        return True
    now = time.monotonic()
    if now - watcher.checked_at < MOVED_CHECK_SEC:
        return False
    watcher.checked_at = now
    return watcher.moved()


def _identity(folder: Path) -> tuple[int, int]:
    stat = os.stat(folder)
    return stat.st_dev, stat.st_ino


def _wait_readable(fds: list[int], timeout: float | None) -> list[int]:
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    millis = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return [fd for fd, _ in poller.poll(millis)]
