"""Dynamic batching: the bundled ``batch_model`` app served with ``work_batch`` and with ``work`` one by one.

Open loop, in one run: at each offered load (100, 1,000 and 10,000 tasks/s by default) one thread
submits tasks on schedule for ``--seconds`` (``submit_many`` for the tasks due at the same moment),
whether or not the service keeps up, and another reads each task's terminal record as it appears
(woken by inotify). Each load of each mode runs on a fresh service of its own (its own namespace, so
a backlog one load left cannot slow the next), started and stopped by keepwarm's Python API.

batch  the app as bundled: ``work_batch(items)``, default ``max_batch_size`` (32) and ``batch_wait_ms``
one    the same app with ``max_batch_size = 1`` in a copy of its settings: ``work(item)`` one by one

Per load and mode: achieved throughput (tasks completed / time from the first task's due moment to
the last record read), p50 and p99 latency (from the moment a task was due, so a submitter running
late does not hide queueing, to its record read), and the batch sizes that formed (each record's
``batch_size``: median and max). Tasks still unfinished ``--grace`` seconds after the last was due
count as infinitely late. Then the ratios and the issue's targets, printed as pass/miss, never
asserted: at a load one-by-one cannot sustain, ``work_batch`` reaches >= 5x its throughput with p99
under 50 ms; at 100 tasks/s batching adds at most ``batch_wait_ms`` to p50.

Usage::

    .venv/bin/python bench/batching.py                  # 3 s per load and mode, a temp dir under .bench/
    .venv/bin/python bench/batching.py --quick          # 1 s per load and mode
    .venv/bin/python bench/batching.py --loads 100,1000,5000,10000 --json batching.json
    .venv/bin/python bench/batching.py --tmpfs          # the share on /dev/shm

Every service started here is stopped by the API (its supervisor by pid if that fails), also on
Ctrl-C or SIGTERM, and the temp dir removed. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

import keepwarm
from keepwarm._sys.watch import IN_CREATE, IN_MOVED_TO, Watcher
from keepwarm.queue.task import TASK_SUFFIX
from provenance import Services, add_workdir_options, describe_machine, run_main, temp_workdir

ROOT = Path(__file__).resolve().parents[1]
APP = "batch_model"
APP_CODE = ROOT / "examples" / "apps" / APP
LOADS = (100, 1000, 10_000)
START_TIMEOUT_SEC = 120.0
STOP_TIMEOUT_SEC = 30.0
WARMUP_TASKS = 64
LIGHT_LOAD = 100
TARGET_RATIO = 5.0
TARGET_P99_MS = 50.0
SUSTAINED = 0.9  # a mode sustains a load when it completes every task at >= 90% of the offered rate
MODES = {"batch": None, "one": 1}  # mode -> max_batch_size written into its copy of the settings


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class Point:
    """One mode at one offered load."""

    mode: str
    offered_per_sec: int
    tasks: int
    completed: int
    failed: int
    achieved_per_sec: float
    p50_ms: float
    p99_ms: float
    batch_median: float
    batch_max: int
    submit_late_max_ms: float  # how far behind schedule the submitter fell (the client's own limit)


@dataclass(frozen=True)
class Verdict:
    name: str
    value: str
    target: str = ""
    passed: bool | None = None


@dataclass
class Results:
    points: list[Point] = field(default_factory=list)

    def at(self, mode: str, load: int) -> Point:
        return next(p for p in self.points if p.mode == mode and p.offered_per_sec == load)


def percentile(sorted_ms: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of an ascending list; inf counts as a task never finished."""
    rank = max(1, math.ceil(q / 100 * len(sorted_ms)))
    return sorted_ms[rank - 1]


# ---------------------------------------------------------------------- the apps and their services


def app_copies(workdir: Path) -> dict[str, Path]:
    """A copy of the app per mode; ``one`` sets ``max_batch_size = 1`` in its ``[cluster]``."""
    folders = {}
    for mode, max_batch_size in MODES.items():
        target = workdir / "apps" / mode / APP
        shutil.copytree(APP_CODE, target, ignore=shutil.ignore_patterns("__pycache__"))
        if max_batch_size is not None:
            settings = target / "app_settings.toml"
            document = tomlkit.parse(settings.read_text())
            document["cluster"]["max_batch_size"] = max_batch_size  # type: ignore[index]
            settings.write_text(tomlkit.dumps(document))
        folders[mode] = target
    return folders


# ---------------------------------------------------------------------- one load


