"""Starting and stopping a service from any process: the lock, the detached supervisor, readiness.

``start`` takes ``service.lock`` (flock) and hands it to the supervisor it spawns, so the lock lives
exactly as long as the supervisor; a free lock means no live supervisor, whatever the files say.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from keepwarm._sys.child import child_command, flag, last_report
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm._sys.logfiles import log_tail, rotated
from keepwarm._sys.procs import signal_quietly
from keepwarm._sys.watch import IN_MOVED_TO, Watcher
from keepwarm.backends import make_backend
from keepwarm.env import Env
from keepwarm.errors import (
    CommandRefused,
    QueueNotPrivate,
    Remedy,
    ServiceAlreadyRunning,
    ServiceNotRunning,
    ServiceStartError,
    ServiceStarting,
    ServiceStopTimeout,
)
from keepwarm.queue.layout import SUPERVISOR_LOG, loop_log_name
from keepwarm.queue.state import (
    ServiceRecord,
    SupervisorState,
    app_change,
    read_service_record,
    read_supervisor_state,
    settings_in_force,
    write_state,
)
from keepwarm.queue.taskfiles import list_visible
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.runtime.heartbeat import read_heartbeat
from keepwarm.service.control import Ack, AckOutcome, CommandArgs, StopArgs, send_command
from keepwarm.service.leftovers import Leftovers
from keepwarm.service.liveness import live_supervisor_state, pid_alive
from keepwarm.service.supervisor import Supervisor, acquire_lock
from keepwarm.settings import ClusterSettings

DEAD_LOCK_WAIT_SEC = 5.0  # how long a dead supervisor's threads may take to release service.lock


class StopOutcome(BaseModel):
    """What a stop did, in one sentence (``Service.stop`` returns it as a dict)."""

    model_config = ConfigDict(frozen=True)

    status: Literal["stopped"] = "stopped"
    message: str

    def noting(self, note: str | None) -> StopOutcome:
        """The outcome, saying how the app changed since the service started (if it did)."""
        if note is None:
            return self
        message = f"{self.message} (its app changed since it started: {note})"
        return self.model_copy(update={"message": message})


def live_supervisor(env: Env) -> SupervisorState:
    """The live supervisor's state, or ServiceNotRunning saying how to start it."""
    state = live_supervisor_state(env)  # desired running, and its supervisor alive (the strict rule)
    if state is None:
        raise ServiceNotRunning(
            f"service {env.app_target!r} is not running",
            remedy=Remedy("start it", f"keepwarm start {env.app_target}", "start_service", _named(env)),
        )
    return state


def command(env: Env, args: CommandArgs, timeout: float = 30.0) -> Ack:
    """Send a control command to the live supervisor; its acknowledgement, or an error saying why not."""
    for _ in range(2):  # a supervisor restarted in between makes the first try stale
        state = live_supervisor(env)
        ack = send_command(env.layout.control, args, state.incarnation, timeout=timeout)
        if ack.outcome is not AckOutcome.STALE:
            break
    if not ack.ok:
        raise CommandRefused(f"{args.command} refused by the supervisor of {env.app_target}: {ack.message}")
    return ack


def lock_path(env: Env) -> Path:
    return env.layout.lock


def refuse_shared_writers(env: Env) -> None:
    """Refuse to serve a queue that other users can write: whatever they queue runs as this user.

    The queue's folders, and the folders above them up to the share, must be owned by this user and
    writable by nobody else, unless ``[cluster] allow_shared_writers = true`` says the team is trusted.
    """
    if env.settings.cluster.allow_shared_writers:
        return
    queue, root, problems = env.queue_dir, env.share_root, []
    above = [p for p in queue.parents if p == root or root in p.parents]  # up to the share, included
    for path in [
        *env.layout.queue.folders,
        queue,
        *above,
    ]:
        try:
            stats = path.stat()
        except FileNotFoundError:
            continue
        if stats.st_uid != os.getuid():
            problems.append(f"{path} belongs to uid {stats.st_uid}")
        elif stats.st_mode & 0o022 and not (stats.st_mode & 0o1000 and path == root):  # sticky share: ok
            problems.append(f"{path} is writable by {'others' if stats.st_mode & 0o002 else 'its group'}")
    if problems:
        raise QueueNotPrivate(
            f"refusing to start {env.app_target}: other users can write its queue, and what they queue "
            f"would run as you ({'; '.join(problems)}). Make it private (chmod 700 on those folders), or "
            "set [cluster] allow_shared_writers = true if everyone who can write there is trusted"
        )


