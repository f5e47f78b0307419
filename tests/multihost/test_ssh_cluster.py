"""A service on a real Dask SSH cluster: sshd on 127.0.0.2 and 127.0.0.3 (tests/multihost/hosts.py).

The "hosts" are loopback addresses of this one machine, so they share its filesystem (the queue's
share is one local folder) and its Python; what is real is every SSH hop (asyncssh through a real
sshd, with the run's own keys and known_hosts), Dask's scheduler and nannies started over it, each
host's workers listening on that host's own address, and the processes' lives.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import ClusterError, ServiceStartError
from keepwarm.queue.results import wait_for_records
from keepwarm.service.lifecycle import stop_service
from keepwarm.service.liveness import pid_alive

from ..conftest import copy_app, supervisor_state, wait_until
from .hosts import HOSTS, Sshd, keygen, running_sshd, session_processes, write_client_config

pytest.importorskip("distributed")
pytest.importorskip("asyncssh")

REFUSED_HOST = "127.0.0.9"  # a loopback address where nothing listens
SILENT_HOST = "127.0.0.4"  # a loopback address where a socket accepts connections and never speaks
SILENT_TIMEOUT_SEC = 6  # start_timeout_sec; the hosts' check gets a third of it


def ssh_app(
    root: Path, hosts: dict[str, int], ssh_config: Path, extra: str = "", start_timeout: float = 60
) -> Env:
    """The bundled example app on ``[cluster.hosts]`` through ``ssh_config``, with short timeouts."""
    cluster = (
        f'backend = "dask"\nssh_config = "{ssh_config}"\n{extra}'
        f"start_timeout_sec = {start_timeout}\nstop_timeout_sec = 3\nheartbeat_timeout_sec = 4\n"
    )
    table = "".join(f'"{host}" = {loops}\n' for host, loops in hosts.items())
    app = copy_app(
        root,
        "mycode_project",
        f"\n[cluster.hosts]\n{table}",
        **{'backend = "local"\n': cluster, "heartbeat_timeout_sec = 10\n": ""},
    )
    return Env(app, share_dir=str(root / "share"))


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


@dataclass
class SshService:
    """The module's service on two SSH hosts, and the processes under the sshd before it started."""

    env: Env
    service: Service
    baseline: set[int]

    def running(self) -> Service:
        """The service, started again if a test stopped it."""
        if self.service.status().status != "running":
            self.service.start()
        return self.service

    def host_processes(self, sshd: Sshd) -> set[int]:
        """The processes the service's SSH sessions run (scheduler, nannies, workers)."""
        return session_processes(sshd) - self.baseline


@pytest.fixture(scope="module")
def ssh_service(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshService]:
    """One service for the module on two SSH hosts, one loop each; its own share and logs."""
    root = tmp_path_factory.mktemp("ssh-service")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEPWARM_LOG_DIR", str(root / "logs"))
        patch.setenv("KEEPWARM_EXPORT", str(root / "export"))
        patch.setenv("KEEPWARM_SHARE", str(root / "share"))
        env = ssh_app(root, dict.fromkeys(HOSTS, 1), sshd.client_config)
        try:
            yield SshService(env, Service(env), session_processes(sshd))
        finally:
            stop_and_reap(env)


def test_a_service_on_two_ssh_hosts_serves_survives_a_killed_loop_and_stops_clean(
    sshd: Sshd, ssh_service: SshService
) -> None:
    env, service = ssh_service.env, ssh_service.running()
    report = service.status()
    assert report.backend == "dask" and report.workers_healthy_count == 2
    # one loop on each host, each Dask worker listening on its host's own address
    addresses = set()
    for row in supervisor_state(env).loops:
        marker = json.loads(env.layout.run_marker(row.slot, row.incarnation).read_text())
        addresses.add(marker["address"].removeprefix("tcp://").rsplit(":", 1)[0])
    assert addresses == set(HOSTS)
    started = ssh_service.host_processes(sshd)
    assert len(started) >= 5, started  # the scheduler, and a nanny and its worker on each host

    handles = service.submit_many([{"args": {"x": x}} for x in range(1, 21)])
    assert [handle.result(timeout=60)["x"] for handle in handles] == list(range(1, 21))

    victim = service.status().worker_health[0]
    assert victim.pid is not None and victim.pid in started
    more = service.submit_many([{"args": {"x": x}} for x in range(21, 121)])
    os.kill(victim.pid, signal.SIGKILL)
    records = wait_for_records(service.queue, [handle.task_id for handle in more], timeout=120)
    assert sorted(r.result["x"] for r in records.values() if r.status == "done") == list(range(21, 121))

    def replaced() -> bool:
        rows = {row.worker: row for row in service.status().worker_health}
        row = rows[victim.worker]
        return row.incarnation != victim.incarnation and row.healthy and len(rows) == 2

    wait_until(replaced, timeout=60, what="the killed loop to run again on its host")
    counts = service.counts()
    assert counts.pending == counts.running == counts.failed == 0
    _, verdict = service.health(allow_idle=True)
    assert verdict.code == 5, verdict  # the restart rate: the gate saw the restart

    assert service.stop(timeout=10)["status"] == "stopped"
    wait_until(
        lambda: not ssh_service.host_processes(sshd), timeout=30, what="every process on the hosts to end"
    )
    assert service.status().status == "stopped"


