"""A lost host: seconds from one host's loss to its loops running on the host left.

Measured as ``tests/test_lost_host.py`` does it, a few times in a row: a ``dask scheduler`` and two
``dask worker`` "hosts" (127.0.0.2 and 127.0.0.3, two single-threaded workers each, each host its own
process group: ``DaskProcesses`` of ``tests/test_dask.py``) joined by a service of 2 loops on the
bundled app. Each round submits a load, kills every process of the host that runs a loop at once
(``killpg``, SIGKILL: nanny, workers and the loops in them) while tasks flow, and times until both
loops are healthy on the other host (polled through ``Service.status()``); then the lost host comes
back (a new ``dask worker`` on its address) for the next round, which kills the other one. Every task
of every round must end ``done`` (the lost host's are requeued).

A slot whose loop is lost restarts after the crash back-off, which doubles with each restart of the
slot (until ``restart_reset_sec`` of health): round after round the figure would measure the back-off.
The app here has the chaos runs' short one (``--backoff``: 0.2 s, doubling up to 1 s); each round's
figure is printed.

``--cluster ssh`` measures the same on Dask's SSH cluster (``[cluster.hosts]``, two workers on each of
127.0.0.2 and 127.0.0.3, through a real sshd from ``tests/multihost/hosts.py``): every process the
lost host's SSH sessions run (tether, nanny, workers and the loops in them) is killed at once. The
scheduler runs on the first host, so the host lost is 127.0.0.3, and a lost host stays lost until the
next ``start``: each round starts the service anew, and a round whose loops all landed on 127.0.0.2
is started again.

Usage: ``.venv/bin/python bench/lost_host.py [--cluster joined|ssh|both] [--rounds N] [--tasks N]``.
Every process it starts is stopped by pid; its temp dir (under .bench/) is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the harness lives with the tests it serves

from tests.multihost.hosts import Sshd, running_sshd, session_processes  # noqa: E402
from tests.multihost.test_ssh_cluster import ssh_app, stop_and_reap  # noqa: E402
from tests.test_dask import DaskProcesses, dask_app  # noqa: E402
from tests.test_lost_host import HOSTS, loop_hosts  # noqa: E402

from keepwarm.api import Service  # noqa: E402
from keepwarm.env import Env  # noqa: E402
from keepwarm.service.lifecycle import stop_service  # noqa: E402
from provenance import source_version, wait_for  # noqa: E402

LOOPS_PER_HOST = 2  # room for both loops on the host left
Row = tuple[float, int, int]  # seconds to both loops on the host left, tasks done, tasks not done


def one_round(
    service: Service, hosts: DaskProcesses, addresses: list[str], tasks: int, offset: int
) -> tuple[float, int, int]:
    """Kill the host a loop runs on under load; (seconds to both loops on the host left, done, not done).
    ``addresses``: each worker's (host's) address, by its index in ``hosts.workers``."""
    lost = loop_hosts(service, hosts)[0]
    left = next(i for i, worker in enumerate(hosts.workers) if worker.poll() is None and i != lost)
    handles = service.submit_many([{"args": {"x": 27 + offset + n}} for n in range(tasks)])
    wait_for(lambda: service.counts().done >= offset + tasks // 10, 60, "the load under way")
    hosts.kill_host(lost)
    killed = time.monotonic()
    wait_for(lambda: loop_hosts(service, hosts) == [left, left], 90, "both loops on the host left")
    moved = time.monotonic() - killed
    records = service.wait([h.task_id for h in handles], timeout=180)
    done = sum(1 for record in records if record.status == "done")
    hosts.start_worker(host=addresses[lost], loops=LOOPS_PER_HOST)  # the host comes back
    addresses.append(addresses[lost])
    hosts.wait_for_workers(2 * LOOPS_PER_HOST)
    return moved, done, len(handles) - done


def backoff_lines(backoff: float) -> str:
    return f"restart_backoff_sec = {backoff}\nrestart_backoff_max_sec = {backoff * 5}\n"


def joined_rounds(workdir: Path, rounds: int, tasks: int, backoff: float) -> list[Row]:
    """Rounds on ``dask worker`` hosts a service joins (the lost host comes back after each)."""
    workdir.mkdir(parents=True)
    hosts = DaskProcesses(workdir)
    rows: list[Row] = []
    addresses: list[str] = []
    env = None
    try:
        hosts.start_scheduler()
        for host in HOSTS:
            hosts.start_worker(host=host, loops=LOOPS_PER_HOST)
            addresses.append(host)
        hosts.wait_for_workers(len(HOSTS) * LOOPS_PER_HOST)
        env = dask_app(workdir, hosts.address)
        settings = env.app_dir / "app_settings.toml"
        text = settings.read_text().replace(
            'backend = "dask"\n', 'backend = "dask"\n' + backoff_lines(backoff)
        )
        settings.write_text(text)
        env = Env(env.app_dir)
        service = Service(env)
        service.start(slots=2)
        wait_for(lambda: service.status().workers_healthy_count == 2, 60, "two loops")
        for n in range(rounds):
            rows.append(one_round(service, hosts, addresses, tasks, n * tasks))
            print(f"  [joined] round {n + 1}: loops elsewhere after {rows[-1][0]:.2f} s", file=sys.stderr)
    finally:
        try:
            if env is not None:
                stop_service(env, timeout=5)
        finally:
            hosts.stop()
    return rows


def ssh_loop_hosts(env: Env, service: Service) -> list[str]:
    """The host (its address) of each healthy loop, from the loop's run marker."""
    found = []
    for row in service.status().worker_health:
        if row.healthy:
            with contextlib.suppress(OSError, ValueError, KeyError):
                marker = json.loads(env.layout.run_marker(row.worker, row.incarnation).read_text())
                found.append(str(marker["address"]).removeprefix("tcp://").rsplit(":", 1)[0])
    return sorted(found)


