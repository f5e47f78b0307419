"""Workflow runs: execution ids allocated atomically, progress and state, stop of pending tasks only."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keepwarm.api import Service
from keepwarm.env import Env, login_name
from keepwarm.errors import InvalidTaskError, ServiceNotRunning, WorkflowNotFound
from keepwarm.groups.workflow import list_workflows, start_workflow, stop_workflow, workflow_status
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.service.lifecycle import stop_service

from .conftest import EXAMPLE_APPS, ROOT, wait_until

KEEPWARM = Path(sys.executable).parent / "keepwarm"
APPS = str(EXAMPLE_APPS)


def keepwarm_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KEEPWARM), *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr + result.stdout
    return " ".join(result.stderr.split())


@pytest.fixture
def flaky_service(flaky_env: Env) -> Iterator[Service]:
    service = Service(flaky_env)
    service.start(slots=1)
    try:
        yield service
    finally:
        stop_service(flaky_env, timeout=5)


# ---------------------------------------------------------------------- execution ids


ALLOCATE = textwrap.dedent(
    """
    import sys
    from keepwarm.api import Service
    from keepwarm.env import Env
    from keepwarm.groups.workflow import start_workflow

    service = Service(Env("mycode_project", sys.argv[1]))
    for _ in range(int(sys.argv[2])):
        print(start_workflow(service, 1, {"x": 3}, queue_only=True).execution_id, flush=True)
    """
)


def test_concurrent_starts_never_get_the_same_execution_id(mycode_env: Env) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", ALLOCATE, APPS, "25"],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for _ in range(3)
    ]
    there = []
    for process in processes:  # every process is allocating before this one joins the race
        assert process.stdout is not None
        there.append(process.stdout.readline().strip())
    service = Service(mycode_env)
    with ThreadPoolExecutor(4) as pool:
        here = list(
            pool.map(lambda _: start_workflow(service, 1, {"x": 3}, queue_only=True).execution_id, range(20))
        )
    for process in processes:
        assert process.stdout is not None
        there += process.stdout.read().split()  # read() continues after readline's buffer
        process.stdout.close()
        assert process.wait(timeout=60) == 0
    ids = here + there
    assert len(ids) == len(set(ids)) == 95
    user = login_name()
    assert all(re.fullmatch(rf"mycode_project-{re.escape(user)}-\d{{4}}", i) for i in ids)
    assert sorted(int(i.rpartition("-")[2]) for i in ids) == list(range(1, 96))  # no number skipped
    assert Service(mycode_env).counts().pending == 95  # every run queued its task


def test_a_refused_run_queues_nothing_and_allocates_no_id(mycode_env: Env) -> None:
    service = Service(mycode_env)
    with pytest.raises(
        InvalidTaskError, match=r"^invalid args: x: input should be greater than or equal to 1"
    ):
        start_workflow(service, 3, {"x": 0})
    with pytest.raises(InvalidTaskError, match=r"^task 2: invalid args: x: input should be a valid integer"):
        start_workflow(service, tasks=[{"args": {"x": 1}}, {"args": {"x": "two"}}])
    with pytest.raises(InvalidTaskError, match="execution_id is the workflow's own"):
        start_workflow(service, tasks=[{"args": {}, "execution_id": "mine"}])
    with pytest.raises(InvalidTaskError, match=re.escape("workflow name '../x'")):
        start_workflow(service, 1, {}, name="../x")
    assert service.counts().pending == 0
    first = start_workflow(service, 1, {"x": 2}, name="collatz", queue_only=True)
    assert first.execution_id == f"collatz-{login_name()}-0001" and first.state == "running"
    assert first.progress.pending == 1 and first.total == 1


# ---------------------------------------------------------------------- stop


def test_stop_cancels_that_runs_pending_tasks_and_leaves_other_runs_alone(mycode_env: Env) -> None:
    service = Service(mycode_env)
    first = start_workflow(service, 3, {"x": 5}, queue_only=True)
    second = start_workflow(service, 2, {"x": 6}, queue_only=True)
    loose = service.submit({"x": 7}, queue_only=True)  # not part of any run

    stopped = stop_workflow(first.execution_id)
    assert stopped.state == "terminated" and stopped.ended_at is not None
    assert stopped.progress.cancelled == 3 and stopped.progress.pending == 0
    record = json.loads(
        next((mycode_env.share_root / mycode_env.namespace / "workflows").glob("0001.json")).read_text()
    )
    assert sorted(stopped.cancelled) == sorted(record["task_ids"])
    for task_id in stopped.cancelled:
        cancelled = service.queue.read_record(task_id)
        assert cancelled is not None and cancelled.status == "cancelled"
        assert cancelled.error == f"cancelled execution {first.execution_id}"

    untouched = workflow_status(second.execution_id)
    assert untouched.state == "running" and untouched.progress.pending == 2
    assert loose.state == "pending" and service.counts().pending == 3

    again = stop_workflow(first.execution_id)  # stopping twice: it had already ended
    assert again.state == "terminated" and again.cancelled == [] and again.already_ended
    assert not stopped.already_ended
    with pytest.raises(WorkflowNotFound, match="not an execution id"):
        stop_workflow("../x")
    with pytest.raises(WorkflowNotFound, match="no workflow run 'mycode_project-nobody-0009'"):
        workflow_status("mycode_project-nobody-0009")
    with pytest.raises(WorkflowNotFound):  # right number, wrong name: not that run
        workflow_status(f"other-{login_name()}-0001")
    assert [r.execution_id for r in list_workflows()] == [second.execution_id, first.execution_id]


def test_a_run_on_a_stopped_service_is_refused_unless_queue_only(mycode_env: Env) -> None:
    service = Service(mycode_env)
    with pytest.raises(ServiceNotRunning) as refused:
        start_workflow(service, 2, {"x": 3})
    assert str(refused.value) == (
        "service 'mycode_project' is not running; queue the tasks for its next start with --queue-only "
        "(queue_only=True), or start it: keepwarm start mycode_project"
    )
    # The same refusal as submit's, from the same core check: nothing queued, no execution id taken.
    assert service.counts().pending == 0 and list_workflows() == []
    queued = start_workflow(service, 2, {"x": 3}, queue_only=True)
    assert queued.state == "running" and queued.progress.pending == 2
    assert queued.execution_id.endswith("-0001")


def test_list_shows_each_runs_live_state(flaky_service: Service) -> None:
    run = start_workflow(flaky_service, 2, {"action": "ok"})
    # Nobody asks for the run's status: list alone sees it finish.
    wait_until(lambda: list_workflows()[0].state == "completed", 30, "the run to finish in the list")
    listed = list_workflows()[0]
    assert listed.execution_id == run.execution_id and listed.progress.done == 2

    table = keepwarm_cli("workflow", "list")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith(run.execution_id))
    assert row.split()[1:5] == ["flaky", "completed", "2", "0"]  # app, state, tasks, pending
    document = json.loads(keepwarm_cli("workflow", "list", "--json").stdout)
    assert document["workflows"][0]["state"] == "completed"
    assert document["workflows"][0]["progress"]["done"] == 2


def test_a_running_task_finishes_when_its_run_is_stopped(flaky_service: Service) -> None:
    # One loop: the first task of the run sleeps while the others wait in pending/.
    run = start_workflow(flaky_service, 3, {"action": "sleep", "seconds": 1.0})
    after = start_workflow(flaky_service, 2, {"action": "ok"})
    wait_until(lambda: workflow_status(run.execution_id).progress.running == 1, 30, "the run's first task")

    stopped = stop_workflow(run.execution_id)
    assert stopped.state == "terminated" and len(stopped.cancelled) == 2
    assert stopped.progress.running == 1 and stopped.progress.cancelled == 2

    wait_until(lambda: workflow_status(after.execution_id).state == "completed", 30, "the other run")
    final = workflow_status(run.execution_id)
    assert final.state == "terminated"  # stays terminated once its running task has finished
    assert (final.progress.done, final.progress.cancelled, final.progress.pending) == (1, 2, 0)


def test_progress_and_state_follow_the_tasks(flaky_service: Service) -> None:
    good = start_workflow(flaky_service, 4, {"action": "ok"}, name="good")
    bad = start_workflow(flaky_service, tasks=[{"args": {"action": "ok"}}, {"args": {"action": "raise"}}])
    wait_until(lambda: workflow_status(good.execution_id).finished, 30, "the good run")
    wait_until(lambda: workflow_status(bad.execution_id).finished, 30, "the bad run")

    done = workflow_status(good.execution_id)
    assert done.state == "completed" and done.progress.done == 4 and done.ended_at is not None
    failed = workflow_status(bad.execution_id)
    assert failed.state == "failed" and (failed.progress.done, failed.progress.failed) == (1, 1)
    assert stop_workflow(good.execution_id).state == "completed"  # an ended run cannot be stopped

    # The outcome is recorded when first seen: it survives retention pruning the task files.
    queue = TaskQueue.for_env(flaky_service.env)
    for path in queue.done.glob("*.task.json"):
        path.unlink()
    assert workflow_status(good.execution_id).progress.done == 4


# ---------------------------------------------------------------------- CLI


def test_workflow_verbs_from_the_command_line(mycode_env: Env) -> None:
    refused = keepwarm_cli("workflow", "start", "mycode_project", "--apps-path", APPS, "--count", "3")
    assert "service 'mycode_project' is not running" in assert_clean_failure(refused)
    started = keepwarm_cli(
        "workflow", "start", "mycode_project", "--apps-path", APPS, "--count", "3", "--queue-only"
    )
    assert started.returncode == 0, started.stderr
    execution_id = started.stdout.strip()  # the id alone on stdout, for scripts
    assert re.fullmatch(r"mycode_project-[\w.-]+-0001", execution_id)
    assert f"started {execution_id}: 3 tasks on mycode_project" in started.stderr

    status = keepwarm_cli("workflow", "status", execution_id, "--json")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert (document["state"], document["total"], document["progress"]["pending"]) == ("running", 3, 3)

    stopped = keepwarm_cli("workflow", "stop", execution_id)
    assert stopped.returncode == 0, stopped.stderr
    assert "cancelled 3 pending tasks" in stopped.stderr and "terminated" in stopped.stdout
    again = keepwarm_cli("workflow", "stop", execution_id)
    assert again.returncode == 0, again.stderr
    assert f"{execution_id} had already ended (terminated); nothing to stop" in again.stderr
    listed = keepwarm_cli("workflow", "list")
    assert execution_id in listed.stdout and "terminated" in listed.stdout

    tasks = Path(mycode_env.share_root.parent / "tasks.jsonl")
    tasks.write_text('{"args": {"x": 4}}\n{"args": {"x": 5}, "task_name": "five"}\n')
    from_file = keepwarm_cli(
        "workflow",
        "start",
        "mycode_project",
        "--apps-path",
        APPS,
        "--file",
        str(tasks),
        "--name",
        "batch",
        "--queue-only",
    )
    assert from_file.returncode == 0 and from_file.stdout.strip().startswith("batch-")

    assert "name the app" in assert_clean_failure(keepwarm_cli("workflow", "start"))
    tasks.write_text("[1]\n")
    bad_line = keepwarm_cli("workflow", "start", "mycode_project", "--apps-path", APPS, "--file", str(tasks))
    assert (
        """line 1: expected a JSON object such as '{"args": {"x": 3}}', got list"""
        in assert_clean_failure(bad_line)
    )
    both = keepwarm_cli(
        "workflow", "start", "mycode_project", "--apps-path", APPS, "--file", str(tasks), "--count", "2"
    )
    assert "not both" in assert_clean_failure(both)
    bad = keepwarm_cli("workflow", "start", "mycode_project", "--apps-path", APPS, "--args", '{"x": 0}')
    assert "invalid args: x:" in assert_clean_failure(bad)
    missing = keepwarm_cli("workflow", "status", "mycode_project-nobody-0042")
    assert "no workflow run 'mycode_project-nobody-0042'" in assert_clean_failure(missing)
    elsewhere = keepwarm_cli("workflow", "status", execution_id, "--namespace", "team-b")
    assert "namespace 'team-b'" in assert_clean_failure(elsewhere)
