"""The ``keepwarm`` command line, run as a real subprocess through its console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import click
import pytest

import keepwarm
from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import ServiceNotRunning
from keepwarm.queue.taskqueue import TaskQueue

from .conftest import EXAMPLE_APPS, ROOT, Loops, Services, queue_of, wait_until, write_app

APPS = str(EXAMPLE_APPS)
KEEPWARM = shutil.which("keepwarm", path=str(Path(sys.executable).parent)) or str(
    Path(sys.executable).parent / "keepwarm"
)
SUBMIT = ["submit", "mycode_project", "--apps-path", APPS]
SUBMIT_FLAKY = ["submit", "flaky", "--apps-path", APPS]
SIX = {"x": 6, "collatz_steps": 8, "prime_factors": [2, 3]}


def keepwarm_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the console script with this test's environment (its KEEPWARM_SHARE and KEEPWARM_LOG_DIR)."""
    return subprocess.run(
        [KEEPWARM, *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def one_line(text: str) -> str:
    """Messages are wrapped to the terminal width; compare them with whitespace collapsed."""
    return " ".join(text.split())


def counts_of(queue: TaskQueue) -> tuple[int, int, int, int]:
    counts = queue.counts()
    return counts.pending, counts.running, counts.done, counts.failed


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 1, one "error:" message on stderr, no traceback; returns the message on one line."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    return one_line(result.stderr)


# ---------------------------------------------------------------- light start


IMPORTED_HEAVY = textwrap.dedent(
    """
    import sys
    import keepwarm.cli

    try:
        keepwarm.cli.main(sys.argv[1:])
    except SystemExit:
        pass
    heavy = sorted(m for m in sys.modules if m.partition(".")[0] in {"dask", "distributed", "streamlit"})
    print("HEAVY-MODULES:" + ",".join(heavy))
    """
)


def heavy_modules_after(*argv: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED_HEAVY, *argv],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    marker = result.stdout.strip().splitlines()[-1]
    assert marker.startswith("HEAVY-MODULES:"), result.stdout
    return [name for name in marker.removeprefix("HEAVY-MODULES:").split(",") if name]


def test_help_imports_neither_dask_nor_streamlit() -> None:
    assert heavy_modules_after("--help") == []


def test_local_queue_verbs_import_neither_dask_nor_streamlit() -> None:
    assert heavy_modules_after("tasks", "mycode_project", "--apps-path", APPS, "--json") == []


def test_help_lists_the_verbs() -> None:
    result = keepwarm_cli("--help")

    assert result.returncode == 0
    for verb in ("submit", "result", "tasks", "cancel", "demo"):
        assert verb in result.stdout


def test_version_prints_the_package_version() -> None:
    result = keepwarm_cli("--version")

    assert result.returncode == 0
    assert result.stdout.strip() == f"keepwarm {keepwarm.__version__}"


# ---------------------------------------------------------------- start


def test_a_start_refused_by_a_concurrent_start_names_the_supervisor_pid_and_host(mycode_env: Env) -> None:
    start = ["start", "mycode_project", "--apps-path", APPS, "--workers", "1"]
    racing = [
        subprocess.Popen(
            [KEEPWARM, *start], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        for _ in range(2)
    ]
    try:
        outcomes = sorted((p.wait(timeout=60), p.communicate()[1]) for p in racing)
        supervisor = Service(mycode_env).status().supervisor
    finally:
        Service(mycode_env).stop(timeout=5)
    (won, _), (lost, message) = outcomes
    assert (won, lost) == (0, 1), outcomes
    assert f"(supervisor pid {supervisor.pid} on {supervisor.host}); stop it first" in one_line(message)


def test_a_start_that_finds_the_lock_taken_by_a_start_in_progress_says_so(mycode_env: Env) -> None:
    from keepwarm.service.lifecycle import lock_path
    from keepwarm.service.supervisor import acquire_lock

    mycode_env.service_dir.mkdir(parents=True)
    fd = acquire_lock(lock_path(mycode_env))  # held, as a start holds it before its supervisor runs
    try:
        result = keepwarm_cli("start", "mycode_project", "--apps-path", APPS)
    finally:
        os.close(fd or -1)

    message = assert_clean_failure(result)
    assert "service 'mycode_project' is being started by another process, which holds" in message
    assert "service.lock; wait for that start, then: keepwarm status mycode_project" in message


# ---------------------------------------------------------------- submit


def test_submit_wait_json_prints_one_json_document_with_the_result(
    services: Services, mycode_env: Env
) -> None:
    services.start(mycode_env, slots=1)

    result = keepwarm_cli(
        "submit", "mycode_project", "--apps-path", APPS, "--args", '{"x": 6}', "--wait", "--json",
        "--timeout", "30",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # fails on anything besides one JSON document
    [record] = document["results"]
    assert record["status"] == "done"
    assert record["result"] == SIX
    assert queue_of(mycode_env).read_record(record["task_id"]) is not None


def test_submit_wait_prints_the_result_next_to_the_task_id(services: Services, mycode_env: Env) -> None:
    services.start(mycode_env, slots=1)

    result = keepwarm_cli(
        "submit", "mycode_project", "--apps-path", APPS, "--args", '{"x": 6}', "--wait", "--timeout", "30"
    )

    assert result.returncode == 0, result.stderr
    task_id, shown = result.stdout.strip().split("\t")
    assert json.loads(shown) == SIX
    assert queue_of(mycode_env).read_record(task_id) is not None


def test_submit_queue_only_prints_the_task_id_of_a_pending_task(mycode_env: Env) -> None:
    result = keepwarm_cli(
        "submit", "mycode_project", "--apps-path", APPS, "--args", '{"x": 6}', "--queue-only"
    )

    assert result.returncode == 0, result.stderr
    task_id = result.stdout.strip()
    location = queue_of(mycode_env).locate(task_id)
    assert location.state == "pending"


def test_submit_file_submits_every_line_and_prints_the_ids(tmp_path: Path, mycode_env: Env) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        '{"args": {"x": 3}}\n'
        "\n"
        '{"args": {"x": 4}, "task_name": "four", "execution_id": "batch-1"}\n'
        '{"args": {"x": 5}, "max_attempts": 1, "timeout_sec": 9}\n'
    )

    result = keepwarm_cli(
        "submit", "mycode_project", "--apps-path", APPS, "--queue-only", "--file", str(tasks)
    )

    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 3
    assert len(set(ids)) == 3
    queue = queue_of(mycode_env)
    assert counts_of(queue) == (3, 0, 0, 0)
    pending = {task.task_id: task for task in (load_pending(queue, task_id) for task_id in ids)}
    assert [pending[i].args for i in ids] == [{"x": 3}, {"x": 4}, {"x": 5}]
    assert pending[ids[1]].task_name == "four"
    assert pending[ids[1]].execution_id == "batch-1"
    assert pending[ids[2]].max_attempts == 1
    assert pending[ids[2]].timeout_sec == 9


def test_submit_file_json_prints_the_ids_as_one_document(tmp_path: Path, mycode_env: Env) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"args": {"x": 3}}\n{"args": {"x": 4}}\n')

    result = keepwarm_cli(
        "submit", "mycode_project", "--apps-path", APPS, "--queue-only", "--file", str(tasks), "--json"
    )

    assert result.returncode == 0, result.stderr
    ids = json.loads(result.stdout)["task_ids"]
    assert len(ids) == 2
    assert {queue_of(mycode_env).locate(i).state for i in ids} == {"pending"}


def load_pending(queue: TaskQueue, task_id: str) -> keepwarm.Task:
    return keepwarm.Task.model_validate_json(queue.locate(task_id).path.read_bytes())


@pytest.mark.parametrize(
    ("bad_line", "named"),
    [
        ('{"args": {"x": 4}', "not valid JSON"),
        ('{"args": {"x": 4}, "priority": 9}', "priority"),
        ('{"args": [4]}', "args"),
        ("[1, 2]", "JSON object"),
    ],
    ids=["invalid-json", "unknown-key", "args-not-object", "line-not-object"],
)
def test_submit_file_with_a_bad_line_names_the_line_and_submits_nothing(
    tmp_path: Path, mycode_env: Env, bad_line: str, named: str
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(f'{{"args": {{"x": 3}}}}\n{bad_line}\n{{"args": {{"x": 5}}}}\n')
    queue = queue_of(mycode_env)
    before = counts_of(queue)

    result = keepwarm_cli(
        "submit", "mycode_project", "--apps-path", APPS, "--queue-only", "--file", str(tasks)
    )

    message = assert_clean_failure(result)
    assert "line 2" in message
    assert named in message
    assert result.stdout == ""
    assert counts_of(queue) == before


def test_submit_file_error_line_number_counts_blank_lines(tmp_path: Path, mycode_env: Env) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"args": {"x": 3}}\n\n{"args": {"x": 4}, "priority": 9}\n')
    queue = queue_of(mycode_env)

    result = keepwarm_cli(
        "submit", "mycode_project", "--apps-path", APPS, "--queue-only", "--file", str(tasks)
    )

    message = assert_clean_failure(result)
    assert "line 3" in message  # the line of the file, as an editor shows it
    assert counts_of(queue) == (0, 0, 0, 0)


def test_submit_refuses_at_once_when_no_service_runs_unless_queue_only(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)

    refused = keepwarm_cli(*SUBMIT, "--args", '{"x": 6}', "--wait")

    message = assert_clean_failure(refused)
    assert "service 'mycode_project' is not running" in message and "--queue-only" in message
    assert counts_of(queue) == (0, 0, 0, 0)
    with pytest.raises(ServiceNotRunning, match="queue_only=True"):  # the same rule from Python
        Service(mycode_env).submit({"x": 6})
    assert counts_of(queue) == (0, 0, 0, 0)

    queued = keepwarm_cli(*SUBMIT, "--args", '{"x": 6}', "--queue-only")
    assert queued.returncode == 0 and queue.locate(queued.stdout.strip()).state == "pending"


def test_submit_requires_args_or_file_and_takes_empty_braces(mycode_env: Env) -> None:
    missing = keepwarm_cli(*SUBMIT, "--queue-only")

    assert "give the task's args: --args JSON (--args '{}' for none)" in assert_clean_failure(missing)
    assert counts_of(queue_of(mycode_env)) == (0, 0, 0, 0)
    empty = keepwarm_cli(*SUBMIT, "--queue-only", "--args", "{}")
    assert empty.returncode == 0, empty.stderr
    assert queue_of(mycode_env).locate(empty.stdout.strip()).state == "pending"


def test_submit_task_timeout_and_max_attempts_are_the_task_s_own_and_timeout_is_the_wait(
    tmp_path: Path, mycode_env: Env
) -> None:
    own = keepwarm_cli(*SUBMIT, "--queue-only", "--args", "{}", "--task-timeout", "2", "--max-attempts", "5")
    waited = keepwarm_cli(*SUBMIT, "--queue-only", "--args", "{}", "--wait", "--timeout", "0.2")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"args": {"x": 1}}\n{"args": {"x": 2}, "timeout_sec": 9}\n')
    from_file = keepwarm_cli(*SUBMIT, "--queue-only", "--file", str(tasks), "--task-timeout", "4")

    def task(task_id: str) -> dict[str, object]:
        return json.loads(queue_of(mycode_env).locate(task_id).path.read_text())

    assert own.returncode == 0, own.stderr
    assert (task(own.stdout.strip())["timeout_sec"], task(own.stdout.strip())["max_attempts"]) == (2, 5)
    assert "no result after 0.2s" in assert_clean_failure(waited)  # --timeout bounded the wait only...
    waited_id = waited.stderr.split()[1]  # "queued <id>" comes first
    assert task(waited_id)["timeout_sec"] == 3600  # ...the task keeps [cluster] task_timeout_sec
    assert [task(i)["timeout_sec"] for i in from_file.stdout.split()] == [4, 9]  # a line's own wins
    help_text = one_line(keepwarm_cli("submit", "--help").stdout)
    assert "Seconds each task may run before it fails" in help_text
    assert "With --wait: seconds to wait for the results, not the tasks' own limit" in help_text


def test_submit_wait_prints_the_ids_first_and_stops_when_the_service_stops(
    services: Services, flaky_env: Env
) -> None:
    service = services.start(flaky_env, slots=1)
    waiting = subprocess.Popen(
        [KEEPWARM, *SUBMIT_FLAKY, "--args", '{"action": "sleep", "seconds": 30}', "--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        wait_until(lambda: service.counts().running == 1, timeout=30, what="the task to run")
        service.stop(timeout=1)
        stdout, stderr = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 1 and stdout == ""
    first, *rest = stderr.splitlines()
    task_id = first.removeprefix("queued ")
    message = one_line(" ".join(rest))
    assert "service 'flaky' stopped running while waiting for task " + task_id in message
    assert "the tasks stay queued" in message and "Traceback" not in stderr
    assert service.queue.locate(task_id).state == "pending"


BREAKS_ON_REQUEST = """
import os
from pathlib import Path

BROKEN = Path(__file__).with_name("broken")


class Worker:
    def start(self):
        if BROKEN.exists():
            raise RuntimeError("the model file is gone")

    def work(self, item):
        if item.args.get("break"):
            BROKEN.touch()
            os._exit(3)
        return item.args

    def stop(self):
        pass
"""


def test_submit_wait_stops_when_every_loop_keeps_failing_to_start(tmp_path: Path, services: Services) -> None:
    app = write_app(
        tmp_path, "breaks", BREAKS_ON_REQUEST, "[cluster]\nslots = 1\nheartbeat_interval_sec = 0.2\n"
    )
    env = Env(app)
    services.start(env)

    result = keepwarm_cli("submit", str(app), "--args", '{"break": true}', "--wait", "--json")

    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["kind"] == "ServiceCannotDeliver"
    assert "every loop of service 'breaks' keeps failing to start" in document["error"]
    assert "loop-0: start failed: RuntimeError: the model file is gone" in document["error"]
    task_id = result.stderr.splitlines()[0].removeprefix("queued ")
    assert Service(env).queue.locate(task_id).state == "pending"  # still queued, for after the fix


# ---------------------------------------------------------------- result


def test_result_prints_the_value_work_returned(loops: Loops, mycode_env: Env) -> None:
    loops.start(mycode_env, 1)
    handle = Service(mycode_env).submit({"x": 6}, queue_only=True)
    handle.result(timeout=30)

    result = keepwarm_cli("result", "mycode_project", handle.task_id, "--apps-path", APPS)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == SIX


def test_result_of_a_failed_task_exits_1_with_remote_error_and_traceback(
    loops: Loops, flaky_env: Env
) -> None:
    loops.start(flaky_env, 1)
    handle = Service(flaky_env).submit({"action": "raise"}, queue_only=True)
    assert handle.record(timeout=30).status == "failed"

    result = keepwarm_cli("result", "flaky", handle.task_id, "--apps-path", APPS, "--timeout", "5")

    assert result.returncode == 1
    assert result.stdout == ""
    stderr = one_line(result.stderr)
    assert f"task {handle.task_id} failed" in stderr
    assert "ValueError" in stderr
    assert "raised on purpose" in stderr
    assert "remote traceback" in stderr
    assert "worker.py" in stderr  # the frame in the app's code, from the loop's process
    assert "in work" in stderr


def test_result_json_of_a_failed_task_carries_error_and_traceback(loops: Loops, flaky_env: Env) -> None:
    loops.start(flaky_env, 1)
    handle = Service(flaky_env).submit({"action": "raise"}, queue_only=True)
    handle.record(timeout=30)

    result = keepwarm_cli("result", "flaky", handle.task_id, "--apps-path", APPS, "--json")

    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["status"] == "failed"
    assert "raised on purpose" in document["error"]
    assert "ValueError" in document["traceback"]


def test_result_timeout_on_a_pending_task_exits_1_with_a_clear_message(mycode_env: Env) -> None:
    handle = Service(mycode_env).submit({"x": 6}, queue_only=True)

    result = keepwarm_cli("result", "mycode_project", handle.task_id, "--apps-path", APPS, "--timeout", "0.2")

    message = assert_clean_failure(result)
    assert handle.task_id in message
    assert "no result after 0.2s" in message
    assert "pending" in message
    assert handle.state == "pending"


def test_result_of_an_unknown_task_exits_1_naming_it() -> None:
    result = keepwarm_cli("result", "mycode_project", "no-such-task", "--apps-path", APPS, "--timeout", "5")

    message = assert_clean_failure(result)
    assert "'no-such-task'" in message


# ---------------------------------------------------------------- tasks


def test_tasks_json_shows_counts_and_rows(mycode_env: Env) -> None:
    service = Service(mycode_env)
    kept = [service.submit({"x": x}, queue_only=True) for x in (3, 4)]
    dropped = service.submit({"x": 5}, queue_only=True)
    assert service.cancel([dropped.task_id]) == [dropped.task_id]

    result = keepwarm_cli("tasks", "mycode_project", "--apps-path", APPS, "--json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    counts = document["counts"]
    assert (counts["pending"], counts["running"], counts["done"], counts["failed"]) == (2, 0, 0, 1)
    rows = {row["task_id"]: row for row in document["tasks"]}
    assert set(rows) == {h.task_id for h in [*kept, dropped]}
    assert {rows[h.task_id]["state"] for h in kept} == {"pending"}
    assert rows[dropped.task_id]["state"] == "cancelled"


def test_tasks_rows_share_one_time_format_name_the_task_and_say_cancelled(
    services: Services, mycode_env: Env
) -> None:
    service = Service(mycode_env)
    pending = service.submit({"x": 3}, task_name="early", queue_only=True)
    dropped = service.submit({"x": 5}, task_name="dropped", queue_only=True)
    service.cancel([dropped.task_id])
    services.start(mycode_env, slots=1)
    pending.result(timeout=30)
    service.stop()
    waiting = service.submit({"x": 6}, task_name="waiting", queue_only=True)

    result = keepwarm_cli("tasks", "mycode_project", "--apps-path", APPS, "--json")
    table = keepwarm_cli("tasks", "mycode_project", "--apps-path", APPS)
    only = keepwarm_cli("tasks", "mycode_project", "--apps-path", APPS, "--state", "cancelled", "--json")

    rows = {row["task_id"]: row for row in json.loads(result.stdout)["tasks"]}
    assert [
        (rows[h.task_id]["task_name"], rows[h.task_id]["state"]) for h in (pending, dropped, waiting)
    ] == [
        ("early", "done"),
        ("dropped", "cancelled"),
        ("waiting", "pending"),
    ]
    for row in rows.values():  # one format: ISO-8601 UTC, submitted (pending) or finished
        assert datetime.fromisoformat(row["at"]).tzinfo is not None and row["at"].endswith("Z")
    assert [row["task_id"] for row in json.loads(only.stdout)["tasks"]] == [dropped.task_id]
    header, *lines = table.stdout.splitlines()[1:]
    assert header.split() == ["task_id", "task_name", "state", "at", "runtime_sec", "error"]
    assert any(dropped.task_id in line and " cancelled " in line for line in lines)
    assert any(
        waiting.task_id in line and " waiting " in line and rows[waiting.task_id]["at"] in line
        for line in lines
    )


def test_tasks_state_filter_shows_only_that_state(mycode_env: Env) -> None:
    service = Service(mycode_env)
    pending = service.submit({"x": 3}, queue_only=True)
    dropped = service.submit({"x": 5}, queue_only=True)
    service.cancel([dropped.task_id])

    result = keepwarm_cli("tasks", "mycode_project", "--apps-path", APPS, "--state", "pending", "--json")

    assert result.returncode == 0, result.stderr
    assert [row["task_id"] for row in json.loads(result.stdout)["tasks"]] == [pending.task_id]


def test_tasks_table_names_the_app_and_its_tasks(mycode_env: Env) -> None:
    handle = Service(mycode_env).submit({"x": 3}, queue_only=True)

    result = keepwarm_cli("tasks", "mycode_project", "--apps-path", APPS)

    assert result.returncode == 0, result.stderr
    assert "mycode_project" in result.stdout
    assert "pending 1" in one_line(result.stdout)
    assert handle.task_id[:8] in result.stdout


# ---------------------------------------------------------------- cancel


def test_cancel_execution_id_cancels_only_that_executions_pending_tasks(mycode_env: Env) -> None:
    service = Service(mycode_env)
    ours = [service.submit({"x": x}, execution_id="exec-a", queue_only=True) for x in (3, 4)]
    theirs = service.submit({"x": 5}, execution_id="exec-b", queue_only=True)
    loose = service.submit({"x": 6}, queue_only=True)

    result = keepwarm_cli("cancel", "mycode_project", "--execution-id", "exec-a", "--apps-path", APPS)

    assert result.returncode == 0, result.stderr
    for handle in ours:
        assert handle.task_id in result.stdout
        record = service.queue.read_record(handle.task_id)
        assert record is not None
        assert record.status == "cancelled"
    assert theirs.state == "pending"
    assert loose.state == "pending"
    assert counts_of(service.queue) == (2, 0, 0, 2)


def test_cancel_by_task_id_cancels_that_task(mycode_env: Env) -> None:
    service = Service(mycode_env)
    target, other = service.submit({"x": 3}, queue_only=True), service.submit({"x": 4}, queue_only=True)

    result = keepwarm_cli("cancel", "mycode_project", target.task_id, "--apps-path", APPS, "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cancelled"] == [target.task_id]
    assert target.state == "failed"
    assert other.state == "pending"


def test_cancel_of_an_unknown_task_id_exits_1_and_changes_nothing(mycode_env: Env) -> None:
    service = Service(mycode_env)
    handle = service.submit({"x": 3}, queue_only=True)

    result = keepwarm_cli("cancel", "mycode_project", "no-such-task", "--apps-path", APPS)

    assert result.returncode == 1
    assert "no-such-task" in result.stderr
    assert "not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert handle.state == "pending"


def test_cancel_of_an_unknown_execution_id_exits_1(mycode_env: Env) -> None:
    handle = Service(mycode_env).submit({"x": 3}, execution_id="exec-a", queue_only=True)

    result = keepwarm_cli("cancel", "mycode_project", "--execution-id", "exec-z", "--apps-path", APPS)

    assert result.returncode == 1
    assert "exec-z" in result.stderr
    assert handle.state == "pending"


# ---------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["frobnicate"], "frobnicate"),
        (["submit"], "APP"),
        (["tasks", "mycode_project", "--apps-path", APPS, "--state", "sleeping"], "--state"),
        ([*SUBMIT, "--args", "{x: 1"], "--args: not valid JSON"),
        ([*SUBMIT, "--args", "[1, 2]"], "--args: expected a JSON object"),
        ([*SUBMIT, "--args", "{}", "--file", "t.jsonl"], "either --args or --file"),
        (["submit", "mycode_projet", "--apps-path", APPS, "--args", "{}"], "apps there: batch_model, flaky"),
        (["cancel", "mycode_project", "--apps-path", APPS], "--execution-id"),
        (["result", "mycode_project", "x", "--apps-path", APPS, "--timeout", "-1"], "--timeout"),
    ],
    ids=[
        "unknown-verb", "missing-app", "bad-state", "args-not-json", "args-not-object", "args-and-file",
        "unknown-app", "cancel-nothing", "negative-timeout",
    ],
)  # fmt: skip
def test_usage_error_exits_1_with_a_message_and_no_traceback(
    mycode_env: Env, argv: list[str], named: str
) -> None:
    result = keepwarm_cli(*argv)

    message = assert_clean_failure(result)
    assert named in message
    assert counts_of(queue_of(mycode_env)) == (0, 0, 0, 0)


# ---------------------------------------------------------------- namespaces

SERVICE_VERBS = (
    "start", "status", "health", "stop", "submit", "result", "tasks", "cancel", "retry", "scale", "drain",
    "restart", "snapshot", "logs",
)  # fmt: skip


def test_every_service_verb_takes_namespace_the_way_workflows_do(isolated_dirs: Path) -> None:
    from keepwarm.cli import VERBS, cli

    for verb in SERVICE_VERBS:
        assert VERBS[verb].startswith(("service:", "tasks:")), verb
        command = cli.get_command(click.Context(cli), verb)
        assert command is not None
        [option] = [p for p in command.params if p.name == "namespace"]
        assert option.opts == ["--namespace"], verb

    queued = keepwarm_cli(*SUBMIT, "--queue-only", "--args", "{}", "--namespace", "team-a")
    status = keepwarm_cli("status", "mycode_project", "--apps-path", APPS, "--namespace", "team-a", "--json")
    listed = keepwarm_cli("tasks", "mycode_project", "--apps-path", APPS, "--namespace", "team-a", "--json")

    assert queued.returncode == 0, queued.stderr
    assert len(os.listdir(isolated_dirs / "team-a" / "service" / "mycode_project" / "queue" / "pending")) == 1
    assert json.loads(status.stdout)["namespace"] == "team-a"
    assert json.loads(status.stdout)["queue"]["pending"] == 1
    assert [row["task_id"] for row in json.loads(listed.stdout)["tasks"]] == [queued.stdout.strip()]
    bad = keepwarm_cli("status", "mycode_project", "--apps-path", APPS, "--namespace", "no/slash")
    bad_workflow = keepwarm_cli(
        "workflow", "start", "mycode_project", "--apps-path", APPS, "--namespace", "no/slash"
    )
    assert assert_clean_failure(bad) == assert_clean_failure(bad_workflow)  # one validation for both
    assert "not a safe name" in assert_clean_failure(bad)


# ---------------------------------------------------------------- demo


def test_demo_serves_every_task_and_reports_it_as_json() -> None:
    result = keepwarm_cli("demo", "--tasks", "40", "--json", timeout=120)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["app"] == "mycode_project"
    assert report["tasks"] == 40
    assert report["failed"] == 0
    assert sum(report["tasks_per_loop"].values()) == 40
    assert report["samples"][0] == {"x": 1, "result": {"x": 1, "collatz_steps": 0, "prime_factors": []}}
    assert report["share_dir"] is None  # the demo's temporary share is removed
