"""Every surface gives the same answer.

One table of actions and, for each, the surfaces that offer it: Python (``keepwarm.Service`` and
friends), the CLI with ``--json``, an MCP client over stdio, the reference's ``AGI`` façade, and
``keepwarm http`` through an HTTP client. Each scenario puts real services in one situation and asks
every surface that offers the action; the answers must agree: success or failure, the same facts, the
same error (its kind where the surface names one, and what is wrong; the next step may name the
surface's own command or tool).

A new CLI verb, MCP tool, HTTP route or surface must be added to ``TABLE`` (or to ``OUTSIDE``, with
the reason) or ``test_the_table_names_every_verb_and_tool`` fails.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keepwarm.cli import VERBS
from keepwarm.http.routes import router
from keepwarm.mcp.server import READ_TOOLS, WRITE_TOOLS

from ..conftest import wait_until
from .conftest import APP, World
from .surfaces import SURFACE_NAMES, Outcome, gist

Y = "offered"
NO_AGI = "not offered: the reference's AGI has serve (start, status, health, stop), submit, run mode"
NO_MCP_QUEUE = "not offered: MCP tools start, stop, submit and read; queue surgery is an operator's job"
NO_HTTP = "not offered: HTTP takes tasks and answers reads; operators do the rest (CLI, MCP, page)"

# action -> surface -> "offered" or why not. The order is the order of the scenarios below.
TABLE: dict[str, dict[str, str]] = {
    "start": {"python": Y, "cli": Y, "mcp": Y, "agi": Y, "http": NO_HTTP},
    "start twice": {"python": Y, "cli": Y, "mcp": Y, "agi": Y, "http": NO_HTTP},
    "stop": {"python": Y, "cli": Y, "mcp": Y, "agi": Y, "http": NO_HTTP},
    "stop when stopped": {"python": Y, "cli": Y, "mcp": Y, "agi": Y, "http": NO_HTTP},
    "submit": {"python": Y, "cli": Y, "mcp": Y, "agi": Y, "http": Y},
    "submit to a stopped service": {"python": Y, "cli": Y, "mcp": Y, "agi": Y, "http": Y},
    "result of a task that succeeds": {"python": Y, "cli": Y, "mcp": Y, "agi": NO_AGI, "http": Y},
    "result of a task that raises": {"python": Y, "cli": Y, "mcp": Y, "agi": NO_AGI, "http": Y},
    "result of a task past its timeout": {"python": Y, "cli": Y, "mcp": Y, "agi": NO_AGI, "http": Y},
    "cancel a pending task": {"python": Y, "cli": Y, "mcp": NO_MCP_QUEUE, "agi": NO_AGI, "http": Y},
    "cancel a running task": {"python": Y, "cli": Y, "mcp": NO_MCP_QUEUE, "agi": NO_AGI, "http": Y},
    "retry": {"python": Y, "cli": Y, "mcp": NO_MCP_QUEUE, "agi": NO_AGI, "http": NO_HTTP},
    "status": {"python": Y, "cli": Y, "mcp": Y, "agi": Y, "http": Y},
    "health and each gate code": {
        "python": Y,
        "cli": Y,
        "mcp": Y,
        "agi": "not offered: AGI.serve(action='health') returns the report without a gate verdict",
        "http": Y,
    },
    "scale": {"python": Y, "cli": Y, "mcp": NO_MCP_QUEUE, "agi": NO_AGI, "http": NO_HTTP},
    "scale --auto": {"python": Y, "cli": Y, "mcp": NO_MCP_QUEUE, "agi": NO_AGI, "http": NO_HTTP},
    "workflow start, status, stop": {"python": Y, "cli": Y, "mcp": Y, "agi": NO_AGI, "http": NO_HTTP},
    "fleet up, status, down": {"python": Y, "cli": Y, "mcp": Y, "agi": NO_AGI, "http": NO_HTTP},
    "fleet up with its workflow": {
        "python": Y,
        "cli": Y,
        "mcp": "not offered: fleet_up starts the services, start_workflow the run",
        "agi": NO_AGI,
        "http": NO_HTTP,
    },
    "stop every service of a namespace": {
        "python": Y,
        "cli": Y,
        "mcp": "not offered: fleet_down stops a fleet; an agent stops services one by one",
        "agi": NO_AGI,
        "http": NO_HTTP,
    },
    "pipeline run": {
        "python": Y,
        "cli": Y,
        "mcp": "not offered: a pipeline runs the app folder's Python files; MCP tools run no files",
        "agi": "not offered: the reference runs its pipeline from the PIPELINE page, not from AGI",
        "http": NO_HTTP,
    },
}

# The surface method each action calls.
METHODS: dict[str, tuple[str, ...]] = {
    "start": ("start",),
    "start twice": ("start",),
    "stop": ("stop",),
    "stop when stopped": ("stop",),
    "submit": ("submit",),
    "submit to a stopped service": ("submit",),
    "result of a task that succeeds": ("result",),
    "result of a task that raises": ("result",),
    "result of a task past its timeout": ("result",),
    "cancel a pending task": ("cancel",),
    "cancel a running task": ("cancel",),
    "retry": ("retry",),
    "status": ("status",),
    "health and each gate code": ("health",),
    "scale": ("scale",),
    "scale --auto": ("scale_auto",),
    "workflow start, status, stop": ("workflow_start", "workflow_status", "workflow_stop"),
    "fleet up, status, down": ("fleet_up", "fleet_status", "fleet_down"),
    "fleet up with its workflow": ("fleet_up_with_workflow",),
    "stop every service of a namespace": ("stop_namespace",),
    "pipeline run": ("pipeline_run",),
}

# Every CLI verb and MCP tool: the table's action it is, or why it is outside the table.
CLI_VERBS: dict[str, str] = {
    "start": "start",
    "status": "status",
    "health": "health and each gate code",
    "stop": "stop",
    "submit": "submit",
    "result": "result of a task that succeeds",
    "cancel": "cancel a pending task",
    "retry": "retry",
    "scale": "scale",
    "workflow": "workflow start, status, stop",
    "up": "fleet up, status, down",
    "down": "fleet up, status, down",
    "ps": "fleet up, status, down",
    "pipeline": "pipeline run",
}
OUTSIDE: dict[str, str] = {
    "init": "run mode: CLI and Python only (tests/test_run_mode.py)",
    "install": "run mode: CLI, Python and AGI.install (tests/test_run_mode.py)",
    "distribute": "run mode: CLI, Python and AGI.get_distrib (tests/test_run_mode.py)",
    "run": "run mode: CLI, Python and AGI.run (tests/test_run_mode.py)",
    "data": "run mode's output: CLI and the page only",
    "export": "run mode's output: CLI and the page only",
    "tasks": "a listing for operators: CLI and Service.tasks only",
    "drain": "CLI and Service.drain only",
    "restart": "CLI and Service.restart only (tests/test_service.py)",
    "snapshot": "CLI and Service.snapshot only",
    "logs": "CLI and Service.logs only",
    "demo": "CLI only",
    "mcp": "the MCP surface itself",
    "http": "the HTTP surface itself",
    "ui": "the page itself (tests/test_ui.py)",
    "list_services": "the namespace's services: MCP list_services and CLI ps (tests/test_fleet.py)",
    "GET /v1/apps": "the namespace's services, as MCP list_services (tests/test_http.py)",
    "GET /livez": "the HTTP server's own liveness (tests/test_http.py)",
}
HTTP_ROUTES: dict[str, str] = {
    "GET /v1/apps/{app}": "status",
    "GET /v1/apps/{app}/health": "health and each gate code",
    "POST /v1/apps/{app}/tasks": "submit",
    "GET /v1/apps/{app}/tasks/{task_id}": "result of a task that succeeds",
    "DELETE /v1/apps/{app}/tasks/{task_id}": "cancel a pending task",
}
MCP_TOOLS: dict[str, str] = {
    "service_status": "status",
    "service_health": "health and each gate code",
    "start_service": "start",
    "stop_service": "stop",
    "submit_task": "submit",
    "get_result": "result of a task that succeeds",
    "start_workflow": "workflow start, status, stop",
    "workflow_status": "workflow start, status, stop",
    "stop_workflow": "workflow start, status, stop",
    "fleet_up": "fleet up, status, down",
    "fleet_down": "fleet up, status, down",
    "fleet_status": "fleet up, status, down",
}


def offering(action: str) -> list[str]:
    return [name for name in SURFACE_NAMES if TABLE[action][name] == Y]


def ask(surfaces: dict[str, Any], action: str, method: str, *args: Any, **kwargs: Any) -> dict[str, Outcome]:
    """Every surface that offers ``action``, asked the same thing."""
    return {name: getattr(surfaces[name], method)(*args, **kwargs) for name in offering(action)}


def same(answers: dict[str, Outcome], facts: Callable[[Outcome], Any], what: str) -> Any:
    """The facts every surface's answer gives must be equal; returns them."""
    seen = {name: facts(outcome) for name, outcome in answers.items()}
    values = list(seen.values())
    assert all(value == values[0] for value in values), f"{what}: the surfaces disagree: {seen}"
    return values[0]


