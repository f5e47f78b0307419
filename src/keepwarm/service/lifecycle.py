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
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from keepwarm._sys.dirs import ensure_private_dir
from keepwarm._sys.watch import IN_MOVED_TO, Watcher
from keepwarm.backends.local import log_tail, rotated, signal_quietly
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
from keepwarm.queue.state import (
    LoopRow,
    ServiceRecord,
    SupervisorState,
    app_change,
    read_service_record,
    read_supervisor_state,
    settings_in_force,
    write_state,
)
from keepwarm.queue.taskqueue import TaskQueue, list_visible
from keepwarm.runtime.heartbeat import read_heartbeat
from keepwarm.service.control import Ack, CommandName, send_command
from keepwarm.service.liveness import pid_alive
from keepwarm.service.supervisor import Supervisor, acquire_lock, make_backend
from keepwarm.settings import ClusterSettings

DEAD_LOCK_WAIT_SEC = 5.0  # how long a dead supervisor's threads may take to release service.lock


def live_supervisor(env: Env) -> SupervisorState:
    """The live supervisor's state, or ServiceNotRunning saying how to start it."""
    record = read_service_record(env.service_dir / "service.json")
    state = read_supervisor_state(env.service_dir / "supervisor.json")
    if record is None or record.desired != "running" or state is None or not _supervisor_alive(state):
        raise ServiceNotRunning(
            f"service {env.app_target!r} is not running",
            remedy=Remedy("start it", f"keepwarm start {env.app_target}", "start_service", _named(env)),
        )
    return state


def command(env: Env, name: CommandName, args: dict[str, Any] | None = None, timeout: float = 30.0) -> Ack:
    """Send a control command to the live supervisor; its acknowledgement, or an error saying why not."""
    for _ in range(2):  # a supervisor restarted in between makes the first try stale
        state = live_supervisor(env)
        ack = send_command(env.service_dir / "control", name, state.incarnation, args, timeout=timeout)
        if ack.outcome != "stale":
            break
    if not ack.ok:
        raise CommandRefused(f"{name} refused by the supervisor of {env.app_target}: {ack.message}")
    return ack


def _supervisor_alive(state: SupervisorState) -> bool:
    return state.host != os.uname().nodename or pid_alive(state.pid)


def lock_path(env: Env) -> Path:
    return env.service_dir / "service.lock"


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
        *(queue / name for name in ("pending", "running", "done", "failed", "heartbeats")),
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
    """``service.lock``, or None while a live supervisor holds it.

    A supervisor killed with SIGKILL reads as dead as soon as its main thread is a zombie, but the lock
    goes only when its last thread has exited: a lock held for a supervisor that is already dead is
    waited for (at most a few seconds) instead of being reported as a running service.
    """
    fd = acquire_lock(lock_path(env))
    if fd is not None:
        return fd
    record = read_service_record(env.service_dir / "service.json")
    owner = record.supervisor if record else None
    if owner is None or owner.host != os.uname().nodename or pid_alive(owner.pid):
        return None
    deadline = time.monotonic() + DEAD_LOCK_WAIT_SEC
    while fd is None and time.monotonic() < deadline:
        time.sleep(0.01)
        fd = acquire_lock(lock_path(env))
    return fd


def supervisor_log(env: Env) -> Path:
    return env.log_dir / "supervisor.log"


def start_service(
    env: Env, *, slots: int | None = None, timeout: float | None = None, backend: str | None = None
) -> str:
    """Start the supervisor detached and return when every loop is ready; its incarnation."""
    _refuse_unreadable_app(env)
    ensure_private_dir(env.service_dir)
    TaskQueue.for_env(env).ensure()
    refuse_shared_writers(env)
    fd = take_lock(env)
    if fd is None:
        raise _already_running(env)
    incarnation = uuid.uuid4().hex[:12]
    log_path = rotated(ensure_private_dir(env.log_dir) / "supervisor.log")
    command = [
        sys.executable,
        "-m",
        "keepwarm.service.supervisor",
        *env.child_args(),
        "--incarnation",
        incarnation,
        "--lock-fd",
        str(fd),
    ]
    if slots is not None:
        command += ["--slots", str(slots)]
    if backend is not None:
        command += ["--backend", backend]
    command.append("--detach")
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
    pid = int(starter.stdout.split()[0]) if starter.stdout.split() else 0
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
    _refuse_unreadable_app(env)
    ensure_private_dir(env.service_dir)
    TaskQueue.for_env(env).ensure()
    refuse_shared_writers(env)
    fd = take_lock(env)
    if fd is None:
        raise _already_running(env)
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
    state_path = env.service_dir / "supervisor.json"
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
                    beat = read_heartbeat(queue.heartbeats / f"{row.slot}.json")
                    if beat is not None and beat.incarnation == row.incarnation:
                        if beat.state in ("ready", "processing") and row.future_state == "running":
                            ready += 1
                        elif beat.error:
                            problems.append(f"loop {row.slot}: {beat.error}")
                    elif row.restarts and row.last_reason:
                        log = env.log_dir / f"{row.slot}.log"
                        problems.append(
                            f"loop {row.slot} exited ({row.last_reason}); {log} ends with:\n{log_tail(log)}"
                        )
                if problems:
                    _abort(env, pid)
                    raise ServiceStartError(
                        f"service {env.app_target} did not start:\n" + "\n".join(problems)
                    )
                if state.loops and ready == len(state.loops) == state.desired_slots:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                _abort(env, pid)
                raise ServiceStartError(
                    f"service {env.app_target} not ready after {timeout}s; see {supervisor_log(env)} "
                    f"and the loops' logs in {env.log_dir}"
                )
            watcher.wait(min(left, 0.1))


