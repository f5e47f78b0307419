"""Processes of this host: whether one still runs, signals to one that may be gone, a child that
ends with its parent, and this process's memory."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PF_KTHREAD = 0x00200000  # /proc/<pid>/stat flags: a kernel thread
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_alive(pid: int | None, marker: str = "") -> bool:
    """True when ``pid`` runs on this host (whoever owns it) and is not a zombie; given a ``marker``,
    also that its command line contains it, which guards against a reused pid (loops carry their
    incarnation on their command line).

    A process that is exiting has already dropped its command line but is not yet a zombie: it still
    counts as running (unless it is a kernel thread, whose command line is always empty).
    """
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        state, flags = fields[0], int(fields[6])
    except FileNotFoundError:
        return False  # gone since the signal
    except (OSError, IndexError, ValueError):
        return not marker  # no /proc to ask: the signal's answer, unless the pid must be identified
    if state in (b"Z", b"X"):
        return False
    if not marker:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read()
    except OSError:
        return False
    if marker.encode() in command:
        return True
    return not command and not flags & _PF_KTHREAD


def signal_quietly(pid: int, signum: int) -> None:
    """Send a signal to a process that may already be gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent (the thread that started it) ends;
    safe to call between fork and exec (``preexec_fn``)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def set_parent_death_signal(parent_pid: int) -> None:
    """In a child started by ``parent_pid``: ``die_with_parent``, and exit at once if it already has."""
    die_with_parent()
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def set_child_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``): a loop
    forked by a grandchild becomes this process's child, so it waits on the loop as on any child.
    False where the system has no such call."""
    if not sys.platform.startswith("linux"):
        return False
    pr_set_child_subreaper = 36
    return int(ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)) == 0


def set_process_name(name: str) -> None:
    """This process's name as ``ps`` and ``/proc/<pid>/comm`` show it (Linux: at most 15 bytes)."""
    if sys.platform.startswith("linux"):
        pr_set_name = 15
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_name, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def set_command_line(words: list[str]) -> bool:
    """Rewrite what ``/proc/<pid>/cmdline`` (and ``ps``) show for this process, in place, within the
    room its own command line had (a forked process otherwise shows its parent's); False when the
    words do not fit or Linux does not say where the command line is."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start and arg_end: fields 48 and 49
    except (OSError, IndexError, ValueError):
        return False
    text = b"\0".join(word.encode() for word in words) + b"\0"
    if not start or end - start < len(text):
        return False
    ctypes.memmove(start, text.ljust(end - start, b"\0"), end - start)
    return True


def child_pids(pid: int | str = "self") -> list[int]:
    """The pids of a process's children (``/proc/<pid>/task/*/children``; none where Linux does not
    tell)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as children:
                found += [int(child) for child in children.read().split()]
        except (OSError, ValueError):
            continue
    return found


def process_state(pid: int) -> str | None:
    """The state letter ``/proc/<pid>/stat`` gives (``R``, ``S``, ``Z`` for a zombie...), None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0].decode()
    except (OSError, IndexError):
        return None


def rss_bytes() -> int | None:
    """This process's resident memory in bytes (None where ``/proc`` cannot tell)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None