class Collector(threading.Thread):
    """Reads each terminal record as it appears in ``done/`` or ``failed/`` and notes when."""

    def __init__(self, service: keepwarm.Service) -> None:
        super().__init__(daemon=True)
        self.queue = service.queue
        self.queue.ensure()
        self.watcher = Watcher([self.queue.done, self.queue.failed], IN_CREATE | IN_MOVED_TO)
        self.read_at: dict[str, float] = {}
        self.records: dict[str, Any] = {}
        self.expected: set[str] | None = None  # set once every task is submitted
        self.deadline = math.inf
        self.lock = threading.Lock()

    def expect(self, task_ids: set[str], deadline: float) -> None:
        with self.lock:
            self.expected, self.deadline = task_ids, deadline

    def run(self) -> None:
        try:
            while not self._finished():
                left = min(0.05, max(0.0, self.deadline - time.perf_counter()))
                wakeup = self.watcher.wait(left)
                names = self._all_names() if wakeup.rescan else wakeup.names
                for name in names:
                    if name.endswith(TASK_SUFFIX):
                        self._read(name[: -len(TASK_SUFFIX)])
        finally:
            self.watcher.close()

    def _read(self, task_id: str) -> None:
        if task_id in self.records:
            return
        record = self.queue.read_terminal(task_id)
        if record is not None:
            self.read_at[task_id] = time.perf_counter()
            self.records[task_id] = record

    def _all_names(self) -> list[str]:
        return os.listdir(self.queue.done) + os.listdir(self.queue.failed)

    def _finished(self) -> bool:
        with self.lock:
            if self.expected is None:
                return False
            return self.expected <= self.records.keys() or time.perf_counter() >= self.deadline


def measure(mode: str, service: keepwarm.Service, load: int, seconds: float, grace: float) -> Point:
    """Submit ``load`` tasks/s on schedule for ``seconds``; read every record as it comes."""
    warm = service.submit_many({"args": {"seed": i}} for i in range(WARMUP_TASKS))
    service.wait([h.task_id for h in warm], timeout=START_TIMEOUT_SEC)
    collector = Collector(service)
    collector.start()
    count = max(1, round(load * seconds))
    due: dict[str, float] = {}
    late_max = 0.0
    began = time.perf_counter()
    sent = 0
    while sent < count:
        now = time.perf_counter()
        ready = min(count, math.floor((now - began) * load) + 1)
        if ready <= sent:
            time.sleep(max(0.0, began + sent / load - now))
            continue
        handles = service.submit_many({"args": {"seed": i}} for i in range(sent, ready))
        for index, handle in zip(range(sent, ready), handles, strict=True):
            due[handle.task_id] = began + index / load
        late_max = max(late_max, now - (began + sent / load))
        sent = ready
    collector.expect(set(due), began + seconds + grace)
    collector.join()
    latencies = sorted(
        (collector.read_at[t] - due[t]) * 1000 if t in collector.read_at else math.inf for t in due
    )
    records = [collector.records[t] for t in due if t in collector.records]
    sizes = [getattr(r, "batch_size", None) or 1 for r in records]
    finished = [collector.read_at[t] for t in due if t in collector.read_at]
    span = (max(finished) - began) if finished else math.inf
    return Point(
        mode=mode,
        offered_per_sec=load,
        tasks=count,
        completed=len(records),
        failed=sum(r.status != "done" for r in records),
        achieved_per_sec=len(records) / span if finished else 0.0,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        batch_median=statistics.median(sizes) if sizes else 0.0,
        batch_max=max(sizes, default=0),
        submit_late_max_ms=late_max * 1000,
    )


# ---------------------------------------------------------------------- ratios and targets


def sustained(point: Point) -> bool:
    return point.completed == point.tasks and point.achieved_per_sec >= SUSTAINED * point.offered_per_sec


def throughput_ratio(results: Results, load: int) -> float:
    one = results.at("one", load).achieved_per_sec
    return results.at("batch", load).achieved_per_sec / one if one else math.inf


def verdicts(results: Results, loads: list[int], batch_wait_ms: float) -> list[Verdict]:
    """The throughput ratio at each load, then the issue's two targets, as pass or miss."""
    rows = [
        Verdict(f"throughput batch / one at {load:,}/s", f"{throughput_ratio(results, load):.2f}x")
        for load in loads
    ]
    unsustained = [load for load in loads if not sustained(results.at("one", load))]
    for load in unsustained:
        ratio, p99 = throughput_ratio(results, load), results.at("batch", load).p99_ms
        rows.append(
            Verdict(
                f"at {load:,}/s, which one by one does not sustain: batch / one throughput, batch p99",
                f"{ratio:.2f}x, p99 " + ("unfinished" if math.isinf(p99) else f"{p99:,.1f} ms"),
                f">= {TARGET_RATIO:g}x with p99 < {TARGET_P99_MS:g} ms",
                ratio >= TARGET_RATIO and p99 < TARGET_P99_MS,
            )
        )
    if not unsustained:
        rows.append(
            Verdict("a load one by one does not sustain", "none of these loads", "one at least", False)
        )
    if LIGHT_LOAD in loads:
        added = results.at("batch", LIGHT_LOAD).p50_ms - results.at("one", LIGHT_LOAD).p50_ms
        rows.append(
            Verdict(
                f"at {LIGHT_LOAD}/s: p50 batch - p50 one",
                f"{added:+.2f} ms",
                f"<= batch_wait_ms ({batch_wait_ms:g} ms)",
                added <= batch_wait_ms,
            )
        )
    return rows