def take_lock(env: Env) -> int | None:
    """``service.lock``, or None while a live supervisor holds it (or beats: ``live_supervisor_state``).

    A supervisor killed with SIGKILL reads as dead as soon as its main thread is a zombie, but the lock
    goes only when its last thread has exited: a lock held for a supervisor that is already dead is
    waited for (at most a few seconds) instead of being reported as a running service.
    """
    fd = acquire_lock(lock_path(env))
    if fd is not None:
        if live_supervisor_state(env) is None:
            return fd
        # Free, yet its supervisor beats: a share whose locks do not reach the supervisor's host
        # (flock over sshfs is local to each side). It runs: the lock says nothing here.
        os.close(fd)
        return None
    record = read_service_record(env.layout.service_record)
    owner = record.supervisor if record else None
    if owner is None or owner.host != os.uname().nodename or pid_alive(owner.pid):
        return None
    deadline = time.monotonic() + DEAD_LOCK_WAIT_SEC
    while fd is None and time.monotonic() < deadline:
        time.sleep(0.01)
        fd = acquire_lock(lock_path(env))
    return fd


def supervisor_log(env: Env) -> Path:
    return env.log_dir / SUPERVISOR_LOG


def _prepare_and_lock(env: Env) -> int:
    """What both ways of running the supervisor do first: refuse an unreadable app, create the
    service and queue folders, refuse shared writers, and take the service lock (refused if held)."""
    _refuse_unreadable_app(env)
    ensure_private_dir(env.service_dir)
    TaskQueue.for_env(env).ensure()
    refuse_shared_writers(env)
    fd = take_lock(env)
    if fd is None:
        raise _already_running(env)
    return fd


def start_service(
    env: Env, *, slots: int | None = None, timeout: float | None = None, backend: str | None = None
) -> str:
    """Start the supervisor detached and return when every loop is ready; its incarnation."""
    fd = _prepare_and_lock(env)
    incarnation = uuid.uuid4().hex[:12]
    log_path = rotated(ensure_private_dir(env.log_dir) / SUPERVISOR_LOG)
    command = child_command(
        "keepwarm.service.supervisor",
        *("--incarnation", incarnation, "--lock-fd", str(fd)),
        *flag("--slots", slots),
        *flag("--backend", backend),
        "--detach",
        env=env,
    )
    try:
        with open(log_path, "ab") as log:
            starter = subprocess.run(
                command,
                pass_fds=(fd,),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                check=False,
            )
    finally:
        os.close(fd)  # the supervisor holds the lock now
    detached = last_report(starter.stdout.decode(errors="replace"), "detached")
    pid = int(detached.fields["pid"]) if detached else 0
    if starter.returncode != 0 or pid <= 0:
        raise ServiceStartError(
            f"the supervisor of {env.app_target} did not start; {supervisor_log(env)} ends with:\n"
            f"{log_tail(supervisor_log(env))}"
        )
    try:
        wait_until_ready(
            env, incarnation, pid, env.settings.cluster.start_timeout_sec if timeout is None else timeout
        )
    except ServiceStartError as exc:
        _record_start_error(env, str(exc))
        raise
    return incarnation


def run_foreground(env: Env, *, slots: int | None = None, backend: str | None = None) -> int:
    """Run the supervisor in this process (for systemd, supervisord or a container)."""
    fd = _prepare_and_lock(env)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s supervisor pid={os.getpid()} %(levelname)s %(message)s"
    )
    supervisor = Supervisor(env, uuid.uuid4().hex[:12], slots=slots, backend=backend)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: supervisor.request_stop())
    try:
        return supervisor.run()
    finally:
        os.close(fd)