def same_error(answers: dict[str, Outcome], what: str) -> str:
    """Every surface refused, for the same reason, with the same kind where it names one."""
    assert not any(o.ok for o in answers.values()), f"{what}: some surface did not refuse: {answers}"
    kinds = {name: o.kind for name, o in answers.items() if o.kind is not None}
    assert len(set(kinds.values())) <= 1, f"{what}: kinds differ: {kinds}"
    return str(same(answers, lambda o: gist(o.error), what))


def report_facts(outcome: Outcome) -> tuple[Any, ...]:
    doc = outcome.doc
    return (
        outcome.ok,
        doc.get("status"),
        doc.get("app"),
        doc.get("namespace"),
        doc.get("workers_healthy_count"),
        doc.get("workers_unhealthy_count"),
        tuple(sorted((doc.get("queue") or {}).get(k, 0) for k in ("pending", "running", "done", "failed"))),
        # how each loop started and the preload template (warm start): every surface carries them
        tuple(row.get("forked") for row in doc.get("worker_health") or []),
        "template" in doc and doc["template"],
    )


# ---------------------------------------------------------------------- the table itself


def test_the_table_names_every_verb_and_tool(surfaces: dict[str, Any]) -> None:
    for action, cells in TABLE.items():
        assert set(cells) == set(SURFACE_NAMES), action
        for name, cell in cells.items():
            has = all(hasattr(surfaces[name], method) for method in METHODS[action])
            assert has == (cell == Y), f"{action} on {name}: the table says {cell!r}"
            assert cell == Y or cell.startswith("not offered: "), cell
    verbs = set(VERBS)
    assert verbs == set(CLI_VERBS) | (set(OUTSIDE) & verbs), "a CLI verb is missing from the table"
    assert set(CLI_VERBS.values()) <= set(TABLE)
    tools = READ_TOOLS | WRITE_TOOLS
    assert tools == set(MCP_TOOLS) | (set(OUTSIDE) & tools), "an MCP tool is missing from the table"
    assert set(MCP_TOOLS.values()) <= set(TABLE)
    routes = {f"{method} {route.path}" for route in router.routes for method in getattr(route, "methods", ())}
    assert routes == set(HTTP_ROUTES) | (set(OUTSIDE) & routes), "an HTTP route is missing from the table"
    assert set(HTTP_ROUTES.values()) <= set(TABLE)


