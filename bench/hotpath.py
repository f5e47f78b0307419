"""CPU per task on the queue's hot path: keepwarm's client and loop against naive's, side by side.

One worker (keepwarm: ``python -m keepwarm.runtime.loop``; naive: ``queue_roundtrip.py``'s naive
worker), sequential round trips. For each task this measures the client's CPU time submitting and
waiting for and reading the result (``time.process_time`` around each call: the wait's system calls
count, the time asleep does not) and the worker
process's CPU time over the whole run (``/proc/<pid>/stat``, utime + stime, every thread) divided by
the number of tasks.

Usage::

    .venv/bin/python bench/hotpath.py --tmpfs              # the issue's targets are on tmpfs
    .venv/bin/python bench/hotpath.py --tmpfs --profile    # + where the loop's time goes (cProfile)

``--profile`` runs the keepwarm loop under cProfile (slower: its CPU figure is then not comparable)
and prints the loop's 25 most expensive functions by own time. Targets are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provenance import APP, APPS_PATH, ROOT, TMPFS_DIR, compute, task_inputs, use_app_code
from queue_roundtrip import (
    NAMESPACE,
    ROUNDTRIP_TIMEOUT_SEC,
    FileQueueBackend,
    KeepwarmBackend,
    publish,
)

TICKS = os.sysconf("SC_CLK_TCK")
TARGETS_US = {"loop": 130.0, "submit": 50.0, "read": 30.0}


def process_cpu(pid: int) -> float:
    """Seconds of CPU ``pid`` used so far (user + system, every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Timed:
    """Client CPU per phase, summed over tasks."""

    def __init__(self) -> None:
        self.submit: list[float] = []
        self.read: list[float] = []

    def phase(self, into: list[float], call: Callable[[], Any]) -> Any:
        began = time.process_time()
        value = call()
        into.append(time.process_time() - began)
        return value


def measure_keepwarm(workdir: Path, tasks: int, warmup: int, profile: Path | None) -> dict[str, float]:
    backend = KeepwarmBackend(workdir)
    with backend:
        if profile is not None:
            _start_profiled_loop(backend, profile)
        else:
            backend.scale(1)
        pid = backend.children.procs["loop-0"].pid
        service = backend.service
        for x in task_inputs(warmup):
            backend.roundtrip(x)
        timed = Timed()
        cpu_before = process_cpu(pid)
        for x in task_inputs(tasks, offset=warmup):
            handle = timed.phase(timed.submit, lambda x=x: service.submit({"x": x}, queue_only=True))
            value = timed.phase(timed.read, lambda h=handle: h.result(ROUNDTRIP_TIMEOUT_SEC))
            if value != compute(x):
                raise SystemExit(f"keepwarm returned {value!r} for {x}")
        loop_cpu = process_cpu(pid) - cpu_before
    return _per_task(timed, loop_cpu, tasks)


def _start_profiled_loop(backend: KeepwarmBackend, profile: Path) -> None:
    command = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "keepwarm.runtime.loop"]
    command += ["--app", APP, "--apps-path", str(APPS_PATH), "--slot", "loop-0", "--namespace", NAMESPACE]
    command += ["--parent-pid", str(os.getpid())]
    backend.children.start("loop-0", command, env={**os.environ, "KEEPWARM_SHARE": str(backend.share)})
    backend.children.wait_until("loop-0", lambda: backend.loop_ready("loop-0"))


def measure_naive(workdir: Path, tasks: int, warmup: int) -> dict[str, float]:
    import json

    backend = FileQueueBackend("naive", workdir)
    with backend:
        backend.scale(1)
        pid = backend.children.procs["naive-0"].pid
        for x in task_inputs(warmup):
            backend.roundtrip(x)
        timed = Timed()
        cpu_before = process_cpu(pid)
        for x in task_inputs(tasks, offset=warmup):
            backend.seq += 1
            name = f"{backend.seq:012d}.json"
            timed.phase(
                timed.submit, lambda n=name, x=x: publish(backend.requests, n, json.dumps({"x": x}).encode())
            )
            value = timed.phase(timed.read, lambda n=name: read_naive(backend, n))
            if value != compute(x):
                raise SystemExit(f"naive returned {value!r} for {x}")
        worker_cpu = process_cpu(pid) - cpu_before
    return _per_task(timed, worker_cpu, tasks)


def read_naive(backend: FileQueueBackend, name: str) -> Any:
    """Wait for the answer (its CPU counts: keepwarm's ``result()`` waits too), then decode it."""
    import json

    backend.wait_for({name}, ROUNDTRIP_TIMEOUT_SEC)
    return json.loads((backend.responses / name).read_bytes())


def _per_task(timed: Timed, worker_cpu: float, tasks: int) -> dict[str, float]:
    return {
        "submit": statistics.median(timed.submit) * 1e6,
        "read": statistics.median(timed.read) * 1e6,
        "loop": worker_cpu / tasks * 1e6,
    }


def print_profile(path: Path, tasks: int) -> None:
    stats = pstats.Stats(str(path))
    print(f"\nthe loop under cProfile, own time per task (µs) over {tasks} tasks + warm-up:")
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:25]  # type: ignore[attr-defined]
    for (file, line, func), (_, calls, own, cumulative, _) in rows:
        where = f"{Path(file).name}:{line}({func})"
        print(f"  {own / tasks * 1e6:8.1f} own {cumulative / tasks * 1e6:8.1f} cum {calls:>8} calls  {where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tmpfs", action="store_true", help=f"run under {TMPFS_DIR} (default: .bench/)")
    parser.add_argument("--tasks", type=int, default=5000, help="timed round trips (default 5000)")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--profile", action="store_true", help="run the loop under cProfile")
    options = parser.parse_args(argv)
    use_app_code()
    parent = TMPFS_DIR if options.tmpfs else ROOT / ".bench"
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hotpath-", dir=parent) as temp:
        workdir = Path(temp)
        profile = workdir / "loop.prof" if options.profile else None
        keepwarm = measure_keepwarm(workdir, options.tasks, options.warmup, profile)
        naive = measure_naive(workdir, options.tasks, options.warmup)
        print(f"CPU per task, µs ({options.tasks} sequential round trips, 1 worker, {parent}):")
        print(f"  {'':8} {'keepwarm':>9} {'naive':>7} {'ratio':>6}  target")
        for key in ("submit", "read", "loop"):
            target = TARGETS_US[key]
            verdict = "pass" if keepwarm[key] <= target else "miss"
            note = " (under cProfile)" if key == "loop" and profile else ""
            print(
                f"  {key:8} {keepwarm[key]:9.1f} {naive[key]:7.1f} {keepwarm[key] / naive[key]:5.2f}x"
                f"  <= {target:g} µs: {verdict}{note}"
            )
        if profile is not None and profile.exists():
            print_profile(profile, options.tasks + options.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
