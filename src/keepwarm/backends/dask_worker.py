"""A loop's side of the Dask backend (keepwarm.backends.dask), run in a Dask worker process.

``serve_on_worker`` is the one long-running Dask task of a loop: it takes the loop's run marker (a rerun
of the task on another worker finds it taken and returns ``RERUN_EXIT``), runs a ``WorkerLoop`` against
the shared queue, and a watchdog thread stops that loop when told to or when its supervisor is gone.
``probe_queue`` answers the supervisor's check that every worker shares its queue folder.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm._sys.mounts import describe_mount
from keepwarm.backends.staging import shipped_folder
from keepwarm.env import Env
from keepwarm.errors import ClusterError
from keepwarm.queue.layout import ServiceLayout, loop_log_name
from keepwarm.queue.state import SupervisorState, read_supervisor_state
from keepwarm.runtime.loop import WorkerLoop
from keepwarm.settings import SETTINGS_FILE

log = logging.getLogger("keepwarm.dask")

RERUN_EXIT = 75  # a rerun of a loop whose worker left: the run marker was already taken
WATCH_EVERY_SEC = 0.2


@dataclass(frozen=True)
class LoopSpec:
    """What a Dask worker needs to run one loop (pickled to the worker)."""

    app_dir: str
    share_root: str
    namespace: str
    slot: str
    incarnation: str
    supervisor: str  # the supervisor's incarnation: the loop stops when another one takes over
    heartbeat_timeout_sec: float
    shipped: str | None = None  # the name of the app's uploaded copy on workers (keepwarm.backends.staging)
    max_tasks: int | None = None


def serve_on_worker(spec: LoopSpec) -> int:
    """Run one loop in this Dask worker until it is told to stop; the loop's exit code."""
    from distributed import get_worker

    worker = get_worker()
    env = Env(
        _app_dir_here(spec.app_dir, spec.shipped, worker),
        share_dir=os.environ.get("KEEPWARM_SHARE") or spec.share_root,
        namespace=spec.namespace,
    )
    ensure_private_dir(env.layout.run_markers)
    try:
        fd = os.open(
            env.layout.run_marker(spec.slot, spec.incarnation), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600
        )
    except FileExistsError:
        return RERUN_EXIT  # this loop already ran on a worker that left: the supervisor starts a new one
    with os.fdopen(fd, "w") as marker:
        json.dump({"address": worker.address, "pid": os.getpid(), "host": os.uname().nodename}, marker)
    handler = _log_to(env.log_dir, spec.slot)
    try:
        loop = WorkerLoop(env, spec.slot, spec.incarnation, max_tasks=spec.max_tasks)
        done = threading.Event()
        watchdog = threading.Thread(
            target=_watch,
            args=(loop, spec, env.layout, done),
            name=f"keepwarm-watchdog-{spec.slot}",
            daemon=True,
        )
        watchdog.start()
        try:
            return loop.run()
        finally:
            done.set()
            watchdog.join()
    finally:
        logging.getLogger("keepwarm").removeHandler(handler)
        handler.close()


def _app_dir_here(app_dir: str, shipped: str | None, worker: Any) -> Path:
    """The app's folder on this worker: the supervisor's path if it is here, else the uploaded copy."""
    if (Path(app_dir) / SETTINGS_FILE).is_file():
        return Path(app_dir)
    copy = shipped_folder(shipped, worker) if shipped else None
    if copy is not None and (copy / SETTINGS_FILE).is_file():
        return copy
    raise ClusterError(
        f"the app {Path(app_dir).name} is not on worker host {os.uname().nodename}: neither {app_dir} "
        f"nor an uploaded copy {shipped or '(none shipped)'} next to {worker.local_directory}"
    )


def _log_to(log_dir: Path, slot: str) -> logging.Handler:
    handler = logging.FileHandler(ensure_private_dir(log_dir) / loop_log_name(slot))
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {slot} pid={os.getpid()} dask %(levelname)s %(message)s")
    )
    logger = logging.getLogger("keepwarm")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def _watch(loop: WorkerLoop, spec: LoopSpec, layout: ServiceLayout, done: threading.Event) -> None:
    """Stop the loop (after its current task) when told to, or when its supervisor is gone.

    The supervisor may run on a host whose clock disagrees with this one's: it is alive while it keeps
    rewriting ``supervisor.json``, timed on this process's monotonic clock, never by the timestamp it
    wrote against this host's wall clock."""
    stop_marker = layout.stop_marker(spec.slot, spec.incarnation)
    started = changed_at = time.monotonic()
    seen = _written(read_supervisor_state(layout.supervisor_state))
    while not done.wait(WATCH_EVERY_SEC):
        reason = None
        state = read_supervisor_state(layout.supervisor_state)
        now = time.monotonic()
        rewritten = _written(state) != seen
        if rewritten:
            seen, changed_at = _written(state), now
        if stop_marker.exists():
            reason = "told to stop"
        elif state is not None and state.incarnation == spec.supervisor:
            if now - changed_at > spec.heartbeat_timeout_sec:
                reason = f"supervisor {spec.supervisor} silent for {now - changed_at:.0f}s"
        elif state is not None and rewritten:  # another supervisor wrote it while this loop ran
            reason = f"supervisor {state.incarnation} has taken over"
        elif now - started > spec.heartbeat_timeout_sec:
            reason = f"supervisor {spec.supervisor} never seen"
        if reason is not None:
            log.info("slot %s: stopping: %s", spec.slot, reason)
            loop.request_stop()
            return


def _written(state: SupervisorState | None) -> tuple[str, float] | None:
    """What tells one write of ``supervisor.json`` from the next: its writer and the time it wrote."""
    return None if state is None else (state.incarnation, state.timestamp)


def probe_queue(
    supervisor_queue: str, nonce: str, namespace: str, app: str, dask_worker: Any
) -> dict[str, Any]:
    """On a worker (``client.run``): find the supervisor's probe in this worker's queue folder and
    answer it there."""
    share = os.environ.get("KEEPWARM_SHARE")
    queue = (
        ServiceLayout.of(Path(share).expanduser(), namespace, app).queue.root
        if share
        else Path(supervisor_queue)
    )
    try:
        seen = (queue / f".probe-{nonce}").read_text() == nonce
    except OSError:
        seen = False
    answer = f".probe-{nonce}.{secrets.token_hex(4)}"
    if seen:
        try:
            write_atomic(queue / answer, str(dask_worker.address).encode())
        except OSError:
            seen = False
    return {
        "host": os.uname().nodename,
        "queue": str(queue),
        "mount": describe_mount(queue),
        "seen": seen,
        "answer": answer,
    }