# ---------------------------------------------------------------------- lifecycle


def test_start_start_twice_stop_and_stop_again_answer_alike(surfaces: dict[str, Any]) -> None:
    steps: dict[str, dict[str, Outcome]] = {}
    for name in offering("start"):
        namespace = f"life-{name}"
        surface = surfaces[name]
        steps.setdefault("start", {})[name] = surface.start(APP, namespace)
        steps.setdefault("start twice", {})[name] = surface.start(APP, namespace)
        steps.setdefault("stop", {})[name] = surface.stop(APP, namespace)
        steps.setdefault("stop when stopped", {})[name] = surface.stop(APP, namespace)

    started = same(
        steps["start"], lambda o: (o.ok, o.doc.get("status"), o.doc.get("workers_healthy_count")), "start"
    )
    assert started == (True, "idle", 1)

    refusal = same_error(steps["start twice"], "start twice")
    assert "is running (supervisor pid" in refusal and " on " in refusal, refusal
    assert {o.kind for o in steps["start twice"].values() if o.kind} == {"ServiceAlreadyRunning"}

    stopped = same(steps["stop"], lambda o: (o.ok, o.doc.get("status"), gist(o.doc["message"])), "stop")
    assert stopped[:2] == (True, "stopped")
    again = same(
        steps["stop when stopped"], lambda o: (o.ok, o.doc.get("status"), o.doc["message"]), "stop again"
    )
    assert again == (True, "stopped", f"service {APP} is already stopped")


