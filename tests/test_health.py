"""Service health from files alone: status words, loop reasons, restart rate, the SLA gate, exports.

Each test writes the state files a supervisor and its loops would write (with the real models) into a
real service folder under the test's share, then evaluates at a fixed ``now``: no processes, no sleeps.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from keepwarm import __version__
from keepwarm.env import Env
from keepwarm.queue.state import (
    Condition,
    ConditionKind,
    FutureState,
    LoopRow,
    RestartEntry,
    RestartReason,
    ServiceRecord,
    ServiceStatus,
    SupervisorIdentity,
    SupervisorState,
    is_planned,
    read_service_record,
    read_supervisor_state,
    stale_heartbeat,
    write_state,
)
from keepwarm.queue.taskfiles import pending_name
from keepwarm.runtime.heartbeat import Heartbeat, HeartbeatState
from keepwarm.service.exports import SNAPSHOT_FILE, operator_snapshot, to_prometheus, write_snapshot
from keepwarm.service.gate import GateCode, GateResult, GateThresholds, evaluate_gate
from keepwarm.service.health import evaluate_health
from keepwarm.service.liveness import (
    SupervisorLiveness,
    current_supervisor_state,
    live_supervisor_state,
    supervisor_liveness,
)
from keepwarm.service.metrics import GAUGES, ServicesCollector, render, service_families
from keepwarm.service.report import HEALTH_SCHEMA, HealthReport
from keepwarm.settings_sections import ServiceHealthSettings

from .conftest import queue_of

NOW = 1_900_000_000.0
HOST = socket.gethostname()
SUPERVISOR = "sup-1"
DEFAULT_GATE = GateThresholds()


# ---------------------------------------------------------------------- building the files


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def write_service(
    env: Env,
    *,
    desired: str = "running",
    slots: int = 2,
    pid: int | None = None,
    host: str = HOST,
    settings: dict[str, object] | None = None,
) -> None:
    record = ServiceRecord.model_validate(
        {
            "app": env.app_target,
            "namespace": env.namespace,
            "desired": desired,
            "slots": slots,
            "supervisor": SupervisorIdentity(
                pid=os.getpid() if pid is None else pid,
                host=host,
                incarnation=SUPERVISOR,
                started_at=iso(NOW - 3600),
            ).model_dump(),
            "started_at": iso(NOW - 3600),
            "settings": settings or {},
            "version": __version__,
        }
    )
    env.service_dir.mkdir(parents=True, exist_ok=True)
    write_state(env.service_dir / "service.json", record)


def loop_row(
    slot: str,
    *,
    started_at: float = NOW - 600,
    future_state: FutureState = "running",
    unhealthy_reason: str | None = None,
    restarts: int = 0,
    pid: int = 4242,
) -> LoopRow:
    return LoopRow(
        slot=slot,
        incarnation=f"{slot}-a",
        pid=pid,
        host=HOST,
        future_state=future_state,
        started_at=started_at,
        restarts=restarts,
        unhealthy_reason=unhealthy_reason,
    )


def write_supervisor(
    env: Env,
    loops: Iterable[LoopRow],
    *,
    slots: int = 2,
    pid: int | None = None,
    host: str = HOST,
    age: float = 0.5,
    restarts: Iterable[RestartEntry] = (),
    conditions: Iterable[str] = (),
    last_task_at: float | None = None,
) -> None:
    state = SupervisorState.model_validate(
        {
            "pid": os.getpid() if pid is None else pid,
            "host": host,
            "incarnation": SUPERVISOR,
            "timestamp": NOW - age,
            "desired_slots": slots,
            "loops": [row.model_dump() for row in loops],
            "restarts": [entry.model_dump() for entry in restarts],
            "conditions": list(conditions),
            "last_task_at": last_task_at,
            "version": __version__,
        }
    )
    env.service_dir.mkdir(parents=True, exist_ok=True)
    write_state(env.service_dir / "supervisor.json", state)


def write_heartbeat(
    env: Env,
    slot: str,
    *,
    age: float = 0.5,
    state: HeartbeatState = "ready",
    incarnation: str | None = None,
    task_id: str | None = None,
    task_age: float | None = None,
) -> None:
    beat = Heartbeat(
        slot=slot,
        incarnation=incarnation or f"{slot}-a",
        pid=4242,
        host=HOST,
        state=state,
        timestamp=iso(NOW - age),
        task_id=task_id,
        task_started_at=iso(NOW - task_age) if task_age is not None else None,
    )
    queue = queue_of(env)
    (queue.heartbeats / f"{slot}.json").write_text(beat.model_dump_json())


def healthy_service(
    env: Env,
    slots: int = 2,
    *,
    pid: int | None = None,
    age: float = 0.5,
    restarts: Iterable[RestartEntry] = (),
    conditions: Iterable[str] = (),
    last_task_at: float | None = None,
) -> None:
    """A running service whose every loop has a fresh ``ready`` heartbeat."""
    write_service(env, slots=slots)
    rows = [loop_row(f"loop-{n}") for n in range(slots)]
    write_supervisor(
        env,
        rows,
        slots=slots,
        pid=pid,
        age=age,
        restarts=restarts,
        conditions=conditions,
        last_task_at=last_task_at,
    )
    for row in rows:
        write_heartbeat(env, row.slot)


def add_pending(env: Env, count: int, age: float) -> None:
    """``count`` pending task files, the oldest submitted ``age`` seconds before NOW (names only)."""
    queue = queue_of(env)
    first = int((NOW - age) * 1e9)
    for n in range(count):
        (queue.pending / pending_name(first + n, f"t{n}")).touch()


def restart(slot: str, ago: float, reason: str = "loop-error") -> RestartEntry:
    return RestartEntry(slot=slot, at=NOW - ago, reason=reason, incarnation=f"{slot}-old")


@pytest.fixture
def dead_pid() -> int:
    """A pid that surely names no process: a child that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def row_of(report: HealthReport, worker: str) -> dict[str, object]:
    return next(r.model_dump() for r in report.worker_health if r.worker == worker)


# ---------------------------------------------------------------------- status words