# ---------------------------------------------------------------------- report


def format_ms(value: float) -> str:
    return "unfinished" if math.isinf(value) else f"{value:,.2f}"


def print_report(machine: dict[str, Any], seconds: float, results: Results, rows: list[Verdict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)  # a table unbroken in a log or a doc
    console.print(
        f"{machine['cpus']} CPUs ({machine['cpu_model']}) · Linux {machine['kernel']} · "
        f"Python {machine['python']} · numpy {machine['numpy']} · keepwarm {machine['keepwarm']} "
        f"({machine['source']}) · {machine['filesystem']} · load average {machine['load_average']:.2f} "
        "at the start"
    )
    table = Table(
        "mode",
        "offered/s",
        "tasks",
        "done",
        "achieved/s",
        "p50 ms",
        "p99 ms",
        "batch median",
        "batch max",
        "client late max ms",
        title=f"{APP}, open loop, {seconds:g} s per load",
    )
    for p in results.points:
        table.add_row(
            p.mode,
            f"{p.offered_per_sec:,}",
            f"{p.tasks:,}",
            f"{p.completed - p.failed:,}",
            f"{p.achieved_per_sec:,.0f}",
            format_ms(p.p50_ms),
            format_ms(p.p99_ms),
            f"{p.batch_median:g}",
            str(p.batch_max),
            f"{p.submit_late_max_ms:,.1f}",
        )
    verdict_table = Table("measure", "value", "target", "", title="Ratios and targets")
    for row in rows:
        mark = "" if row.passed is None else "[green]pass[/]" if row.passed else "[red]miss[/]"
        verdict_table.add_row(row.name, row.value, row.target, mark)
    console.print(table)
    console.print(verdict_table)


def write_json(
    path: Path, machine: dict[str, Any], seconds: float, results: Results, rows: list[Verdict]
) -> None:
    def finite(value: Any) -> Any:
        return None if isinstance(value, float) and math.isinf(value) else value

    report = {
        "machine": machine,
        "seconds_per_load": seconds,
        "points": [{k: finite(v) for k, v in asdict(p).items()} for p in results.points],
        "verdicts": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------------- main


def parse_loads(text: str) -> list[int]:
    try:
        loads = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected tasks/s as integers, e.g. 100,1000,10000"
        ) from None
    if not loads or min(loads) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every load must be at least 1 task/s")
    return sorted(set(loads))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_workdir_options(parser)
    parser.add_argument(
        "--quick", action="store_true", help="1 s per load and mode (the run takes about a minute)"
    )
    parser.add_argument(
        "--seconds", type=float, metavar="SEC", help="seconds of submissions per load (default 3)"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        metavar="SEC",
        help="how long to wait for the last tasks (default 5)",
    )
    parser.add_argument(
        "--loads", type=parse_loads, default=list(LOADS), metavar="N,N,...", help="offered loads in tasks/s"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers to this JSON file")
    options = parser.parse_args(argv)
    if options.seconds is not None and options.seconds <= 0:
        parser.error("--seconds must be positive")
    return options


def run(options: argparse.Namespace) -> int:
    seconds = options.seconds or (1.0 if options.quick else 3.0)
    results = Results()
    services = Services(START_TIMEOUT_SEC, STOP_TIMEOUT_SEC)
    with temp_workdir(options, "batching-") as workdir:
        machine = describe_machine(workdir, ("numpy",))
        try:
            folders = app_copies(workdir)
            batch_wait_ms = keepwarm.Env(folders["batch"]).settings.cluster.batch_wait_ms
            for mode, folder in folders.items():
                for load in options.loads:
                    env = keepwarm.Env(folder, share_dir=workdir / "share", namespace=f"{mode}-{load}")
                    print(f"{mode}: {load:,} tasks/s for {seconds:g} s", file=sys.stderr, flush=True)
                    service = services.start(env)
                    try:
                        results.points.append(measure(mode, service, load, seconds, options.grace))
                    finally:
                        services.stop(env)
        finally:
            services.stop_all()
    rows = verdicts(results, options.loads, batch_wait_ms)
    print_report(machine, seconds, results, rows)
    if options.json:
        write_json(options.json, machine, seconds, results, rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
