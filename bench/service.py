"""Service mode's figures, in one run: start, stop, loop replacement, warm vs cold, status at scale.

Measured on this machine, each figure the median of a few repetitions:

start / stop     ``Service.start()`` until every loop is ready, and ``Service.stop()`` of an idle
                 service, with 2 loops of ``mycode_project`` (the reference: 5-10 s and about 10 s).
replacement      ``kill -9`` of a loop until the supervisor reports its new incarnation running.
warm vs cold     ``model_server`` with a 1 s ``start()`` (loading a model): one request through the
                 running service, against one request served cold, the way a fresh worker must —
                 a new process that loads the app, runs ``start()``, ``work()`` once, ``stop()``.
status at scale  ``Service.status()`` in process, and the ``keepwarm status`` command (interpreter
                 start included), with 10,000 pending tasks.

Usage: ``.venv/bin/python bench/service.py [--quick] [--json PATH]``. Targets are printed, never
asserted; every service started here is stopped, and the temp share removed. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

import keepwarm
from keepwarm.state import read_supervisor_state

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "examples" / "apps"
KEEPWARM = Path(sys.executable).parent / "keepwarm"

COLD_REQUEST = """
import sys
from keepwarm.app import load_app
from keepwarm.env import Env
from keepwarm.task import TaskItem

app = load_app(Env("model_server", sys.argv[1]))
worker = app.new_worker()
worker.start()
item = TaskItem("t", "task", app.validate_args({"inputs": [1.0, 2.0]}), None, 1, 1, None, "", None)
print(worker.work(item)["score"])
worker.stop()
"""


def median_of(repeat: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(repeat))


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def start_stop(env: keepwarm.Env, repeat: int) -> tuple[float, float]:
    service = keepwarm.Service(env)
    starts, stops = [], []
    for _ in range(repeat):
        starts.append(timed(lambda: service.start(slots=2)))
        stops.append(timed(service.stop))
    return statistics.median(starts), statistics.median(stops)


def replacement(env: keepwarm.Env, repeat: int) -> float:
    """Kill one loop of each slot once: each is a first restart (later ones back off on purpose)."""
    service = keepwarm.Service(env)
    service.start(slots=repeat)
    times = []
    try:
        for index in range(repeat):
            state = read_supervisor_state(env.service_dir / "supervisor.json")
            assert state is not None
            victim = state.loops[index].pid
            assert victim is not None
            began = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            while True:
                state = read_supervisor_state(env.service_dir / "supervisor.json")
                row = state.loops[index] if state else None
                if row is not None and row.pid != victim and row.future_state == "running":
                    break
                time.sleep(0.002)
            times.append(time.perf_counter() - began)
    finally:
        service.stop()
    return statistics.median(times)


def warm_vs_cold(env: keepwarm.Env, requests: int, cold: int) -> tuple[float, float]:
    service = keepwarm.Service(env)
    service.start(slots=1)
    try:
        warm = median_of(requests, lambda: timed(lambda: service.submit({"inputs": [1.0, 2.0]}).result(30)))
    finally:
        service.stop()
    command = [sys.executable, "-c", COLD_REQUEST, str(env.app_dir.parent)]
    cold_time = median_of(
        cold, lambda: timed(lambda: subprocess.run(command, check=True, capture_output=True))
    )
    return warm, cold_time


def status_at_scale(env: keepwarm.Env, pending: int) -> tuple[float, float]:
    service = keepwarm.Service(env)
    queue = service.queue
    for start in range(0, pending, 5000):
        queue.submit([queue.make_task({"x": 1}) for _ in range(min(5000, pending - start))])
    service.start(slots=1)
    try:
        service.scale(1)
        in_process = median_of(20, lambda: timed(service.status))
        command = [str(KEEPWARM), "status", str(env.app_dir), "--json"]
        cli = median_of(5, lambda: timed(lambda: subprocess.run(command, check=True, capture_output=True)))
    finally:
        service.stop(timeout=5)
    return in_process, cli


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and 2,000 pending tasks")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()
    share = Path(
        tempfile.mkdtemp(
            prefix="keepwarm-bench-service-", dir=ROOT / ".bench" if (ROOT / ".bench").is_dir() else None
        )
    )
    os.environ["KEEPWARM_SHARE"] = str(share)
    os.environ["KEEPWARM_LOG_DIR"] = str(share / "logs")
    console = Console(stderr=True)
    repeat = 3 if options.quick else 5
    try:
        app_copy = share / "apps"
        shutil.copytree(APPS, app_copy)
        settings = app_copy / "model_server" / "app_settings.toml"
        settings.write_text(settings.read_text().replace("load_seconds = 2.0", "load_seconds = 1.0"))
        mycode = keepwarm.Env("mycode_project", app_copy)
        model = keepwarm.Env("model_server", app_copy)
        console.print("start and stop with 2 loops")
        start_sec, stop_sec = start_stop(mycode, repeat)
        console.print("dead-loop replacement")
        replace_sec = replacement(mycode, repeat)
        console.print("warm vs cold requests (model_server, 1 s start)")
        warm_sec, cold_sec = warm_vs_cold(model, 50 if options.quick else 200, repeat)
        pending = 2000 if options.quick else 10_000
        console.print(f"status with {pending:,} pending tasks")
        status_sec, cli_sec = status_at_scale(
            keepwarm.Env("mycode_project", app_copy, namespace="scale"), pending
        )
    finally:
        shutil.rmtree(share, ignore_errors=True)
    rows = [
        ("start → 2 loops ready", start_sec, "s", "<= 1.5 s", start_sec <= 1.5),
        ("stop (idle, 2 loops)", stop_sec, "s", "<= 1 s", stop_sec <= 1.0),
        ("dead loop replaced", replace_sec, "s", "<= 2 s", replace_sec <= 2.0),
        ("request, warm (through the service)", warm_sec * 1000, "ms", "", None),
        ("request, cold (fresh worker: load, start, work)", cold_sec * 1000, "ms", "", None),
        ("cold / warm per request", cold_sec / warm_sec, "x", ">= 500x", cold_sec / warm_sec >= 500),
        (
            f"Service.status() with {pending:,} pending",
            status_sec * 1000,
            "ms",
            "<= 50 ms",
            status_sec <= 0.05,
        ),
        (f"keepwarm status with {pending:,} pending", cli_sec * 1000, "ms", "<= 300 ms", cli_sec <= 0.3),
    ]
    table = Table(title=f"service mode (medians; {repeat} repetitions)")
    for column in ("measure", "value", "target", ""):
        table.add_column(column)
    for name, value, unit, target, ok in rows:
        shown = (
            f"{value:,.0f}x"
            if unit == "x"
            else f"{value:.3f} {unit}"
            if unit == "s"
            else f"{value:.2f} {unit}"
        )
        table.add_row(name, shown, target, "" if ok is None else ("pass" if ok else "miss"))
    Console().print(table)
    if options.json:
        options.json.write_text(json.dumps({name: value for name, value, *_ in rows}, indent=2))


if __name__ == "__main__":
    main()