def test_no_service_file_means_stopped(mycode_env: Env) -> None:
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "stopped"
    assert report.worker_health == [] and report.workers_healthy_count == 0
    assert report.supervisor.alive is False
    assert report.queue.pending == 0 and report.queue.oldest_pending_age_sec is None


def test_desired_stopped_without_a_live_supervisor_is_stopped_and_ignores_its_old_table(
    mycode_env: Env, dead_pid: int
) -> None:
    write_service(mycode_env, desired="stopped", pid=dead_pid)
    write_supervisor(
        mycode_env,
        [loop_row("loop-0"), loop_row("loop-1")],
        pid=dead_pid,
        age=900,
        restarts=[restart("loop-0", 60)],
        conditions=["storage-readonly"],
    )
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "stopped"
    assert report.worker_health == []
    assert report.restart_rate == 0 and report.conditions == []
    assert report.supervisor.pid == dead_pid and report.supervisor.alive is False


def test_healthy_loops_with_pending_work_are_running(mycode_env: Env) -> None:
    healthy_service(mycode_env)
    add_pending(mycode_env, 3, age=5)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "running"
    assert report.workers_healthy == ["loop-0", "loop-1"] and report.workers_healthy_count == 2
    assert report.workers_running == ["loop-0", "loop-1"] and report.workers_running_count == 2
    assert report.workers_unhealthy == [] and report.workers_pending == []
    assert report.supervisor.alive is True and report.supervisor.heartbeat_age_sec == 0.5
    assert report.queue.pending == 3
    assert report.queue.oldest_pending_age_sec == pytest.approx(5, abs=0.01)


def test_a_task_finished_within_idle_after_keeps_it_running_and_then_it_is_idle(mycode_env: Env) -> None:
    healthy_service(mycode_env, last_task_at=NOW - 299)
    assert evaluate_health(mycode_env, now=NOW).status == "running"
    healthy_service(mycode_env, last_task_at=NOW - 301)
    assert evaluate_health(mycode_env, now=NOW).status == "idle"
    healthy_service(mycode_env)
    assert evaluate_health(mycode_env, now=NOW).status == "idle"


def test_a_loop_processing_a_task_counts_as_work(mycode_env: Env) -> None:
    healthy_service(mycode_env)
    write_heartbeat(mycode_env, "loop-1", state="processing", task_id="t-7", task_age=12.5)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "running"
    row = row_of(report, "loop-1")
    assert row["task_id"] == "t-7" and row["task_age_sec"] == 12.5
    assert row["heartbeat_state"] == "processing" and row["healthy"] is True


def test_one_unhealthy_and_one_healthy_loop_is_degraded_with_the_supervisors_reason(mycode_env: Env) -> None:
    write_service(mycode_env)
    write_supervisor(
        mycode_env,
        [loop_row("loop-0"), loop_row("loop-1", unhealthy_reason="memory-limit", restarts=2)],
    )
    write_heartbeat(mycode_env, "loop-0")
    write_heartbeat(mycode_env, "loop-1")  # fresh, but the supervisor knows better
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "degraded"
    assert report.workers_unhealthy == ["loop-1"] and report.workers_unhealthy_count == 1
    assert report.workers_healthy == ["loop-0"]
    row = row_of(report, "loop-1")
    assert row["healthy"] is False and row["reason"] == "memory-limit" and row["restarts"] == 2


def test_no_healthy_loop_is_error(mycode_env: Env) -> None:
    write_service(mycode_env)
    write_supervisor(
        mycode_env,
        [
            loop_row("loop-0", future_state="error", unhealthy_reason="loop-error"),
            loop_row("loop-1", future_state="finished"),
        ],
    )
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "error"
    assert [row_of(report, s)["reason"] for s in ("loop-0", "loop-1")] == ["loop-error", "loop-finished"]
    assert report.supervisor.alive is True


def test_a_dead_supervisor_is_error_even_with_fresh_loops(mycode_env: Env, dead_pid: int) -> None:
    healthy_service(mycode_env)
    write_service(mycode_env, pid=dead_pid)
    write_supervisor(mycode_env, [loop_row("loop-0"), loop_row("loop-1")], pid=dead_pid)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "error"
    assert report.supervisor.alive is False and report.supervisor.pid == dead_pid
    assert "supervisor-dead" in report.conditions


def test_a_silent_supervisor_is_error_though_its_pid_exists(mycode_env: Env) -> None:
    healthy_service(mycode_env, age=10.5)  # this test's own pid: alive, but silent past 10 s
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "error"
    assert report.supervisor.alive is False and report.supervisor.heartbeat_age_sec == 10.5
    assert "supervisor-silent" in report.conditions
    healthy_service(mycode_env, age=9.5)
    assert evaluate_health(mycode_env, now=NOW).supervisor.alive is True


def test_a_supervisor_on_another_host_is_judged_by_its_heartbeat_alone(
    mycode_env: Env, dead_pid: int
) -> None:
    other = HOST + "-elsewhere"
    healthy_service(mycode_env)
    write_service(mycode_env, pid=dead_pid, host=other)
    write_supervisor(mycode_env, [loop_row("loop-0"), loop_row("loop-1")], pid=dead_pid, host=other)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.supervisor.alive is True and report.supervisor.host == other
    write_supervisor(mycode_env, [loop_row("loop-0"), loop_row("loop-1")], pid=dead_pid, host=other, age=30)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.supervisor.alive is False and report.status == "error"
    assert "supervisor-silent" in report.conditions


def test_supervisor_silence_allows_three_heartbeat_intervals_of_the_settings_in_effect(
    mycode_env: Env,
) -> None:
    healthy_service(mycode_env, age=14)
    started_with = mycode_env.settings.model_dump(mode="json")
    started_with["cluster"] |= {"heartbeat_interval_sec": 5, "heartbeat_timeout_sec": 10}
    write_service(mycode_env, settings=started_with)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.supervisor.alive is True  # max(10, 3 x 5) = 15 s
    assert report.heartbeat_timeout_sec == 10


def test_the_supervisors_own_conditions_are_reported(mycode_env: Env) -> None:
    healthy_service(mycode_env, conditions=["storage-readonly"])
    assert evaluate_health(mycode_env, now=NOW).conditions == ["storage-readonly"]


