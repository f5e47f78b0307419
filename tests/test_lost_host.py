"""A lost host: every process of one Dask worker "host" (its own loopback address and process group:
nanny, worker and the loops in it) killed at once under load. Its tasks are requeued and finish on
the host left, none is lost or failed, health says why a loop cannot be placed while capacity
is gone, and the loops return when the host does."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepwarm.api import Service
from keepwarm.env import Env

from .conftest import Services, wait_until
from .test_dask import DaskProcesses, dask_app

HOSTS = ("127.0.0.2", "127.0.0.3")


@pytest.fixture(params=[1, 2], ids=["room for one loop a host", "room for two loops a host"])
def two_hosts(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DaskProcesses]:
    processes = DaskProcesses(tmp_path)
    processes.loops_per_host = request.param  # type: ignore[attr-defined]
    processes.start_scheduler()
    for host in HOSTS:
        processes.start_worker(host=host, loops=request.param)
    processes.wait_for_workers(len(HOSTS) * request.param)
    yield processes
    processes.stop()


def loop_hosts(service: Service, hosts: DaskProcesses) -> list[int]:
    """Which host (worker index: its process group) each healthy loop runs on; every "host" has
    this machine's node name, so the loop's process group tells them apart."""
    groups = {worker.pid: index for index, worker in enumerate(hosts.workers) if worker.poll() is None}
    found = []
    for row in service.status().worker_health:
        if row.healthy and row.pid is not None:
            try:
                found.append(groups[os.getpgid(row.pid)])
            except (ProcessLookupError, KeyError):
                continue
    return sorted(found)


def test_a_lost_host_loses_nothing_and_its_loops_come_back_with_it(
    tmp_path: Path, services: Services, two_hosts: DaskProcesses
) -> None:
    room: int = two_hosts.loops_per_host  # type: ignore[attr-defined]
    env: Env = dask_app(tmp_path, two_hosts.address)
    service = services.start(env, slots=2)
    wait_until(lambda: service.status().workers_healthy_count == 2, 60, "two loops")
    lost = loop_hosts(service, two_hosts)[0]  # a host with a loop on it

    handles = [service.submit({"x": 27 + i}) for i in range(300)]
    wait_until(lambda: service.counts().done >= 20, 60, "the load under way")
    two_hosts.kill_host(lost)
    killed_at = time.monotonic()
    if room == 2:  # the host left has room for both loops: they run there
        left = [1 - lost, 1 - lost]
        wait_until(lambda: loop_hosts(service, two_hosts) == left, 90, "both loops on the host left")
        print(f"\nloops running elsewhere {time.monotonic() - killed_at:.2f} s after the host was lost")

    records = service.wait([h.task_id for h in handles], timeout=180)
    assert [r.status for r in records] == ["done"] * len(handles)  # every task, none lost
    assert [r.result["x"] for r in records] == [27 + i for i in range(300)]
    assert service.counts().failed == 0

    if room == 1:  # no room on the host left: degraded, each loop that cannot be placed saying why

        def says_why() -> bool:
            report = service.status()
            return report.status == "degraded" and report.workers_healthy_count == 1

        wait_until(says_why, 60, "the service degraded to the host left, saying why")
        reasons = [row.reason for row in service.status().worker_health if not row.healthy]
        assert reasons and all(reasons), reasons

    two_hosts.start_worker(host=HOSTS[lost], loops=room)  # the host comes back (worker 2)
    if room == 1:  # the loop that had no room returns to it
        wait_until(lambda: loop_hosts(service, two_hosts) == [1 - lost, 2], 90, "a loop on each host again")
    wait_until(lambda: service.status().workers_healthy_count == 2, 90, "two loops again")
    assert service.status().status in ("running", "idle")
    assert service.submit({"x": 5}).result(timeout=60)["x"] == 5
