"""``--json`` on failure: every verb prints one JSON document, ``{"error", "kind"}``, on stdout too.

Each command line below fails; run with and without ``--json`` through the console script, it must
exit with the same code, print the same message (on stderr as ``error: …``, and as the document's
``error``), and with ``--json`` print exactly one JSON document on stdout and nothing else there.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from keepwarm.env import Env

from .conftest import Services
from .test_cli import APPS, keepwarm_cli

APP = ["mycode_project", "--apps-path", APPS]

# (command line, kind): one per surface of the CLI that takes --json.
FAILING = [
    (["status", *APP, "--namespace", "no/slash"], "SettingsError"),
    (["start", "no_such_app", "--apps-path", APPS], "AppNotFound"),
    (["restart", *APP, "--loop", "loop-0"], "ServiceNotRunning"),
    (["scale", *APP, "2"], "ServiceNotRunning"),
    (["submit", *APP, "--args", '{"x": 3}'], "ServiceNotRunning"),
    (["submit", *APP], "UserError"),
    (["result", *APP, "no-such-task", "--timeout", "1"], "TaskNotFound"),
    (["tasks", *APP, "--state", "lost"], "UsageError"),
    (["cancel", *APP], "UserError"),
    (["logs", *APP], "UserError"),
    (["status", *APP, "--no-such-option"], "UsageError"),
    (["health", *APP, "--format", "prometheus"], "UsageError"),  # with --json added: a usage error
    (["data", "no_such_app", "--apps-path", APPS], "AppNotFound"),
    (["distribute", *APP, "--move", "p0"], "UserError"),
    (["workflow", "status", "not-an-id"], "WorkflowNotFound"),
    (["up", "/no/such/fleet.toml"], "SettingsError"),
    (["pipeline", "run", *APP], "StepNotFound"),  # the bundled example has no pipeline
    (["pipeline", "add", *APP, "no_such_snippet.py"], "SnippetFileError"),
]


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    return "\n".join(lines).removeprefix("error: ")


@pytest.mark.parametrize(("argv", "kind"), FAILING, ids=[" ".join(a[:2]) for a, _ in FAILING])
def test_a_failing_verb_with_json_prints_one_error_document_and_the_same_exit_code(
    argv: list[str], kind: str
) -> None:
    as_json = keepwarm_cli(*argv, "--json")

    assert as_json.returncode == 1, as_json
    assert json.loads(as_json.stdout) == {"error": error_line(as_json), "kind": kind}
    assert "Traceback" not in as_json.stderr
    if argv[0] == "health":
        return  # without --json, --format prometheus is no error
    as_text = keepwarm_cli(*argv)
    assert as_text.returncode == as_json.returncode and as_text.stdout == ""
    assert error_line(as_text) == error_line(as_json)


def test_health_gate_json_failing_check_exits_1_with_one_document() -> None:
    result = keepwarm_cli("health", *APP, "--gate", "--max-unhealthy", "-1", "--json")

    assert result.returncode == 1
    assert json.loads(result.stdout)["kind"] == "UsageError"


def test_health_json_of_a_stopped_service_keeps_the_gate_code(mycode_env: Env) -> None:
    result = keepwarm_cli("health", *APP, "--gate", "--json")

    assert result.returncode == 3  # stopped: the gate's code, not 1
    document = json.loads(result.stdout)
    assert document["status"] == "stopped" and document["gate"]["code"] == 3


def test_submit_wait_json_carries_the_traceback_of_a_failed_task(services: Services, flaky_env: Env) -> None:
    services.start(flaky_env, slots=1)

    result = keepwarm_cli(
        "submit", "flaky", "--apps-path", APPS, "--args", '{"action": "raise"}', "--wait", "--json",
        "--timeout", "60",
    )  # fmt: skip

    assert result.returncode == 1
    [record] = json.loads(result.stdout)["results"]
    assert record["status"] == "failed" and record["error"].startswith("ValueError")
    assert "Traceback (most recent call last)" in record["traceback"]
    assert f"queued {record['task_id']}" in result.stderr
