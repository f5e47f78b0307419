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

on Dask          the round trip p50 and throughput of ``mycode_project`` through keepwarm on the Dask
                 backend (2 loops on the LocalCluster it starts), beside raw ``client.submit(...).result()``
                 and ``client.map`` + ``gather`` on the same cluster, in the same run.

Usage: ``.venv/bin/python bench/service.py [--quick] [--no-dask] [--json PATH]``. Targets are printed, never
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
from keepwarm.queue.state import read_supervisor_state

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "examples" / "apps"
KEEPWARM = Path(sys.executable).parent / "keepwarm"

COLD_REQUEST = """
import sys
from keepwarm.app import load_app
from keepwarm.env import Env
from keepwarm.queue.task import TaskItem

app = load_app(Env("model_server", sys.argv[1]))
worker = app.new_worker()
worker.start()
item = TaskItem("t", "task", app.validate_args({"inputs": [1.0, 2.0]}), None, 1, 1, None, "", None)
print(worker.work(item)["score"])
worker.stop()
"""


def facts(x: int) -> dict[str, object]:
    """What mycode_project's work() answers, as a plain function for raw Dask."""
    steps, n = 0, x
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    factors, divisor, n = [], 2, x
    while divisor * divisor <= n:
        while n % divisor == 0:
            factors.append(divisor)
            n //= divisor
        divisor += 1
    if n > 1:
        factors.append(n)
    return {"x": x, "collatz_steps": steps, "prime_factors": factors}


def on_dask(env: keepwarm.Env, requests: int, burst: int) -> dict[str, float]:
    """Round trip p50 and throughput through keepwarm on Dask, then raw Dask on the same cluster.

    The service runs 2 loops on the LocalCluster it starts; it is then stopped with the cluster kept
    (``shutdown=False``) so that raw ``client.submit(...).result()`` runs on the same, now idle, workers.
    """
    from distributed import Client

    from keepwarm.backends.cluster import stop_keeper
    from keepwarm.queue.state import read_service_record

    service = keepwarm.Service(env)
    service.start(backend="dask")
    try:
        service.submit({"x": 1}).result(timeout=60)

        def through_keepwarm() -> float:
            began = time.perf_counter()
            service.submit({"x": 27}).result(timeout=60)
            return time.perf_counter() - began

        kw_p50 = statistics.median(through_keepwarm() for _ in range(requests))
        began = time.perf_counter()
        for handle in service.submit_many([{"args": {"x": x}} for x in range(1, burst + 1)]):
            handle.result(timeout=300)
        kw_rate = burst / (time.perf_counter() - began)
    finally:
        service.stop(shutdown=False)
    record = read_service_record(env.service_dir / "service.json")
    assert record is not None and record.cluster is not None
    try:
        with Client(record.cluster.address, set_as_default=False) as client:
            client.submit(facts, 1, pure=False).result()

            def through_dask() -> float:
                began = time.perf_counter()
                client.submit(facts, 27, pure=False).result()
                return time.perf_counter() - began

            raw_p50 = statistics.median(through_dask() for _ in range(requests))
            began = time.perf_counter()
            client.gather(client.map(facts, range(1, burst + 1), pure=False))
            raw_rate = burst / (time.perf_counter() - began)
    finally:
        stop_keeper(env.service_dir / "cluster.json")
    return {"kw_p50": kw_p50, "kw_rate": kw_rate, "raw_p50": raw_p50, "raw_rate": raw_rate}


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
    """Status of a running service whose one loop is busy with a long task while ``pending`` tasks wait:
    the tasks stay pending, and no loop competes with the measurement for the CPU."""
    service = keepwarm.Service(env)
    service.start(slots=1)
    try:
        busy = service.submit({"action": "sleep", "seconds": 600})
        while service.queue.locate(busy.task_id).state != "running":
            time.sleep(0.01)
        queue = service.queue
        for start in range(0, pending, 5000):
            queue.submit([queue.make_task({"action": "ok"}) for _ in range(min(5000, pending - start))])
        in_process = median_of(20, lambda: timed(service.status))
        command = [str(KEEPWARM), "status", str(env.app_dir), "--json"]
        cli_env = dict(os.environ, KEEPWARM_NAMESPACE=env.namespace)
        cli = median_of(
            9, lambda: timed(lambda: subprocess.run(command, check=True, capture_output=True, env=cli_env))
        )
        assert service.counts().pending == pending
    finally:
        service.stop(timeout=1)
    return in_process, cli


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and 2,000 pending tasks")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask backend's figures")
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
        status_sec, cli_sec = status_at_scale(keepwarm.Env("flaky", app_copy, namespace="scale"), pending)
        dask = None
        if not options.no_dask:
            console.print("round trip and throughput on Dask: keepwarm, then raw Dask on the same cluster")
            dask = on_dask(
                keepwarm.Env("mycode_project", app_copy, namespace="dask"),
                100 if options.quick else 300,
                1000 if options.quick else 3000,
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
    if dask is not None:
        rows += [
            ("Dask: round trip p50 through keepwarm (2 loops)", dask["kw_p50"] * 1000, "ms", "", None),
            ("Dask: round trip p50, raw client.submit().result()", dask["raw_p50"] * 1000, "ms", "", None),
            (
                "Dask: raw / keepwarm round trip",
                dask["raw_p50"] / dask["kw_p50"],
                "x",
                ">= 1x",
                dask["raw_p50"] >= dask["kw_p50"],
            ),
            ("Dask: throughput through keepwarm", dask["kw_rate"], "/s", "", None),
            ("Dask: throughput, raw client.map + gather", dask["raw_rate"], "/s", "", None),
        ]
    table = Table(title=f"service mode (medians; {repeat} repetitions)")
    for column in ("measure", "value", "target", ""):
        table.add_column(column)
    for name, value, unit, target, ok in rows:
        shown = (
            f"{value:,.1f}x"
            if unit == "x" and value < 100
            else f"{value:,.0f}x"
            if unit == "x"
            else f"{value:,.0f} tasks/s"
            if unit == "/s"
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