# ---------------------------------------------------------------------- loop reasons


def test_a_loop_without_heartbeat_is_pending_within_its_grace_then_missing(mycode_env: Env) -> None:
    write_service(mycode_env)
    write_supervisor(mycode_env, [loop_row("loop-0"), loop_row("loop-1", started_at=NOW - 9)])
    write_heartbeat(mycode_env, "loop-0")
    report = evaluate_health(mycode_env, now=NOW)
    assert report.workers_pending == ["loop-1"] and report.workers_pending_count == 1
    assert report.workers_unhealthy == []
    row = row_of(report, "loop-1")
    assert row["healthy"] is False and row["reason"] is None and row["heartbeat_age_sec"] is None
    assert report.status == "degraded"  # one loop is not serving yet

    report = evaluate_health(mycode_env, now=NOW + 2)  # 11 s after its start: grace over
    assert report.workers_pending == [] and report.workers_unhealthy == ["loop-1"]
    assert row_of(report, "loop-1")["reason"] == "missing-heartbeat"


def test_every_loop_still_in_its_grace_is_reported_as_starting(mycode_env: Env) -> None:
    write_service(mycode_env)
    write_supervisor(
        mycode_env, [loop_row("loop-0", started_at=NOW - 1), loop_row("loop-1", started_at=NOW - 1)]
    )
    report = evaluate_health(mycode_env, now=NOW)
    assert report.workers_pending_count == 2 and report.workers_unhealthy_count == 0
    assert report.status == "error" and "loops-starting" in report.conditions


def test_a_heartbeat_of_an_earlier_incarnation_counts_as_missing(mycode_env: Env) -> None:
    healthy_service(mycode_env)
    write_heartbeat(mycode_env, "loop-1", incarnation="loop-1-previous")
    row = row_of(evaluate_health(mycode_env, now=NOW), "loop-1")
    assert row["reason"] == "missing-heartbeat" and row["heartbeat_state"] is None


def test_a_loading_loop_is_pending_while_its_starting_heartbeat_is_fresh(mycode_env: Env) -> None:
    write_service(mycode_env)
    write_supervisor(mycode_env, [loop_row("loop-0"), loop_row("loop-1", started_at=NOW - 5)])
    write_heartbeat(mycode_env, "loop-0")
    write_heartbeat(mycode_env, "loop-1", state="starting", age=0.2)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.workers_pending == ["loop-1"] and report.workers_unhealthy == []
    assert row_of(report, "loop-1")["heartbeat_state"] == "starting"

    # a slow start() (a model loading) past the grace: still pending while its heartbeat is fresh
    write_heartbeat(mycode_env, "loop-0", age=-60)
    write_heartbeat(mycode_env, "loop-1", state="starting", age=0.2 - 60)
    report = evaluate_health(mycode_env, now=NOW + 60)
    assert report.workers_pending == ["loop-1"] and report.workers_unhealthy == []

    # no heartbeat of this incarnation at all past the grace: missing
    (mycode_env.queue_dir / "heartbeats" / "loop-1.json").unlink()
    write_heartbeat(mycode_env, "loop-0", age=-6)
    report = evaluate_health(mycode_env, now=NOW + 6)
    assert report.workers_unhealthy == ["loop-1"]
    assert row_of(report, "loop-1")["reason"] == "missing-heartbeat"


def test_a_stale_heartbeat_names_its_age_in_whole_seconds(mycode_env: Env) -> None:
    healthy_service(mycode_env)
    write_heartbeat(mycode_env, "loop-0", age=42.7)
    report = evaluate_health(mycode_env, now=NOW)
    row = row_of(report, "loop-0")
    assert row["reason"] == "stale-heartbeat(42s)" and row["heartbeat_age_sec"] == 42.7
    assert report.status == "degraded"
    write_heartbeat(mycode_env, "loop-0", age=10.0)  # exactly the timeout is not stale yet
    assert row_of(evaluate_health(mycode_env, now=NOW), "loop-0")["healthy"] is True


def test_a_loop_that_ended_without_a_supervisor_reason_gets_its_future_states_reason(mycode_env: Env) -> None:
    write_service(mycode_env, slots=3)
    write_supervisor(
        mycode_env,
        [loop_row("loop-0"), loop_row("loop-1", future_state="cancelled"), loop_row("loop-2")],
        slots=3,
    )
    write_heartbeat(mycode_env, "loop-0")
    write_heartbeat(mycode_env, "loop-1")
    write_heartbeat(mycode_env, "loop-2", state="stopped")
    report = evaluate_health(mycode_env, now=NOW)
    assert row_of(report, "loop-1")["reason"] == "loop-cancelled"
    assert row_of(report, "loop-2")["reason"] == "loop-finished"


def test_worker_rows_carry_the_loop_table_and_heartbeat_details(mycode_env: Env) -> None:
    write_service(mycode_env, slots=11)
    rows = [loop_row(f"loop-{n}", restarts=n, pid=1000 + n) for n in (10, 2, 0)]
    write_supervisor(mycode_env, rows, slots=11)
    for row in rows:
        write_heartbeat(mycode_env, row.slot, age=1.25)
    report = evaluate_health(mycode_env, now=NOW)
    assert [r.worker for r in report.worker_health] == ["loop-0", "loop-2", "loop-10"]
    assert row_of(report, "loop-10") == {
        "worker": "loop-10",
        "healthy": True,
        "reason": None,
        "future_state": "running",
        "heartbeat_state": "ready",
        "heartbeat_age_sec": 1.25,
        "incarnation": "loop-10-a",
        "pid": 1010,
        "host": HOST,
        "restarts": 10,
        "task_id": None,
        "task_age_sec": None,
        "last_reason": None,
        "start_error": None,
        "planned": None,
        "forked": False,  # spawned: [cluster] preload is off
    }


# ---------------------------------------------------------------------- restarts


