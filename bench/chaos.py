"""Chaos at full size: tasks flow through a service while its loops are killed, one is frozen and the
supervisor is killed and started again; then every task is accounted for.

The same run as ``tests/chaos`` (the harness is ``tests/chaos/harness.py``), at issue 6's size by
default: 5,000 tasks through 4 loops, a random loop ``kill -9``-ed every 200 ms for 10 s, another
``SIGSTOP``-ed until the supervisor kills it for its stale heartbeat, and the supervisor ``kill -9``-ed
once and started again (a twentieth of the tasks is submitted while it is dead). On the Dask backend
"a loop" is its Dask worker process (the nanny restarts it).

Printed per backend: tasks, lost (no terminal file), failed, terminal files in both folders, duplicate
executions (at-least-once: a task whose loop died in ``work()`` runs again), restarts by reason as
``events.jsonl`` records them and as ``health`` names them, and elapsed time. Then the guarantees a
run broke, if any (exit 1).

Usage: ``.venv/bin/python bench/chaos.py [--backend local|dask|both] [--tasks N] [--loops N]
[--seconds S] [--kill-every S] [--seed N] [--json PATH]``. Every process it starts is stopped by pid;
its temp dir (under .bench/) is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the harness lives with the tests it serves

from tests.chaos.harness import ChaosPlan, ChaosReport, chaos_app, kill_keeper_and_workers, run_chaos  # noqa: E402

from keepwarm.service.lifecycle import stop_service  # noqa: E402
from provenance import source_version  # noqa: E402


def one_backend(plan: ChaosPlan, workdir: Path) -> ChaosReport:
    folder = workdir / plan.backend
    folder.mkdir()
    os.environ["KEEPWARM_SHARE"] = str(folder / "share")
    os.environ["KEEPWARM_LOG_DIR"] = str(folder / "logs")
    env = chaos_app(folder, plan)
    try:
        return run_chaos(env, plan, say=lambda line: print(f"  [{plan.backend}] {line}", file=sys.stderr))
    finally:
        try:
            stop_service(env, timeout=5)
        finally:
            kill_keeper_and_workers(env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["local", "dask", "both"], default="both")
    parser.add_argument("--tasks", type=int, default=5000)
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
    backends = ["local", "dask"] if options.backend == "both" else [options.backend]
    parent = options.dir or ROOT / ".bench"
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-", dir=parent))
    load_before = os.getloadavg()
    reports: dict[str, ChaosReport] = {}
    try:
        for backend in backends:
            plan = ChaosPlan(
                backend=backend,
                tasks=options.tasks,
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
            reports[backend] = one_backend(plan, workdir)
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
