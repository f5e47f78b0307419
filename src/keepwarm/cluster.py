"""The Dask cluster an app runs on: joined, started locally, or started over SSH.

``[cluster] scheduler`` joins an existing cluster (never shut down by keepwarm); ``[cluster.hosts]``
starts one through Dask's SSH cluster; otherwise keepwarm starts a ``LocalCluster`` of processes with
nannies, one single-threaded worker per loop. Every worker keepwarm starts carries the worker resource
``LOOP_RESOURCE`` so that a loop is placed by resource, never pinned to an address (a nanny restarts a
worker on a new port). Dask is imported only here and only when a Dask backend is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keepwarm.errors import KeepwarmError

if TYPE_CHECKING:
    from distributed import Client

    from keepwarm.env import Env

LOOP_RESOURCE = "keepwarm-loop"


class ClusterError(KeepwarmError):
    """The Dask cluster cannot be reached, started, or used."""


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
        return _ssh_cluster(settings.hosts, timeout)
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


def _ssh_cluster(hosts: dict[str, int], timeout: float) -> ClusterHandle:
    """Dask's SSH cluster: the scheduler on the first host, ``n`` single-threaded workers per host."""
    try:
        from distributed import Client, SSHCluster
    except ImportError:
        raise ClusterError("[cluster.hosts] needs Dask's SSH support: pip install asyncssh") from None
    names = list(hosts)
    try:
        cluster = SSHCluster(
            [names[0], *names],
            worker_options={"nthreads": 1, "n_workers": max(hosts.values()), "resources": {LOOP_RESOURCE: 1}},
            scheduler_options={"dashboard_address": None},
        )
    except Exception as exc:
        raise ClusterError(f"cannot start a Dask SSH cluster on {', '.join(names)}: {exc}") from None
    client = Client(cluster, timeout=timeout, set_as_default=False)
    return ClusterHandle(client, cluster, cluster.scheduler_address)


@contextlib.contextmanager
def dask_client(env: Env, *, workers: int | None = None) -> Iterator[Client]:
    """A client for one run: the cluster it opens is shut down at the end unless it was joined."""
    handle = open_cluster(env, workers=workers)
    try:
        yield handle.client
    finally:
        handle.close()
