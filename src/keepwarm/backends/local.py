"""The local backend: one OS process per loop on this host, a child of the supervisor.

With ``[cluster] preload`` on, loops are forked warm from a template process that ran the worker's
``preload()`` once (``runtime/template.py``); when it cannot fork (its preload failed, it died), a loop
is spawned cold as without preload, and a dead template is started again.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from keepwarm._sys.child import child_command, flag
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm._sys.logfiles import rotated
from keepwarm._sys.procs import child_pids, process_alive, process_state, set_child_subreaper, signal_quietly
from keepwarm.app import preload_enabled, source_stamp
from keepwarm.backends.base import LoopBackend, LoopHandle
from keepwarm.env import Env, app_python
from keepwarm.errors import TemplateError
from keepwarm.queue.layout import loop_log_name
from keepwarm.queue.state import TemplateState
from keepwarm.runtime.loop import new_incarnation
from keepwarm.runtime.template import MODULE as TEMPLATE_MODULE
from keepwarm.runtime.template import ForkRequest, Template

log = logging.getLogger("keepwarm.backends.local")


@dataclass
class LoopProcess(LoopHandle):
    """A loop of the local backend: one OS process, its exit seen through ``wake_fd`` (a pidfd)."""

    slot: str
    incarnation: str
    process: subprocess.Popen[bytes]
    log_path: Path
    wake_fd: int | None = None  # a pidfd: readable when the process exits
    forked = False

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


@dataclass
class ForkedLoop(LoopHandle):
    """A loop forked from the template: a child of the supervisor (a subreaper) once its intermediate
    parent exited, so its exit is waited on by pid."""

    slot: str
    incarnation: str
    loop_pid: int
    log_path: Path
    wake_fd: int | None = None
    returncode: int | None = None
    forked = True

    @property
    def pid(self) -> int:
        """The loop's process id."""
        return self.loop_pid

    def poll(self) -> int | None:
        """The exit code once the loop has exited (and been reaped), else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.loop_pid, os.WNOHANG)
            except ChildProcessError:  # not adopted (no subreaper): judged by /proc, code unknown
                if not process_alive(self.loop_pid):
                    self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def stop(self) -> None:
        """SIGTERM: the loop finishes its current task, then exits."""
        if self.returncode is None:
            signal_quietly(self.loop_pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        if self.returncode is None:
            signal_quietly(self.loop_pid, signal.SIGKILL)

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
        self.template: Template | None = None  # with [cluster] preload on
        self.stamp: tuple[int, float] | None = None  # the app's source when the template started
        self.keepalive: Callable[[], None] | None = None  # the supervisor's heartbeat, while a preload runs
        self.handles: weakref.WeakValueDictionary[int, LoopProcess | ForkedLoop] = (
            weakref.WeakValueDictionary()
        )

    def open(self, supervisor: str, wake: Callable[[], None], slots: int) -> None:
        """Find the app's interpreter (an isolated app's must be installed); with preload on, become
        a child subreaper and start the template. Loop exits wake the supervisor through pidfds."""
        self.python = app_python(self.env)
        if preload_enabled(self.env):
            if not set_child_subreaper():
                log.warning("preload is on, but this system cannot adopt forked loops: spawning them")
                return
            log_path = rotated(ensure_private_dir(self.env.log_dir) / loop_log_name("template"))
            self.template = Template(self.env, self.python, log_path)
            self.stamp = source_stamp(self.env.app_dir, self.env.share_root)
            self.template.start()

    def spawn(self, slot: str, *, max_tasks: int | None = None) -> LoopProcess | ForkedLoop:
        """Fork a loop from the template when there is a ready one, else start a loop process; either
        with a pidfd to be woken by its exit."""
        loop: LoopProcess | ForkedLoop | None = self._fork(slot, max_tasks)
        if loop is None:
            loop = spawn_loop(self.env, slot, max_tasks=max_tasks, python=self.python)
        try:
            loop.wake_fd = os.pidfd_open(loop.pid)
        except OSError:
            loop.wake_fd = None
        self.handles[loop.pid] = loop
        return loop

    def _fork(self, slot: str, max_tasks: int | None) -> ForkedLoop | None:
        template = self.template
        if template is None:
            return None
        self.check()
        if (stamp := source_stamp(self.env.app_dir, self.env.share_root)) != self.stamp:
            # A restart after a deploy must run the new code, as a spawned loop would; a preload
            # that failed gets another chance with it.
            log.info("the app changed since the template preloaded it: starting a new template")
            self.stamp = stamp
            template.stop()
            template.start()
        if not template.wait_ready(self.env.settings.cluster.start_timeout_sec, self.keepalive):
            return None
        incarnation = new_incarnation()
        log_path = rotated(ensure_private_dir(self.env.log_dir) / loop_log_name(slot))
        try:
            pid = template.fork(ForkRequest(slot, incarnation, max_tasks or None, str(log_path)))
        except TemplateError as exc:
            log.warning("slot %s: %s; spawning it cold and starting a new template", slot, exc)
            template.stop()
            return None
        return ForkedLoop(slot, incarnation, pid, log_path)

    def check(self) -> str | None:
        """A template that died (not one whose preload failed) is started again at once: a
        planned event, never a reason to stop the service."""
        template = self.template
        if template is None:
            return None
        if template.state != "failed" and not template.alive():
            code = template.process.poll() if template.process is not None else None
            log.warning("template pid %s exited (code %s); starting a new one", template.pid, code)
            template.stop()
            template.start()
        self._reap_adopted(template.pid)
        return None

    def _reap_adopted(self, template: int | None) -> None:
        """As a subreaper, the supervisor also adopts what a loop's own children leave (a daemon an
        app double-forked): those that exited are reaped here; loops and the template by their handles."""
        for pid in child_pids():
            if pid not in self.handles and pid != template and process_state(pid) == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def template_status(self) -> TemplateState | None:
        """The template's state and preload time (None: preload is off)."""
        return self.template.status() if self.template is not None else None

    def close(self, *, shutdown: bool | None = None) -> None:
        """Stop the template; loops it forked are the supervisor's own."""
        if self.template is not None:
            self.template.stop()

    def loop_alive(self, pid: int | None, slot: str, incarnation: str) -> bool:
        """Whether a loop an earlier supervisor started still runs (its command line names it; a
        forked loop's is its template's)."""
        return process_alive(pid, incarnation) or process_alive(pid, TEMPLATE_MODULE)

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
