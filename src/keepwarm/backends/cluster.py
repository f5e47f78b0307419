"""The Dask cluster an app runs on: joined, started locally, or started over SSH.

``[cluster] scheduler`` joins an existing cluster (never shut down by keepwarm); ``[cluster.hosts]``
starts one through Dask's SSH cluster; otherwise keepwarm starts a ``LocalCluster`` of processes with
nannies, one single-threaded worker per loop. A service's local cluster lives in a process of its own
(``python -m keepwarm.backends.cluster``, the *keeper*), so that it can outlive a supervisor: after a
crash, or after ``stop --no-shutdown``, the next ``start`` reuses it. Every worker keepwarm starts carries the
worker resource ``LOOP_RESOURCE`` so that a loop is placed by resource, never pinned to an address (a
nanny restarts a worker on a new port). Dask is imported only when a Dask backend is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.child import child_command, child_parser, report
from keepwarm._sys.procs import process_alive, signal_quietly
from keepwarm.backends.ssh import check_ssh_hosts, ssh_connect_options, tethered
from keepwarm.errors import ClusterError

if TYPE_CHECKING:
    from distributed import Client

    from keepwarm.env import Env

LOOP_RESOURCE = "keepwarm_loop"
SSH_CHECK_SHARE = 1 / 3  # of start_timeout_sec for the hosts' check: the rest starts the cluster and loops


@dataclass
class ClusterHandle:
    """A connected client, and the cluster object when keepwarm started it (else None: joined)."""

    client: Client
    cluster: Any | None
    address: str

    @property
    def owned(self) -> bool:
        return self.cluster is not None

    def close(self, *, shutdown: bool = True) -> None:
        """Disconnect; with ``shutdown``, also shut down a cluster keepwarm started."""
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None and shutdown:
            with contextlib.suppress(Exception):
                self.cluster.close()


def require_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ClusterError(
            "the Dask backend needs the 'distributed' package: pip install 'keepwarm[dask]'"
        ) from None


def open_cluster(
    env: Env, *, workers: int | None = None, scheduler: str | None = None, timeout: float = 30
) -> ClusterHandle:
    """Connect to ``scheduler`` (else ``[cluster] scheduler``), or start the cluster keepwarm owns.

    ``workers`` (default ``[cluster] slots``, or the sum of ``[cluster.hosts]``) is the number of
    single-threaded worker processes of a cluster keepwarm starts.
    """
    require_dask()
    from distributed import Client

    settings = env.settings.cluster
    address = scheduler or settings.scheduler
    if address:
        try:
            client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {address}: {exc}. "
                "Check [cluster] scheduler in app_settings.toml, or leave it unset to start a local cluster"
            ) from None
        return ClusterHandle(client, None, address)
    if settings.hosts:
        return _ssh_cluster(env, timeout)
    return _local_cluster(workers or settings.slots, timeout)


def _local_cluster(workers: int, timeout: float) -> ClusterHandle:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        resources={LOOP_RESOURCE: 1},
        silence_logs=40,  # logging.ERROR: the workers' chatter goes nowhere near the user's terminal
    )
    try:
        client = Client(cluster, timeout=timeout, set_as_default=False)
    except Exception:
        cluster.close()
        raise
    return ClusterHandle(client, cluster, cluster.scheduler_address)


def _ssh_cluster(env: Env, timeout: float) -> ClusterHandle:
    """Dask's SSH cluster: the scheduler on the first host, ``n`` single-threaded workers per host,
    each listening on its host's own address. Every host is checked first (reachable, key accepted,
    Python with keepwarm and distributed there), so a bad host fails ``start`` before anything runs."""
    try:
        import asyncssh  # noqa: F401
        from distributed import Client
        from distributed.deploy.spec import SpecCluster
        from distributed.deploy.ssh import Scheduler, Worker
    except ImportError:
        raise ClusterError("[cluster.hosts] needs Dask's SSH support: pip install 'keepwarm[dask]'") from None
    settings = env.settings.cluster
    connect = ssh_connect_options(env, timeout * SSH_CHECK_SHARE)
    python = settings.remote_python or sys.executable
    check_ssh_hosts(list(settings.hosts), connect, python, timeout * SSH_CHECK_SHARE)
    python = tethered(python)  # a killed supervisor's SSH sessions end, and with them what they ran
    first = next(iter(settings.hosts))
    scheduler = {
        "cls": Scheduler,
        "options": {
            "address": first,
            "connect_options": connect,
            "kwargs": {"host": first, "dashboard_address": None},
            "remote_python": python,
        },
    }
    workers = {
        host: {
            "cls": Worker,
            "options": {
                "address": host,
                "connect_options": connect,
                "kwargs": {"nthreads": 1, "n_workers": loops, "host": host, "resources": {LOOP_RESOURCE: 1}},
                "worker_class": "distributed.Nanny",
                "remote_python": python,
            },
        }
        for host, loops in settings.hosts.items()
    }
    try:
        cluster = SpecCluster(workers, scheduler, name="SSHCluster")
    except Exception as exc:  # SpecCluster closes what it started before raising
        raise ClusterError(f"cannot start a Dask SSH cluster on {', '.join(settings.hosts)}: {exc}") from None
    try:
        client = Client(cluster, timeout=timeout, set_as_default=False)
    except Exception:
        cluster.close()
        raise
    return ClusterHandle(client, cluster, cluster.scheduler_address)


# ---------------------------------------------------------------------- the keeper of a service's cluster


KEEPER_TICK_SEC = 0.25  # how often the keeper reads the number of workers asked for


def start_keeper(workers: int, state_file: Path, log_path: Path, timeout: float) -> tuple[str, int]:
    """Start a detached keeper of a LocalCluster with ``workers`` workers; its (address, pid)."""
    require_dask()
    state_file.unlink(missing_ok=True)
    command = child_command(
        "keepwarm.backends.cluster", "--workers", str(workers), "--state-file", str(state_file)
    )
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kept = read_keeper(state_file)
        if kept is not None:
            return kept
        if process.poll() is not None:
            break
        time.sleep(0.05)
    signal_quietly(process.pid, signal.SIGKILL)
    raise ClusterError(f"the local Dask cluster did not start within {timeout}s; see {log_path}")


def read_keeper(state_file: Path) -> tuple[str, int] | None:
    """The (address, pid) a live keeper wrote, or None."""
    try:
        kept = json.loads(state_file.read_text())
        address, pid = str(kept["address"]), int(kept["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (address, pid) if process_alive(pid) else None


def stop_keeper(state_file: Path, timeout: float = 30) -> None:
    """Ask the keeper to close its cluster and wait for it to exit."""
    kept = read_keeper(state_file)
    if kept is None:
        return
    _, pid = kept
    signal_quietly(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and read_keeper(state_file) is not None:
        time.sleep(0.05)
    signal_quietly(pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)


def scale_file(state_file: Path) -> Path:
    """Where a supervisor asks the keeper for a number of workers (its autoscaler's loops)."""
    return state_file.with_name(state_file.name + ".workers")


def ask_workers(state_file: Path, workers: int) -> None:
    """Ask the keeper of ``state_file`` to run ``workers`` workers (Dask's ``cluster.scale``)."""
    write_atomic(scale_file(state_file), str(workers).encode())


def _asked_workers(state_file: Path) -> int | None:
    try:
        workers = int(scale_file(state_file).read_text())
    except (OSError, ValueError):
        return None
    return workers if workers > 0 else None


def main(argv: list[str] | None = None) -> int:
    """The keeper: run a LocalCluster until SIGTERM, its address in ``--state-file``; it scales the
    cluster to the number of workers a supervisor asks for (``ask_workers``) through Dask's own
    ``cluster.scale``, which retires idle workers first."""
    parser = child_parser("keepwarm.backends.cluster", __doc__, env=False)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--state-file", type=Path, required=True)
    options = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=options.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        resources={LOOP_RESOURCE: 1},
    ) as cluster:
        write_atomic(
            options.state_file,
            json.dumps({"address": cluster.scheduler_address, "pid": os.getpid()}).encode(),
        )
        report("ready", address=cluster.scheduler_address, pid=os.getpid())
        scale_file(options.state_file).unlink(missing_ok=True)
        workers = options.workers
        while not stop.wait(KEEPER_TICK_SEC):
            asked = _asked_workers(options.state_file)
            if asked is not None and asked != workers:
                cluster.scale(asked)
                workers = asked
        options.state_file.unlink(missing_ok=True)
        scale_file(options.state_file).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