def test_a_stopped_service_reads_and_refuses_alike(surfaces: dict[str, Any]) -> None:
    namespace = "nothing"
    status = ask(surfaces, "status", "status", APP, namespace)
    assert same(status, report_facts, "status of a stopped service")[:2] == (True, "stopped")
    health = ask(surfaces, "health and each gate code", "health", APP, namespace)
    assert same(health, lambda o: o.doc["gate"]["code"], "gate of a stopped service") == 3

    submitted = ask(surfaces, "submit to a stopped service", "submit", APP, namespace, {"value": 1})
    refusal = same_error(submitted, "submit to a stopped service")
    assert f"service {APP!r} is not running" in refusal, refusal
    queued = ask(
        surfaces, "submit to a stopped service", "submit", APP, namespace, {"value": 2}, queue_only=True
    )
    assert same(queued, lambda o: (o.ok, len(o.doc["task_ids"])), "submit, queue only") == (True, 1)

    workflows = ask(surfaces, "workflow start, status, stop", "workflow_start", APP, namespace, 2, {})
    assert same_error(workflows, "workflow start on a stopped service") == refusal


# ---------------------------------------------------------------------- tasks on one shared service


@pytest.fixture(scope="module")
def tasks_namespace(world: World, surfaces: dict[str, Any]) -> str:
    namespace = "tasks"
    assert surfaces["python"].start(APP, namespace, workers=2).ok
    return namespace


def test_submit_queues_the_same_task_from_every_surface(
    world: World, surfaces: dict[str, Any], tasks_namespace: str
) -> None:
    answers = {
        name: surfaces[name].submit(APP, tasks_namespace, {"value": name}) for name in offering("submit")
    }
    assert all(o.ok and len(o.doc["task_ids"]) == 1 for o in answers.values()), answers
    service = surfaces["python"].service(APP, tasks_namespace)
    records = {name: service.handle(o.doc["task_ids"][0]).record(timeout=60) for name, o in answers.items()}
    for name, record in records.items():
        assert record.status == "done" and record.result == {"echo": name, "task_name": "task"}, record
    same(
        {name: Outcome(True, r.model_dump(mode="json")) for name, r in records.items()},
        lambda o: (o.doc["task_name"], o.doc["max_attempts"], o.doc["timeout_sec"], o.doc["attempt"]),
        "the task each surface queued",
    )


def test_results_read_alike(world: World, surfaces: dict[str, Any], tasks_namespace: str) -> None:
    service = surfaces["python"].service(APP, tasks_namespace)
    succeeds = service.submit({"value": 42}).task_id
    raises = service.submit({"action": "raise"}, max_attempts=1).task_id
    times_out = service.submit({"action": "sleep", "seconds": 60}, timeout_sec=0.5, max_attempts=1).task_id

    done = ask(surfaces, "result of a task that succeeds", "result", APP, tasks_namespace, succeeds)
    assert same(done, lambda o: (o.ok, o.doc["status"], o.doc["result"]), "result") == (
        True,
        "done",
        {"echo": 42, "task_name": "task"},
    )

    def failure(outcome: Outcome) -> tuple[Any, ...]:
        traceback = outcome.doc.get("traceback") or ""
        return (outcome.ok, outcome.doc["status"], outcome.doc["error"], "Traceback" in traceback)

    raised = ask(surfaces, "result of a task that raises", "result", APP, tasks_namespace, raises)
    ok, status, error, has_traceback = same(raised, failure, "result of a task that raised")
    assert (ok, status, has_traceback) == (False, "failed", True)
    assert error == f"ValueError: conform: raised on purpose for task {raises}"
    assert all("raise ValueError" in (o.doc.get("traceback") or "") for o in raised.values())

    late = ask(surfaces, "result of a task past its timeout", "result", APP, tasks_namespace, times_out)
    ok, status, error, _ = same(late, failure, "result of a task past its timeout")
    assert (ok, status) == (False, "failed") and "timeout" in error, error


