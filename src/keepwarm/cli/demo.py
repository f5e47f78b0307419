"""The demo verb: the bundled example service started, sent a burst of tasks, measured, stopped."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from keepwarm.cli.common import emit_json, json_option, number_option, say, table
from keepwarm.cli.service import print_health


@click.command()
@number_option("--tasks", "tasks_count", type=click.IntRange(min=1), default=300, help="Tasks in the burst.")
@number_option("--loops", type=click.IntRange(1, 64), default=2, help="Loops the service runs.")
@click.option(
    "--share-dir", type=click.Path(path_type=Path), help="Keep the queue here [default: a temp dir, removed]."
)
@json_option
def demo(tasks_count: int, loops: int, share_dir: Path | None, as_json: bool) -> None:
    """Start the bundled example service, send it tasks, show its health and timings, stop it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from keepwarm.demo import run_demo

    console = Console(stderr=True)
    with Progress(
        TextColumn("tasks"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
    ) as bar:
        job = bar.add_task("tasks", total=tasks_count)
        report = run_demo(
            tasks_count,
            loops,
            share_dir=share_dir,
            say=lambda m: say(m, dim=True),
            progress=lambda done, total: bar.update(job, completed=done),
        )
    if as_json:
        emit_json(
            {
                "app": report.app,
                "loops": report.loops,
                "start_sec": round(report.start_sec, 3),
                "stop_sec": round(report.stop_sec, 3),
                "tasks": report.tasks,
                "failed": report.failed,
                "burst_sec": round(report.burst_sec, 4),
                "throughput_per_sec": round(report.throughput, 1),
                "roundtrip_p50_ms": round(report.p50_ms, 3),
                "roundtrip_p99_ms": round(report.p99_ms, 3),
                "tasks_per_loop": report.per_slot,
                "samples": [{"x": x, "result": r} for x, r in report.samples],
                "health": report.health.to_json_dict(),
                "share_dir": str(report.share_dir) if report.kept else None,
                "log_dir": str(report.log_dir),
            }
        )
    else:
        rows = [(x, json.dumps(value)) for x, value in report.samples]
        table(("x", "result"), rows, title=f"{report.app}: first results of {report.tasks}")
        click.echo("\nhealth while serving:")
        print_health(report.health)
        timings = [
            (f"start → {report.loops} loops ready (s)", f"{report.start_sec:.3f}"),
            (f"burst of {report.tasks} tasks (s)", f"{report.burst_sec:.3f}"),
            ("throughput (tasks/s)", f"{report.throughput:,.0f}"),
            ("submit→result p50 (ms)", f"{report.p50_ms:.3f}"),
            ("submit→result p99 (ms)", f"{report.p99_ms:.3f}"),
            ("tasks per loop", ", ".join(f"{k}: {v}" for k, v in report.per_slot.items())),
            ("stop (s)", f"{report.stop_sec:.3f}"),
            ("failed", str(report.failed)),
        ]
        click.echo()
        table(("measure", "value"), timings, title="timings")
    if report.failed:
        sys.exit(1)
