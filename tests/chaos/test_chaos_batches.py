"""Proof under faults, with batches in flight: the chaos run of ``harness.py`` against a batching app
(``tests/apps/flaky_batch``, ``work_batch`` with up to 16 tasks a call), its loops killed every
quarter second. Every kill that hits a batch leaves
several claimed tasks behind: each must be requeued with its attempt counted once, none lost, each
with exactly one terminal file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keepwarm.env import Env
from keepwarm.queue.taskqueue import TaskQueue

from ..conftest import Services
from .harness import ChaosPlan, chaos_app, run_chaos

pytestmark = pytest.mark.chaos

BATCH_APP = Path(__file__).resolve().parents[1] / "apps" / "flaky_batch"
MAX_BATCH_SIZE = 16


def batch_chaos_app(folder: Path, plan: ChaosPlan) -> Env:
    """A copy of ``flaky_batch`` configured like the harness's ``chaos_app``, batching.

    ``max_attempts`` is raised: a kill sends a whole batch back, and the same batch may be hit again
    by a later kill; the run checks that attempts are counted per kill, not that they run out.
    """
    return chaos_app(
        folder, plan, BATCH_APP, f"max_batch_size = {MAX_BATCH_SIZE}\nbatch_wait_ms = 5\nmax_attempts = 50\n"
    )


def test_loops_killed_under_batches_lose_nothing_and_count_one_attempt_per_kill(
    tmp_path: Path, chaos_services: Services
) -> None:
    # A batch sleeps 0.05 s once for all its tasks (the harness's per-task sleep): loops are busy
    # with a batch about half the time, so most kills land in one. The supervisor is killed and
    # started again too: its loops stop and their tasks come back, so names are learnt twice (this
    # run found a batch that held one task twice: test_batching's test_a_name_learnt_twice_...).
    plan = ChaosPlan(
        backend="local",
        tasks=1500,
        loops=3,
        seconds=4.0,
        kill_every=0.25,
        task_seconds=0.05,
        freeze=False,
        seed=16,
        settle_timeout=120,
    )
    env = batch_chaos_app(tmp_path, plan)
    chaos_services.envs.append(env)

    report = run_chaos(env, plan)

    print(report.table())  # shown when the test fails
    assert report.problems() == []
    assert len(report.done) == 1500 and not report.lost and not report.failed
    assert len(report.kills) >= 8  # the schedule really hit live loops
    queue = TaskQueue.for_env(env)
    records = [queue.read_record(task_id) for task_id in report.submitted]
    assert all(record is not None for record in records)
    sizes = [(record.model_extra or {}).get("batch_size") for record in records if record is not None]
    assert sum(1 for size in sizes if size is not None and size > 1) > len(sizes) // 2  # batches ran
    # Each attempt beyond the first is one requeue on record, never more, never fewer.
    for record in records:
        assert record is not None
        assert record.attempt == len(record.attempts), (record.task_id, record.attempts)
    # A kill under a batch sends back several tasks: more came back than one per kill, which claims
    # of one task at a time could not do.
    requeued = sum(1 for record in records if record is not None and record.attempt > 1)
    assert requeued > len(report.kills), (requeued, len(report.kills))
