"""The local backend's processes: one OS process per loop, started, awaited ready, and stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from keepwarm._sys.watch import IN_MOVED_TO, Watcher
from keepwarm.env import Env, ensure_private_dir
from keepwarm.errors import KeepwarmError
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.runmode.installer import app_python
from keepwarm.runtime.heartbeat import read_heartbeat
from keepwarm.runtime.loop import new_incarnation

MAX_LOG_BYTES = 10 * 1024 * 1024


class LoopStartError(KeepwarmError):
    """A loop did not become ready: its own error, or its log's last lines."""


@dataclass
class LoopProcess:
    """A loop of the local backend: one OS process. The supervisor drives every backend's loops through
    the same few methods (``poll``, ``stop``, ``kill``, ``close``; ``wake_fd`` to be woken by an exit)."""

    slot: str
    incarnation: str
    process: subprocess.Popen[bytes]
    log_path: Path
    wake_fd: int | None = None  # a pidfd: readable when the process exits

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def exit_reason(self) -> str | None:
        """A backend's own word for how the loop ended (None: judge by the exit code)."""
        return None

    def stop(self) -> None:
        """Finish the current task, then exit."""
        signal_quietly(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        signal_quietly(self.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.wake_fd is not None:
            os.close(self.wake_fd)
            self.wake_fd = None


class LocalBackend:
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
        loop = spawn_loop(self.env, slot, max_tasks=max_tasks, python=self.python)
        try:
            loop.wake_fd = os.pidfd_open(loop.pid)
        except OSError:
            loop.wake_fd = None
        return loop

    def loop_alive(self, pid: int | None, slot: str, incarnation: str) -> bool:
        """Whether a loop an earlier supervisor started still runs (its command line names it)."""
        return pid is not None and process_running(pid, incarnation)

    def stop_orphan(self, pid: int | None, slot: str, incarnation: str) -> None:
        if pid is not None:
            signal_quietly(pid, signal.SIGTERM)

    def kill_orphan(self, pid: int | None, slot: str, incarnation: str) -> None:
        if pid is not None:
            signal_quietly(pid, signal.SIGKILL)

    def record(self) -> None:
        """No cluster to record in service.json."""

    def check(self) -> str | None:
        """A condition that makes the whole backend unusable (None: fine)."""
        return None

    def close(self, *, shutdown: bool | None = None) -> None:
        """Nothing to release."""

    def retire(self) -> None:
        """Nothing left behind to release."""


def spawn_loop(
    env: Env, slot: str, *, max_tasks: int | None = None, python: Path | None = None
) -> LoopProcess:
    """Start one loop process for ``slot`` in the app's interpreter (``python``, default
    ``app_python(env)``: an isolated app's own venv); its output goes to ``<log_dir>/<slot>.log``."""
    incarnation = new_incarnation()
    log_path = rotated(ensure_private_dir(env.log_dir) / f"{slot}.log")
    command = [
        str(python or app_python(env)),
        "-m",
        "keepwarm.runtime.loop",
        *env.child_args(),
        "--slot",
        slot,
        "--incarnation",
        incarnation,
        "--parent-pid",
        str(os.getpid()),
    ]
    if max_tasks:
        command += ["--max-tasks", str(max_tasks)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return LoopProcess(slot, incarnation, process, log_path)


def wait_ready(env: Env, loops: list[LoopProcess], timeout: float) -> dict[str, float]:
    """Block until every loop's heartbeat says ``ready``; returns each slot's start time (seconds).

    Raises LoopStartError with the loop's own error if one exits or reports a failed start.
    """
    queue = TaskQueue.for_env(env).ensure()
    deadline = time.monotonic() + timeout
    waiting = {loop.slot: loop for loop in loops}
    started: dict[str, float] = {}
    with Watcher([queue.heartbeats], mask=IN_MOVED_TO) as watcher:
        while waiting:
            for slot, loop in list(waiting.items()):
                beat = read_heartbeat(queue.heartbeats / f"{slot}.json")
                if beat is not None and beat.incarnation == loop.incarnation:
                    if beat.state in ("ready", "processing"):
                        started[slot] = beat.start_sec or 0.0
                        del waiting[slot]
                        continue
                    if beat.error:
                        raise LoopStartError(f"loop {slot} of {env.app_target} failed: {beat.error}")
                if loop.process.poll() is not None:
                    raise LoopStartError(
                        f"loop {slot} of {env.app_target} exited with code {loop.process.returncode} "
                        f"before it was ready; its log ({loop.log_path}) ends with:\n"
                        f"{log_tail(loop.log_path)}"
                    )
            left = deadline - time.monotonic()
            if waiting and left <= 0:
                names = ", ".join(sorted(waiting))
                raise LoopStartError(
                    f"loops {names} of {env.app_target} not ready after {timeout}s; "
                    f"see their logs in {env.log_dir}"
                )
            if waiting:
                watcher.wait(min(left, 0.1))
    return started


def stop_loops(loops: list[LoopProcess], timeout: float) -> None:
    """SIGTERM every loop (each finishes its current task), then SIGKILL what is left at ``timeout``."""
    for loop in loops:
        if loop.process.poll() is None:
            loop.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for loop in loops:
        try:
            loop.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            loop.process.kill()
            loop.process.wait()


def rotated(path: Path, max_bytes: int = MAX_LOG_BYTES) -> Path:
    """Move a log past ``max_bytes`` to ``<name>.1`` (one generation kept); returns ``path``."""
    try:
        if path.stat().st_size > max_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass
    return path


def signal_quietly(pid: int, signum: int) -> None:
    """Send a signal to a process that may already be gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def process_running(pid: int, marker: str = "") -> bool:
    """True when ``pid`` runs and (given a ``marker``) its command line contains it, which guards
    against a reused pid (loops carry their incarnation on their command line).

    A process that is exiting has already dropped its command line but is not yet a zombie: it still
    counts as running (unless it is a kernel thread, whose command line is always empty).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        if fields[0] in (b"Z", b"X"):
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read()
    except (OSError, IndexError):
        return False
    if not marker or marker.encode() in command:
        return True
    return not command and not int(fields[6]) & _PF_KTHREAD


_PF_KTHREAD = 0x00200000  # /proc/<pid>/stat flags: a kernel thread


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
