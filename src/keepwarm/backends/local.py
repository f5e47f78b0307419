"""The local backend: one OS process per loop on this host, a child of the supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from keepwarm._sys.child import child_command, flag
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm._sys.logfiles import rotated
from keepwarm._sys.procs import process_alive, signal_quietly
from keepwarm.backends.base import LoopBackend, LoopHandle
from keepwarm.env import Env, app_python
from keepwarm.queue.layout import loop_log_name
from keepwarm.runtime.loop import new_incarnation


@dataclass
class LoopProcess(LoopHandle):
    """A loop of the local backend: one OS process, its exit seen through ``wake_fd`` (a pidfd)."""

    slot: str
    incarnation: str
    process: subprocess.Popen[bytes]
    log_path: Path
    wake_fd: int | None = None  # a pidfd: readable when the process exits

    @property
    def pid(self) -> int:
        """The loop's process id."""
        return self.process.pid

    def poll(self) -> int | None:
        """The process's exit code once it has exited, else None."""
        return self.process.poll()

    def stop(self) -> None:
        """SIGTERM: the loop finishes its current task, then exits."""
        signal_quietly(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        signal_quietly(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Close the pidfd."""
        if self.wake_fd is not None:
            os.close(self.wake_fd)
            self.wake_fd = None


class LocalBackend(LoopBackend):
    """Loops as OS processes of this host, children of the supervisor."""

    name = "local"

    def __init__(self, env: Env) -> None:
        self.env = env
        self.python: Path | None = None  # the app's interpreter, found by open()

    def open(self, supervisor: str, wake: Callable[[], None], slots: int) -> None:
        """Find the app's interpreter (an isolated app's must be installed); nothing to connect to:
        loop exits wake the supervisor through their pidfds."""
        self.python = app_python(self.env)

    def spawn(self, slot: str, *, max_tasks: int | None = None) -> LoopProcess:
        """Start a loop process, with a pidfd to be woken by its exit."""
        loop = spawn_loop(self.env, slot, max_tasks=max_tasks, python=self.python)
        try:
            loop.wake_fd = os.pidfd_open(loop.pid)
        except OSError:
            loop.wake_fd = None
        return loop

    def loop_alive(self, pid: int | None, slot: str, incarnation: str) -> bool:
        """Whether a loop an earlier supervisor started still runs (its command line names it)."""
        return process_alive(pid, incarnation)

    def fit(self, loops: int) -> int | None:
        """Any number of loops: each is an OS process."""
        return None

    def stop_orphan(self, pid: int | None, slot: str, incarnation: str) -> None:
        """SIGTERM to an earlier supervisor's loop process."""
        if pid is not None:
            signal_quietly(pid, signal.SIGTERM)

    def kill_orphan(self, pid: int | None, slot: str, incarnation: str) -> None:
        """SIGKILL to an earlier supervisor's loop process."""
        if pid is not None:
            signal_quietly(pid, signal.SIGKILL)


def spawn_loop(
    env: Env, slot: str, *, max_tasks: int | None = None, python: Path | None = None
) -> LoopProcess:
    """Start one loop process for ``slot`` in the app's interpreter (``python``, default
    ``app_python(env)``: an isolated app's own venv); its output goes to ``<log_dir>/<slot>.log``."""
    incarnation = new_incarnation()
    log_path = rotated(ensure_private_dir(env.log_dir) / loop_log_name(slot))
    command = child_command(
        "keepwarm.runtime.loop",
        *("--slot", slot, "--incarnation", incarnation, "--parent-pid", str(os.getpid())),
        *flag("--max-tasks", max_tasks or None),
        env=env,
        python=python or app_python(env),
    )
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return LoopProcess(slot, incarnation, process, log_path)
