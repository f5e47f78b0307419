"""``keepwarm demo``: start the bundled example service, send it tasks, show its health, stop it."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keepwarm.api import Service
from keepwarm.env import Env, bundled_apps_path
from keepwarm.service.report import HealthReport

DEMO_APP = "mycode_project"


@dataclass
class DemoReport:
    app: str
    share_dir: Path
    kept: bool
    loops: int
    start_sec: float
    stop_sec: float
    tasks: int
    burst_sec: float
    roundtrip_ms: list[float]
    samples: list[tuple[int, Any]]
    per_slot: dict[str, int]
    failed: int
    health: HealthReport
    log_dir: Path

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
    say: Callable[[str], None] = lambda message: None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> DemoReport:
    """Start the service with ``loops`` loops, send a burst of ``tasks`` and ``roundtrips`` single
    round trips, read its health, and stop it (also on error)."""
    kept = share_dir is not None
    share = share_dir or Path(tempfile.mkdtemp(prefix="keepwarm-demo-"))
    env = Env(DEMO_APP, bundled_apps_path(), share_dir=share)
    service = Service(env)
    say(f"starting the {DEMO_APP} service with {loops} loops (share: {share})")
    began = time.perf_counter()
    service.start(slots=loops)
    start_sec = time.perf_counter() - began
    try:
        say(f"sending {tasks} tasks")
        began = time.perf_counter()
        handles = service.submit_many({"args": {"x": x}} for x in range(1, tasks + 1))
        ids = [h.task_id for h in handles]
        ordered = service.wait(ids, timeout=120, progress=lambda done: progress(done, tasks))
        burst_sec = time.perf_counter() - began
        say(f"measuring {roundtrips} single round trips")
        roundtrip_ms = []
        for x in range(1, roundtrips + 1):
            began = time.perf_counter()
            service.submit({"x": x}).result(timeout=30)
            roundtrip_ms.append((time.perf_counter() - began) * 1000)
        health = service.status()
    finally:
        say("stopping the service")
        began = time.perf_counter()
        service.stop()
        stop_sec = time.perf_counter() - began
        if not kept:
            shutil.rmtree(share, ignore_errors=True)
    per_slot = Counter(str((r.claim or {}).get("slot")) for r in ordered)
    return DemoReport(
        app=DEMO_APP,
        share_dir=share,
        kept=kept,
        loops=loops,
        start_sec=start_sec,
        stop_sec=stop_sec,
        tasks=tasks,
        burst_sec=burst_sec,
        roundtrip_ms=roundtrip_ms,
        samples=[(r.args.get("x", 0), r.result) for r in ordered[:5]],
        per_slot=dict(sorted(per_slot.items())),
        failed=sum(1 for r in ordered if r.status != "done"),
        health=health,
        log_dir=env.log_dir,
    )
