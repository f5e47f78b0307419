"""Proof under faults: tasks flow through 4 loops while loops are killed and frozen and the supervisor
is killed and started again. Nothing may be lost, every task ends with exactly one terminal file,
duplicate executions are counted, and health names every restart with its reason.

Sized to take well under a minute per backend here; ``bench/chaos.py`` runs the same at the issue's full size
(5,000 tasks, 10 s of kills) and prints the figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import Services
from .harness import ChaosPlan, chaos_app, run_chaos

pytestmark = pytest.mark.chaos


def check(report_table: str, problems: list[str]) -> None:
    print(report_table)  # shown when the test fails
    assert problems == []


def test_local_loops_killed_frozen_and_supervisor_killed_lose_nothing(
    tmp_path: Path, chaos_services: Services
) -> None:
    plan = ChaosPlan(backend="local", tasks=2000, loops=4, seconds=5.0, seed=6, settle_timeout=120)
    env = chaos_app(tmp_path, plan)
    chaos_services.envs.append(env)
    report = run_chaos(env, plan)
    check(report.table(), report.problems())
    assert len(report.done) == 2000 and not report.lost and not report.failed
    assert len(report.kills) >= 10  # the schedule really hit live loops
    assert set(report.restarts_by_reason) >= {"loop-error"}
    assert report.freeze is not None and str(report.named_freeze()).startswith("stale-heartbeat(")


def test_dask_workers_killed_frozen_and_supervisor_killed_lose_nothing(
    tmp_path: Path, chaos_services: Services
) -> None:
    pytest.importorskip("distributed")
    plan = ChaosPlan(backend="dask", tasks=1000, loops=4, seconds=5.0, seed=6, settle_timeout=120)
    env = chaos_app(tmp_path, plan)
    chaos_services.envs.append(env)
    report = run_chaos(env, plan)
    check(report.table(), report.problems())
    assert len(report.done) == 1000 and not report.lost and not report.failed
    assert len(report.kills) >= 3
    assert report.freeze is not None and str(report.named_freeze()).startswith("stale-heartbeat(")
