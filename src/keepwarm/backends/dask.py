"""The Dask backend: one loop per Dask worker process, fed by the same file queue as local loops.

Tasks never travel through the scheduler: each loop is one long-running Dask task (placed by the
worker resource ``keepwarm_loop``, never pinned to an address) that claims task files from the shared
queue. Dask only places, restarts and reports the loops:

- A loop's future ending (finished, erred, cancelled, lost) is seen by the supervisor, which requeues
  what the loop held and submits a new loop.
- A worker that dies is restarted by its nanny. The scheduler may then rerun the loop's task elsewhere;
  a rerun finds its run marker (``loops/<slot>.<incarnation>.run``) taken and returns at once, so the
  supervisor counts the restart (``worker-lost``) instead of a second loop silently taking the slot.
- A loop cannot be signalled: it stops when it finds its stop marker, when the supervisor that started
  it stops writing ``supervisor.json``, or when another supervisor has taken over; "kill" kills its
  worker process (the nanny brings it back).

This module is the supervisor's side; what runs in the Dask worker is keepwarm.backends.dask_worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm._sys.mounts import describe_mount
from keepwarm._sys.procs import signal_quietly
from keepwarm.app import preload_enabled
from keepwarm.backends.cluster import (
    LOOP_RESOURCE,
    ClusterHandle,
    ask_workers,
    open_cluster,
    read_keeper,
    require_dask,
    start_keeper,
    stop_keeper,
)
from keepwarm.backends.dask_worker import RERUN_EXIT, LoopSpec, probe_queue, serve_on_worker
from keepwarm.backends.staging import ship_to_dask, stage_app
from keepwarm.env import Env
from keepwarm.errors import ClusterError
from keepwarm.queue.layout import CLUSTER_LOG
from keepwarm.queue.shareclock import Clock
from keepwarm.queue.state import ClusterRecord
from keepwarm.queue.task import epoch_of
from keepwarm.runtime.heartbeat import read_heartbeat
from keepwarm.runtime.loop import new_incarnation

log = logging.getLogger("keepwarm.dask")

CAPACITY_EVERY_SEC = 5.0  # how often a joined cluster's loop places are counted again
REUSE_WAIT_SHARE = 1 / 3  # of start_timeout_sec: start's wait for a reused local cluster's first worker


@dataclass
class DaskLoop:
    """A loop running as a Dask task; driven by the supervisor like a local loop process."""

    slot: str
    incarnation: str
    future: Any
    backend: DaskBackend
    wake_fd: int | None = None  # Dask tells the supervisor through its wake callback instead
    killed: bool = field(default=False)

    @property
    def pid(self) -> int | None:
        run = self.backend.run_marker(self)
        return int(run["pid"]) if run else None

    def poll(self) -> int | None:
        status = self.future.status
        if status == "finished":
            try:
                return int(self.future.result(timeout=5))
            except Exception:
                return 1
        if status == "error":
            return 1
        if status in ("cancelled", "lost"):
            return -signal.SIGKILL
        return None

    def exit_reason(self) -> str | None:
        from distributed import KilledWorker

        status = self.future.status
        if status == "lost" or (status == "finished" and self.poll() == RERUN_EXIT):
            return "worker-lost"
        if status == "error" and isinstance(self.future.exception(timeout=5), KilledWorker):
            return "worker-lost"
        if status == "cancelled" and not self.killed:
            return "worker-lost"
        return None

    def stop(self) -> None:
        """Finish the current task, then exit: the loop's watchdog finds the stop marker."""
        self.backend.layout.stop_marker(self.slot, self.incarnation).touch()

    def kill(self) -> None:
        self.killed = True
        self.backend.kill(self)

    def close(self) -> None:
        # The run marker stays: a rerun of this loop's task that the scheduler starts later (a dead
        # worker's task, rescheduled after the supervisor gave the loop up) must still find it taken.
        self.backend.layout.stop_marker(self.slot, self.incarnation).unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            self.future.release()