def _refuse_unreadable_app(env: Env) -> None:
    """A start reads the app afresh: the settings a running service keeps for its readers do not do."""
    if env.settings_error is not None:
        raise env.settings_error


def wait_until_ready(env: Env, incarnation: str, pid: int, timeout: float) -> None:
    """Block until the supervisor of ``incarnation`` reports every loop ready, or fail clearly."""
    queue = TaskQueue.for_env(env)
    deadline = time.monotonic() + timeout
    state_path = env.layout.supervisor_state
    with Watcher([queue.heartbeats, env.service_dir], mask=IN_MOVED_TO) as watcher:
        while True:
            if not pid_alive(pid):
                raise ServiceStartError(
                    f"the supervisor of {env.app_target} (pid {pid}) exited while "
                    f"starting; its log ({supervisor_log(env)}) ends with:\n{log_tail(supervisor_log(env))}"
                )
            state = read_supervisor_state(state_path)
            if state is not None and state.incarnation == incarnation:
                problems, ready = [], 0
                for row in state.loops:
                    beat = read_heartbeat(queue.layout.heartbeat(row.slot))
                    if beat is not None and beat.incarnation == row.incarnation:
                        if beat.state in ("ready", "processing") and row.future_state == "running":
                            ready += 1
                        elif beat.error:
                            problems.append(f"loop {row.slot}: {beat.error}")
                    elif row.restarts and row.last_reason:
                        log = env.log_dir / loop_log_name(row.slot)
                        problems.append(
                            f"loop {row.slot} exited ({row.last_reason}); {log} ends with:\n{log_tail(log)}"
                        )
                if problems:
                    _abort(env, pid)
                    raise ServiceStartError(
                        f"service {env.app_target} did not start:\n" + "\n".join(problems)
                    )
                if ready == len(state.loops) == state.desired_slots:  # 0 of 0: autoscaled to zero
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                _abort(env, pid)
                raise ServiceStartError(
                    f"service {env.app_target} not ready after {timeout}s; see {supervisor_log(env)} "
                    f"and the loops' logs in {env.log_dir}"
                )
            watcher.wait(min(left, 0.1))


def stop_service(env: Env, *, timeout: float | None = None, shutdown: bool | None = None) -> StopOutcome:
    """Stop the service from any process; returns once the supervisor has exited.

    Judged by the settings the service runs with (``state.settings_in_force``); when the app's files
    changed since it started, the message says how (``state.app_change``).
    """
    record = read_service_record(env.layout.service_record)
    cluster = settings_in_force(env, record).cluster
    note = app_change(env, record)
    fd = take_lock(env) if env.service_dir.is_dir() else None
    if fd is not None:
        try:
            outcome = _stop_without_supervisor(env, record, cluster, timeout, shutdown)
        finally:
            os.close(fd)
        return outcome.noting(note)
    if record is None or record.supervisor is None:
        if not env.service_dir.is_dir():
            return StopOutcome(message=f"service {env.app_target} is not running")
        raise ServiceStarting(f"service {env.app_target} is starting; try again in a moment")
    state = read_supervisor_state(env.layout.supervisor_state)
    incarnation = state.incarnation if state is not None else record.supervisor.incarnation
    stop_timeout = cluster.stop_timeout_sec if timeout is None else timeout
    stop = StopArgs(timeout=timeout, shutdown=shutdown)
    ack = send_command(env.layout.control, stop, incarnation, timeout=10)
    if not ack.ok:
        raise CommandRefused(f"the supervisor refused to stop: {ack.message}")
    _wait_for_exit(record.supervisor.pid, lock_path(env), stop_timeout + 15)
    return StopOutcome(message=f"service {env.app_target} stopped").noting(note)