def test_status_reads_alike(world: World, surfaces: dict[str, Any], tasks_namespace: str) -> None:
    service = surfaces["python"].service(APP, tasks_namespace)
    service.submit({"value": "status"}).result(timeout=60)
    wait_until(
        lambda: service.status().queue.running == 0 and service.status().workers_healthy_count == 2,
        60,
        "no task running and both loops healthy (an earlier test's timeout restarted one)",
    )
    answers = ask(surfaces, "status", "status", APP, tasks_namespace)
    facts = same(answers, report_facts, "status")
    assert facts[:6] == (True, "running", APP, tasks_namespace, 2, 0), facts
    assert facts[7:] == ((False, False), None), facts  # spawned loops, no template: preload is off


def test_retry_answers_alike(world: World, surfaces: dict[str, Any], tasks_namespace: str) -> None:
    service = surfaces["python"].service(APP, tasks_namespace)
    failed = {name: service.submit({"action": "raise"}, max_attempts=1) for name in offering("retry")}
    for handle in failed.values():
        assert handle.record(timeout=60).status == "failed"
    answers = {name: surfaces[name].retry(APP, tasks_namespace, [h.task_id]) for name, h in failed.items()}
    assert same(answers, lambda o: (o.ok, len(o.doc["retried"])), "retry") == (True, 1)
    assert all(answers[name].doc["retried"] == [failed[name].task_id] for name in answers)
    for handle in failed.values():  # a fresh attempt ran (and raised again)
        wait_until(lambda h=handle: service.queue.read_record(h.task_id) is not None, 60, "the retried task")

    # Nothing to retry is no error in Python (an empty list) and exit 1 on the CLI: the same facts.
    unknown = ask(surfaces, "retry", "retry", APP, tasks_namespace, ["nosuch"])
    retried, why = same(unknown, lambda o: (o.doc["retried"], o.doc["not_retried"]), "retry of an unknown id")
    assert retried == [] and "not found among failed" in why["nosuch"], why


def test_workflows_answer_alike(world: World, surfaces: dict[str, Any], tasks_namespace: str) -> None:
    action = "workflow start, status, stop"
    started = ask(surfaces, action, "workflow_start", APP, tasks_namespace, 2, {"value": "wf"})
    assert same(started, lambda o: (o.ok, o.doc["app"], o.doc["namespace"], o.doc["total"]), "start") == (
        True,
        APP,
        tasks_namespace,
        2,
    )
    ids = {name: o.doc["execution_id"] for name, o in started.items()}
    assert len(set(ids.values())) == len(ids), ids

    def finished(name: str) -> bool:
        return bool(surfaces[name].workflow_status(tasks_namespace, ids[name]).doc["state"] != "running")

    for name in ids:
        wait_until(lambda n=name: finished(n), 60, f"the workflow {name} started")
    statuses = {name: surfaces[name].workflow_status(tasks_namespace, ids[name]) for name in ids}
    assert same(statuses, lambda o: (o.ok, o.doc["state"], o.doc["progress"]["done"]), "status") == (
        True,
        "completed",
        2,
    )
    stops = {name: surfaces[name].workflow_stop(tasks_namespace, ids[name]) for name in ids}
    assert same(stops, lambda o: (o.ok, o.doc["state"], o.doc.get("cancelled")), "stop of a finished run")[
        :2
    ] == (True, "completed")