class DaskBackend:
    """Loops as Dask tasks on a cluster keepwarm joins or starts (see keepwarm.backends.cluster)."""

    name = "dask"

    def __init__(self, env: Env) -> None:
        require_dask()
        self.env = env
        self.settings = env.settings.cluster
        self.handle: ClusterHandle | None = None
        self.keeper: tuple[str, int] | None = (
            None  # the local cluster's (address, pid) when keepwarm holds it
        )
        self.kept = False
        self.supervisor = ""
        self.wake: Callable[[], None] = lambda: None
        self.layout = env.layout
        self.keeper_file = env.layout.cluster_keeper
        self.shipped: str | None = None
        self.asked: int | None = None  # workers asked of the keeper
        self.capacity = 0  # loops a joined cluster places
        self.capacity_at = 0.0

    # ------------------------------------------------------------------ connect

    def open(self, supervisor: str, wake: Callable[[], None], slots: int) -> None:
        """Join or start the cluster, ship the app's code, and check every worker shares the queue."""
        from distributed import Client

        self.supervisor, self.wake = supervisor, wake
        if preload_enabled(self.env):
            log.info(
                "[cluster] preload: the Dask backend spawns every loop in its worker process, and each "
                "runs preload() then start(); loops are forked from a template on the local backend only"
            )
        slots = max(slots, 1)  # a service scaled to zero keeps one worker, to start a loop on
        ensure_private_dir(self.layout.run_markers)
        wait = 0.0  # for a worker that offers the loops' resource
        if self.settings.scheduler or self.settings.hosts:
            self.handle = open_cluster(self.env, workers=slots, timeout=self.settings.start_timeout_sec)
        else:
            self.keeper = read_keeper(self.keeper_file)
            reused = self.keeper is not None
            if self.keeper is not None:
                log.info("reusing the local Dask cluster at %s (keeper pid %d)", *self.keeper)
            else:
                log_path = ensure_private_dir(self.env.log_dir) / CLUSTER_LOG
                self.keeper = start_keeper(slots, self.keeper_file, log_path, self.settings.start_timeout_sec)
                log.info("started a local Dask cluster at %s (keeper pid %d)", *self.keeper)
            client = Client(self.keeper[0], timeout=self.settings.start_timeout_sec, set_as_default=False)
            self.handle = ClusterHandle(client, None, self.keeper[0])
            if reused:  # after a crash its workers may all be coming back (nannies restart them)
                wait = self.settings.start_timeout_sec * REUSE_WAIT_SHARE
        self._check_resources(wait)
        self._ship_code()
        self._check_shared_queue()

    def _check_resources(self, wait: float = 0.0) -> None:
        """A worker offers the loops' resource, or start fails saying how to start one (after ``wait``
        seconds of looking again: workers coming back)."""
        assert self.handle is not None
        deadline = time.monotonic() + wait
        while not self._loop_workers():
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"no worker of the Dask cluster at {self.handle.address} offers the resource "
                    f"{LOOP_RESOURCE!r} that places keepwarm's loops: start workers with "
                    f"`dask worker {self.handle.address} --nthreads 1 --resources {LOOP_RESOURCE}=1`"
                )
            time.sleep(0.1)

    def _loop_workers(self) -> int:
        assert self.handle is not None
        workers = self.handle.client.scheduler_info(n_workers=-1)["workers"]
        return sum(1 for info in workers.values() if LOOP_RESOURCE in (info.get("resources") or {}))

    def _ship_code(self) -> None:
        """Upload a content-named copy of the app to every worker (and to workers that join later,
        through the nannies): keepwarm.backends.staging, shared with run mode."""
        assert self.handle is not None
        try:
            self.shipped = ship_to_dask(self.handle.client, stage_app(self.env))
        except Exception as exc:  # e.g. workers without nannies: they must have the app's folder
            log.warning("could not upload %s to the workers: %s", self.env.app_dir, exc)

    def _check_shared_queue(self) -> None:
        """Every worker must read and write the supervisor's queue folder, or start fails naming it."""
        assert self.handle is not None
        queue = self.env.queue_dir
        nonce = secrets.token_hex(8)
        probe = queue / f".probe-{nonce}"
        write_atomic(probe, nonce.encode())
        try:
            answers = self.handle.client.run(
                probe_queue, str(queue), nonce, self.env.namespace, self.env.app_target
            )
            problems = []
            for address, answer in answers.items():
                if not (answer["seen"] and (queue / answer["answer"]).is_file()):
                    problems.append(_not_shared(address, answer, queue))
                (queue / answer["answer"]).unlink(missing_ok=True)
        finally:
            probe.unlink(missing_ok=True)
        if problems:
            raise ClusterError(
                "\n".join(problems)
                + "\nEvery worker must see the same queue folder: mount the share on every host and set "
                "KEEPWARM_SHARE on workers where it is mounted elsewhere (see docs/scale-out.md)"
            )

    # ------------------------------------------------------------------ loops

    def spawn(self, slot: str, *, max_tasks: int | None = None) -> DaskLoop:
        assert self.handle is not None
        incarnation = new_incarnation()
        spec = LoopSpec(
            app_dir=str(self.env.app_dir),
            share_root=str(self.env.share_root),
            namespace=self.env.namespace,
            slot=slot,
            incarnation=incarnation,
            supervisor=self.supervisor,
            heartbeat_timeout_sec=self.settings.heartbeat_timeout_sec,
            shipped=self.shipped,
            max_tasks=max_tasks,
        )
        future = self.handle.client.submit(
            serve_on_worker,
            spec,
            key=f"keepwarm-loop-{self.env.app_target}-{slot}-{incarnation}",
            resources={LOOP_RESOURCE: 1},
            pure=False,
            retries=0,
        )
        future.add_done_callback(lambda _future: self.wake())
        return DaskLoop(slot, incarnation, future, self)

    def run_marker(self, loop: DaskLoop) -> dict[str, Any] | None:
        try:
            marker: dict[str, Any] = json.loads(
                self.layout.run_marker(loop.slot, loop.incarnation).read_text()
            )
        except (OSError, ValueError):
            return None
        return marker

    def kill(self, loop: DaskLoop) -> None:
        """Kill the loop's worker process (its nanny restarts it), then give up the loop's future."""
        run = self.run_marker(loop)
        if run is None:
            loop.future.cancel()  # never started on a worker: nothing runs it
            return
        if run["host"] == os.uname().nodename:
            signal_quietly(int(run["pid"]), signal.SIGKILL)
            loop.future.cancel()
            return
        assert self.handle is not None
        client = self.handle.client

        def restart() -> None:
            with contextlib.suppress(Exception):
                client.restart_workers([run["address"]])
            loop.future.cancel()

        threading.Thread(target=restart, name=f"keepwarm-kill-{loop.slot}", daemon=True).start()

    # ------------------------------------------------------------------ loops of an earlier supervisor

    def loop_alive(self, pid: int | None, slot: str, incarnation: str) -> bool:
        """A loop of an earlier supervisor runs while its heartbeat is fresh (its host may be remote)."""
        path = self.layout.queue.heartbeat(slot)
        beat = read_heartbeat(path)
        if beat is None or beat.incarnation != incarnation or beat.state == "stopped":
            return False
        # Aged by its file on the share's clock: the loop's host's clock may disagree with this one's.
        age = Clock.of_share(self.layout.queue.root, time.time()).file_age(path)
        if age is None:
            age = time.time() - (epoch_of(beat.timestamp) or 0.0)
        return age <= self.settings.heartbeat_timeout_sec

    def stop_orphan(self, pid: int | None, slot: str, incarnation: str) -> None:
        ensure_private_dir(self.layout.run_markers)
        self.layout.stop_marker(slot, incarnation).touch()

    def kill_orphan(self, pid: int | None, slot: str, incarnation: str) -> None:
        """Not reachable without its future: it stops on its own once it sees the new supervisor."""

    # ------------------------------------------------------------------ the cluster's health and end

    def fit(self, loops: int) -> int | None:
        """The local cluster keepwarm holds runs one worker per loop (Dask's ``cluster.scale``, in
        its keeper); a cluster keepwarm joined places as many loops as it has workers offering the
        loop resource, counted at most every few seconds."""
        if self.handle is None:
            return None
        if self.keeper is not None:
            if loops != self.asked:
                ask_workers(self.keeper_file, max(loops, 1))
                self.asked = loops
            return None
        now = time.monotonic()
        if now >= self.capacity_at:
            workers = self.handle.client.scheduler_info(n_workers=-1)["workers"].values()
            self.capacity = sum(int((info.get("resources") or {}).get(LOOP_RESOURCE, 0)) for info in workers)
            self.capacity_at = now + CAPACITY_EVERY_SEC
        return self.capacity

    def check(self) -> str | None:
        if self.handle is None:
            return None
        status = self.handle.client.status
        if status != "running":
            return f"the Dask scheduler at {self.handle.address} is unreachable (client {status})"
        return None

    def record(self) -> ClusterRecord | None:
        if self.handle is None:
            return None
        return ClusterRecord(
            address=self.handle.address,
            owned=self.keeper is not None or self.handle.owned,
            keeper_pid=self.keeper[1] if self.keeper else None,
            kept=self.kept,
        )

    def retire(self) -> None:
        """A later start chose another backend: shut down the local cluster an earlier start left."""
        if self.settings.shutdown_on_stop and read_keeper(self.keeper_file) is not None:
            log.info("shutting down the local Dask cluster an earlier start left running")
            stop_keeper(self.keeper_file)

    def close(self, *, shutdown: bool | None = None) -> None:
        """Disconnect; shut down the cluster keepwarm started unless told to keep it."""
        if self.handle is None:
            return
        shutdown = self.settings.shutdown_on_stop if shutdown is None else shutdown
        self.handle.close(shutdown=shutdown)
        if self.keeper is not None:
            if shutdown:
                stop_keeper(self.keeper_file)
            else:
                self.kept = True
                log.info("left the local Dask cluster at %s running for the next start", self.keeper[0])


def _not_shared(address: str, answer: dict[str, Any], queue: Path) -> str:
    """Why a worker's probe answer says it does not see the supervisor's queue, naming both folders
    and the mounts they are on (the same path can be another folder: a bind mount, another host)."""
    theirs = answer["queue"]
    same_path = "another folder at the same path" if theirs == str(queue) else theirs
    mount = answer.get("mount", "an unknown mount")
    return (
        f"Dask worker {address} on host {answer['host']} does not share the service's queue: "
        f"the supervisor's queue is {queue} (on {describe_mount(queue)}), the worker's is {same_path} "
        f"(on {mount})"
    )
