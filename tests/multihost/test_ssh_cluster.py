"""A service on a real Dask SSH cluster: sshd on 127.0.0.2 and 127.0.0.3 (tests/multihost/conftest.py).

The "hosts" are loopback addresses of this one machine, so they share its filesystem (the queue's
share is one local folder) and its Python; what is real is every SSH hop (asyncssh through a real
sshd, with the run's own keys and known_hosts), Dask's scheduler and nannies started over it, each
host's workers listening on that host's own address, and the processes' lives.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import ClusterError, ServiceStartError
from keepwarm.service.lifecycle import stop_service
from keepwarm.service.liveness import pid_alive

from ..conftest import copy_app, supervisor_state, wait_until
from .conftest import HOSTS, Sshd, keygen

pytest.importorskip("distributed")
pytest.importorskip("asyncssh")

REFUSED_HOST = "127.0.0.9"  # a loopback address where nothing listens


def ssh_app(root: Path, hosts: dict[str, int], ssh_config: Path, extra: str = "") -> Env:
    """The bundled example app on ``[cluster.hosts]`` through ``ssh_config``, with short timeouts."""
    cluster = (
        f'backend = "dask"\nssh_config = "{ssh_config}"\n{extra}'
        "start_timeout_sec = 60\nstop_timeout_sec = 3\nheartbeat_timeout_sec = 4\n"
    )
    table = "".join(f'"{host}" = {loops}\n' for host, loops in hosts.items())
    app = copy_app(
        root,
        "mycode_project",
        f"\n[cluster.hosts]\n{table}",
        **{'backend = "local"\n': cluster, "heartbeat_timeout_sec = 10\n": ""},
    )
    return Env(app, share_dir=str(root / "share"))


def session_processes(sshd: Sshd) -> set[int]:
    """Every live process under the sshd: what the SSH sessions started (scheduler, nannies, workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {sshd.process.pid}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def stop_and_reap(env: Env) -> None:
    """Stop the service; a supervisor that outlives the stop is killed by its pid."""
    state = supervisor_state_or_none(env)
    try:
        stop_service(env, timeout=5)
    finally:
        if state is not None and pid_alive(state):
            os.kill(state, signal.SIGKILL)


def supervisor_state_or_none(env: Env) -> int | None:
    try:
        return supervisor_state(env).pid
    except AssertionError:
        return None


@pytest.fixture(scope="module")
def ssh_service(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Service]]:
    """One service for the module on two SSH hosts, one loop each; its own share and logs."""
    root = tmp_path_factory.mktemp("ssh-service")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEPWARM_LOG_DIR", str(root / "logs"))
        patch.setenv("KEEPWARM_EXPORT", str(root / "export"))
        patch.setenv("KEEPWARM_SHARE", str(root / "share"))
        env = ssh_app(root, dict.fromkeys(HOSTS, 1), sshd.client_config)
        service = Service(env)
        try:
            service.start()
            yield env, service
        finally:
            stop_and_reap(env)


def test_a_service_on_two_ssh_hosts_serves_survives_a_killed_loop_and_stops_clean(
    sshd: Sshd, ssh_service: tuple[Env, Service]
) -> None:
    env, service = ssh_service
    report = service.status()
    assert report.backend == "dask" and report.workers_healthy_count == 2
    # one loop on each host, each Dask worker listening on its host's own address
    addresses = set()
    for row in supervisor_state(env).loops:
        marker = json.loads(env.layout.run_marker(row.slot, row.incarnation).read_text())
        addresses.add(marker["address"].removeprefix("tcp://").rsplit(":", 1)[0])
    assert addresses == set(HOSTS)
    started = session_processes(sshd)
    assert len(started) >= 5, started  # the scheduler, and a nanny and its worker on each host

    handles = service.submit_many([{"args": {"x": x}} for x in range(1, 21)])
    assert [handle.result(timeout=60)["x"] for handle in handles] == list(range(1, 21))

    victim = service.status().worker_health[0]
    assert victim.pid is not None and victim.pid in started
    more = service.submit_many([{"args": {"x": x}} for x in range(21, 121)])
    os.kill(victim.pid, signal.SIGKILL)
    assert sorted(handle.result(timeout=120)["x"] for handle in more) == list(range(21, 121))

    def replaced() -> bool:
        rows = {row.worker: row for row in service.status().worker_health}
        row = rows[victim.worker]
        return row.incarnation != victim.incarnation and row.healthy and len(rows) == 2

    wait_until(replaced, timeout=60, what="the killed loop to run again on its host")
    counts = service.counts()
    assert counts.done == 120 and counts.pending == counts.running == counts.failed == 0
    _, verdict = service.health(allow_idle=True)
    assert verdict.code == 5, verdict  # the restart rate: the gate saw the restart

    assert service.stop(timeout=10)["status"] == "stopped"
    wait_until(lambda: not session_processes(sshd), timeout=30, what="every process on the hosts to end")
    assert service.status().status == "stopped"


def keyless_config(sshd: Sshd) -> Path:
    """A client config that logs in with a key the hosts' authorized_keys does not hold."""
    stranger = sshd.root / "stranger_ed25519"
    if not stranger.exists():
        keygen(stranger)
    return sshd.client_config_for("stranger_config", identity=stranger)


def unknown_host_config(sshd: Sshd) -> Path:
    """A client config whose known_hosts file does not hold the hosts' key."""
    empty = sshd.root / "empty_known_hosts"
    empty.touch()
    return sshd.client_config_for("unknown_host_config", known_hosts=empty)


@pytest.mark.parametrize(
    ("case", "named", "advice"),
    [
        ("unreachable", REFUSED_HOST, "Check that sshd runs there"),
        ("key refused", HOSTS[1], "authorized_keys"),
        ("host key unknown", HOSTS[1], "known_hosts"),
        ("python missing", HOSTS[0], "remote_python"),
        ("keepwarm missing", HOSTS[0], "Install keepwarm['dask']"),
    ],
)
def test_a_host_that_cannot_run_loops_fails_start_by_name_and_starts_nothing(
    sshd: Sshd, tmp_path: Path, case: str, named: str, advice: str
) -> None:
    hosts, config, extra = dict.fromkeys(HOSTS, 1), sshd.client_config, ""
    if case == "unreachable":
        hosts = {HOSTS[0]: 1, REFUSED_HOST: 1}
    elif case == "key refused":
        config = keyless_config(sshd)
    elif case == "host key unknown":
        config = unknown_host_config(sshd)
    elif case == "python missing":
        extra = f'remote_python = "{tmp_path / "no-venv" / "bin" / "python"}"\n'
    else:
        extra = 'remote_python = "/usr/bin/python3"\n'  # Debian's Python: no keepwarm there
    env = ssh_app(tmp_path, hosts, config, extra)
    began = time.monotonic()
    try:
        with pytest.raises((ServiceStartError, ClusterError)) as raised:
            Service(env).start()
    finally:
        stop_and_reap(env)
    assert time.monotonic() - began < 30
    message = str(raised.value)
    assert f"host {named}" in message and advice in message, message
    assert not session_processes(sshd)  # nothing started half-way on any host
    assert Service(env).status().status == "stopped"
