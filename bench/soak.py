"""Soak and load: a steady submit rate for a bounded time, then ``status`` and ``health`` over a deep queue.

soak      ``mycode_project`` as a service (2 loops, local backend) fed ``--rate`` tasks a second for
          ``--seconds`` (default 120 s at 200/s). The supervisor's and each loop's memory (VmRSS from
          /proc/<pid>/status) and open files (entries of /proc/<pid>/fd) are sampled when the service is
          ready and idle, after a warm-up (the first tenth of the run, at most 10 s, under load) and at
          the end; growth is end minus warm-up (target for the supervisor: under 10 MB). Every task must
          come back (lost: no terminal file), and the queueing delay (submit to finish, from the
          terminal records) of the first and last tenth of the tasks shows whether the service slowed.
deep      ``--pending`` tasks (default 100,000) wait in ``pending/`` of a running ``flaky`` service whose
          two loops are each busy with a task that hangs, so the queue stays that deep while
          ``Service.status()`` and ``Service.health()`` (in process, median of 20; target: status under
          100 ms) and the ``keepwarm status`` and ``keepwarm health`` commands (interpreter start
          included, median of 5) are timed.

Usage: ``.venv/bin/python bench/soak.py [--seconds S] [--rate N] [--pending N] [--json PATH]``. Every
process it starts is stopped by pid; its temp dir (under .bench/) is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keepwarm
from keepwarm.errors import ResultTimeout
from keepwarm.queue.results import wait_for_records
from keepwarm.queue.state import read_supervisor_state
from keepwarm.queue.task import TaskRecord, epoch_of
from keepwarm.queue.taskqueue import TaskQueue
from provenance import source_version

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "examples" / "apps"
KEEPWARM = Path(sys.executable).parent / "keepwarm"
MB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One process at one moment."""

    role: str  # supervisor | loop-N
    pid: int
    rss_bytes: int
    open_files: int


def sample(role: str, pid: int) -> Sample | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
        files = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None
    return Sample(role, pid, rss, files)


def processes(env: keepwarm.Env) -> list[Sample]:
    """The supervisor and its loops, from ``supervisor.json``."""
    state = read_supervisor_state(env.service_dir / "supervisor.json")
    if state is None:
        return []
    found = [sample("supervisor", state.pid)]
    found += [sample(row.slot, row.pid) for row in state.loops if row.pid is not None]
    return [s for s in found if s is not None]


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- soak


