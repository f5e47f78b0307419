"""Autoscaling (``[cluster.autoscale]``): the policy alone, on a clock the test drives, then real
services whose supervisor grows the loops under a burst, shrinks them when idle, scales to zero and
back, holds while a loop fails to start, and obeys ``scale N`` until ``scale --auto``; never a false
alarm, never a task lost."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from keepwarm.api import Service
from keepwarm.backends.cluster import read_keeper
from keepwarm.env import Env
from keepwarm.queue.results import wait_for_records
from keepwarm.queue.state import ConditionKind
from keepwarm.service.autoscale import Autoscaler, Fleet, Load, needed_loops
from keepwarm.service.exports import to_prometheus
from keepwarm.service.liveness import pid_alive
from keepwarm.service.report import HealthReport
from keepwarm.settings_sections import AutoscaleSettings

from .conftest import Services, supervisor_state, wait_until, write_app
from .test_cli import keepwarm_cli
from .test_dask import DaskProcesses

# ---------------------------------------------------------------------- the policy, on a test clock


def policy(**settings: object) -> Autoscaler:
    values: dict[str, object] = {
        "enabled": True,
        "min_loops": 1,
        "max_loops": 8,
        "target_pending_per_loop": 10,
        "scale_up_delay_sec": 2,
        "scale_down_delay_sec": 10,
    }
    return Autoscaler(AutoscaleSettings.model_validate(values | settings))


def test_min_above_max_and_negative_values_are_refused_clearly() -> None:
    with pytest.raises(ValidationError, match=r"min_loops \(5\) is above max_loops \(2\)"):
        AutoscaleSettings(min_loops=5, max_loops=2)
    with pytest.raises(ValidationError, match="scale_down_delay_sec"):
        AutoscaleSettings(scale_down_delay_sec=-1)
    with pytest.raises(ValidationError, match="target_pending_per_loop"):
        AutoscaleSettings(target_pending_per_loop=0)


def test_the_need_is_the_ongoing_tasks_over_the_target_or_the_oldest_tasks_age() -> None:
    settings = AutoscaleSettings(target_pending_per_loop=50, target_pending_age_sec=5)
    assert needed_loops(Load(pending=340, running=5), 5, settings) == (
        7,
        "backlog 340, 5 running: target 50 per loop",
    )
    needed, why = needed_loops(Load(pending=20, running=2, oldest_pending_age_sec=20), 2, settings)
    assert needed == 8 and "oldest pending task 20.0s old" in why
    assert needed_loops(Load(0, 0), 3, settings)[0] == 0


def test_a_burst_shorter_than_the_up_delay_starts_nothing_a_sustained_one_starts_several() -> None:
    scaler = policy()
    two = Fleet(current=2)
    assert scaler.decide(Load(0, 2), two, now=0.0) is None
    assert scaler.decide(Load(500, 2), two, now=1.0) is None  # a second of burst: not sustained
    assert scaler.decide(Load(0, 2), two, now=2.5) is None
    for at in (3.0, 4.0):
        assert scaler.decide(Load(60, 2), two, now=at) is None
    decision = scaler.decide(Load(60, 2), two, now=5.0)  # 2 s at 7 loops' worth
    assert decision is not None and decision[0] == 7


def test_a_need_counts_from_when_it_was_seen_not_from_the_tick_before() -> None:
    """Ticks 0.7 s apart: a need first seen at 1.4 s has held 1.4 s at 2.8 s, not the 2 s asked."""
    scaler = policy()
    two = Fleet(current=2)
    assert scaler.decide(Load(0, 2), two, now=0.0) is None
    assert scaler.decide(Load(0, 2), two, now=0.7) is None
    for at in (1.4, 2.1, 2.8):
        assert scaler.decide(Load(80, 0), two, now=at) is None
    decision = scaler.decide(Load(80, 0), two, now=3.5)
    assert decision is not None and decision[0] == 8


def test_never_above_max_never_below_min_and_down_only_after_the_down_delay() -> None:
    scaler = policy(min_loops=2, max_loops=4, scale_up_delay_sec=0)
    decision = scaler.decide(Load(1000, 0), Fleet(current=2), now=0.0)
    assert decision is not None and decision[0] == 4 and "max_loops 4" in decision[1]
    four = Fleet(current=4)
    for at in range(10):
        assert scaler.decide(Load(0, 0), four, now=1.0 + at) is None  # idle, but not for 10 s yet
    decision = scaler.decide(Load(0, 0), four, now=11.5)
    assert decision is not None and decision[0] == 2 and "min_loops 2" in decision[1]


def test_from_zero_a_task_starts_a_loop_at_once_and_starting_loops_count() -> None:
    scaler = policy(min_loops=0, scale_up_delay_sec=30)
    decision = scaler.decide(Load(1, 0), Fleet(current=0), now=0.0)
    assert decision is not None and decision[0] == 1
    # The loop is starting: it counts, so the same task does not start a second one.
    assert scaler.decide(Load(1, 0), Fleet(current=1, starting=1), now=0.5) is None


def test_a_failing_start_holds_growth_and_says_why() -> None:
    scaler = policy(scale_up_delay_sec=0)
    failing = Fleet(current=1, starting=1, failing="start failed: RuntimeError: no GPU")
    assert scaler.decide(Load(100, 0), failing, now=0.0) is None
    assert scaler.held == "not growing while a loop fails to start: start failed: RuntimeError: no GPU"
    assert scaler.decide(Load(100, 0), Fleet(current=1), now=1.0) is not None and scaler.held is None


def test_a_pin_stops_the_decisions_until_auto() -> None:
    scaler = policy(scale_up_delay_sec=0)
    scaler.pin(3)
    assert scaler.decide(Load(1000, 0), Fleet(current=3), now=0.0) is None
    scaler.pin(None)
    assert scaler.decide(Load(1000, 0), Fleet(current=3), now=1.0) is not None


# ---------------------------------------------------------------------- real services


WORKER = """\
import os
import time

