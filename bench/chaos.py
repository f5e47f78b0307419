"""Chaos at full size: tasks flow through a service while its loops are killed, one is frozen and the
supervisor is killed and started again; then every task is accounted for.

The same run as ``tests/chaos`` (the harness is ``tests/chaos/harness.py``), at issue 6's size by
default: 5,000 tasks through 4 loops, a random loop ``kill -9``-ed every 200 ms for 10 s, another
``SIGSTOP``-ed until the supervisor kills it for its stale heartbeat, and the supervisor ``kill -9``-ed
once and started again (a twentieth of the tasks is submitted while it is dead). On the Dask backend
"a loop" is its Dask worker process (the nanny restarts it).

Many hosts (issue 19; a real sshd on 127.0.0.2 and 127.0.0.3 from ``tests/multihost/hosts.py``, started
and stopped here by pid): ``ssh`` is the Dask backend on ``[cluster.hosts]`` (Dask's SSH cluster, the
loops split over the two hosts, the share a local folder); ``sshfs`` is the local backend with the
service's share on an sshfs mount of a folder on 127.0.0.2, tasks submitted and counted through the
folder itself (600 tasks by default: every claim and result goes through SFTP).

Printed: the chaos table (one row a backend: tasks, kills, lost, duplicates, seconds from a kill to
the slot's next loop ready, elapsed); then per backend: tasks, lost (no terminal file), failed,
terminal files in both folders, duplicate executions (at-least-once: a task whose loop died in
``work()`` runs again), restarts by reason as ``events.jsonl`` records them and as ``health`` names
them, and elapsed time. Then the guarantees a
run broke, if any (exit 1).

Usage: ``.venv/bin/python bench/chaos.py [--backend local|dask|both|ssh|sshfs|hosts ...] [--tasks N]
[--loops N] [--seconds S] [--kill-every S] [--seed N] [--json PATH]``. Every process it starts is
stopped by pid; its temp dir (under .bench/) is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the harness lives with the tests it serves

from tests.chaos.harness import ChaosPlan, ChaosReport, chaos_app, kill_keeper_and_workers, run_chaos  # noqa: E402
from tests.multihost.hosts import HOSTS, Unavailable, mounted_share, running_sshd  # noqa: E402

from keepwarm.env import Env  # noqa: E402
from keepwarm.service.lifecycle import stop_service  # noqa: E402
from provenance import source_version  # noqa: E402

SETTINGS_BACKEND = {"local": "local", "dask": "dask", "ssh": "dask", "sshfs": "local"}
DEFAULT_TASKS = {"local": 5000, "dask": 5000, "ssh": 5000, "sshfs": 600}
GROUPS = {"both": ["local", "dask"], "hosts": ["ssh", "sshfs"]}


@contextlib.contextmanager
def chaos_envs(name: str, plan: ChaosPlan, folder: Path) -> Iterator[tuple[Env, Env | None]]:
    """The app the run starts (its Env) and, for sshfs, the Env of the folder the mount serves
    (where tasks are submitted and counted); an sshd for the many-hosts backends, stopped at the end."""
    if name in ("local", "dask"):
        yield chaos_app(folder, plan), None
        return
    with running_sshd() as sshd:
        if name == "ssh":
            split = {
                host: plan.loops // len(HOSTS) + (i < plan.loops % len(HOSTS)) for i, host in enumerate(HOSTS)
            }
            table = ", ".join(f'"{host}" = {loops}' for host, loops in split.items() if loops)
            cluster = f'ssh_config = "{sshd.client_config}"\nhosts = {{ {table} }}\n'
            yield chaos_app(folder, plan, cluster=cluster), None
            return
        with mounted_share(sshd) as share:
            app = chaos_app(folder, plan).app_dir
            (share.folder / "chaos").mkdir(mode=0o700)
            yield Env(app, share_dir=share.mount / "chaos"), Env(app, share_dir=share.folder / "chaos")


def one_backend(name: str, plan: ChaosPlan, workdir: Path) -> ChaosReport:
    folder = workdir / name
    folder.mkdir()
    os.environ["KEEPWARM_SHARE"] = str(folder / "share")
    os.environ["KEEPWARM_LOG_DIR"] = str(folder / "logs")
    with chaos_envs(name, plan, folder) as (env, client):
        try:
            return run_chaos(
                env, plan, say=lambda line: print(f"  [{name}] {line}", file=sys.stderr), client=client
            )
        finally:
            try:
                stop_service(
                    client or env, timeout=5
                )  # over sshfs, from the folder's side (flock is per side)
            finally:
                kill_keeper_and_workers(env)


def chaos_table(reports: dict[str, ChaosReport]) -> list[str]:
    """One row a backend: the figures issue 19 asks for."""
    lines = [
        "| backend | tasks | loops | kills | lost | failed | duplicate executions "
        "| kill to the slot's next loop ready (median, max) | supervisor kill -9 to start done | elapsed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, report in reports.items():
        delays = report.replaced_in
        replaced = f"{statistics.median(delays):.2f} s, {delays[-1]:.2f} s" if delays else "-"
        down = f"{report.supervisor_down_sec:.1f} s" if report.supervisor_down_sec is not None else "-"
        lines.append(
            f"| {name} | {len(report.submitted):,} | {report.plan.loops} | {len(report.kills)} "
            f"| {len(report.lost)} | {len(report.failed)} | {report.duplicate_executions} | {replaced} "
            f"| {down} | {report.elapsed_sec:.1f} s |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backend",
        nargs="+",
        choices=["local", "dask", "both", "ssh", "sshfs", "hosts"],
        default=["both"],
        help="one or more, run in turn; both: local and dask; hosts: ssh and sshfs",
    )
    parser.add_argument("--tasks", type=int, help="default 5,000 (600 on sshfs)")
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long loops are killed")
    parser.add_argument("--kill-every", type=float, default=0.2)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--dir", type=Path, help="run in a fresh temp dir under this folder (default: .bench/)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, queue, events.jsonl)")
    options = parser.parse_args(argv)
    backends = list(dict.fromkeys(b for name in options.backend for b in GROUPS.get(name, [name])))
    parent = options.dir or ROOT / ".bench"
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-", dir=parent))
    load_before = os.getloadavg()
    reports: dict[str, ChaosReport] = {}
    try:
        for backend in backends:
            plan = ChaosPlan(
                backend=SETTINGS_BACKEND[backend],
                tasks=options.tasks or DEFAULT_TASKS[backend],
                loops=options.loops,
                seconds=options.seconds,
                kill_every=options.kill_every,
                seed=options.seed,
            )
            print(
                f"{backend}: {plan.tasks:,} tasks, {plan.loops} loops, {plan.seconds:g} s of chaos",
                file=sys.stderr,
            )
            began = time.monotonic()
            try:
                reports[backend] = one_backend(backend, plan, workdir)
            except Unavailable as exc:
                print(f"  [{backend}] cannot run here: {exc}", file=sys.stderr)
                return 2
            print(f"  [{backend}] done in {time.monotonic() - began:.0f}s", file=sys.stderr)
    finally:
        if options.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"keepwarm {source_version()} · {os.cpu_count()} CPUs · load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    print("\n" + "\n".join(chaos_table(reports)))
    names = [name for name, _ in next(iter(reports.values())).rows()]
    columns = {backend: dict(report.rows()) for backend, report in reports.items()}
    print("\n| measure | " + " | ".join(backends) + " |")
    print("| --- | " + " | ".join("---" for _ in backends) + " |")
    for name in names:
        print(f"| {name} | " + " | ".join(columns[b][name] for b in backends) + " |")
    broken = {backend: report.problems() for backend, report in reports.items()}
    print()
    for backend, problems in broken.items():
        print(f"{backend}: " + ("every guarantee held" if not problems else "BROKEN"))
        for problem in problems:
            print(f"  - {problem}")
    if options.json:
        options.json.write_text(
            json.dumps(
                {
                    "source": source_version(),
                    "backends": {
                        backend: {"rows": dict(report.rows()), "problems": broken[backend]}
                        for backend, report in reports.items()
                    },
                },
                indent=2,
            )
        )
    return 1 if any(broken.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