def soak(apps: Path, seconds: float, rate: float) -> dict[str, Any]:
    env = keepwarm.Env("mycode_project", apps)
    service = keepwarm.Service(env)
    service.start()
    try:
        idle = processes(env)
        say(f"soak: {rate:g} tasks/s for {seconds:g} s through 2 loops")
        ids: list[str] = []
        records: dict[str, TaskRecord] = {}
        waiting: set[str] = set()  # submitted, result not read yet: read as they come, before retention
        began = time.monotonic()
        warm_at = began + min(10.0, seconds / 10)
        warm: list[Sample] = []
        peak_pending = 0
        trace: list[tuple[int, int, int]] = []  # (second, supervisor RSS, files in done/)
        next_note, next_read = began + 10, began + 1
        while (now := time.monotonic()) < began + seconds:
            due = int((now - began) * rate) - len(ids)
            if due > 0:
                handles = service.submit_many(
                    {"args": {"x": 1 + (len(ids) + i) % 100_000}} for i in range(due)
                )
                ids += [handle.task_id for handle in handles]
                waiting.update(handle.task_id for handle in handles)
            if now >= next_read:
                collect(service.queue, waiting, records)
                next_read += 1
            if not warm and now >= warm_at:
                warm = processes(env)
            if now >= next_note:
                counts = service.counts()
                peak_pending = max(peak_pending, counts.pending)
                rss = next((s.rss_bytes for s in processes(env) if s.role == "supervisor"), 0)
                trace.append((round(now - began), rss, counts.done))
                say(
                    f"  {now - began:4.0f}s: {len(ids):,} submitted, {counts.pending:,} pending, "
                    f"{counts.done:,} in done/, supervisor RSS {rss / MB:.1f} MB"
                )
                next_note += 10
            time.sleep(0.005)
        submitted_for = time.monotonic() - began
        try:
            records.update(wait_for_records(service.queue, waiting, timeout=300))
        except ResultTimeout:  # counted as lost below
            collect(service.queue, waiting, records)
        drained = time.monotonic() - began
        end = processes(env)
    finally:
        service.stop()
    lost = len(set(ids) - set(records))
    failed = sum(1 for record in records.values() if record.status != "done")

    def delay(task_ids: list[str]) -> float:
        waits = [
            (epoch_of(records[t].finished_at) or 0) - (epoch_of(records[t].created_at) or 0)
            for t in task_ids
            if t in records
        ]
        return statistics.median(waits) if waits else float("nan")

    tenth = max(1, len(ids) // 10)
    return {
        "seconds": seconds,
        "rate": rate,
        "submitted": len(ids),
        "achieved_rate": len(ids) / submitted_for,
        "drained_sec": drained,
        "lost": lost,
        "failed": failed,
        "peak_pending": peak_pending,
        "delay_first_tenth_ms": delay(ids[:tenth]) * 1000,
        "delay_last_tenth_ms": delay(ids[-tenth:]) * 1000,
        "supervisor_trace": trace,
        "idle": [asdict(s) for s in idle],
        "warm": [asdict(s) for s in warm],
        "end": [asdict(s) for s in end],
    }


def collect(queue: TaskQueue, waiting: set[str], records: dict[str, TaskRecord]) -> None:
    """Read the results that have arrived (and stop waiting for them)."""
    for task_id in list(waiting):
        record = queue.read_record(task_id)
        if record is not None:
            records[task_id] = record
            waiting.discard(task_id)


# ---------------------------------------------------------------------- status and health over a deep queue


def median_of(count: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(count))


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def deep_queue(apps: Path, pending: int) -> dict[str, Any]:
    env = keepwarm.Env("flaky", apps)
    service = keepwarm.Service(env)
    queue = service.queue
    say(f"deep: submitting 2 hanging tasks and {pending:,} more")
    queue.submit([queue.make_task({"action": "hang", "seconds": 3600}) for _ in range(2)])
    for first in range(0, pending, 10_000):
        queue.submit([queue.make_task({"value": first + i}) for i in range(min(10_000, pending - first))])
    service.start()
    try:
        deadline = time.monotonic() + 120
        while (counts := service.counts()).running != 2 or counts.pending != pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the loops did not settle on the hanging tasks: {counts}")
            time.sleep(0.1)
        report = service.status()
        assert report.queue.pending == pending, report.queue
        say(f"deep: {report.queue.pending:,} pending, {report.queue.running} running; timing")
        status_sec = median_of(20, lambda: timed(service.status))
        health_sec = median_of(20, lambda: timed(service.health))
        app = str(env.app_dir)
        status_cli = median_of(
            5,
            lambda: timed(
                lambda: subprocess.run(
                    [str(KEEPWARM), "status", app, "--json"], check=True, capture_output=True
                )
            ),
        )
        health_cli = median_of(
            5,
            lambda: timed(
                lambda: subprocess.run(
                    [str(KEEPWARM), "health", app, "--json"], check=True, capture_output=True
                )
            ),
        )
        supervisor = processes(env)[0]
        still = service.counts()
    finally:
        service.stop(timeout=2)
    return {
        "pending": pending,
        "pending_at_end": still.pending,
        "status_ms": status_sec * 1000,
        "health_ms": health_sec * 1000,
        "status_cli_ms": status_cli * 1000,
        "health_cli_ms": health_cli * 1000,
        "supervisor_rss_mb": supervisor.rss_bytes / MB,
    }


# ---------------------------------------------------------------------- report


def print_report(soaked: dict[str, Any] | None, deep: dict[str, Any] | None) -> None:
    load = os.getloadavg()
    print(f"keepwarm {source_version()} · {os.cpu_count()} CPUs · load average {load[0]:.1f} at the end")
    if soaked is not None:
        print(
            f"\nsoak: {soaked['submitted']:,} tasks at {soaked['achieved_rate']:.0f}/s for "
            f"{soaked['seconds']:g} s; all back after {soaked['drained_sec']:.1f} s; lost {soaked['lost']}, "
            f"failed {soaked['failed']}; pending peaked at {soaked['peak_pending']:,}; "
            f"median submit-to-finish {soaked['delay_first_tenth_ms']:.1f} ms (first tenth), "
            f"{soaked['delay_last_tenth_ms']:.1f} ms (last tenth)\n"
        )
        trace = ", ".join(
            f"{sec}s {rss / MB:.1f} ({done:,})" for sec, rss, done in soaked["supervisor_trace"]
        )
        print(f"supervisor RSS in MB every 10 s (files in done/): {trace}\n")
        print(
            "| process | RSS idle MB | RSS warm MB | RSS end MB | growth MB | open files idle / warm / end |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        by_role = {moment: {s["role"]: s for s in soaked[moment]} for moment in ("idle", "warm", "end")}
        for role, idle in by_role["idle"].items():
            warm, end = by_role["warm"].get(role), by_role["end"].get(role)
            if warm is None or end is None:
                print(f"| {role} | {idle['rss_bytes'] / MB:.1f} | - | - | - | restarted during the run |")
                continue
            same = "" if idle["pid"] == warm["pid"] == end["pid"] else " (restarted)"
            growth = (end["rss_bytes"] - warm["rss_bytes"]) / MB
            target = " (target < 10)" if role == "supervisor" else ""
            print(
                f"| {role}{same} | {idle['rss_bytes'] / MB:.1f} | {warm['rss_bytes'] / MB:.1f} | "
                f"{end['rss_bytes'] / MB:.1f} | {growth:+.1f}{target} | "
                f"{idle['open_files']} / {warm['open_files']} / {end['open_files']} |"
            )
    if deep is not None:
        pending = deep["pending"]
        print(f"\nstatus and health with {pending:,} pending tasks (a running service, 2 busy loops):\n")
        print("| measure | value | target |")
        print("| --- | --- | --- |")
        status_ms = float(deep["status_ms"])
        verdict = "pass" if status_ms < 100 else "**miss**"
        print(f"| `Service.status()` in process (median of 20) | {status_ms:.1f} ms | < 100 ms: {verdict} |")
        print(f"| `Service.health()` in process (median of 20) | {deep['health_ms']:.1f} ms | |")
        print(f"| `keepwarm status APP --json` (median of 5) | {deep['status_cli_ms']:.0f} ms | |")
        print(f"| `keepwarm health APP --json` (median of 5) | {deep['health_cli_ms']:.0f} ms | |")
        print(f"| supervisor RSS with that queue | {deep['supervisor_rss_mb']:.1f} MB | |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to submit (default 120)")
    parser.add_argument("--rate", type=float, default=200.0, help="tasks a second (default 200)")
    parser.add_argument("--pending", type=int, default=100_000, help="the deep queue (default 100,000)")
    parser.add_argument(
        "--retention-min-age",
        type=float,
        help="soak: [cluster] retention_min_age_sec (default 600: done/ keeps every result of a short run)",
    )
    parser.add_argument("--no-soak", action="store_true", help="only the deep-queue timings")
    parser.add_argument("--no-deep", action="store_true", help="only the soak")
    parser.add_argument(
        "--dir", type=Path, help="run in a fresh temp dir under this folder (default: .bench/)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args(argv)
    parent = options.dir or ROOT / ".bench"
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="soak-", dir=parent))
    os.environ["KEEPWARM_SHARE"] = str(workdir / "share")
    os.environ["KEEPWARM_LOG_DIR"] = str(workdir / "logs")
    apps = workdir / "apps"
    shutil.copytree(APPS / "mycode_project", apps / "mycode_project")
    shutil.copytree(APPS / "flaky", apps / "flaky")
    if options.retention_min_age is not None:
        mycode = apps / "mycode_project" / "app_settings.toml"
        mycode.write_text(
            mycode.read_text().replace(
                "[cluster]\n", f"[cluster]\nretention_min_age_sec = {options.retention_min_age}\n"
            )
        )
    settings = apps / "flaky" / "app_settings.toml"
    settings.write_text(settings.read_text().replace("[cluster]\n", "[cluster]\nstop_timeout_sec = 2\n"))
    soaked = deep = None
    try:
        if not options.no_soak:
            soaked = soak(apps, options.seconds, options.rate)
        if not options.no_deep:
            deep = deep_queue(apps, options.pending)
    finally:
        say(f"removing {workdir}")
        shutil.rmtree(workdir, ignore_errors=True)
    print_report(soaked, deep)
    if options.json:
        options.json.write_text(
            json.dumps({"source": source_version(), "soak": soaked, "deep": deep}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