BROKEN = {broken!r}


class Worker:
    def start(self):
        if os.path.exists(BROKEN):
            raise RuntimeError("cannot start: " + BROKEN + " exists")

    def work(self, item):
        time.sleep(item.args.get("seconds", 0))
        return item.args.get("value")
"""

FAST = """\
[cluster]
{backend}heartbeat_interval_sec = 0.2
heartbeat_timeout_sec = 2
restart_backoff_sec = 0.1
restart_backoff_max_sec = 0.5
stop_timeout_sec = 10

[cluster.autoscale]
enabled = true
min_loops = {low}
max_loops = {high}
target_pending_per_loop = 2
scale_up_delay_sec = 0.3
scale_down_delay_sec = {down}
"""


def scaled_app(
    tmp_path: Path, low: int = 1, high: int = 4, down: float = 1.5, backend: str = ""
) -> tuple[Env, Path]:
    """An app whose loops sleep ``seconds`` per task and fail to start while ``broken`` exists;
    ``backend``: extra ``[cluster]`` lines (the Dask backend)."""
    broken = tmp_path / "broken"
    settings = FAST.format(low=low, high=high, down=down, backend=backend)
    folder = write_app(tmp_path, "scaled", WORKER.format(broken=str(broken)), settings)
    return Env(folder), broken


class Watch:
    """Health read at every wait's poll: the most loops seen, and every status and gate code seen."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.most = 0
        self.statuses: set[str] = set()
        self.restart_rates: set[float] = set()

    def read(self) -> HealthReport:
        report = self.service.status()
        self.most = max(self.most, len(report.worker_health))
        self.statuses.add(str(report.status))
        self.restart_rates.add(report.restart_rate)
        return report

    def until(self, what: str, condition: object, timeout: float = 60) -> None:
        wait_until(lambda: condition(self.read()), timeout, what)  # type: ignore[operator]


def events(env: Env, kind: str) -> list[dict[str, object]]:
    lines = (env.service_dir / "events.jsonl").read_text().splitlines()
    return [event for line in lines if (event := json.loads(line))["event"] == kind]