# ---------------------------------------------------------------------- cancel and scale, one loop


def test_cancel_answers_alike(world: World, surfaces: dict[str, Any]) -> None:
    namespace = "cancel"
    assert surfaces["python"].start(APP, namespace, workers=1).ok
    service = surfaces["python"].service(APP, namespace)
    blocker = service.submit({"action": "sleep", "seconds": 120})
    wait_until(lambda: blocker.state == "running", 30, "the blocking task running")

    pending = {name: service.submit({"value": name}) for name in offering("cancel a pending task")}
    answers = {name: surfaces[name].cancel(APP, namespace, [h.task_id]) for name, h in pending.items()}
    assert same(answers, lambda o: (o.ok, len(o.doc["cancelled"])), "cancel a pending task") == (True, 1)
    assert all(answers[name].doc["cancelled"] == [pending[name].task_id] for name in answers)
    assert all(h.record(timeout=10).status == "cancelled" for h in pending.values())

    running: dict[str, Outcome] = {}
    for name in offering("cancel a running task"):
        handle = blocker if not running else service.submit({"action": "sleep", "seconds": 120})
        wait_until(lambda h=handle: h.state == "running", 60, f"a task running for {name} to cancel")
        running[name] = surfaces[name].cancel(APP, namespace, [handle.task_id])
        assert handle.record(timeout=30).status == "cancelled"
    assert same(running, lambda o: (o.ok, len(o.doc["cancelled"])), "cancel a running task") == (True, 1)
    assert surfaces["python"].stop(APP, namespace).ok


def test_scale_answers_alike(world: World, surfaces: dict[str, Any]) -> None:
    namespace = "scale"
    assert surfaces["python"].start(APP, namespace, workers=1).ok
    service = surfaces["python"].service(APP, namespace)
    answers: dict[str, Outcome] = {}
    for name in offering("scale"):
        before = len(service.status().worker_health)
        answers[name] = surfaces[name].scale(APP, namespace, before + 1)
        assert answers[name].doc == answers[name].doc | {"from": before, "to": before + 1}
        wait_until(lambda n=before + 1: service.status().workers_healthy_count == n, 60, f"{name}'s loops")
    assert same(answers, lambda o: (o.ok, sorted(o.doc)), "scale")[0] is True
    assert surfaces["python"].stop(APP, namespace).ok


def test_scale_auto_and_the_autoscale_block_answer_alike(world: World, surfaces: dict[str, Any]) -> None:
    namespace = "autoscale"
    assert surfaces["python"].start(APP, namespace, workers=1).ok
    refused = same_error(ask(surfaces, "scale --auto", "scale_auto", APP, namespace), "scale --auto")
    assert "autoscaling is off for this service" in refused
    assert surfaces["python"].stop(APP, namespace).ok

    app = world.write_autoscaled_app()
    assert surfaces["python"].start(app, namespace).ok
    service = surfaces["python"].service(app, namespace)
    pinned, resumed = {}, {}
    for name in offering("scale --auto"):
        pinned[name] = surfaces[name].scale(app, namespace, 2)
        blocks = {other: surfaces[other].status(app, namespace) for other in SURFACE_NAMES}
        assert same(blocks, lambda o: o.doc["autoscale"]["pinned"], "the pinned count") == 2
        resumed[name] = surfaces[name].scale_auto(app, namespace)
        wait_until(lambda: service.status().autoscale.pinned is None, 30, f"{name}'s --auto")
    assert same(pinned, lambda o: (o.ok, o.doc["to"], o.doc["autoscale"]), "scale N while autoscaling") == (
        True,
        2,
        "paused at 2 loops until `keepwarm scale APP --auto`",
    )
    assert same(resumed, lambda o: (o.ok, o.doc), "scale --auto") == (
        True,
        {"from": 2, "autoscale": "on again, between 1 and 3 loops"},
    )
    blocks = {name: surfaces[name].status(app, namespace) for name in SURFACE_NAMES}
    facts = same(
        blocks, lambda o: {k: o.doc["autoscale"][k] for k in ("enabled", "min_loops", "max_loops")}, ""
    )
    assert facts == {"enabled": True, "min_loops": 1, "max_loops": 3}
    assert surfaces["python"].stop(app, namespace).ok


