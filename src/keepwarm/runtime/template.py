"""The template process: the app loaded once, its worker's ``preload()`` run, then loops forked warm.

The local backend starts one template per service (``Template.start``) when ``[cluster] preload`` is
on. The template loads the app, makes the worker, calls ``preload()``, refuses to go on with threads
other than the main one alive (a fork copies only the forking thread: a lock another thread held stays
held in the child for ever), calls ``gc.freeze()`` (collections then leave the preloaded objects'
pages alone, so they stay shared with the loops), and then forks loops on the supervisor's request.

Each loop is forked twice: the template forks an intermediate child, which forks the loop and exits
at once. The supervisor is a child subreaper, so the loop is then its child: it sees the loop's exit
(``waitpid``, a pidfd) as for any loop it spawned, and no loop is ever a zombie of the template. The
loop resets what a fork breaks (random seeds, its log file, signal handlers, the parent-death
signal, now to the supervisor), makes a fresh heartbeat thread (``WorkerLoop``), calls ``start()``
and serves as every loop does.

The control channel is a socket pair; each side writes one JSON object a line. The template first
says ``{"ready": true, "preload_sec": s}`` or ``{"error": "..."}``; then, to each request
``{"slot", "incarnation", "max_tasks", "log_path"}``, ``{"pid": n}`` or ``{"error": "..."}``.

Run as a process: ``python -m keepwarm.runtime.template --app APP --control-fd N --parent-pid P``.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keepwarm._sys.child import child_command, child_parser
from keepwarm._sys.logfiles import log_tail
from keepwarm._sys.procs import set_command_line, set_parent_death_signal, set_process_name, signal_quietly
from keepwarm.app import App, load_app, worker_method
from keepwarm.env import Env
from keepwarm.errors import AppError, KeepwarmError, TemplateError
from keepwarm.queue.events import EventLog
from keepwarm.queue.state import Condition, ConditionKind, TemplateState, TemplateWord
from keepwarm.runtime.loop import WorkerLoop, stop_on_signals

log = logging.getLogger("keepwarm.runtime.template")

MODULE = "keepwarm.runtime.template"
REPARENT_TIMEOUT_SEC = 5.0  # a forked loop waits this long to become the supervisor's child
FORKED_LOOP_NAME = "keepwarm-loop"  # a forked loop's process name
FAILED_CONDITION = "template-failed: "  # a health condition while loops are spawned cold instead
FORK_TIMEOUT_SEC = 10.0  # the supervisor waits this long for the template to answer a fork request
KEEPALIVE_SEC = 0.5  # while the supervisor waits on a preload, it writes its own heartbeat this often


@dataclass(frozen=True)
class ForkRequest:
    """What a new loop needs: its slot, incarnation, recycling limit and log file."""

    slot: str
    incarnation: str
    max_tasks: int | None
    log_path: str


# ---------------------------------------------------------------------- the supervisor's side


class Template:
    """The supervisor's handle on its template process: start it, wait for its preload, ask forks."""

    def __init__(self, env: Env, python: Path | None, log_path: Path) -> None:
        self.env = env
        self.python = python
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: socket.socket | None = None
        self._buffer = b""
        self.state: TemplateWord = "stopped"  # starting, ready, failed (its preload), stopped
        self.error: str | None = None
        self.preload_sec: float | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the template process; it preloads in the background (``wait_ready`` waits)."""
        ours, theirs = socket.socketpair()
        command = child_command(
            MODULE,
            *("--control-fd", str(theirs.fileno()), "--parent-pid", str(os.getpid())),
            env=self.env,
            python=self.python,
        )
        self.starts += 1
        try:
            with open(self.log_path, "ab") as out:
                self.process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=(theirs.fileno(),)
                )
        except OSError as exc:
            ours.close()
            self.state, self.error = "failed", f"the template could not be started: {exc}"
            log.error("%s; loops are spawned cold instead", self.error)
            return
        finally:
            theirs.close()
        self.channel, self._buffer = ours, b""
        self.state, self.error, self.preload_sec = "starting", None, None
        log.info("template pid %s started (preloading %s)", self.process.pid, self.env.app_target)

    def status(self) -> TemplateState:
        """Its state, pid, preload time, error and how often it was started."""
        return TemplateState(
            state=self.state, pid=self.pid, preload_sec=self.preload_sec, error=self.error, starts=self.starts
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float, keepalive: Callable[[], None] | None = None) -> bool:
        """Whether the template is ready to fork, waiting up to ``timeout`` for its preload (calling
        ``keepalive`` every KEEPALIVE_SEC meanwhile: the supervisor's own heartbeat)."""
        if self.state == "starting":
            try:
                answer = self._receive(time.monotonic() + timeout, keepalive)
            except TemplateError as exc:
                self._failed(str(exc))
            else:
                if answer.get("ready"):
                    self.state, self.preload_sec = "ready", answer.get("preload_sec")
                    log.info("template pid %s ready: preload() took %ss", self.pid, self.preload_sec)
                else:
                    self._failed(str(answer.get("error")))
        return self.state == "ready" and self.alive()

    def fork(self, request: ForkRequest) -> int:
        """The pid of a new loop forked for ``request`` (the supervisor's child by now)."""
        if self.channel is None or not self.alive():
            raise TemplateError(f"template {self.pid} is not running")
        try:
            self.channel.sendall(json.dumps(request.__dict__).encode() + b"\n")
        except OSError as exc:
            raise TemplateError(f"template {self.pid} is not listening: {exc}") from None
        answer = self._receive(time.monotonic() + FORK_TIMEOUT_SEC)
        if not isinstance(answer.get("pid"), int):
            raise TemplateError(f"template {self.pid} could not fork: {answer.get('error')}")
        return int(answer["pid"])

    def stop(self) -> None:
        """SIGTERM to the template (by pid), SIGKILL if it lingers; loops it forked are not its own."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.process is not None:
            signal_quietly(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                signal_quietly(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.state != "failed":
            self.state = "stopped"

    def _failed(self, error: str) -> None:
        self.state, self.error = "failed", error
        log.error("template pid %s: %s; loops are spawned cold instead", self.pid, error)
        self.stop()

    def _receive(self, deadline: float, keepalive: Callable[[], None] | None = None) -> dict[str, Any]:
        assert self.channel is not None
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TemplateError(f"template {self.pid} did not answer in time")
            self.channel.settimeout(min(left, KEEPALIVE_SEC) if keepalive is not None else left)
            try:
                data = self.channel.recv(65536)
            except TimeoutError:
                if keepalive is not None:
                    keepalive()
                continue
            except OSError as exc:
                raise TemplateError(f"template {self.pid}: its channel failed: {exc}") from None
            if not data:
                try:
                    code = self.process.wait(timeout=2) if self.process is not None else None
                except subprocess.TimeoutExpired:
                    code = None
                raise TemplateError(
                    f"template {self.pid} exited (code {code}); its log ({self.log_path}) ends with:\n"
                    f"{log_tail(self.log_path, 5)}"
                )
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise TemplateError(f"template {self.pid} answered {line[:200]!r}, not a JSON object")
        return answer


class TemplateWatch:
    """What the supervisor does about its backend's template: each start (a restart is planned: the
    old template died, loops it forked serve on), its preload time once ready and its preload's
    failure in the events log; and its own heartbeat (``keepalive``) while a spawn waits on a preload."""

    def __init__(self, backend: object, keepalive: Callable[[], None]) -> None:
        self.status_of: Callable[[], TemplateState | None] | None = getattr(backend, "template_status", None)
        self.seen: TemplateState | None = None  # published in supervisor.json
        if hasattr(backend, "keepalive"):
            backend.keepalive = keepalive

    def record(self, events: EventLog, conditions: list[Condition]) -> None:
        """Append what changed since the last call; while the template's preload has failed, the
        service's ``conditions`` (shown by health) say so."""
        status = self.status_of() if self.status_of is not None else None
        before, self.seen = self.seen, status
        if status is None or status == before:
            return
        conditions[:] = [c for c in conditions if not str(c).startswith(FAILED_CONDITION)]
        if status.state == "failed":
            error = (status.error or "").splitlines()[0] if status.error else "unknown"
            conditions.append(
                Condition(ConditionKind.OTHER, f"{FAILED_CONDITION}{error}; loops are spawned cold")
            )
        if before is None or status.starts != before.starts:
            events.append("template-started", pid=status.pid, starts=status.starts, planned=True)
        if status.state == "ready" and (
            before is None or (before.state, before.pid) != ("ready", status.pid)
        ):
            events.append("template-ready", pid=status.pid, preload_sec=status.preload_sec)
        if status.state == "failed" and (before is None or before.state != "failed"):
            events.append("template-failed", pid=status.pid, error=status.error)