def test_a_burst_grows_the_loops_to_max_and_idle_shrinks_them_to_min_with_no_false_alarm(
    tmp_path: Path, services: Services
) -> None:
    env, _ = scaled_app(tmp_path)
    service = services.start(env)
    watch = Watch(service)
    assert watch.read().autoscale.current == 1

    handles = service.submit_many([{"args": {"seconds": 0.4, "value": n}} for n in range(40)])
    watch.until("four loops ready", lambda r: r.autoscale.current == 4 and r.workers_healthy_count == 4)
    _, gate = service.health()
    assert gate.passed, gate.reasons
    records = wait_for_records(service.queue, [h.task_id for h in handles], timeout=120)
    assert all(record.status == "done" for record in records.values())
    watch.until("back to min_loops", lambda r: r.autoscale.current == 1 and len(r.worker_health) == 1)

    assert watch.most == 4  # never above max_loops
    assert watch.restart_rates == {0.0} and not watch.statuses & {"degraded", "error"}
    decisions = events(env, "autoscale")
    assert [d["from"] for d in decisions[:1]] == [1] and decisions[-1]["to"] == 1
    assert "backlog" in str(decisions[0]["why"])
    last = watch.read().autoscale.last_decision
    assert last is not None and (last.from_loops, last.to_loops) == (decisions[-1]["from"], 1)
    metrics = to_prometheus(watch.read())
    assert 'keepwarm_service_loops_desired{app="scaled",namespace=' in metrics


def test_scaled_to_zero_a_task_starts_a_loop_and_idle_ends_it(tmp_path: Path, services: Services) -> None:
    env, _ = scaled_app(tmp_path, low=0, high=2, down=1.0)
    service = services.start(env)  # no loop to wait for
    watch = Watch(service)
    assert watch.read().autoscale.current == 0 and watch.read().status == "idle"

    assert service.submit({"value": "cold"}).result(timeout=60) == "cold"
    watch.until("back to zero loops", lambda r: r.autoscale.current == 0 and not r.worker_health)
    assert watch.restart_rates == {0.0} and not watch.statuses & {"degraded", "error"}
    assert service.submit({"value": "again"}).result(timeout=60) == "again"


def test_a_loop_failing_to_start_holds_growth_with_a_condition(tmp_path: Path, services: Services) -> None:
    env, broken = scaled_app(tmp_path)
    service = services.start(env)
    watch = Watch(service)
    broken.write_text("")
    pid = watch.read().worker_health[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # its next start fails, again and again
    service.submit_many([{"args": {"seconds": 0.1}} for _ in range(20)], queue_only=True)

    watch.until("the hold said", lambda r: r.condition(ConditionKind.AUTOSCALE_HELD) is not None)
    held_at = supervisor_state(env).timestamp
    watch.until("two seconds of supervisor ticks", lambda r: supervisor_state(env).timestamp > held_at + 2)
    assert watch.most == 1  # no runaway
    assert "fails to start" in str(watch.read().autoscale.held)

    broken.unlink()
    watch.until("growth once loops start", lambda r: r.autoscale.current > 1, timeout=60)


def test_scale_pins_the_count_and_auto_hands_it_back(tmp_path: Path, services: Services) -> None:
    env, _ = scaled_app(tmp_path, down=1.0)
    service = services.start(env)
    watch = Watch(service)
    paused = "paused at 3 loops until `keepwarm scale APP --auto`"
    assert service.scale(3) == {"from": 1, "to": 3, "autoscale": paused}
    watch.until("three loops", lambda r: r.workers_healthy_count == 3 and r.autoscale.pinned == 3)
    tick = supervisor_state(env).timestamp
    watch.until("idle ticks past the down delay", lambda r: supervisor_state(env).timestamp > tick + 2.5)
    assert watch.read().autoscale.current == 3  # idle, but pinned
    apps = str(env.app_dir.parent)
    shown = keepwarm_cli("status", "scaled", "--apps-path", apps)
    assert "autoscaling 1–4, pinned at 3 by keepwarm scale (--auto resumes), now 3" in shown.stdout

    resumed = keepwarm_cli("scale", "scaled", "--auto", "--apps-path", apps)
    assert resumed.stdout.strip() == "autoscaling on again, between 1 and 4 loops", resumed.stderr
    watch.until("back to min_loops", lambda r: r.autoscale.current == 1 and r.autoscale.pinned is None)
    assert (
        "autoscaling 1–4, now 1 (backlog 0, target 2 per loop)"
        in keepwarm_cli("status", "scaled", "--apps-path", apps).stdout
    )
    with pytest.raises(ValueError, match="exactly one of"):
        service.scale()


def test_a_pin_outlives_a_killed_supervisor(tmp_path: Path, services: Services) -> None:
    env, _ = scaled_app(tmp_path, down=1.0)
    service = services.start(env)
    service.scale(3)
    supervisor = supervisor_state(env).pid
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not pid_alive(supervisor), 30, "the supervisor gone")
    service.start()
    watch = Watch(service)
    watch.until("three loops again", lambda r: r.workers_healthy_count == 3 and r.autoscale.pinned == 3)
    tick = supervisor_state(env).timestamp
    watch.until("idle ticks past the down delay", lambda r: supervisor_state(env).timestamp > tick + 2)
    assert watch.read().autoscale.current == 3


