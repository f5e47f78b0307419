"""Warm starts: loops forked from a template process that ran the worker's ``preload()`` once.

Real supervisors, templates and forked loops; every process is found through /proc and checked gone
(or never a zombie) by its pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from keepwarm._sys.procs import child_pids, process_alive, process_state
from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.queue.state import read_supervisor_state
from keepwarm.runtime.template import FORKED_LOOP_NAME

from .chaos.harness import ChaosPlan, chaos_app, run_chaos
from .conftest import Services, supervisor_state, wait_until, write_app

KEEPWARM = Path(sys.executable).parent / "keepwarm"

WORKER = """
import os
import random
import threading
import time

PRELOADED = {}
VERSION = 1


class Worker:
    def preload(self):
        time.sleep(float(os.environ.get("PRELOAD_SLEEP", 0)))
        PRELOADED["pid"] = os.getpid()
        PRELOADED["table"] = list(range(10_000))
        if os.environ.get("PRELOAD_THREAD"):
            threading.Thread(target=time.sleep, args=(60,), name="preload-sleeper", daemon=True).start()

    def start(self):
        self.start_pid = os.getpid()

    def orphan(self):
        # A daemon double-forked, as some libraries do: orphaned at once, it exits 0.3 s later.
        read_end, write_end = os.pipe()
        middle = os.fork()
        if middle == 0:
            pid = os.fork()
            if pid == 0:
                time.sleep(0.3)
                os._exit(0)
            os.write(write_end, str(pid).encode())
            os._exit(0)
        os.waitpid(middle, 0)
        os.close(write_end)
        return int(os.read(read_end, 32))

    def work(self, item):
        if item.args.get("orphan"):
            return {"orphan": self.orphan()}
        time.sleep(item.args.get("seconds", 0))
        return {
            "preload_pid": PRELOADED.get("pid"),
            "start_pid": self.start_pid,
            "pid": os.getpid(),
            "table": len(PRELOADED.get("table", ())),
            "random": random.random(),
            "version": VERSION,
        }
