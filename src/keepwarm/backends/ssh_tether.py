"""Runs on an SSH host around a Dask scheduler or workers that keepwarm started there, and ends them
when the SSH session that started them ends.

``python -m keepwarm.backends.ssh_tether PYTHON -m distributed.cli.dask_spec ...`` (the command Dask's
SSH cluster runs, with this in front) starts the command in a process group of its own and waits for
it. sshd gives a session no terminal here, so nothing signals its processes when the session ends: a
supervisor killed with SIGKILL would leave its scheduler, nannies and workers running on every host,
for ever. The tether reads its stdin, the SSH channel, and at end of file (the supervisor is gone, or
closed the connection) ends the command's whole group: SIGTERM, then SIGKILL after a grace period. If
the tether itself is killed, the command is sent SIGTERM by the kernel (``PR_SET_PDEATHSIG``).
It imports nothing heavy: it runs before Dask does, on every host.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading

GRACE_SEC = 5.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends it SIGTERM when the tether dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _end_group(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group; SIGKILL what is left after the grace period."""
    for signum, wait in ((signal.SIGTERM, GRACE_SEC), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signum)
        if wait is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=wait)


def _watch_session(child: subprocess.Popen[bytes]) -> None:
    """Block until the SSH channel (stdin) ends, then end the child's group."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    _end_group(child)


def main(argv: list[str] | None = None) -> int:
    """Run ``argv`` until it exits, or until the SSH session ends; the command's exit code."""
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print("usage: python -m keepwarm.backends.ssh_tether COMMAND [ARG ...]", file=sys.stderr)
        return 2
    child = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 (no thread runs yet in this process)
    )
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: threading.Thread(target=_end_group, args=(child,)).start())
    threading.Thread(target=_watch_session, args=(child,), name="keepwarm-ssh-session", daemon=True).start()
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
