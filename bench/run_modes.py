"""Run mode's figures, in one run: the example app in every available mode, and the same numbers
through service mode, side by side in one table.

run modes   ``keepwarm.runmode.benchmark`` of ``mycode_project`` with ``--items`` numbers in 8
            partitions over 2 plan workers: each mode a complete cold run (work plan, pool processes or a Dask
            LocalCluster, the app's ``start()``, every partition, the output written as Parquet), as
            ``keepwarm run --benchmark`` measures it. The Cython build is made before the timed runs.
            The output tables of all modes are compared (digest of columns, dtypes and values).
service     the same numbers as one task each (``{"x": n}``) through a service of 2 warm loops of the
            same app: the start until both loops are ready, the burst until every result is back,
            and the stop. A task's result carries fewer columns than a run's row (no peak, no
            primality): the figure is the cost of the same arithmetic served warm, task by task.

Usage: ``.venv/bin/python bench/run_modes.py [--items N] [--quick] [--no-service] [--json PATH]``.
Nothing is asserted; the temp share, logs and exports are removed. See docs/run-mode.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from provenance import source_version

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "examples" / "apps"


def service_equivalent(env: Any, items: int) -> dict[str, float]:
    """Start 2 loops, push ``items`` one-number tasks through them, wait for all, stop."""
    import keepwarm

    service = keepwarm.Service(env)
    began = time.perf_counter()
    service.start(slots=2, timeout=120)
    started = time.perf_counter()
    try:
        handles = service.submit_many({"args": {"x": n}} for n in range(1, items + 1))
        results = [handle.result(timeout=600) for handle in handles]
        served = time.perf_counter()
    finally:
        service.stop(timeout=60)
    stopped = time.perf_counter()
    assert [r["x"] for r in results] == list(range(1, items + 1))
    return {"start": started - began, "burst": served - started, "stop": stopped - served}


def service_rows(service: dict[str, float], items: int, fastest: float) -> list[tuple[Any, ...]]:
    total = service["start"] + service["burst"] + service["stop"]
    return [
        (
            "service: start + tasks + stop",
            "",
            f"{total:.3f}",
            f"{total / fastest:.2f}x",
            f"{items / total:,.0f}",
            items,
            f"start {service['start']:.2f}s, stop {service['stop']:.2f}s",
        ),
        (
            "service: tasks only (loops warm)",
            "",
            f"{service['burst']:.3f}",
            f"{service['burst'] / fastest:.2f}x",
            f"{items / service['burst']:,.0f}",
            items,
            "one task per number",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=20_000, help="numbers to process [default: 20,000]")
    parser.add_argument("--quick", action="store_true", help="4,000 numbers")
    parser.add_argument("--no-service", action="store_true", help="skip the service-mode equivalent")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()
    items = 4_000 if options.quick else options.items
    scratch = Path(tempfile.mkdtemp(prefix="keepwarm-bench-run-"))
    os.environ["KEEPWARM_SHARE"] = str(scratch / "share")
    os.environ["KEEPWARM_LOG_DIR"] = str(scratch / "logs")
    os.environ["KEEPWARM_EXPORT"] = str(scratch / "export")

    from rich.console import Console

    import keepwarm
    from keepwarm.cli.common import table
    from keepwarm.runmode.benchmark import benchmark

    console = Console(stderr=True)
    try:
        apps = scratch / "apps"
        shutil.copytree(APPS / "mycode_project", apps / "mycode_project")
        env = keepwarm.Env("mycode_project", apps)
        args = {"items": items, "partitions": 8}
        with console.status(f"run modes: {items:,} numbers in 8 partitions over 2 workers") as status:
            report = benchmark(
                env,
                workers=2,
                args=args,
                on_event=lambda e: status.update(e.message) if e.kind == "info" else None,
            )
        service = None
        if not options.no_service:
            with console.status(f"service mode: {items:,} tasks through 2 warm loops"):
                service = service_equivalent(keepwarm.Env("mycode_project", apps), items)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    fastest = min(e.seconds for e in report.entries.values())
    rows: list[tuple[Any, ...]] = []
    for entry in report.ranked:
        rows.append(
            (
                f"run --mode {entry.mode}",
                entry.variant,
                f"{entry.seconds:.3f}",
                f"{entry.seconds / fastest:.2f}x",
                f"{items / entry.seconds:,.0f}",
                entry.rows,
                "",
            )
        )
    if service is not None:
        rows += service_rows(service, items, fastest)
    print(
        f"mycode_project, {items:,} numbers · {len(os.sched_getaffinity(0))} CPUs · Python "
        f"{platform.python_version()} · keepwarm {keepwarm.__version__} ({source_version()})"
    )
    table(
        ("way", "bits", "seconds", "vs fastest run", "numbers/s", "rows", "note"),
        rows,
        title="run modes (each a cold run, fastest first) and the service-mode equivalent",
    )
    for name, reason in report.skipped.items():
        print(f"skipped {name}: {reason}")
    same = "the same table in every mode" if report.same_output else "OUTPUT DIFFERS BETWEEN MODES"
    print(f"{same} (digest {next(iter(report.entries.values())).digest})")
    if options.json:
        figures = {e.mode: e.seconds for e in report.entries.values()}
        figures |= {f"service_{k}": v for k, v in (service or {}).items()}
        options.json.write_text(json.dumps(figures, indent=2))
    if not report.same_output:
        sys.exit(1)


if __name__ == "__main__":
    main()