def test_a_killed_supervisor_leaves_no_process_on_the_hosts_and_start_recovers(
    sshd: Sshd, ssh_service: SshService
) -> None:
    service = ssh_service.running()
    pending = service.submit_many([{"args": {"x": x}} for x in range(1, 31)])
    os.kill(supervisor_state(ssh_service.env).pid, signal.SIGKILL)
    # its SSH connections end with it, and with them the scheduler, nannies and workers they started
    wait_until(lambda: not ssh_service.host_processes(sshd), timeout=30, what="the hosts' processes to end")
    service.start()
    records = wait_for_records(service.queue, [handle.task_id for handle in pending], timeout=120)
    assert sorted(r.result["x"] for r in records.values() if r.status == "done") == list(range(1, 31))
    assert service.submit({"x": 7}).result(timeout=60)["x"] == 7


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
        ("silent", SILENT_HOST, "did not answer over SSH within 2s"),
        ("key refused", HOSTS[1], "authorized_keys"),
        ("host key unknown", HOSTS[1], "known_hosts"),
        ("python missing", HOSTS[0], "remote_python"),
        ("keepwarm missing", HOSTS[0], "Install keepwarm['dask']"),
    ],
)
def test_a_host_that_cannot_run_loops_fails_start_by_name_and_starts_nothing(
    sshd: Sshd, tmp_path: Path, case: str, named: str, advice: str
) -> None:
    hosts, config, extra, start_timeout = dict.fromkeys(HOSTS, 1), sshd.client_config, "", 60.0
    silent = socket.socket()
    if case == "unreachable":
        hosts = {HOSTS[0]: 1, REFUSED_HOST: 1}
    elif case == "silent":
        silent.bind((SILENT_HOST, sshd.port))
        silent.listen()  # the kernel completes the handshake; no banner ever comes
        hosts, start_timeout = {HOSTS[0]: 1, SILENT_HOST: 1}, SILENT_TIMEOUT_SEC
        config = tmp_path / "ssh_config"
        write_client_config(config, (*HOSTS, SILENT_HOST), sshd.port, sshd.client_key, sshd.known_hosts)
    elif case == "key refused":
        config = keyless_config(sshd)
    elif case == "host key unknown":
        config = unknown_host_config(sshd)
    elif case == "python missing":
        extra = f'remote_python = "{tmp_path / "no-venv" / "bin" / "python"}"\n'
    else:
        extra = 'remote_python = "/usr/bin/python3"\n'  # Debian's Python: no keepwarm there
    env = ssh_app(tmp_path, hosts, config, extra, start_timeout)
    before = session_processes(sshd)
    began = time.monotonic()
    try:
        with pytest.raises((ServiceStartError, ClusterError)) as raised:
            Service(env).start()
    finally:
        silent.close()
        stop_and_reap(env)
    assert time.monotonic() - began < 30
    message = str(raised.value)
    assert f"host {named}" in message and advice in message, message
    assert session_processes(sshd) <= before  # nothing started half-way on any host
    assert Service(env).status().status == "stopped"


def test_install_ships_the_app_to_a_host_that_does_not_have_it(tmp_path: Path) -> None:
    """``keepwarm install`` on ``[cluster.hosts]``: the second host's SSH sessions run in their own mount
    namespace with an empty tmpfs over the apps folder (sshd's ForceCommand), as on a machine that has
    keepwarm but not the app; install ships the app's code there and every worker imports it."""
    from keepwarm.runmode.installer import install

    apps = tmp_path / "apps"
    hide = tmp_path / "hide-apps.sh"
    hide.write_text(
        "#!/bin/sh\n"
        f"exec unshare -m sh -c 'mount -t tmpfs none {apps} && exec sh -c \"$SSH_ORIGINAL_COMMAND\"'\n"
    )
    hide.chmod(0o755)
    with running_sshd(host_config={HOSTS[1]: f"ForceCommand {hide}"}) as sshd:
        env = ssh_app(tmp_path, dict.fromkeys(HOSTS, 1), sshd.client_config)
        listed = sshd.ssh(HOSTS[1], "ls", str(apps))
        assert listed.returncode == 0 and listed.stdout == "", f"the apps folder is not hidden: {listed}"
        assert "mycode_project" in sshd.ssh(HOSTS[0], "ls", str(apps)).stdout
        report = install(env, dask=True)
    step = next(step for step in report.steps if step.name == "dask")
    assert step.status == "done" and "shipped to 2 workers" in step.detail, step
    assert report.shipped is not None