def _stop_without_supervisor(
    env: Env,
    record: ServiceRecord | None,
    cluster: ClusterSettings,
    timeout: float | None,
    shutdown: bool | None,
) -> StopOutcome:
    """No live supervisor: stop loops it left behind, requeue their tasks, record the stop."""
    queue = TaskQueue.for_env(env)
    left = Leftovers(
        queue,
        make_backend(env, record.backend if record else None),
        read_supervisor_state(env.layout.supervisor_state),
        cluster.stop_timeout_sec if timeout is None else timeout,
    )
    if (record is None or record.desired != "running") and left.settled:
        record = read_service_record(env.layout.service_record)
        if record is not None and record.start_error is not None:  # acknowledged: back to "stopped"
            write_state(env.layout.service_record, record.model_copy(update={"start_error": None}))
        return StopOutcome(message=f"service {env.app_target} is already stopped")
    left.stop_and_requeue("stop", kill_grace=max(5.0, cluster.heartbeat_timeout_sec))
    for name in list_visible(queue.heartbeats):
        (queue.heartbeats / name).unlink(missing_ok=True)
    keeper = record is not None and record.cluster is not None and record.cluster.keeper_pid is not None
    if keeper and (cluster.shutdown_on_stop if shutdown is None else shutdown):
        from keepwarm.backends.cluster import stop_keeper

        stop_keeper(env.layout.cluster_keeper)
    record = read_service_record(env.layout.service_record)
    if record is not None:
        write_state(env.layout.service_record, record.model_copy(update={"desired": "stopped"}))
    queue.events.append("stopped", by="stop", supervisor="dead", requeued=left.requeued)
    return StopOutcome(
        message=f"the supervisor of {env.app_target} was dead; stopped {left.found} loops it left "
        f"and requeued {left.requeued} tasks"
    )


def _record_start_error(env: Env, message: str) -> None:
    """Keep a failed start visible: status says ``error`` until the next start or stop."""
    path = env.layout.service_record
    record = read_service_record(path)
    if record is not None:
        write_state(path, record.model_copy(update={"desired": "stopped", "start_error": message}))


def _already_running(env: Env) -> ServiceAlreadyRunning:
    """The refusal of a start that found the lock held, naming the live supervisor that holds it.

    A concurrent start's supervisor names itself in ``service.json`` a moment after it took the
    lock; until then the file names no one, or the previous (dead) supervisor: that is waited for.
    """
    deadline = time.monotonic() + DEAD_LOCK_WAIT_SEC
    record = read_service_record(env.layout.service_record)
    owner = record.supervisor if record is not None and record.desired == "running" else None
    while owner is None or (owner.host == os.uname().nodename and not pid_alive(owner.pid)):
        if time.monotonic() > deadline:
            return ServiceAlreadyRunning(
                f"service {env.app_target!r} is being started by another process, which holds "
                f"{lock_path(env)}",
                remedy=Remedy(
                    "wait for that start, then",
                    f"keepwarm status {env.app_target}",
                    "service_status",
                    _named(env),
                ),
            )
        time.sleep(0.02)
        record = read_service_record(env.layout.service_record)
        owner = record.supervisor if record is not None and record.desired == "running" else None
    return ServiceAlreadyRunning(
        f"service {env.app_target!r} is running (supervisor pid {owner.pid} on {owner.host})",
        remedy=Remedy("stop it first", f"keepwarm stop {env.app_target}", "stop_service", _named(env)),
    )


def _named(env: Env) -> dict[str, str]:
    """A service's name and namespace, as the arguments of the MCP tool that acts on it."""
    return {"app": env.app_target, "namespace": env.namespace}


def _abort(env: Env, pid: int) -> None:
    """A start that failed: stop the supervisor it spawned (its loops and claims with it)."""
    if pid_alive(pid):
        signal_quietly(pid, signal.SIGTERM)
        _wait_for_exit(pid, lock_path(env), env.settings.cluster.stop_timeout_sec + 10)


def _wait_for_exit(pid: int, lock: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = None  # already gone, or not on this host: fall back to the lock
    if pidfd is not None:
        try:
            select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
    while time.monotonic() < deadline:
        fd = acquire_lock(lock)
        if fd is not None:
            os.close(fd)
            return
        time.sleep(0.02)
    raise ServiceStopTimeout(f"the supervisor (pid {pid}) did not exit within {timeout}s")