# ---------------------------------------------------------------------- health: every gate code


def test_every_gate_code_reads_alike(world: World, surfaces: dict[str, Any]) -> None:
    namespace = "gate"
    action = "health and each gate code"
    assert surfaces["python"].start(APP, namespace, workers=1).ok
    service = surfaces["python"].service(APP, namespace)

    def gate(**thresholds: Any) -> tuple[Any, ...]:
        answers = ask(surfaces, action, "health", APP, namespace, **thresholds)
        agi = surfaces["agi"].status(APP, namespace)
        verdict = same(
            answers,
            lambda o: (o.doc["status"], o.doc["gate"]["code"], o.doc["gate"]["passed"]),
            f"the gate with {thresholds}",
        )
        return (*verdict, agi.doc["status"])

    status, code, passed, agi_status = gate()
    assert (status, code, passed) == ("idle", 4, False) and agi_status == "idle"

    service.submit({"value": "work"}).result(timeout=60)
    assert gate()[:3] == ("running", 0, True)

    blocker = service.submit({"action": "sleep", "seconds": 120})
    waiting = service.submit({"value": "waits"})
    wait_until(lambda: blocker.state == "running", 30, "the blocking task running")
    wait_until(lambda: (service.status().queue.oldest_pending_age_sec or 0) > 0.1, 30, "a task pending 0.1 s")
    assert gate(max_pending_age_sec=0.1)[1] == 6
    busy_pid = service.status().worker_health[0].pid
    service.cancel([blocker.task_id, waiting.task_id])  # the busy loop is restarted: a planned restart
    wait_until(
        lambda: (
            service.status().worker_health[0].pid not in (None, busy_pid)
            and service.status().workers_healthy_count == 1
        ),
        60,
        "the loop restarted by the cancel",
    )
    assert service.status().restart_rate == 0

    loop_pid = service.status().worker_health[0].pid
    assert loop_pid is not None
    os.kill(loop_pid, signal.SIGKILL)  # an unplanned death: one restart over one slot

    def replaced() -> bool:  # one reading: the killed loop itself could still read as healthy
        status = service.status()
        row = status.worker_health[0]
        return status.workers_healthy_count == 1 and status.restart_rate > 0 and row.pid != loop_pid

    wait_until(replaced, 60, "the killed loop replaced")
    assert gate(allow_idle=True)[1] == 5

    world.broken_marker.write_text("")  # from now on the loop cannot start
    try:
        killed = service.status().worker_health[0]
        assert killed.pid is not None
        os.kill(killed.pid, signal.SIGKILL)

        def failing_to_start() -> bool:  # a later incarnation's start failed, not only the kill seen
            row = service.status().worker_health[0]
            return row.incarnation != killed.incarnation and row.start_error is not None

        wait_until(failing_to_start, 60, "the loop failing to start")
        status, code, _, agi_status = gate(allow_idle=True)
        assert (status, code, agi_status) == ("error", 2, "error")
    finally:
        world.broken_marker.unlink()
    assert surfaces["python"].stop(APP, namespace).ok
    assert gate()[:2] == ("stopped", 3)


# ---------------------------------------------------------------------- fleets


def fleet_file(world: World, name: str, extra: str = "") -> Path:
    """A one-service fleet of the conformance app in the namespace ``name``, plus ``extra`` tables."""
    path = world.root / f"{name}.toml"
    path.write_text(
        f'[fleet]\nnamespace = "{name}"\napps_path = "{world.apps}"\n\n[services.{APP}]\nworkers = 1\n{extra}'
    )
    return path


