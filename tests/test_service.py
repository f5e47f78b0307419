"""Service mode end to end: real supervisors, real loop processes, deadlines instead of sleeps."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keepwarm import AGI
from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError, ServiceAlreadyRunning, ServiceStartError, TaskFailed
from keepwarm.queue.results import wait_for_records
from keepwarm.service import lifecycle
from keepwarm.service.control import CancelArgs
from keepwarm.service.liveness import pid_alive

from .conftest import ROOT, Services, copy_app, supervisor_state, wait_until, write_app

KEEPWARM = Path(sys.executable).parent / "keepwarm"


def loop_pid(env: Env, slot: str) -> int:
    (row,) = [row for row in supervisor_state(env).loops if row.slot == slot]
    assert row.pid is not None
    return row.pid


def fast_flaky(tmp_path: Path, extra: str = "") -> Env:
    return Env(copy_app(tmp_path, "flaky", **{"[cluster]\n": f"[cluster]\nstop_timeout_sec = 5\n{extra}"}))


def test_start_returns_ready_and_a_second_start_is_refused(mycode_env: Env, services: Services) -> None:
    service = services.start(mycode_env)
    report = service.status()
    assert report.status == "idle"
    assert report.workers_healthy_count == 2 and report.workers_running_count == 2
    assert [row.worker for row in report.worker_health] == ["loop-0", "loop-1"]
    with pytest.raises(ServiceAlreadyRunning, match=r"keepwarm stop mycode_project") as refused:
        Service(mycode_env).start()
    assert f"pid {report.supervisor.pid}" in str(refused.value)
    assert service.submit({"x": 27}).result(timeout=30)["collatz_steps"] == 111
    assert service.status().status == "running"


def test_stop_from_another_process_waits_for_the_supervisor(mycode_env: Env, services: Services) -> None:
    service = services.start(mycode_env)
    supervisor = service.status().supervisor.pid
    stopped = subprocess.run(
        [str(KEEPWARM), "stop", "mycode_project", "--apps-path", str(ROOT / "examples" / "apps"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["status"] == "stopped"
    assert not pid_alive(supervisor)
    assert service.status().status == "stopped"
    assert not os.listdir(service.queue.heartbeats)
    again = service.stop()
    assert "already stopped" in again["message"]


def test_stop_cleans_up_when_the_supervisor_was_killed(tmp_path: Path, services: Services) -> None:
    env = fast_flaky(tmp_path)
    service = services.start(env)
    handle = service.submit({"action": "sleep", "seconds": 30})
    wait_until(lambda: service.queue.counts().running == 1, what="the task to be claimed")
    state = supervisor_state(env)
    os.kill(state.pid, signal.SIGKILL)
    wait_until(lambda: service.status().status == "error", what="status error after the supervisor died")
    outcome = service.stop(timeout=2)
    assert "was dead" in outcome["message"]
    assert all(not pid_alive(row.pid or 0) for row in state.loops)
    assert service.status().status == "stopped"
    assert service.queue.locate(handle.task_id).state == "pending"  # requeued, not lost


def test_killed_loop_is_replaced_and_every_result_arrives_once(tmp_path: Path, services: Services) -> None:
    env = fast_flaky(tmp_path)
    service = services.start(env)
    runs = tmp_path / "runs.txt"
    handles = service.submit_many(
        {"args": {"action": "sleep", "seconds": 0.02, "record_to": str(runs)}} for _ in range(150)
    )
    wait_until(lambda: runs.exists() and len(runs.read_text().splitlines()) > 20, what="work to flow")
    victim = loop_pid(env, "loop-0")
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: (row := supervisor_state(env).loops[0]).pid != victim and row.future_state == "running",
        timeout=2.0,
        what="loop-0 replaced within 2 s",
    )
    replaced_in = time.monotonic() - killed_at
    records = wait_for_records(service.queue, [h.task_id for h in handles], timeout=60)
    assert all(r.status == "done" for r in records.values())
    assert service.queue.counts().done == 150
    report = service.status()
    assert report.restart_reasons == {"loop-error": 1}
    assert "loop-0" in report.workers_restarted
    assert replaced_in < 2.0


def test_frozen_loop_is_found_stale_killed_and_replaced(tmp_path: Path, services: Services) -> None:
    env = fast_flaky(tmp_path)  # heartbeat every 0.2 s, timeout 2 s
    service = services.start(env)
    victim = loop_pid(env, "loop-1")
    os.kill(victim, signal.SIGSTOP)
    wait_until(lambda: loop_pid(env, "loop-1") != victim, timeout=15, what="the frozen loop to be replaced")
    reasons = service.status().restart_reasons
    assert list(reasons) == ["stale-heartbeat(2s)"] or next(iter(reasons)).startswith("stale-heartbeat(")
    assert not pid_alive(victim)


def test_task_past_its_timeout_fails_and_its_loop_is_replaced(tmp_path: Path, services: Services) -> None:
    env = fast_flaky(tmp_path)
    service = services.start(env)
    with pytest.raises(TaskFailed, match=r"task-timeout: ran past its timeout of 1.0s"):
        service.submit({"action": "hang"}, timeout_sec=1).result(timeout=30)
    wait_until(
        lambda: service.status().restart_reasons.get("task-timeout") == 1, what="the restart to be recorded"
    )
    assert service.submit({"value": 5}).result(timeout=30)["value"] == 5


def test_start_failure_shows_the_apps_own_error(tmp_path: Path, services: Services) -> None:
    env = Env(copy_app(tmp_path, "flaky", **{"[args]\n": "[args]\nfail_start = true\n"}))
    services.envs.append(env)
    with pytest.raises(ServiceStartError, match=r"start\(\) failed on purpose \(fail_start = true\)"):
        Service(env).start(timeout=30)
    report = Service(env).status()
    assert report.status == "error"
    assert any("fail_start = true" in condition for condition in report.conditions)
    assert "already stopped" in Service(env).stop()["message"]
    assert Service(env).status().status == "stopped"


def test_supervisor_crash_then_start_recovers_without_losing_tasks(
    tmp_path: Path, services: Services
) -> None:
    env = fast_flaky(tmp_path)
    service = services.start(env)
    handles = service.submit_many({"args": {"action": "sleep", "seconds": 0.05}} for _ in range(40))
    wait_until(lambda: service.queue.counts().done >= 5, what="some tasks done")
    state = supervisor_state(env)
    os.kill(state.pid, signal.SIGKILL)
    wait_until(lambda: service.status().status == "error", what="status error")
    service.start()
    records = wait_for_records(service.queue, [h.task_id for h in handles], timeout=60)
    assert sorted(r.status for r in records.values()) == ["done"] * 40
    assert service.status().status in ("running", "idle")


def test_concurrent_starts_yield_exactly_one_service(mycode_env: Env, services: Services) -> None:
    services.envs.append(mycode_env)
    command = [str(KEEPWARM), "start", "mycode_project", "--apps-path", str(ROOT / "examples" / "apps")]
    starters = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(5)
    ]
    outcomes = []
    for starter in starters:
        _, err = starter.communicate(timeout=60)
        outcomes.append((starter.returncode, err))
    assert sorted(code for code, _ in outcomes) == [0, 1, 1, 1, 1]
    for code, err in outcomes:
        if code == 1:
            assert "is running" in err and "keepwarm stop mycode_project" in err
    report = Service(mycode_env).status()
    assert report.workers_healthy_count == 2


def test_scale_drain_restart_and_rolling_restart(mycode_env: Env, services: Services) -> None:
    service = services.start(mycode_env)
    assert service.scale(3) == {"from": 2, "to": 3}
    wait_until(lambda: service.status().workers_healthy_count == 3, what="three healthy loops")
    before = {row.slot: row.incarnation for row in supervisor_state(mycode_env).loops}
    service.restart(rolling=True)
    wait_until(
        lambda: all(
            row.incarnation != before[row.slot] and row.future_state == "running"
            for row in supervisor_state(mycode_env).loops
        ),
        timeout=30,
        what="every loop restarted",
    )
    assert service.status().restart_rate == 0  # planned restarts are not crashes
    service.scale(1)
    wait_until(lambda: len(supervisor_state(mycode_env).loops) == 1, what="scaled down to one loop")
    # the loop table without a dropped slot is published before its heartbeat file goes
    wait_until(
        lambda: sorted(os.listdir(service.queue.heartbeats)) == ["loop-0.json"],
        what="the dropped loops' heartbeat files removed",
    )
    handles = [service.submit({"x": x}) for x in range(1, 30)]
    service.drain()
    wait_until(lambda: service.status().status == "stopped", timeout=30, what="drain to stop the service")
    assert all(h.done() for h in handles)


def test_cancel_a_running_task_and_retry_it(tmp_path: Path, services: Services) -> None:
    env = fast_flaky(tmp_path)
    service = services.start(env, slots=1)
    running = service.submit({"action": "sleep", "seconds": 30}, execution_id="run-1")
    queued = service.submit({"action": "sleep", "seconds": 30}, execution_id="run-1")
    other = service.submit({"value": 1}, execution_id="run-2")
    wait_until(lambda: service.queue.locate(running.task_id).state == "running", what="claim")
    assert sorted(service.cancel(execution_id="run-1")) == sorted([running.task_id, queued.task_id])
    assert running.record(timeout=30).status == "cancelled"
    assert queued.record(timeout=30).status == "cancelled"
    assert other.result(timeout=30)["value"] == 1
    assert service.retry([queued.task_id]) == [queued.task_id]
    assert service.queue.locate(queued.task_id).state in ("pending", "running")


def test_memory_limit_and_max_tasks_recycle_loops(tmp_path: Path, services: Services) -> None:
    env = fast_flaky(tmp_path, "max_tasks_per_loop = 3\n")
    service = services.start(env, slots=1)
    first = loop_pid(env, "loop-0")
    assert [service.submit({"value": i}).result(timeout=30)["value"] for i in range(5)] == list(range(5))
    wait_until(lambda: loop_pid(env, "loop-0") != first, what="the loop to be recycled")
    assert service.status().restart_reasons == {"recycled": 1}


def test_seed_end_to_end_example_runs_unchanged(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "seed" / "service_mode_end_to_end.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "START: idle"
    assert lines[1] == "STATUS: idle 2"
    assert lines[2] == "HEALTH: idle 0"
    assert lines[3] == "STOP: stopped"


def test_agi_serve_rejects_unknown_actions(mycode_env: Env) -> None:
    with pytest.raises(ValueError, match="valid actions: start, status, health, stop"):
        asyncio.run(AGI.serve(mycode_env, action="reboot"))


def test_agi_submit_queues_one_task_per_chunk(mycode_env: Env) -> None:
    queued = asyncio.run(
        AGI.submit(
            mycode_env,
            work_plan=[[[1, 2], [3]], [[4]]],
            work_plan_metadata=[["a", "b"], ["c"]],
            task_name="plan",
            queue_only=True,  # no service runs: the tasks wait for its next start
        )
    )
    assert queued["status"] == "queued" and len(queued["queued_files"]) == 3
    plans = [json.loads(Path(path).read_text())["plan"] for path in queued["queued_files"]]
    assert [(p["worker"], p["chunk"], p["items"], p["metadata"]) for p in plans] == [
        (0, 0, [1, 2], "a"),
        (0, 1, [3], "b"),
        (1, 0, [4], "c"),
    ]


def gate(env: Env, *flags: str) -> tuple[int, dict[str, object]]:
    """``keepwarm health APP --gate`` as an operator's monitor would run it."""
    completed = subprocess.run(
        [str(KEEPWARM), "health", str(env.app_dir), "--gate", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed.returncode, json.loads(completed.stdout)


def test_gate_exit_codes_follow_the_service(tmp_path: Path, services: Services) -> None:
    env = fast_flaky(tmp_path, "restart_backoff_sec = 60\nidle_after_sec = 1\n")
    assert gate(env)[0] == 3  # stopped
    service = services.start(env)
    code, document = gate(env)
    assert (code, document["status"]) == (4, "idle")
    assert gate(env, "--allow-idle")[0] == 0
    # a crash: replaced at once, but the restart rate (1 over 2 slots) passes max_restart_rate
    service.submit({"action": "crash", "only_attempt": 1}).result(timeout=30)
    wait_until(
        lambda: (
            sum(row.restarts for row in supervisor_state(env).loops) == 1
            and service.status().workers_healthy_count == 2
        ),
        what="the crashed loop replaced",
    )
    assert gate(env, "--allow-idle")[0] == 5
    assert gate(env, "--allow-idle", "--max-restart-rate", "1")[0] == 0
    # a second crash of the same slot waits for its back-off (60 s): one loop stays unhealthy
    (crashed,) = [row for row in supervisor_state(env).loops if row.restarts == 1]
    assert crashed.pid is not None
    os.kill(crashed.pid, signal.SIGKILL)
    wait_until(lambda: service.status().workers_unhealthy_count == 1, what="an unhealthy loop")
    assert [(r.worker, r.reason) for r in service.status().worker_health if r.reason] == [
        (crashed.slot, "loop-error")
    ]
    code, document = gate(env, "--allow-idle", "--max-restart-rate", "9")
    assert (code, document["status"]) == (2, "degraded")
    assert gate(env, "--allow-idle", "--max-restart-rate", "9", "--max-unhealthy", "1")[0] == 3
    # the supervisor records each change of the configured gate's verdict
    wait_until(lambda: 2 in [e["code"] for e in service.queue.events.read("gate")], what="gate events")
    assert next(e["code"] for e in service.queue.events.read("gate")) in (
        3,
        4,
    )  # error while starting, or idle


def test_gate_fails_on_an_old_pending_task(tmp_path: Path, services: Services) -> None:
    env = fast_flaky(tmp_path)
    service = services.start(env, slots=1)
    service.submit({"action": "sleep", "seconds": 20})
    service.submit({"value": 1})
    wait_until(
        lambda: (service.status().queue.oldest_pending_age_sec or 0) > 0.5, what="a pending task to age"
    )
    assert gate(env, "--max-pending-age", "0.5")[0] == 6
    assert gate(env, "--max-pending-age", "60")[0] == 0


def test_idle_after_the_idle_window(tmp_path: Path, services: Services) -> None:
    env = fast_flaky(tmp_path, "idle_after_sec = 1\n")
    service = services.start(env)
    assert service.status().status == "idle"
    service.submit({"value": 1}).result(timeout=30)
    assert service.status().status == "running"
    wait_until(lambda: service.status().status == "idle", timeout=10, what="idle after 1 s without work")


def test_retention_runs_in_the_supervisor_by_age_and_count(tmp_path: Path, services: Services) -> None:
    extra = "retention_interval_sec = 0.2\nretention_min_age_sec = 0\ndone_max_files = 5\n"
    env = fast_flaky(tmp_path, extra + "failed_ttl_hours = 0.0001\n")
    service = services.start(env)
    for handle in service.submit_many({"args": {"value": n}} for n in range(12)):
        handle.result(timeout=30)
    with pytest.raises(TaskFailed):
        service.submit({"action": "raise"}).result(timeout=30)
    wait_until(lambda: service.queue.counts().done == 5, timeout=15, what="done/ cut to 5 files")
    wait_until(lambda: service.queue.counts().failed == 0, timeout=15, what="failed/ past its TTL removed")
    assert sorted(os.listdir(service.queue.heartbeats)) == ["loop-0.json", "loop-1.json"]  # live ones kept


def test_a_cli_of_another_version_says_so(mycode_env: Env, services: Services) -> None:
    services.start(mycode_env)
    record_path = mycode_env.service_dir / "service.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps(record | {"version": "0.0.1"}))
    completed = subprocess.run(
        [str(KEEPWARM), "status", str(mycode_env.app_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0
    assert "started by keepwarm 0.0.1" in completed.stderr


def test_loops_die_with_their_supervisor(mycode_env: Env, services: Services) -> None:
    services.start(mycode_env)
    state = supervisor_state(mycode_env)
    os.kill(state.pid, signal.SIGKILL)
    wait_until(
        lambda: not any(pid_alive(row.pid or 0) for row in state.loops), timeout=10, what="loops to exit"
    )


def test_foreground_supervisor_serves_and_stops_on_sigterm(mycode_env: Env) -> None:
    command = [str(KEEPWARM), "start", str(mycode_env.app_dir), "--foreground"]
    supervisor = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        service = Service(mycode_env)
        wait_until(lambda: service.status().workers_healthy_count == 2, timeout=30, what="loops ready")
        assert service.status().supervisor.pid == supervisor.pid
        assert service.submit({"x": 12}).result(timeout=30)["prime_factors"] == [2, 2, 3]
        with pytest.raises(ServiceAlreadyRunning):
            service.start()
        supervisor.send_signal(signal.SIGTERM)
        _, err = supervisor.communicate(timeout=60)
        assert supervisor.returncode == 0, err
        assert "in the foreground" in err
        assert service.status().status == "stopped"
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.communicate()


def test_a_bad_command_argument_is_refused_and_the_supervisor_lives(
    mycode_env: Env, services: Services
) -> None:
    service = services.start(mycode_env)
    with pytest.raises(KeepwarmError, match="is not a task id"):
        lifecycle.command(mycode_env, CancelArgs(task_ids=["../x"]))
    assert service.status().supervisor.alive
    # Service.cancel does not send an id that cannot name a task: it is "not found", as anywhere.
    assert service.cancel(["../x"]).not_cancelled == {"../x": "not found"}
    assert service.submit({"x": 3}).result(timeout=30)["x"] == 3


def test_a_live_cancellers_claim_folder_is_waited_for_never_killed(
    tmp_path: Path, services: Services
) -> None:
    env = Env(copy_app(tmp_path, "mycode_project", **{"[cluster]\n": "[cluster]\nstop_timeout_sec = 0.3\n"}))
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        queue = Service(env).queue.ensure()
        folder = queue.owner_dir("_cancel", f"{bystander.pid}-1")
        folder.mkdir()
        began = time.time()
        service = services.start(env)
        wait_until(
            lambda: supervisor_state(env).timestamp > began + 1.5, what="the supervisor to run past 0.3 s"
        )
        assert bystander.poll() is None
        folder.rmdir()
        assert service.submit({"x": 5}).result(timeout=30)["x"] == 5
    finally:
        bystander.kill()
        bystander.wait()


ASYNC_SLEEPER = """
import asyncio, os

class Worker:
    async def start(self):
        pass

    async def work(self, item):
        await asyncio.sleep(item.args["seconds"])
        return {"pid": os.getpid()}

    async def stop(self):
        pass
"""


def test_cancel_of_a_running_async_task_leaves_its_loop_and_neighbours_alone(
    tmp_path: Path, services: Services
) -> None:
    app = write_app(tmp_path, "sleeper", ASYNC_SLEEPER, "[cluster]\nslots = 1\nconcurrency = 2\n")
    env = Env(app)
    service = services.start(env)
    pid = loop_pid(env, "loop-0")
    doomed = service.submit({"seconds": 30})
    neighbour = service.submit({"seconds": 1.5})
    wait_until(lambda: service.queue.counts().running == 2, what="both tasks running in the one loop")
    assert service.cancel([doomed.task_id]) == [doomed.task_id]
    record = doomed.record(timeout=10)
    assert (record.status, record.error) == ("cancelled", "cancelled while running")
    assert neighbour.result(timeout=30)["pid"] == pid
    assert loop_pid(env, "loop-0") == pid
    assert service.status().restart_reasons == {}


# ---------------------------------------------------------------------- planned changes never alarm


class Monitor:
    """An operator's monitor: ``Service.health(allow_idle=True)`` every 10 ms (the report and gate the
    CLI prints), and ``keepwarm health --gate --allow-idle`` as fast as the CLI answers, each in a thread.
    """

    def __init__(self, service: Service) -> None:
        import threading

        self.service = service
        self.samples = 0
        self.alarms: list[str] = []
        self.gate_codes: list[int] = []
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._poll), threading.Thread(target=self._probe)]

    def __enter__(self) -> Monitor:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join()

    def _poll(self) -> None:
        while not self._done.wait(0.01):
            report, verdict = self.service.health(allow_idle=True)
            self.samples += 1
            reasons = [f"{row.worker}: {row.reason}" for row in report.worker_health if row.reason]
            if report.status not in ("running", "idle") or reasons or not verdict.passed:
                self.alarms.append(f"{report.status} {reasons} gate {verdict.code} {verdict.reasons}")

    def _probe(self) -> None:
        command = [str(KEEPWARM), "health", str(self.service.env.app_dir), "--gate", "--allow-idle"]
        while not self._done.is_set():
            probe = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
            self.gate_codes.append(probe.returncode)


def test_planned_restarts_scaling_recycling_and_cancels_never_read_as_unplanned(
    tmp_path: Path, services: Services
) -> None:
    env = Env(
        copy_app(
            tmp_path,
            "flaky",
            **{"heartbeat_timeout_sec = 2\n": "heartbeat_timeout_sec = 10\nmax_tasks_per_loop = 4\n"},
        )
    )
    service = services.start(env)

    def incarnations() -> dict[str, str]:
        return {row.slot: row.incarnation for row in supervisor_state(env).loops}

    def settled(before: dict[str, str], slots: int, changed: set[str]) -> bool:
        report = service.status()
        now = incarnations()
        return report.workers_healthy_count == slots == len(now) and all(
            now[slot] != before.get(slot) for slot in changed
        )

    with Monitor(service) as monitor:
        before = incarnations()
        service.restart("loop-1")
        wait_until(lambda: settled(before, 2, {"loop-1"}), timeout=30, what="loop-1 restarted")
        before = incarnations()
        service.restart(rolling=True)
        wait_until(lambda: settled(before, 2, {"loop-0", "loop-1"}), timeout=30, what="a rolling restart")
        before = incarnations()
        service.scale(3)
        wait_until(lambda: settled(before, 3, {"loop-2"}), timeout=30, what="a scale up to 3")
        service.scale(1)
        wait_until(lambda: settled(before, 1, set()), timeout=30, what="a scale down to 1")
        before = incarnations()
        for value in range(5):  # the fourth task recycles the loop (max_tasks_per_loop = 4)
            assert service.submit({"value": value}).result(timeout=30)["value"] == value
        wait_until(lambda: settled(before, 1, {"loop-0"}), timeout=30, what="the loop recycled")
        before = incarnations()
        running = service.submit({"action": "sleep", "seconds": 30})
        wait_until(lambda: service.queue.locate(running.task_id).state == "running", what="a claim")
        service.cancel([running.task_id])  # a synchronous task: its loop is restarted
        wait_until(lambda: settled(before, 1, {"loop-0"}), timeout=30, what="the cancelled task's loop back")
        wait_until(lambda: len(monitor.gate_codes) >= 3, timeout=60, what="a few CLI gate probes")

    assert monitor.samples > 100
    assert monitor.alarms == []
    assert set(monitor.gate_codes) == {0}
    reasons = service.status().restart_reasons
    assert set(reasons) <= {"operator-restart", "rolling-restart", "recycled", "loop-cancelled"}, reasons
    assert service.status().restart_rate == 0


def test_status_text_shows_why_loops_restart_and_fail_to_start(tmp_path: Path, services: Services) -> None:
    env = fast_flaky(tmp_path, "restart_backoff_sec = 0.2\n")
    service = services.start(env)
    settings = env.settings_path  # from now on every loop's start() raises: a crash loop in start()
    settings.write_text(settings.read_text().replace("[args]\n", "[args]\nfail_start = true\n"))
    for row in supervisor_state(env).loops:
        os.kill(row.pid or 0, signal.SIGKILL)
    error = "start failed: RuntimeError: flaky: start() failed on purpose (fail_start = true)"
    wait_until(
        lambda: (
            (report := service.status()).status == "error"
            and [(r.reason, r.last_reason, r.start_error) for r in report.worker_health]
            == [("loop-error", "loop-error", error)] * 2
        ),
        timeout=30,
        what="both loops crash-looping in start()",
    )
    completed = subprocess.run(
        [str(KEEPWARM), "status", str(env.app_dir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith("flaky (") and ": error · loops 0 healthy, 2 unhealthy" in lines[0]
    assert f"reason: no loop is healthy: loop-0 loop-error ({error}); loop-1 loop-error ({error})" in lines
    header = next(line for line in lines if line.startswith("worker ")).split()
    assert header[-2:] == ["last_reason", "forked"]
    table_rows = [line for line in lines if line.startswith("loop-") and " start error:" not in line]
    assert [line.split()[-2:] for line in table_rows] == [["loop-error", "False"]] * 2
    assert f"loop-0 start error: {error}" in lines and f"loop-1 start error: {error}" in lines


def test_python_and_agi_submit_refuse_a_stopped_service_unless_queue_only(
    mycode_env: Env, services: Services
) -> None:
    """One rule on every surface (issue 13, 2.6): Service.submit (and submit_many, submit_jsonl,
    asubmit) and AGI.submit refuse when no service runs, naming the way out, as `keepwarm submit`
    and MCP's submit_task do; queue_only=True queues for the next start."""
    from collections.abc import Callable

    from keepwarm.errors import ServiceNotRunning

    service = Service(mycode_env)
    refusals: list[Callable[[], object]] = [
        lambda: service.submit({"x": 6}),
        lambda: service.submit_many([{"args": {"x": 6}}]),
        lambda: service.submit_jsonl('{"args": {"x": 6}}\n'),
        lambda: asyncio.run(service.asubmit({"x": 6})),
        lambda: asyncio.run(AGI.submit(mycode_env, work_plan=[[[1], [2]]], args={"x": 6})),
    ]
    for refused in refusals:
        with pytest.raises(ServiceNotRunning) as failure:
            refused()
        assert str(failure.value) == (
            "service 'mycode_project' is not running; queue the tasks for its next start with "
            "--queue-only (queue_only=True), or start it: keepwarm start mycode_project"
        )
    assert service.counts().pending == 0  # nothing was queued

    early = service.submit({"x": 6}, queue_only=True)
    queued = asyncio.run(AGI.submit(mycode_env, work_plan=[[[1], [2]]], args={"x": 12}, queue_only=True))
    assert queued["status"] == "queued" and service.counts().pending == 3

    services.start(mycode_env, slots=1)
    assert early.result(timeout=30)["prime_factors"] == [2, 3]  # queued for this start, served by it
    assert [service.result(task_id, timeout=30)["x"] for task_id in queued["task_ids"]] == [12, 12]
    assert service.submit({"x": 27}).result(timeout=30)["collatz_steps"] == 111  # running: no flag needed
    (handle,) = service.submit_many([{"args": {"x": 5}}])
    assert handle.result(timeout=30)["x"] == 5
    running = asyncio.run(AGI.submit(mycode_env, args={"x": 7}))
    assert service.result(running["task_ids"][0], timeout=30)["x"] == 7