"""

SETTINGS = "[cluster]\nstop_timeout_sec = 5\nrestart_backoff_sec = 0.1\nheartbeat_interval_sec = 0.2\n"


def preload_env(tmp_path: Path, name: str = "warm") -> Env:
    return Env(write_app(tmp_path, name, WORKER, SETTINGS))


def run_cli(verb: str, env: Env) -> str:
    """``keepwarm VERB APP`` for the app's folder; its output (it must succeed)."""
    done = subprocess.run(
        [str(KEEPWARM), verb, str(env.app_dir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def template_pid(supervisor: int) -> int | None:
    """The supervisor's template child (forked loops share its command line, not its name)."""
    found = [
        pid
        for pid in child_pids(supervisor)
        if "keepwarm.runtime.template" in command_line(pid) and process_name(pid) != FORKED_LOOP_NAME
    ]
    alive = [pid for pid in found if process_state(pid) not in (None, "Z")]
    return alive[0] if alive else None


def loop_pids(env: Env) -> dict[str, int]:
    return {row.slot: row.pid for row in supervisor_state(env).loops if row.pid is not None}


def served(service: Service, count: int, seconds: float = 0.0) -> list[dict[str, Any]]:
    handles = service.submit_many({"args": {"seconds": seconds}} for _ in range(count))
    return [handle.result(timeout=30) for handle in handles]


def no_zombie_children(supervisor: int) -> bool:
    return all(process_state(pid) != "Z" for pid in child_pids(supervisor))


def test_forked_loops_serve_are_replaced_by_forks_and_outlive_a_killed_template(
    tmp_path: Path, services: Services
) -> None:
    env = preload_env(tmp_path)
    service = services.start(env, slots=2)
    supervisor = supervisor_state(env).pid
    template = template_pid(supervisor)
    assert template is not None, f"no template among the supervisor's children {child_pids(supervisor)}"
    loops = loop_pids(env)
    assert set(loops.values()) <= set(child_pids(supervisor)), "forked loops are the supervisor's children"
    assert {process_name(pid) for pid in loops.values()} == {FORKED_LOOP_NAME}
    assert f"(pid {loops['loop-0']}, forked)" in service.supervisor_log.read_text()
    rows = supervisor_state(env).loops
    assert all(process_alive(row.pid, row.incarnation) for row in rows), "incarnations on command lines"
    wait_until(lambda: service.status().template is not None, what="the template in the status report")
    report = service.status()
    assert [row.forked for row in report.worker_health] == [True, True]
    shown_template = report.template
    assert shown_template is not None and (shown_template.state, shown_template.pid) == ("ready", template)
    assert shown_template.preload_sec is not None and shown_template.preload_sec > 0
    shown = run_cli("status", env)
    assert f"template ready (pid {template}), preload " in shown and "new loops are forked" in shown

    results = served(service, 8, seconds=0.05)
    assert {r["preload_pid"] for r in results} == {template}, "preload() ran once, in the template"
    assert all(r["start_pid"] == r["pid"] != template for r in results), "start() ran in each loop"
    assert all(r["table"] == 10_000 for r in results)
    assert {r["pid"] for r in results} <= set(loops.values())
    by_loop: dict[int, set[float]] = {}
    for r in results:
        by_loop.setdefault(r["pid"], set()).add(r["random"])
    assert len(by_loop) == 2, "both loops served (8 tasks of 50 ms)"
    first, second = by_loop.values()
    assert not first & second, "two forked loops drew the same random numbers"

    victim = loops["loop-0"]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: loop_pids(env)["loop-0"] != victim, what="loop-0 replaced")
    wait_until(lambda: process_state(victim) is None, what="the killed loop reaped, not a zombie")
    replacement = loop_pids(env)["loop-0"]
    assert template_pid(supervisor) == template
    assert replacement in child_pids(supervisor)

    os.kill(template, signal.SIGKILL)
    wait_until(
        lambda: template_pid(supervisor) not in (None, template), what="a new template for the killed one"
    )
    new_template = template_pid(supervisor)
    assert new_template is not None
    assert process_state(template) is None, "the killed template was reaped"
    results = served(service, 4)
    assert {r["preload_pid"] for r in results} == {template}, "loops forked earlier still serve"
    assert {r["pid"] for r in results} <= {replacement, loops["loop-1"]}

    os.kill(replacement, signal.SIGKILL)
    wait_until(lambda: loop_pids(env)["loop-0"] != replacement, what="loop-0 replaced again")
    newest = loop_pids(env)["loop-0"]
    wait_until(lambda: service.status().workers_healthy_count == 2, what="both loops ready")
    os.kill(loops["loop-1"], signal.SIGSTOP)  # only the newest loop serves now
    try:
        (result,) = served(service, 1)
    finally:
        os.kill(loops["loop-1"], signal.SIGCONT)
    assert result["pid"] == newest and result["preload_pid"] == new_template
    assert no_zombie_children(supervisor) and no_zombie_children(new_template), "intermediates reaped"
    events = service.queue.events
    assert [(e["pid"], e["starts"]) for e in events.read("template-started")] == [
        (template, 1),
        (new_template, 2),
    ]
    ready = events.read("template-ready")
    assert [e["pid"] for e in ready] == [template, new_template] and all(e["preload_sec"] > 0 for e in ready)

    everyone = [supervisor, new_template, *loop_pids(env).values()]
    service.stop(timeout=30)
    wait_until(
        lambda: not any(process_alive(pid) for pid in everyone), what="every process of the service gone"
    )


def test_scaling_up_forks_and_a_killed_supervisor_takes_its_template_and_loops_with_it(
    tmp_path: Path, services: Services
) -> None:
    env = preload_env(tmp_path)
    service = services.start(env, slots=1)
    service.scale(2)
    wait_until(lambda: service.status().workers_healthy_count == 2, what="the second loop ready")
    supervisor = supervisor_state(env).pid
    assert {process_name(pid) for pid in loop_pids(env).values()} == {FORKED_LOOP_NAME}
    everyone = [supervisor, template_pid(supervisor), *loop_pids(env).values()]
    assert None not in everyone and len(everyone) == 4
    os.kill(supervisor, signal.SIGKILL)
    wait_until(
        lambda: not any(process_alive(pid) for pid in everyone if pid is not None),
        what="the template and loops to exit with their supervisor",
    )


def test_the_autoscaler_scales_up_by_forking(tmp_path: Path, services: Services) -> None:
    autoscale = (
        "[cluster.autoscale]\nenabled = true\nmin_loops = 1\nmax_loops = 3\ntarget_pending_per_loop = 2\n"
    )
    env = Env(write_app(tmp_path, "burst", WORKER, SETTINGS + autoscale))
    service = services.start(env, slots=1)
    handles = service.submit_many({"args": {"seconds": 0.2}} for _ in range(30))
    wait_until(lambda: len(loop_pids(env)) == 3, timeout=20, what="the autoscaler to grow to 3 loops")
    wait_until(lambda: service.status().workers_healthy_count == 3, timeout=20, what="3 loops ready")
    assert [row.forked for row in service.status().worker_health] == [True, True, True]
    assert {process_name(pid) for pid in loop_pids(env).values()} == {FORKED_LOOP_NAME}
    assert all(handle.result(timeout=60)["table"] == 10_000 for handle in handles)
    (grown, *_) = service.queue.events.read("autoscale")
    assert grown["from"] == 1 and grown["to"] > 1


def test_a_preload_that_leaves_a_thread_is_refused_and_loops_spawn_cold(
    tmp_path: Path, services: Services, monkeypatch: Any
) -> None:
    monkeypatch.setenv("PRELOAD_THREAD", "1")
    env = preload_env(tmp_path, "threaded")
    service = services.start(env, slots=1)
    (result,) = served(service, 1)
    assert result["preload_pid"] == result["start_pid"] == result["pid"], "preload() ran in the spawned loop"
    log = service.supervisor_log.read_text()
    assert "preload() left 1 thread(s) running: preload-sleeper" in log
    assert "loops are spawned cold instead" in log
    (failed,) = service.queue.events.read("template-failed")
    assert "preload-sleeper" in failed["error"]
    wait_until(
        lambda: any("template-failed: " in c and "preload-sleeper" in c for c in service.status().conditions),
        what="health to say the template's preload failed",
    )
    report = service.status()
    assert report.template is not None and report.template.state == "failed"
    assert "new loops are spawned cold" in report.template.summary()
    assert [row.forked for row in report.worker_health] == [False]
    assert template_pid(supervisor_state(env).pid) is None
    assert process_name(result["pid"]) != FORKED_LOOP_NAME


def test_orphans_a_loop_leaves_are_reaped_and_after_a_deploy_loops_fork_from_a_new_template(
    tmp_path: Path, services: Services
) -> None:
    env = preload_env(tmp_path, "deployed")
    service = services.start(env, slots=1)
    (before,) = served(service, 1)
    assert before["version"] == 1
    orphan = service.submit({"orphan": True}).result(timeout=30)["orphan"]
    assert orphan in child_pids(supervisor_state(env).pid), "the supervisor adopted the loop's orphan"
    wait_until(lambda: process_state(orphan) is None, what="the adopted orphan reaped, not left a zombie")
    worker = env.app_dir / "deployed_code" / "worker.py"
    worker.write_text(worker.read_text().replace("VERSION = 1", "VERSION = 2"))
    os.utime(worker, (time.time() + 2, time.time() + 2))
    os.kill(before["pid"], signal.SIGKILL)
    wait_until(lambda: loop_pids(env)["loop-0"] != before["pid"], what="loop-0 replaced")
    (after,) = served(service, 1)
    assert after["version"] == 2 and after["preload_pid"] != before["preload_pid"]
    assert process_name(after["pid"]) == FORKED_LOOP_NAME
    assert [e["starts"] for e in service.queue.events.read("template-started")] == [1, 2]


def test_the_supervisor_keeps_its_heartbeat_while_a_slow_preload_runs(
    tmp_path: Path, services: Services, monkeypatch: Any
) -> None:
    monkeypatch.setenv("PRELOAD_SLEEP", "2.5")
    env = Env(write_app(tmp_path, "slow", WORKER, SETTINGS + "heartbeat_timeout_sec = 1\n"))
    ages: list[float] = []
    starting = threading.Thread(target=services.start, args=(env,), kwargs={"slots": 1})
    starting.start()
    while starting.is_alive():
        state = read_supervisor_state(env.service_dir / "supervisor.json")
        if state is not None:
            ages.append(time.time() - state.timestamp)
        time.sleep(0.05)
    starting.join()
    assert supervisor_state(env).loops[0].pid is not None
    assert len(ages) > 20, f"supervisor.json first written {len(ages) * 0.05:.2f} s before start returned"
    assert max(ages) < 1.0, f"supervisor.json went {max(ages):.2f} s unwritten while the preload ran"
    (result,) = served(Service(env), 1)
    assert result["preload_pid"] != result["pid"]


def test_preload_false_spawns_every_loop_and_still_calls_preload(tmp_path: Path, services: Services) -> None:
    env = Env(write_app(tmp_path, "cold", WORKER, SETTINGS + "preload = false\n"))
    service = services.start(env, slots=1)
    (result,) = served(service, 1)
    assert result["preload_pid"] == result["start_pid"] == result["pid"]
    assert result["table"] == 10_000
    assert template_pid(supervisor_state(env).pid) is None
    report = service.status()
    assert report.template is None and [row.forked for row in report.worker_health] == [False]


def test_chaos_with_forked_loops_loses_nothing(tmp_path: Path, services: Services) -> None:
    """Loops killed every 200 ms, one frozen, the supervisor killed and started again, all on forked
    loops (the flaky app with ``preload = true``: its preload() is the default, nothing)."""
    plan = ChaosPlan(backend="local", tasks=1000, loops=4, seconds=4.0, seed=6, settle_timeout=120)
    env = chaos_app(tmp_path, plan, cluster="preload = true\n")
    services.envs.append(env)
    report = run_chaos(env, plan)
    assert report.problems() == [], report.table()
    assert len(report.done) == 1000 and not report.lost and not report.failed
    assert len(report.kills) >= 5, report.table()
    forked = [log for log in env.log_dir.glob("loop-*.log") if "forked warm" in log.read_text()]
    assert len(forked) == 4, "every slot's loops were forked"