def test_restart_rate_is_restarts_within_the_window_per_slot(mycode_env: Env) -> None:
    ledger = [
        restart("loop-0", 30, "loop-error"),
        restart("loop-0", 1800, "stale-heartbeat(12s)"),
        restart("loop-1", 3599, "loop-error"),
        restart("loop-1", 3601, "loop-error"),  # outside the hour
        restart("loop-1", 86_400, "memory-limit"),  # long ago
    ]
    healthy_service(mycode_env, restarts=ledger)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.restart_rate == 1.5  # 3 restarts over 2 slots
    assert report.restart_reasons == {"loop-error": 2, "stale-heartbeat(12s)": 1}
    assert report.workers_restarted == ["loop-0", "loop-1"] and report.workers_restarted_count == 2

    report = evaluate_health(mycode_env, now=NOW + 1801)  # only the newest is still in the window
    assert report.restart_rate == 0.5 and report.workers_restarted == ["loop-0"]


# ---------------------------------------------------------------------- planned changes


def planned_row(slot: str, planned: str, **fields: object) -> LoopRow:
    return loop_row(slot).model_copy(update={"planned": planned, **fields})


def test_a_loop_that_exits_for_a_planned_restart_is_pending_never_finished(mycode_env: Env) -> None:
    write_service(mycode_env)
    # Ordered to restart; it has exited (its heartbeat says so) before the supervisor reaped it.
    write_supervisor(mycode_env, [loop_row("loop-0"), planned_row("loop-1", "operator-restart")])
    write_heartbeat(mycode_env, "loop-0")
    write_heartbeat(mycode_env, "loop-1", state="stopped", age=30)
    report = evaluate_health(mycode_env, now=NOW)
    row = row_of(report, "loop-1")
    assert (row["healthy"], row["reason"], row["planned"]) == (False, None, "operator-restart")
    assert report.workers_pending == ["loop-1"] and report.workers_unhealthy == []
    assert report.status == "idle" and report.status_reason is None and report.conditions == []
    assert evaluate_gate(report, GateThresholds(allow_idle=True)).passed


def test_a_reaped_planned_restart_and_its_next_incarnation_are_pending(mycode_env: Env) -> None:
    write_service(mycode_env)
    reaped = planned_row("loop-1", "rolling-restart", future_state="finished", last_reason="rolling-restart")
    write_supervisor(mycode_env, [loop_row("loop-0"), reaped])
    write_heartbeat(mycode_env, "loop-0")
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "idle" and report.workers_pending == ["loop-1"]
    assert row_of(report, "loop-1")["last_reason"] == "rolling-restart"

    respawned = planned_row(
        "loop-1", "rolling-restart", incarnation="loop-1-b", future_state="pending", started_at=NOW - 1
    )
    write_supervisor(mycode_env, [loop_row("loop-0"), respawned])
    assert evaluate_health(mycode_env, now=NOW).status == "idle"
    # A planned restart whose new incarnation never says ready is unhealthy after the grace, as any start.
    write_supervisor(mycode_env, [loop_row("loop-0"), respawned.model_copy(update={"started_at": NOW - 11})])
    late = evaluate_health(mycode_env, now=NOW)
    assert row_of(late, "loop-1")["reason"] == "missing-heartbeat" and late.status == "degraded"


def test_the_only_loop_in_a_planned_restart_is_not_an_error(mycode_env: Env) -> None:
    write_service(mycode_env, slots=1)
    only = planned_row("loop-0", "operator-restart", future_state="finished")
    write_supervisor(mycode_env, [only], slots=1)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "idle" and report.workers_healthy == [] and report.workers_pending == ["loop-0"]


def test_new_slots_of_a_scale_up_do_not_degrade_the_service(mycode_env: Env) -> None:
    write_service(mycode_env, slots=3)
    new = planned_row("loop-2", "scale-up", incarnation="-", future_state="pending", started_at=NOW - 0.1)
    write_supervisor(mycode_env, [loop_row("loop-0"), loop_row("loop-1"), new], slots=3)
    write_heartbeat(mycode_env, "loop-0")
    write_heartbeat(mycode_env, "loop-1")
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "idle" and report.workers_pending == ["loop-2"]
    assert "loops-starting" not in report.conditions


def test_a_loop_that_recycles_itself_is_planned_before_the_supervisor_reaps_it(mycode_env: Env) -> None:
    healthy_service(mycode_env)
    beat = Heartbeat(
        slot="loop-0",
        incarnation="loop-0-a",
        pid=4242,
        host=HOST,
        state="stopped",
        timestamp=iso(NOW - 0.1),
        stop_reason="max-tasks",
    )
    (queue_of(mycode_env).heartbeats / "loop-0.json").write_text(beat.model_dump_json())
    report = evaluate_health(mycode_env, now=NOW)
    assert row_of(report, "loop-0")["planned"] == "recycled" and report.status == "idle"


def test_an_unplanned_exit_during_a_planned_change_is_still_unhealthy(mycode_env: Env) -> None:
    write_service(mycode_env)
    crashed = planned_row("loop-1", "scale-up").model_copy(update={"planned": None})
    write_supervisor(mycode_env, [loop_row("loop-0"), crashed.model_copy(update={"future_state": "error"})])
    write_heartbeat(mycode_env, "loop-0")
    report = evaluate_health(mycode_env, now=NOW)
    assert row_of(report, "loop-1")["reason"] == "loop-error" and report.status == "degraded"
    assert report.status_reason == "1 of 2 loops not healthy: loop-1 loop-error"


# ---------------------------------------------------------------------- why: reasons and start errors


def test_loops_crash_looping_in_start_name_their_start_error_and_the_service_why(mycode_env: Env) -> None:
    error = "start failed: RuntimeError: no GPU"
    write_service(mycode_env)
    rows = [
        loop_row(slot, future_state="error", unhealthy_reason="loop-error", restarts=4).model_copy(
            update={"last_reason": "loop-error", "start_error": error}
        )
        for slot in ("loop-0", "loop-1")
    ]
    write_supervisor(mycode_env, rows)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "error"
    assert [(r.last_reason, r.start_error) for r in report.worker_health] == [("loop-error", error)] * 2
    assert report.status_reason == (
        f"no loop is healthy: loop-0 loop-error ({error}); loop-1 loop-error ({error})"
    )