# ---------------------------------------------------------------------- the template's side


def preload_app(env: Env) -> tuple[App, Any]:
    """Load the app, make its worker and run ``preload()``; refuse when threads were left running."""
    app = load_app(env)
    worker = app.new_worker()
    result = worker_method(worker, "preload")()
    if inspect.isawaitable(result):
        asyncio.run(_awaited(result))
    others = [thread.name for thread in threading.enumerate() if thread is not threading.main_thread()]
    if others:
        raise AppError(
            f"app {env.app_target}: preload() left {len(others)} thread(s) running: {', '.join(others)}; "
            "forking with live threads can deadlock: start threads in start(), not preload()"
        )
    gc.collect()
    gc.freeze()  # the preloaded objects are never collected: their pages stay shared with the loops
    return app, worker


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def fork_loop(
    env: Env, preloaded: tuple[App, Any], request: ForkRequest, control_fd: int, supervisor: int
) -> int:
    """Fork a loop through an intermediate child that exits at once; the loop's pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:  # the intermediate child
        try:
            os.close(read_end)
            loop_pid = os.fork()
            if loop_pid == 0:
                os.close(write_end)
                os._exit(run_forked_loop(env, preloaded, request, supervisor, control_fd))
            os.write(write_end, str(loop_pid).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(middle, 0)
    with os.fdopen(read_end, "rb") as answer:
        text = answer.read()
    if not text:
        raise TemplateError(f"the intermediate child of slot {request.slot}'s fork exited without a pid")
    return int(text)


def run_forked_loop(
    env: Env, preloaded: tuple[App, Any], request: ForkRequest, supervisor: int, control_fd: int
) -> int:
    """In the forked loop: reset what a fork breaks, then serve as every loop does; the exit code."""
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        deadline = time.monotonic() + REPARENT_TIMEOUT_SEC
        while os.getppid() != supervisor:  # the intermediate child is exiting: adopted in microseconds
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.0005)
        set_parent_death_signal(supervisor)
        set_process_name(FORKED_LOOP_NAME)
        # Its incarnation on its command line, as a spawned loop's: what tells a live loop from a reused pid.
        set_command_line([FORKED_LOOP_NAME, "--slot", request.slot, "--incarnation", request.incarnation])
        _redirect_output(request, control_fd)
        random.seed()
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            numpy.random.seed()
        loop = WorkerLoop(
            env, request.slot, request.incarnation, max_tasks=request.max_tasks, preloaded=preloaded
        )
        stop_on_signals(loop)
        log.info("slot %s: forked warm (preload() ran in the template)", request.slot)
        return loop.run()
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _redirect_output(request: ForkRequest, control_fd: int) -> None:
    """Fds 0, 1 and 2 and the logging format as a spawned loop of the slot has them; the template's
    end of the control channel becomes /dev/null (closed, its number could be reused under the
    template's socket object, which the loop never touches but still holds)."""
    log_fd = os.open(request.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.dup2(null_fd, control_fd)
    os.close(log_fd)
    os.close(null_fd)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {request.slot} pid={os.getpid()} %(levelname)s %(message)s",
        force=True,
    )


def serve_forks(env: Env, preloaded: tuple[App, Any], channel: socket.socket, supervisor: int) -> int:
    """Answer fork requests until the supervisor closes the channel."""
    with channel.makefile("rb") as requests:
        for line in requests:
            try:
                request = ForkRequest(**json.loads(line))
                answer: dict[str, Any] = {
                    "pid": fork_loop(env, preloaded, request, channel.fileno(), supervisor)
                }
            except Exception as exc:
                log.exception("fork request %r failed", line)
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            channel.sendall(json.dumps(answer).encode() + b"\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m keepwarm.runtime.template``: preload an app, then fork its loops on request."""
    parser = child_parser(MODULE, __doc__)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True, help="the supervisor: stop when it dies")
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s template pid={os.getpid()} %(levelname)s %(message)s"
    )
    set_parent_death_signal(options.parent_pid)
    channel = socket.socket(fileno=options.control_fd)
    began = time.perf_counter()
    try:
        preloaded = preload_app(Env.of_child(options))
    except BaseException as exc:
        message = (
            str(exc) if isinstance(exc, KeepwarmError) else f"preload failed: {type(exc).__name__}: {exc}"
        )
        log.error("%s", message, exc_info=not isinstance(exc, KeepwarmError))
        channel.sendall(json.dumps({"error": message}).encode() + b"\n")
        return 1
    preload_sec = round(time.perf_counter() - began, 6)
    log.info("preloaded %s in %ss; forking loops on request", options.app, preload_sec)
    channel.sendall(json.dumps({"ready": True, "preload_sec": preload_sec}).encode() + b"\n")
    return serve_forks(preloaded[0].env, preloaded, channel, options.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