def stop_service(env: Env, *, timeout: float | None = None, shutdown: bool | None = None) -> dict[str, Any]:
    """Stop the service from any process; returns once the supervisor has exited.

    Judged by the settings the service runs with (``state.settings_in_force``); when the app's files
    changed since it started, the message says how (``state.app_change``).
    """
    record = read_service_record(env.service_dir / "service.json")
    cluster = settings_in_force(env, record).cluster
    note = app_change(env, record)
    fd = take_lock(env) if env.service_dir.is_dir() else None
    if fd is not None:
        try:
            outcome = _stop_without_supervisor(env, record, cluster, timeout, shutdown)
        finally:
            os.close(fd)
        return _noted(outcome, note)
    if record is None or record.supervisor is None:
        if not env.service_dir.is_dir():
            return {"status": "stopped", "message": f"service {env.app_target} is not running"}
        raise ServiceStarting(f"service {env.app_target} is starting; try again in a moment")
    state = read_supervisor_state(env.service_dir / "supervisor.json")
    incarnation = state.incarnation if state is not None else record.supervisor.incarnation
    stop_timeout = cluster.stop_timeout_sec if timeout is None else timeout
    args: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    if shutdown is not None:
        args["shutdown"] = shutdown
    ack = send_command(env.service_dir / "control", "stop", incarnation, args, timeout=10)
    if not ack.ok:
        raise CommandRefused(f"the supervisor refused to stop: {ack.message}")
    _wait_for_exit(record.supervisor.pid, lock_path(env), stop_timeout + 15)
    return _noted({"status": "stopped", "message": f"service {env.app_target} stopped"}, note)


def _noted(outcome: dict[str, Any], note: str | None) -> dict[str, Any]:
    if note is None:
        return outcome
    return outcome | {"message": f"{outcome['message']} (its app changed since it started: {note})"}


def _stop_without_supervisor(
    env: Env,
    record: ServiceRecord | None,
    cluster: ClusterSettings,
    timeout: float | None,
    shutdown: bool | None,
) -> dict[str, Any]:
    """No live supervisor: stop loops it left behind, requeue their tasks, record the stop."""
    queue = TaskQueue.for_env(env)
    state = read_supervisor_state(env.service_dir / "supervisor.json")
    was_running = record is not None and record.desired == "running"
    backend = make_backend(env, record.backend if record else None)
    leftovers = [
        row
        for row in (state.loops if state else [])
        if backend.loop_alive(row.pid, row.slot, row.incarnation)
    ]
    if not was_running and not leftovers and not list_visible(queue.running):
        record = read_service_record(env.service_dir / "service.json")
        if record is not None and record.start_error is not None:  # acknowledged: back to "stopped"
            write_state(env.service_dir / "service.json", record.model_copy(update={"start_error": None}))
        return {"status": "stopped", "message": f"service {env.app_target} is already stopped"}

    def alive() -> list[LoopRow]:
        return [row for row in leftovers if backend.loop_alive(row.pid, row.slot, row.incarnation)]

    for row in leftovers:
        backend.stop_orphan(row.pid, row.slot, row.incarnation)
    deadline = time.monotonic() + (cluster.stop_timeout_sec if timeout is None else timeout)
    while alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    for row in alive():
        backend.kill_orphan(row.pid, row.slot, row.incarnation)
    killed_by = time.monotonic() + max(5.0, cluster.heartbeat_timeout_sec)
    while alive() and time.monotonic() < killed_by:
        time.sleep(0.01)  # a kill is delivered asynchronously: requeue only once they are gone
    requeued = 0
    for owner in list_visible(queue.running):
        requeued += len(queue.requeue(queue.running / owner, "stop", count_attempt=False))
    for name in list_visible(queue.heartbeats):
        (queue.heartbeats / name).unlink(missing_ok=True)
    keeper = record is not None and record.cluster is not None and record.cluster.keeper_pid is not None
    if keeper and (cluster.shutdown_on_stop if shutdown is None else shutdown):
        from keepwarm.backends.cluster import stop_keeper

        stop_keeper(env.service_dir / "cluster.json")
    record = read_service_record(env.service_dir / "service.json")
    if record is not None:
        write_state(env.service_dir / "service.json", record.model_copy(update={"desired": "stopped"}))
    queue.events.append("stopped", by="stop", supervisor="dead", requeued=requeued)
    return {
        "status": "stopped",
        "message": f"the supervisor of {env.app_target} was dead; stopped {len(leftovers)} loops it left "
        f"and requeued {requeued} tasks",
    }


def _record_start_error(env: Env, message: str) -> None:
    """Keep a failed start visible: status says ``error`` until the next start or stop."""
    path = env.service_dir / "service.json"
    record = read_service_record(path)
    if record is not None:
        write_state(path, record.model_copy(update={"desired": "stopped", "start_error": message}))


def _already_running(env: Env) -> ServiceAlreadyRunning:
    """The refusal of a start that found the lock held, naming the live supervisor that holds it.

    A concurrent start's supervisor names itself in ``service.json`` a moment after it took the
    lock; until then the file names no one, or the previous (dead) supervisor: that is waited for.
    """
    deadline = time.monotonic() + DEAD_LOCK_WAIT_SEC
    record = read_service_record(env.service_dir / "service.json")
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
        record = read_service_record(env.service_dir / "service.json")
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