def test_a_start_error_shows_as_soon_as_the_loops_heartbeat_says_so(mycode_env: Env) -> None:
    healthy_service(mycode_env)
    beat = Heartbeat(
        slot="loop-1",
        incarnation="loop-1-a",
        pid=4242,
        host=HOST,
        state="stopped",
        timestamp=iso(NOW - 0.1),
        error="start failed: ValueError: bad model path",
    )
    (queue_of(mycode_env).heartbeats / "loop-1.json").write_text(beat.model_dump_json())
    row = row_of(evaluate_health(mycode_env, now=NOW), "loop-1")
    assert (row["reason"], row["start_error"]) == ("loop-error", "start failed: ValueError: bad model path")


def test_the_status_reason_names_a_dead_supervisor_and_a_failed_start(mycode_env: Env, dead_pid: int) -> None:
    healthy_service(mycode_env)
    write_service(mycode_env, pid=dead_pid)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status_reason == (
        f"the supervisor (pid {dead_pid} on {HOST}) is dead; "
        "keepwarm start mycode_project recovers the service"
    )
    path = mycode_env.service_dir / "service.json"
    record = ServiceRecord.model_validate_json(path.read_bytes())
    error = "loop loop-0: start failed: boom"
    write_state(path, record.model_copy(update={"desired": "stopped", "start_error": error}))
    assert evaluate_health(mycode_env, now=NOW).status_reason == f"start failed: {error}"


# ---------------------------------------------------------------------- the report


def test_the_report_has_exactly_the_v1_fields_and_keepwarms_additions(mycode_env: Env) -> None:
    healthy_service(mycode_env)
    data = evaluate_health(mycode_env, now=NOW).to_json_dict()
    lists = [
        "workers_running",
        "workers_pending",
        "workers_restarted",
        "workers_healthy",
        "workers_unhealthy",
    ]
    assert set(data) == {
        "schema", "timestamp", "app", "target", "namespace", "status", "backend",
        *lists, *(f"{name}_count" for name in lists),
        "restart_reasons", "restart_rate", "conditions", "queue", "heartbeat_timeout_sec",
        "queue_dir", "cleanup", "worker_health", "supervisor", "version",
        "status_reason",  # keepwarm's addition: why the status is error or degraded
        "autoscale",  # keepwarm's addition: off, or what the autoscaler decided (docs/autoscaling.md)
        "template",  # keepwarm's addition: the preloaded template, or null (docs/warm-start.md)
    }  # fmt: skip
    assert data["template"] is None
    assert data["autoscale"]["enabled"] is False
    assert data["schema"] == HEALTH_SCHEMA and data["version"] == __version__
    assert data["timestamp"] == iso(NOW) and data["timestamp"].endswith("Z")
    assert data["app"] == data["target"] == "mycode_project"
    assert data["backend"] == "local" and data["heartbeat_timeout_sec"] == 10
    assert data["queue_dir"] == str(mycode_env.queue_dir)
    assert set(data["queue"]) == {"pending", "running", "done", "failed", "oldest_pending_age_sec"}
    assert data["cleanup"] == {
        "done_ttl_hours": 168,
        "done_max_files": 2000,
        "failed_ttl_hours": 336,
        "failed_max_files": 2000,
        "heartbeat_ttl_hours": 24,
        "heartbeat_max_files": 1000,
        "retention_min_age_sec": 600,
    }
    assert set(data["supervisor"]) == {"pid", "host", "incarnation", "alive", "heartbeat_age_sec"}
    assert data["supervisor"]["incarnation"] == SUPERVISOR
    assert HealthReport.model_validate(data) == evaluate_health(mycode_env, now=NOW)


def test_queue_counts_come_from_listings_even_for_10000_pending_files(mycode_env: Env) -> None:
    healthy_service(mycode_env)
    add_pending(mycode_env, 10_000, age=120)  # empty files: a report that opened one would fail on it
    queue = queue_of(mycode_env)
    owner = queue.owner_dir("loop-0", "loop-0-a")
    owner.mkdir()
    (owner / pending_name(1, "r1")).touch()
    (queue.done / "d1.task.json").touch()
    (queue.failed / "f1.task.json").touch()
    (queue.failed / "bad.task.pkl.rejection.txt").touch()
    report = evaluate_health(mycode_env, now=NOW)
    assert (report.queue.pending, report.queue.running, report.queue.done, report.queue.failed) == (
        10_000,
        1,
        1,
        1,
    )
    assert report.queue.oldest_pending_age_sec == pytest.approx(120, abs=0.01)


# ---------------------------------------------------------------------- the gate


def gate(report: HealthReport, **overrides: object) -> GateResult:
    return evaluate_gate(report, GateThresholds.model_validate(overrides))


def test_gate_codes_are_designs_exit_codes() -> None:
    assert {code.name: int(code) for code in GateCode} == {
        "PASSED": 0,
        "CHECK_FAILED": 1,
        "UNHEALTHY": 2,
        "STATUS": 3,
        "IDLE": 4,
        "RESTART_RATE": 5,
        "PENDING_AGE": 6,
    }


def test_the_gate_passes_a_running_service(mycode_env: Env) -> None:
    healthy_service(mycode_env, last_task_at=NOW - 1)
    result = gate(evaluate_health(mycode_env, now=NOW))
    assert (result.code, result.passed, result.reasons) == (0, True, [])


def test_gate_2_unhealthy_over_the_limit_comes_before_the_status(mycode_env: Env) -> None:
    healthy_service(mycode_env)
    write_heartbeat(mycode_env, "loop-1", age=30)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "degraded"
    result = gate(report)
    assert result.code == 2 and not result.passed
    assert "loop-1 (stale-heartbeat(30s))" in result.reasons[0]
    assert result.reasons[1] == "status is degraded"