def kill_ssh_host(sshd: Sshd, host: str) -> int:
    """SIGKILL, at once, every process that an SSH session to ``host`` runs; how many."""
    pids = []
    for pid in session_processes(sshd):
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            connection = next((v for v in environ if v.startswith(b"SSH_CONNECTION=")), b"").split()
            if len(connection) == 4 and connection[2].decode() == host:
                pids.append(pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def ssh_round(sshd: Sshd, env: Env, tasks: int, lost: str, left: str) -> Row | None:
    """Start the service, kill ``lost`` under load; None if no loop landed on ``lost``."""
    service = Service(env)
    service.start(slots=2)
    wait_for(lambda: len(ssh_loop_hosts(env, service)) == 2, 60, "two loops")
    if lost not in ssh_loop_hosts(env, service):
        print(f"  [ssh] both loops on {left}: started again", file=sys.stderr)
        return None
    handles = service.submit_many([{"args": {"x": 27 + i}} for i in range(tasks)])
    wait_for(lambda: service.counts().done >= tasks // 10, 60, "the load under way")
    killed_count = kill_ssh_host(sshd, lost)
    killed = time.monotonic()
    wait_for(lambda: ssh_loop_hosts(env, service) == [left, left], 90, "both loops on the host left")
    moved = time.monotonic() - killed
    records = service.wait([h.task_id for h in handles], timeout=180)
    done = sum(1 for record in records if record.status == "done")
    print(
        f"  [ssh] {killed_count} processes of {lost} killed, loops on {left} after {moved:.2f} s",
        file=sys.stderr,
    )
    return moved, done, len(handles) - done


def ssh_rounds(workdir: Path, rounds: int, tasks: int, backoff: float) -> list[Row]:
    """Rounds on Dask's SSH cluster; each starts the service anew (a lost SSH host stays lost)."""
    rows: list[Row] = []
    with running_sshd() as sshd:
        for n in range(rounds * 3):  # a round whose loops all landed on the scheduler's host is redone
            if len(rows) == rounds:
                break
            root = workdir / f"ssh-{n}"
            root.mkdir(parents=True)
            env = ssh_app(
                root, dict.fromkeys(HOSTS, LOOPS_PER_HOST), sshd.client_config, backoff_lines(backoff)
            )
            try:
                row = ssh_round(
                    sshd, env, tasks, lost=HOSTS[1], left=HOSTS[0]
                )  # the scheduler is on HOSTS[0]
            finally:
                stop_and_reap(env)
            if row is not None:
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cluster", choices=["joined", "ssh", "both"], default="joined")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=300, help="submitted each round")
    parser.add_argument(
        "--backoff",
        type=float,
        default=0.2,
        help="restart_backoff_sec (max: 5 times it; keepwarm's default: 1)",
    )
    options = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="lost-host-", dir=ROOT / ".bench"))
    os.environ["KEEPWARM_SHARE"] = str(workdir / "share")
    os.environ["KEEPWARM_LOG_DIR"] = str(workdir / "logs")
    load_before = os.getloadavg()
    clusters = ["joined", "ssh"] if options.cluster == "both" else [options.cluster]
    labels = {
        "joined": "`dask worker` hosts 127.0.0.2 / 127.0.0.3 (joined), the host comes back each round",
        "ssh": "`[cluster.hosts]` 127.0.0.2 / 127.0.0.3 over SSH, 127.0.0.3 lost, a new start each round",
    }
    results: dict[str, list[Row]] = {}
    try:
        for cluster in clusters:
            run = joined_rounds if cluster == "joined" else ssh_rounds
            results[cluster] = run(workdir / cluster, options.rounds, options.tasks, options.backoff)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"keepwarm {source_version()} · {os.cpu_count()} CPUs · load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; 2 loops, restart back-off {options.backoff:g} s"
    )
    print(
        "\n| host lost → both loops running on the host left | each round | median | max | tasks | done "
        "| not done |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for cluster, rows in results.items():
        moved = sorted(row[0] for row in rows)
        each = ", ".join(f"{row[0]:.2f}" for row in rows)
        print(
            f"| {labels[cluster]} | {each} s | {statistics.median(moved):.2f} s | {moved[-1]:.2f} s "
            f"| {len(rows) * options.tasks:,} | {sum(r[1] for r in rows):,} | {sum(r[2] for r in rows)} |"
        )
    return 1 if any(row[2] for rows in results.values() for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
