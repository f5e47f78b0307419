"""``keepwarm demo``: warm loops of the bundled example app serve a few hundred tasks."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keepwarm.api import Service
from keepwarm.env import Env, bundled_apps_path
from keepwarm.local import spawn_loop, stop_loops, wait_ready
from keepwarm.results import wait_for_records

DEMO_APP = "mycode_project"


@dataclass
class DemoReport:
    app: str
    share_dir: Path
    kept: bool
    loops: int
    start_sec: dict[str, float]
    tasks: int
    burst_sec: float
    roundtrip_ms: list[float]
    samples: list[tuple[int, Any]]
    per_slot: dict[str, int]
    failed: int
    log_dir: Path
    notes: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.tasks / self.burst_sec if self.burst_sec else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.roundtrip_ms)

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.roundtrip_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def run_demo(
    tasks: int = 300,
    loops: int = 2,
    roundtrips: int = 200,
    share_dir: Path | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> DemoReport:
    """Start ``loops`` warm loops, send a burst of ``tasks`` and ``roundtrips`` single round trips."""
    kept = share_dir is not None
    share = share_dir or Path(tempfile.mkdtemp(prefix="keepwarm-demo-"))
    env = Env(DEMO_APP, bundled_apps_path(), share_dir=share)
    service = Service(env)
    progress(f"starting {loops} loops of {DEMO_APP} (share: {share})")
    processes = [spawn_loop(env, f"loop-{index}") for index in range(loops)]
    try:
        start_sec = wait_ready(env, processes, env.settings.cluster.start_timeout_sec)
        progress(f"submitting {tasks} tasks")
        began = time.perf_counter()
        handles = service.submit_many({"args": {"x": x}} for x in range(1, tasks + 1))
        records = wait_for_records(service.queue, [h.task_id for h in handles], timeout=120)
        burst_sec = time.perf_counter() - began
        progress(f"measuring {roundtrips} single round trips")
        roundtrip_ms = []
        for x in range(1, roundtrips + 1):
            began = time.perf_counter()
            service.submit({"x": x}).result(timeout=30)
            roundtrip_ms.append((time.perf_counter() - began) * 1000)
    finally:
        stop_loops(processes, env.settings.cluster.stop_timeout_sec)
        if not kept:
            shutil.rmtree(share, ignore_errors=True)
    ordered = [records[h.task_id] for h in handles]
    per_slot = Counter(str((r.claim or {}).get("slot")) for r in ordered)
    return DemoReport(
        app=DEMO_APP,
        share_dir=share,
        kept=kept,
        loops=loops,
        start_sec=start_sec,
        tasks=tasks,
        burst_sec=burst_sec,
        roundtrip_ms=roundtrip_ms,
        samples=[(r.args.get("x", 0), r.result) for r in ordered[:5]],
        per_slot=dict(sorted(per_slot.items())),
        failed=sum(1 for r in ordered if r.status != "done"),
        log_dir=env.log_dir,
    )