def test_gate_3_for_degraded_error_and_stopped(mycode_env: Env, dead_pid: int) -> None:
    healthy_service(mycode_env)
    write_heartbeat(mycode_env, "loop-1", age=30)
    assert gate(evaluate_health(mycode_env, now=NOW), max_unhealthy=1).code == 3

    healthy_service(mycode_env, pid=dead_pid)
    write_service(mycode_env, pid=dead_pid)
    result = gate(evaluate_health(mycode_env, now=NOW))
    assert result.code == 3 and result.reasons == ["status is error (supervisor-dead)"]

    write_service(mycode_env, desired="stopped", pid=dead_pid)
    result = gate(evaluate_health(mycode_env, now=NOW))
    assert result.code == 3 and result.reasons == ["status is stopped"]


def test_gate_4_idle_unless_idle_is_allowed(mycode_env: Env) -> None:
    healthy_service(mycode_env)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "idle"
    assert gate(report).code == 4
    assert gate(report, allow_idle=True).code == 0


def test_gate_5_restart_rate_over_the_limit(mycode_env: Env) -> None:
    healthy_service(mycode_env, last_task_at=NOW - 1, restarts=[restart("loop-0", 10)])
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "running" and report.restart_rate == 0.5
    result = gate(report)
    assert result.code == 5
    assert result.reasons == ["restart rate 0.5 per slot over max_restart_rate = 0.25"]
    assert gate(report, max_restart_rate=0.5).code == 0


def test_gate_6_oldest_pending_task_too_old_only_when_a_limit_is_set(mycode_env: Env) -> None:
    healthy_service(mycode_env)
    add_pending(mycode_env, 2, age=120)
    report = evaluate_health(mycode_env, now=NOW)
    assert report.status == "running"
    assert gate(report).code == 0  # no max_pending_age_sec by default
    result = gate(report, max_pending_age_sec=60)
    assert result.code == 6
    assert result.reasons == ["oldest pending task waited 120s, over max_pending_age_sec = 60"]
    assert gate(report, max_pending_age_sec=180).code == 0


def test_gate_checks_in_designs_order(mycode_env: Env) -> None:
    healthy_service(mycode_env, restarts=[restart("loop-0", 10)] * 3)
    add_pending(mycode_env, 1, age=120)
    busy = evaluate_health(mycode_env, now=NOW)
    idle_and_unhealthy = busy.model_copy(update={"status": "idle", "workers_unhealthy_count": 1})
    assert gate(idle_and_unhealthy).code == 2
    idle = busy.model_copy(update={"status": "idle"})
    assert gate(idle, max_pending_age_sec=60).code == 4
    result = gate(idle, allow_idle=True, max_pending_age_sec=60)
    assert result.code == 5 and len(result.reasons) == 2
    assert gate(idle, allow_idle=True, max_restart_rate=2, max_pending_age_sec=60).code == 6


def test_thresholds_come_from_the_settings_with_per_call_overrides() -> None:
    section = ServiceHealthSettings(allow_idle=True, max_unhealthy=1, max_pending_age_sec=30)
    assert GateThresholds.from_settings(section) == GateThresholds(
        allow_idle=True, max_unhealthy=1, max_restart_rate=0.25, max_pending_age_sec=30
    )
    overridden = GateThresholds.from_settings(section, allow_idle=False, max_restart_rate=1.0)
    assert overridden.allow_idle is False and overridden.max_restart_rate == 1.0
    assert overridden.max_unhealthy == 1 and overridden.max_pending_age_sec == 30


# ---------------------------------------------------------------------- exports

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_exposition(text: str) -> Samples:
    """Parse Prometheus text with prometheus_client's own parser; samples keyed by name and labels.

    Also asserts what that parser lets through: a family declared once, keepwarm's as gauges, no twin sample.
    """
    families = list(text_string_to_metric_families(text))
    # The parser merges a family declared twice in a row, so count the declarations themselves.
    declared = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(declared) == len(set(declared)) == len(families), f"a family is declared twice: {declared}"
    samples: Samples = {}
    for family in families:
        assert family.type == "gauge" or not family.name.startswith("keepwarm_"), family
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate sample {sample}"
            samples[key] = sample.value
    return samples


def test_prometheus_text_is_valid_exposition_with_every_metric(mycode_env: Env) -> None:
    healthy_service(mycode_env, restarts=[restart("loop-0", 5)] * 3)
    write_heartbeat(mycode_env, "loop-1", age=42.7)
    add_pending(mycode_env, 4, age=90)
    report = evaluate_health(mycode_env, now=NOW)
    result = evaluate_gate(report, DEFAULT_GATE)
    samples = parse_exposition(to_prometheus(report, result))
    ns = mycode_env.namespace

    def value(name: str, **labels: str) -> float:
        key = frozenset({"app": "mycode_project", "namespace": ns, **labels}.items())
        return samples[(f"keepwarm_service_{name}", key)]

    assert value("up") == 1
    assert {
        word: value("status", status=word) for word in ("running", "idle", "degraded", "error", "stopped")
    } == {
        "running": 0,
        "idle": 0,
        "degraded": 1,
        "error": 0,
        "stopped": 0,
    }
    assert (value("workers_healthy"), value("workers_unhealthy"), value("workers_pending")) == (1, 1, 0)
    assert value("restart_rate") == 1.5
    assert (value("queue_pending"), value("queue_running"), value("queue_done"), value("queue_failed")) == (
        4,
        0,
        0,
        0,
    )
    assert value("oldest_pending_age_seconds") == pytest.approx(90, abs=0.01)
    assert value("supervisor_heartbeat_age_seconds") == 0.5
    assert value("heartbeat_age_seconds", worker="loop-0") == 0.5
    assert value("heartbeat_age_seconds", worker="loop-1") == 42.7
    assert value("gate_code") == 2
    assert all(name.startswith("keepwarm_service_") for name, _ in samples)


def test_prometheus_text_of_a_stopped_service_says_down_and_escapes_labels(mycode_env: Env) -> None:
    namespace = 'team "a"\\b\nc'
    report = evaluate_health(mycode_env, now=NOW).model_copy(update={"namespace": namespace})
    text = to_prometheus(report)
    samples = parse_exposition(text)
    assert 'namespace="team \\"a\\"\\\\b\\nc"' in text
    assert {dict(labels)["namespace"] for _, labels in samples} == {namespace}
    assert "keepwarm_service_gate_code" not in text
    up = [v for (name, _), v in samples.items() if name == "keepwarm_service_up"]
    assert up == [0]
    assert not [name for name, _ in samples if name in ("keepwarm_service_heartbeat_age_seconds",)]
    assert "# TYPE keepwarm_service_heartbeat_age_seconds gauge" in text  # declared, with no sample


