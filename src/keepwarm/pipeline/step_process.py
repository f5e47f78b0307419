"""One step's process: ``python <file>`` in a process group of its own, its output copied to its log as
it comes, killed (the whole group) when it runs past its time limit or when the run is stopped.

A step's process, and the processes it starts in its group, do not outlive the run that started them:

- past its ``timeout`` (seconds; None: no limit) the group gets SIGTERM, then SIGKILL after
  :data:`KILL_GRACE` seconds;
- when the waiting thread is interrupted (Ctrl-C, SIGTERM made an exception by ``keepwarm pipeline
  run``, an error in ``on_output``), the group is killed before the exception goes on;
- when the process running the pipeline exits while a step runs in another thread (the page's server
  stopping mid-run), an ``atexit`` handler kills the groups still running;
- when that process is killed outright (SIGKILL), the step's own process gets SIGTERM from Linux (a
  parent-death signal, set before the step's interpreter starts); processes the step started itself
  are then left running: nothing is left in the killed process to stop them.

A process the step starts in a session of its own (as ``keepwarm start`` starts a service) is not in
the group: it is meant to outlive the step, and does.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL of a step's group
# Runs in the step's process before its interpreter is replaced by ``python <file>``: a parent-death
# signal survives exec, and setting it here needs no preexec_fn (unsafe in a threaded server).
_LAUNCH = (
    "import os, sys; from keepwarm._sys.procs import set_parent_death_signal; "
    "set_parent_death_signal(int(sys.argv[1])); os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)
_running: dict[int, subprocess.Popen[str]] = {}  # the groups of the steps running now, by pid
_running_lock = threading.Lock()


@dataclass(frozen=True)
class StepExit:
    """How a step's process ended: its exit code (negative: the signal that ended it), and whether it
    was killed for running past its time limit."""

    code: int
    timed_out: bool


def run_step_process(
    script: str, cwd: Path, log: Path, on_output: Callable[[str], None] | None, timeout: float | None
) -> StepExit:
    """``python script`` in ``cwd`` (keepwarm's own interpreter: the snippets import keepwarm), its
    output (stdout and stderr, interleaved) written to ``log`` and given to ``on_output`` line by line.

    The step ends when its process has exited and its output is closed; past ``timeout`` seconds its
    group is killed and the exit says ``timed_out``.
    """
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (
        log.open("w", encoding="utf-8") as kept,
        subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, str(os.getpid()), script],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
            text=True,
            errors="replace",
            process_group=0,  # its own group: killed as one, and Ctrl-C reaches only the runner
        ) as child,
    ):
        assert child.stdout is not None
        with _running_lock:
            _running[child.pid] = child
        try:
            reader = threading.Thread(
                target=_copy, args=(child.stdout, kept, on_output), name="keepwarm-step-output", daemon=True
            )
            reader.start()
            timed_out = not _finished(child, reader, timeout)
            if timed_out:
                kill_group(child)
                reader.join(KILL_GRACE)
            return StepExit(child.wait(), timed_out)
        finally:
            if child.poll() is None:  # interrupted: the step does not outlive its run
                kill_group(child)
            with _running_lock:
                _running.pop(child.pid, None)


def _finished(child: subprocess.Popen[str], reader: threading.Thread, timeout: float | None) -> bool:
    """Wait until the step's output is closed and its process exited; False once ``timeout`` passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    reader.join(timeout)
    if reader.is_alive():
        return False
    try:
        child.wait(None if deadline is None else max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        return False
    return True


def _copy(output: IO[str], kept: IO[str], on_output: Callable[[str], None] | None) -> None:
    try:
        for line in output:
            kept.write(line)
            kept.flush()
            if on_output is not None:
                on_output(line.rstrip("\n"))
    except (ValueError, OSError):
        pass  # the log was closed: the step was given up (a process outside its group kept its output)


def kill_group(child: subprocess.Popen[str], grace: float = KILL_GRACE) -> None:
    """SIGTERM to the step's process group, then SIGKILL to what is left of it after ``grace`` s."""
    _signal_group(child.pid, signal.SIGTERM)
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    # the group may outlive its leader: whatever ignored SIGTERM, or was still exiting, goes now
    _signal_group(child.pid, signal.SIGKILL)
    child.wait()


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone


@atexit.register
def _kill_running_steps() -> None:
    """The process running a pipeline is exiting while steps still run in other threads."""
    with _running_lock:
        running = list(_running.values())
    for child in running:
        kill_group(child, grace=1.0)