def test_fleets_answer_alike(world: World, surfaces: dict[str, Any]) -> None:
    action = "fleet up, status, down"
    files = {name: fleet_file(world, f"fleet-{name}") for name in offering(action)}

    def each(method: str) -> dict[str, Outcome]:
        return {name: getattr(surfaces[name], method)(files[name]) for name in files}

    up = each("fleet_up")
    assert same(up, lambda o: (o.ok, o.doc["ready"], [s["service"] for s in o.doc["services"]]), "up") == (
        True,
        True,
        [APP],
    )
    status = each("fleet_status")
    assert same(status, lambda o: (o.ok, o.doc["ready"], [s["ready"] for s in o.doc["services"]]), "ps")[
        :2
    ] == (True, True)
    down = each("fleet_down")
    assert same(down, lambda o: (o.ok, [(s["service"], s.get("status")) for s in o.doc["services"]]), "down")[
        0
    ]
    for name in files:
        assert surfaces["python"].status(APP, f"fleet-{name}").doc["status"] == "stopped"


def test_fleet_up_with_its_workflow_answers_alike(world: World, surfaces: dict[str, Any]) -> None:
    action = "fleet up with its workflow"
    files = {
        name: fleet_file(world, f"wf-{name}", '\n[workflow]\ncount = 2\nargs = { value = "fleet" }\n')
        for name in offering(action)
    }
    up = {name: surfaces[name].fleet_up_with_workflow(path) for name, path in files.items()}

    def facts(outcome: Outcome) -> tuple[Any, ...]:
        run = outcome.doc["workflow"]
        return (outcome.ok, outcome.doc["ready"], run["app"], run["total"])

    assert same(up, facts, "up with its workflow") == (True, True, APP, 2)
    for name, outcome in up.items():
        execution_id = outcome.doc["workflow"]["execution_id"]
        wait_until(
            lambda n=name, e=execution_id: (
                surfaces["python"].workflow_status(f"wf-{n}", e).doc["state"] == "completed"
            ),
            60,
            f"the workflow {name}'s up started",
        )
        assert surfaces["python"].fleet_down(files[name]).ok


def test_stopping_every_service_of_a_namespace_answers_alike(world: World, surfaces: dict[str, Any]) -> None:
    action = "stop every service of a namespace"
    for name in offering(action):
        assert surfaces["python"].start(APP, f"every-{name}", workers=1).ok
    stopped = {name: surfaces[name].stop_namespace(f"every-{name}") for name in offering(action)}
    assert same(stopped, lambda o: (o.ok, [s["service"] for s in o.doc["services"]]), "down --all") == (
        True,
        [APP],
    )
    again = {name: surfaces[name].stop_namespace(f"every-{name}") for name in offering(action)}
    assert same(again, lambda o: (o.ok, o.doc["services"]), "down --all, nothing running") == (True, [])


# ---------------------------------------------------------------------- pipelines


def test_a_pipeline_run_answers_alike(world: World, surfaces: dict[str, Any]) -> None:
    action = "pipeline run"
    folder = world.apps / APP
    (folder / "step_ok.py").write_text("print('step one ran')\n")
    (folder / "step_fails.py").write_text("raise SystemExit('step two: no input')\n")
    (folder / "pipeline.toml").write_text(
        '[[steps]]\nfile = "step_ok.py"\n\n[[steps]]\nfile = "step_fails.py"\n'
    )

    def facts(outcome: Outcome) -> tuple[Any, ...]:
        steps = [(s["number"], s["file"], s["status"], s["exit_code"]) for s in outcome.doc["steps"]]
        return (outcome.ok, outcome.doc["app"], steps, gist(outcome.error).split(" after ")[0])

    every = {name: surfaces[name].pipeline_run(APP) for name in offering(action)}
    assert same(every, facts, "pipeline run") == (
        False,
        APP,
        [(1, "step_ok.py", "ok", 0), (2, "step_fails.py", "failed", 1)],
        "step 2 (step_fails.py) failed with exit code 1",
    )
    one = {name: surfaces[name].pipeline_run(APP, step=1) for name in offering(action)}
    assert same(one, facts, "pipeline run --step 1")[:3] == (True, APP, [(1, "step_ok.py", "ok", 0)])
    missing = {name: surfaces[name].pipeline_run(APP, step=3) for name in offering(action)}
    refused = same_error(missing, "pipeline run --step 3")
    assert refused == f"{APP}'s pipeline has no step 3: it has steps 1 to 2"