def test_a_supervisor_killed_while_scaling_up_recovers_and_loses_nothing(
    tmp_path: Path, services: Services
) -> None:
    env, _ = scaled_app(tmp_path)
    service = services.start(env)
    watch = Watch(service)
    handles = service.submit_many([{"args": {"seconds": 0.3, "value": n}} for n in range(30)])
    watch.until("scaling up", lambda r: r.autoscale.current > 1)
    supervisor = supervisor_state(env).pid
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not pid_alive(supervisor), 30, "the supervisor gone")
    service.start()

    records = wait_for_records(service.queue, [h.task_id for h in handles], timeout=120)
    assert sorted(record.result for record in records.values()) == list(range(30))
    watch.until("back to min_loops", lambda r: r.autoscale.current == 1)


# ---------------------------------------------------------------------- on Dask


def dask_workers(address: str) -> int:
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        return len(client.scheduler_info(n_workers=-1)["workers"])


def test_on_dask_the_local_cluster_grows_and_shrinks_its_workers_with_the_loops(
    tmp_path: Path, services: Services
) -> None:
    env, _ = scaled_app(tmp_path, high=3, down=2, backend='backend = "dask"\nstart_timeout_sec = 60\n')
    service = services.start(env)
    kept = read_keeper(env.layout.cluster_keeper)
    assert kept is not None and dask_workers(kept[0]) == 1
    watch = Watch(service)

    handles = service.submit_many([{"args": {"seconds": 0.5, "value": n}} for n in range(40)])
    watch.until("three loops ready", lambda r: r.autoscale.current == 3 and r.workers_healthy_count == 3, 120)
    assert dask_workers(kept[0]) == 3  # Dask's own cluster.scale, in the keeper
    records = wait_for_records(service.queue, [h.task_id for h in handles], timeout=120)
    assert sorted(record.result for record in records.values()) == list(range(40))
    watch.until("one loop again", lambda r: r.autoscale.current == 1 and len(r.worker_health) == 1, 60)
    wait_until(lambda: dask_workers(kept[0]) == 1, 60, "the cluster back to one worker")
    assert watch.most == 3 and watch.restart_rates == {0.0}


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[DaskProcesses]:
    """A ``dask scheduler`` and two ``dask worker`` processes offering one loop place each."""
    processes = DaskProcesses(tmp_path)
    processes.start_scheduler()
    for _ in range(2):
        processes.start_worker()
    processes.wait_for_workers(2)
    yield processes
    processes.stop()


def test_on_a_joined_cluster_the_loops_stay_within_its_workers_and_health_says_why(
    tmp_path: Path, services: Services, two_workers: DaskProcesses
) -> None:
    joined = f'backend = "dask"\nscheduler = "{two_workers.address}"\nstart_timeout_sec = 60\n'
    env, _ = scaled_app(tmp_path, high=4, down=600, backend=joined)
    service = services.start(env)
    watch = Watch(service)

    service.submit_many([{"args": {"seconds": 0.5}} for _ in range(40)], queue_only=True)
    watch.until("the hold said", lambda r: r.condition(ConditionKind.AUTOSCALE_HELD) is not None, 60)
    assert "the cluster places 2 loops" in str(watch.read().autoscale.held)
    watch.until("two loops", lambda r: r.autoscale.current == 2 and r.workers_healthy_count == 2, 60)
    assert watch.most == 2