def test_two_services_render_as_one_family_each_with_both_services_samples(mycode_env: Env) -> None:
    stopped = evaluate_health(mycode_env, now=NOW)
    healthy_service(mycode_env)
    running = evaluate_health(mycode_env, now=NOW).model_copy(update={"app": "second_app"})
    gate = evaluate_gate(running, DEFAULT_GATE)
    text = render(service_families([(stopped, None), (running, gate)]))
    samples = parse_exposition(text)  # fails on a family declared twice
    ns = mycode_env.namespace

    def by_app(name: str, **labels: str) -> dict[str, float]:
        return {
            dict(key)["app"]: value
            for (metric, key), value in samples.items()
            if metric == f"keepwarm_service_{name}" and labels.items() <= dict(key).items()
        }

    every = {f"keepwarm_service_{gauge.name}" for gauge in GAUGES}
    assert {name for name, _ in samples} == every - {"keepwarm_service_loops_desired"}  # no autoscaling
    assert by_app("up") == {"mycode_project": 0, "second_app": 1}
    assert by_app("status", status="stopped") == {"mycode_project": 1, "second_app": 0}
    assert by_app("workers_healthy") == {"mycode_project": 0, "second_app": 2}
    assert by_app("heartbeat_age_seconds", worker="loop-1") == {"second_app": 0.5}
    assert by_app("gate_code") == {"second_app": gate.code}  # only the service given with a verdict
    assert {dict(key)["namespace"] for _, key in samples} == {ns}
    assert text.count("# TYPE keepwarm_service_up gauge") == 1


def test_services_collector_reads_the_services_at_each_scrape_and_claims_its_names(mycode_env: Env) -> None:
    reports: list[HealthReport] = [evaluate_health(mycode_env, now=NOW)]
    registry = CollectorRegistry()
    registry.register(ServicesCollector(lambda: [(report, None) for report in reports]))
    requests = Counter("http_requests", "requests served", registry=registry)
    requests.inc()

    def scrape() -> Samples:
        return parse_exposition(generate_latest(registry).decode())

    assert (
        scrape()[
            (
                "keepwarm_service_up",
                frozenset({"app": "mycode_project", "namespace": mycode_env.namespace}.items()),
            )
        ]
        == 0
    )
    healthy_service(mycode_env)
    reports.append(evaluate_health(mycode_env, now=NOW).model_copy(update={"app": "second_app"}))
    ups = {
        dict(labels)["app"]: value
        for (name, labels), value in scrape().items()
        if name == "keepwarm_service_up"
    }
    assert ups == {"mycode_project": 0, "second_app": 1}
    with pytest.raises(ValueError, match="keepwarm_service_up"):
        Gauge("keepwarm_service_up", "a second definition", registry=registry)


def test_operator_snapshot_summarises_rows_and_thresholds(mycode_env: Env) -> None:
    write_service(mycode_env, slots=5)
    rows = [
        loop_row("loop-0"),
        loop_row("loop-1"),
        loop_row("loop-2"),
        loop_row("loop-3", unhealthy_reason="task-timeout"),
        loop_row("loop-4", unhealthy_reason="recycled"),
    ]
    write_supervisor(mycode_env, rows, slots=5)
    write_heartbeat(mycode_env, "loop-0", age=2)
    write_heartbeat(mycode_env, "loop-1", age=25)
    write_heartbeat(mycode_env, "loop-3", age=3)
    write_heartbeat(mycode_env, "loop-4", age=1)
    report = evaluate_health(mycode_env, now=NOW)
    thresholds = GateThresholds(allow_idle=True, max_pending_age_sec=60)
    snapshot = operator_snapshot(report, thresholds).to_json_dict()
    assert snapshot["status"] == "degraded"
    assert snapshot["app"] == "mycode_project" and snapshot["namespace"] == mycode_env.namespace
    assert snapshot["timestamp"] == iso(NOW)
    assert snapshot["thresholds"] == {
        "allow_idle": True,
        "max_unhealthy": 0,
        "max_restart_rate": 0.25,
        "max_pending_age_sec": 60,
    }
    assert snapshot["summary"] == {
        "tracked": 5,
        "healthy": 1,
        "unhealthy": 4,
        "late": 1,
        "missing": 1,
        "max_heartbeat_age_sec": 25,
        "example_reasons": ["stale-heartbeat(25s)", "missing-heartbeat", "task-timeout"],
    }
    assert [row["worker"] for row in snapshot["worker_health"]] == [f"loop-{n}" for n in range(5)]


def test_write_snapshot_publishes_the_file_in_the_log_dir(mycode_env: Env, tmp_path: Path) -> None:
    healthy_service(mycode_env)
    path = write_snapshot(mycode_env, now=NOW)
    assert path == tmp_path / "logs" / "mycode_project" / SNAPSHOT_FILE
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    data = json.loads(path.read_text())
    assert data["status"] == "idle" and data["summary"]["tracked"] == 2
    assert data["thresholds"] == GateThresholds().model_dump()  # the app's [cluster.service_health]
    report = evaluate_health(mycode_env, now=NOW)
    assert write_snapshot(mycode_env, report, GateThresholds(max_unhealthy=3)) == path
    assert json.loads(path.read_text())["thresholds"]["max_unhealthy"] == 3


# ---------------------------------------------------------------------- keepwarm health --output

KEEPWARM = Path(sys.executable).parent / "keepwarm"


def keepwarm_health(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KEEPWARM), "health", str(env.app_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_health_output_creates_missing_folders(mycode_env: Env, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "dir" / "h.json"
    completed = keepwarm_health(mycode_env, "--output", str(target))
    assert completed.returncode == 0, completed.stderr
    assert json.loads(target.read_text()) == json.loads(completed.stdout)
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700


def test_health_output_that_cannot_be_written_is_one_error_line(mycode_env: Env, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    completed = keepwarm_health(mycode_env, "--output", str(blocker / "h.json"))
    assert completed.returncode == 1
    assert completed.stderr == (
        f"error: cannot write the health report to {blocker / 'h.json'} ({blocker}: Not a directory); "
        "give a path in a folder you can write\n"
    )
    assert blocker.read_text() == "not a folder"


# ---------------------------------------------------------------------- the vocabulary


def test_a_restart_reason_knows_whether_it_was_planned() -> None:
    planned = {"recycled", "memory-limit", "operator-restart", "rolling-restart", "scale-down", "scale-up"}
    planned |= {"stop", "loop-cancelled"}
    assert {str(reason) for reason in RestartReason if reason.planned} == planned
    assert not RestartReason.LOOP_ERROR.planned and not RestartReason.WORKER_LOST.planned
    assert is_planned("recycled") and not is_planned("loop-error")
    assert not is_planned("no-such-reason") and not is_planned(None)


def test_a_stale_heartbeat_is_the_member_plus_its_age_written_as_before() -> None:
    assert stale_heartbeat(42.7) == "stale-heartbeat(42s)"
    assert RestartReason.parse("stale-heartbeat(42s)") is RestartReason.STALE_HEARTBEAT
    assert RestartReason.parse("missing-heartbeat") is RestartReason.MISSING_HEARTBEAT
    assert RestartReason.parse("no-such-reason") is None
    assert not is_planned(stale_heartbeat(3))


def test_service_status_words_and_which_of_them_serve() -> None:
    assert [str(word) for word in ServiceStatus] == ["running", "idle", "degraded", "error", "stopped"]
    assert [word.serving for word in ServiceStatus] == [True, True, True, False, False]


@pytest.mark.parametrize(
    ("text", "kind", "detail"),
    [
        ("storage: the share holding /q is full", ConditionKind.STORAGE, "the share holding /q is full"),
        ("cluster: scheduler tcp://h:8786 unreachable: timeout", ConditionKind.CLUSTER, None),
        ("app: settings changed since start: [cluster] slots: 2 -> 3", ConditionKind.APP, None),
        ("supervisor-dead", ConditionKind.SUPERVISOR_DEAD, None),
        ("loops-starting", ConditionKind.LOOPS_STARTING, None),
        ("start-failed: boom", ConditionKind.START_FAILED, "boom"),
        ("storage-readonly", ConditionKind.OTHER, "storage-readonly"),  # not this keepwarm's word
    ],
)
def test_a_condition_is_read_by_kind_and_written_back_as_it_was(
    text: str, kind: ConditionKind, detail: str | None
) -> None:
    condition = Condition.parse(text)
    assert condition.kind is kind and str(condition) == text
    if detail is not None or kind in (ConditionKind.SUPERVISOR_DEAD, ConditionKind.LOOPS_STARTING):
        assert condition.detail == detail


def test_the_report_finds_a_condition_by_kind(mycode_env: Env) -> None:
    healthy_service(mycode_env, conditions=["cluster: scheduler unreachable", "storage-readonly"])
    report = evaluate_health(mycode_env, now=NOW)
    assert report.condition(ConditionKind.CLUSTER) == Condition(
        ConditionKind.CLUSTER, "scheduler unreachable"
    )
    assert report.condition(ConditionKind.APP) is None
    assert report.status == "error" and report.status_reason == "cluster: scheduler unreachable"


# ---------------------------------------------------------------------- supervisor liveness


def test_supervisor_liveness_is_a_fresh_heartbeat_and_a_live_pid(mycode_env: Env, dead_pid: int) -> None:
    def liveness() -> SupervisorLiveness:
        service = mycode_env.service_dir
        record = read_service_record(service / "service.json")
        return supervisor_liveness(
            mycode_env, record, read_supervisor_state(service / "supervisor.json"), now=NOW
        )

    assert supervisor_liveness(mycode_env, None, None, now=NOW) == SupervisorLiveness()
    healthy_service(mycode_env)
    assert liveness().alive and liveness().pid_exists is True
    healthy_service(mycode_env, age=60)  # its pid lives (this test), its heartbeat does not
    assert not liveness().alive and liveness().pid_exists is True and not liveness().fresh
    write_service(mycode_env, pid=dead_pid)
    write_supervisor(mycode_env, [], pid=dead_pid)  # a fresh heartbeat of a process that is gone
    assert not liveness().alive and liveness().pid_exists is False
    write_service(mycode_env, pid=dead_pid, host=HOST + "-elsewhere")
    write_supervisor(mycode_env, [], pid=dead_pid, host=HOST + "-elsewhere")
    assert liveness().alive and liveness().pid_exists is None  # another host: the heartbeat alone


def test_a_supervisor_json_of_another_incarnation_is_not_its_heartbeat(mycode_env: Env) -> None:
    healthy_service(mycode_env)
    record = read_service_record(mycode_env.service_dir / "service.json")
    state = read_supervisor_state(mycode_env.service_dir / "supervisor.json")
    assert record is not None and state is not None
    older = state.model_copy(update={"incarnation": "sup-0"})
    assert current_supervisor_state(record, older) is None
    # Judged by its start instead (an hour ago): not fresh.
    assert supervisor_liveness(mycode_env, record, older, now=NOW).heartbeat_age_sec is None
    assert not supervisor_liveness(mycode_env, record, older, now=NOW).alive


def test_a_live_supervisor_state_needs_a_service_meant_to_run_and_a_live_supervisor(
    mycode_env: Env, dead_pid: int
) -> None:
    assert live_supervisor_state(mycode_env, now=NOW) is None  # no service
    healthy_service(mycode_env)
    live = live_supervisor_state(mycode_env, now=NOW)
    assert live is not None and live.incarnation == SUPERVISOR
    healthy_service(mycode_env, age=60)
    assert live_supervisor_state(mycode_env, now=NOW) is None  # its pid lives, its heartbeat is stale
    healthy_service(mycode_env)
    write_service(mycode_env, desired="stopped")
    assert live_supervisor_state(mycode_env, now=NOW) is None  # stopping: not meant to run
