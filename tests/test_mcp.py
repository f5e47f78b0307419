"""The MCP server, driven by the official SDK's client: `keepwarm mcp` runs as a real subprocess
(stdio, or HTTP on 127.0.0.1) against real services on the test's isolated share."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from keepwarm.app import load_args_model
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.groups.fleet import Fleet
from keepwarm.mcp.server import READ_TOOLS, WRITE_TOOLS
from keepwarm.mcp.transports import http_token
from keepwarm.service.lifecycle import stop_service

from .conftest import EXAMPLE_APPS, ROOT, write_app

KEEPWARM = str(Path(sys.executable).parent / "keepwarm")
APPS = str(EXAMPLE_APPS)
NAMESPACE = "agents"


def server(*args: str) -> StdioServerParameters:
    # The SDK gives a stdio server only a minimal environment: pass the test's share and log dirs.
    return StdioServerParameters(command=KEEPWARM, args=["mcp", *args], env=dict(os.environ), cwd=str(ROOT))


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}: {result.content}"
    assert result.structured_content is not None
    return result.structured_content


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; its error text."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} should have failed: {result.structured_content}"
    text = getattr(result.content[0], "text", "")
    assert "Traceback" not in text
    return " ".join(text.split())


async def eventually(
    client: Client, tool: str, check: Any, timeout: float = 30, **arguments: Any
) -> dict[str, Any]:
    """Call a read tool until ``check(result)`` holds; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = await call(client, tool, **arguments)
        if check(result):
            return result
        assert time.monotonic() < deadline, f"{tool} never satisfied the check: {result}"
        await asyncio.sleep(0.05)


@pytest.fixture
def fleet_file(tmp_path: Path) -> Iterator[Path]:
    """A one-service fleet in the namespace ``agents``; everything the server may start is stopped after."""
    path = tmp_path / "fleet.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [fleet]
            namespace = "{NAMESPACE}"
            apps_path = "{APPS}"

            [services.flaky]
            workers = 1
            """
        )
    )
    yield path
    try:
        stop_service(Env("mycode_project", APPS, namespace=NAMESPACE), timeout=5)
    finally:
        Fleet(path).down(timeout=5)


def test_every_tool_over_stdio_against_real_services(fleet_file: Path) -> None:
    async def scenario() -> None:
        parameters = server("--fleet", str(fleet_file), "--apps-path", APPS, "--expose", "mycode_project")
        async with Client(parameters) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == READ_TOOLS | WRITE_TOOLS | {"mycode_project"}
            args_model = load_args_model(Env("mycode_project", APPS))
            assert args_model is not None
            assert tools["mycode_project"].input_schema == args_model.model_json_schema()
            assert tools["service_status"].annotations is not None
            assert tools["service_status"].annotations.read_only_hint is True

            # Before anything runs: an unknown app, and a service that is not running.
            assert "app 'nope' not found" in await refused(client, "service_status", app="nope")
            assert "apps there: batch_model, flaky, model_server, mycode_project" in await refused(
                client, "start_service", app="nope"
            )
            start_it = 'start it: call start_service with {"app": "mycode_project", "namespace": "agents"}'
            submitted = await refused(client, "submit_task", app="mycode_project", args={"x": 3})
            assert submitted.startswith("service 'mycode_project' is not running; ")
            assert "(queue_only=True), or " + start_it in submitted
            exposed = await refused(
                client, "mycode_project", x=3
            )  # no queue_only: the app's tool runs a task
            assert exposed == f"service 'mycode_project' is not running; {start_it}"
            stopped = await call(client, "service_health", app="mycode_project")
            assert stopped["status"] == "stopped" and stopped["gate"]["code"] == 3

            # A service: started, refused twice, listed; idle fails the app's gate, an override passes it.
            started = await call(client, "start_service", app="mycode_project", workers=1)
            assert started["started"] and started["ready"] and started["status"] == "idle"
            assert started["namespace"] == NAMESPACE and started["workers_healthy_count"] == 1
            twice = await refused(client, "start_service", app="mycode_project")
            assert "is running (supervisor pid" in twice and "keepwarm stop" not in twice
            assert twice.endswith(
                'stop it first: call stop_service with {"app": "mycode_project", "namespace": "agents"}'
            )
            listed = await call(client, "list_services")
            assert listed["namespace"] == NAMESPACE
            assert [(row["app"], row["ready"]) for row in listed["services"]] == [("mycode_project", True)]
            health = await call(client, "service_health", app="mycode_project")
            assert health["gate"]["code"] == 4 and health["gate"]["reasons"] == [
                "status is idle and allow_idle = false"
            ]
            assert (await call(client, "service_health", app="mycode_project", allow_idle=True))["gate"][
                "passed"
            ]
            assert (await call(client, "service_status", app="mycode_project"))["workers_healthy_count"] == 1

            # Tasks: submitted, their results read back; bad args and unknown ids are refused.
            submitted = await call(client, "submit_task", app="mycode_project", args={"x": 6})
            assert submitted["state"] in ("pending", "running", "done")
            outcome = await call(
                client, "get_result", app="mycode_project", task_id=submitted["task_id"], timeout=30
            )
            assert outcome["finished"] and outcome["status"] == "done"
            assert outcome["result"] == {"x": 6, "collatz_steps": 8, "prime_factors": [2, 3]}
            invalid = await refused(client, "submit_task", app="mycode_project", args={"x": 0})
            assert "invalid args: x: input should be greater than or equal to 1" in invalid
            unknown = await refused(client, "get_result", app="mycode_project", task_id="nope")
            assert "no task 'nope'" in unknown and "keepwarm tasks" not in unknown

            # The exposed app: one call, one task, its result.
            ran = await call(client, "mycode_project", x=12)
            assert ran["result"] == {"x": 12, "collatz_steps": 9, "prime_factors": [2, 2, 3]}
            assert "greater than or equal to 1" in await refused(client, "mycode_project", x=0)

            # A workflow run: an id at once, progress to completion; an ended run cannot be stopped.
            run = await call(client, "start_workflow", app="mycode_project", count=3, args={"x": 5})
            assert run["execution_id"].startswith("mycode_project-") and run["total"] == 3
            done = await eventually(
                client, "workflow_status", lambda r: r["state"] != "running", execution_id=run["execution_id"]
            )
            assert done["state"] == "completed" and done["progress"]["done"] == 3
            assert (await call(client, "stop_workflow", execution_id=run["execution_id"]))[
                "state"
            ] == "completed"
            missing = await refused(client, "workflow_status", execution_id="x-y-0042")
            assert "no workflow run 'x-y-0042'" in missing and "--namespace" not in missing
            assert (
                'a run belongs to the namespace that started it: call workflow_status with {"execution_id"'
                in missing
            )
            assert "not an execution id" in await refused(client, "stop_workflow", execution_id="../0001")

            outcome = await call(client, "stop_service", app="mycode_project")
            assert outcome == {"status": "stopped", "message": "service mycode_project stopped"}
            again = await call(client, "stop_service", app="mycode_project")
            assert again["message"] == "service mycode_project is already stopped"

            # The fleet: up (ready), refused while up; after a crash it is ready again (every loop
            # healthy) while the gate fails on the restart rate.
            assert not (await call(client, "fleet_status"))["ready"]
            up = await call(client, "fleet_up")
            assert up["ready"] and up["namespace"] == NAMESPACE and up["services"][0]["service"] == "flaky"
            remedy = f'stop it first: call fleet_down with {{"fleet": "{fleet_file}"}}'
            assert f"already running: flaky (app flaky); {remedy}" in await refused(client, "fleet_up")
            crash = await call(
                client, "submit_task", app="flaky", args={"action": "crash", "only_attempt": 1}
            )
            recovered = await call(client, "get_result", app="flaky", task_id=crash["task_id"], timeout=30)
            assert recovered["status"] == "done" and recovered["result"]["attempt"] == 2
            status = await eventually(
                client, "fleet_status", lambda r: r["services"][0]["loops_healthy"] == 1
            )
            row = status["services"][0]
            assert row["supervisor_alive"] and row["status"] == "running"
            assert row["gate_code"] == 5 and row["ready"] and status["ready"]  # restart rate 1.0 > 0.25

            down = await call(client, "fleet_down")
            assert down["services"] == [
                {"service": "flaky", "app": "flaky", "message": "service flaky stopped"}
            ]
            assert (await call(client, "fleet_status"))["services"][0]["status"] == "stopped"
            assert "fleet file 'nope.toml' not found" in await refused(
                client, "fleet_status", fleet="nope.toml"
            )

    asyncio.run(scenario())


def test_read_only_serves_only_the_read_tools() -> None:
    async def scenario() -> None:
        async with Client(server("--read-only", "--apps-path", APPS)) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == READ_TOOLS
            assert "Unknown tool: start_service" in await refused(
                client, "start_service", app="mycode_project"
            )
            status = await call(client, "service_status", app="mycode_project")
            assert status["status"] == "stopped"

    asyncio.run(scenario())


def test_http_refuses_requests_without_the_token_and_serves_with_it() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "KEEPWARM_MCP_TOKEN"}
    process = subprocess.Popen(
        [KEEPWARM, "mcp", "--http", "--port", "0", "--apps-path", APPS],
        env=environment,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        url = token = None
        while url is None or token is None:
            line = process.stderr.readline()
            assert line, f"the server exited ({process.wait()}) before announcing itself"
            if " tools at http://" in line:
                url = line.split(" tools at ")[1].split(",")[0]
            if "bearer token" in line:
                token = line.rsplit(": ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp") and len(token) >= 32

        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        refused_plain = httpx2.post(url, json=ping)
        assert refused_plain.status_code == 401 and refused_plain.headers["www-authenticate"].startswith(
            "Bearer"
        )
        assert httpx2.post(url, json=ping, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx2.post(url, json=ping, headers={"Authorization": token}).status_code == 401

        outside = socket.gethostbyname(socket.gethostname())
        if not outside.startswith("127."):  # nothing listens on the machine's other addresses
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(
                    (outside, int(url.rsplit(":", 1)[1].split("/")[0])), timeout=2
                ).close()

        async def scenario() -> None:
            headers = {"Authorization": f"Bearer {token}"}
            async with (
                httpx2.AsyncClient(headers=headers) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):
                assert {tool.name for tool in (await client.list_tools()).tools} == READ_TOOLS | WRITE_TOOLS
                assert (await call(client, "service_status", app="mycode_project"))["status"] == "stopped"

        asyncio.run(scenario())
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


def test_the_token_comes_from_the_environment_and_must_be_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPWARM_MCP_TOKEN", "short")
    with pytest.raises(KeepwarmError, match="KEEPWARM_MCP_TOKEN is too short"):
        http_token()
    monkeypatch.setenv("KEEPWARM_MCP_TOKEN", "a-long-enough-secret-token")
    assert http_token() == ("a-long-enough-secret-token", False)
    monkeypatch.delenv("KEEPWARM_MCP_TOKEN")
    generated, was_generated = http_token()
    assert was_generated and len(generated) >= 32 and generated != http_token()[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--read-only", "--expose", "mycode_project"], "cannot be combined with --read-only"),
        (["--expose", "nope"], "app 'nope' not found"),
        (["--expose", "mycode_project", "--expose", "mycode_project"], "expose each app once"),
        (["--fleet", "missing.toml"], "fleet file 'missing.toml' not found"),
    ],
)
def test_bad_server_options_are_one_clear_error(args: list[str], expected: str) -> None:
    result = subprocess.run(
        [KEEPWARM, "mcp", "--apps-path", APPS, *args],
        env=dict(os.environ),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr
    assert expected in result.stderr


def test_start_service_starts_a_fleet_member_as_up_does(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(
        f'[fleet]\nnamespace = "{NAMESPACE}"\napps_path = "{APPS}"\n\n'
        '[services.tagged]\napp = "flaky"\nworkers = 1\nenv = { MODEL_TAG = "v2" }\n'
    )
    fleet = Fleet(path)

    async def scenario() -> None:
        async with Client(server("--fleet", str(path))) as client:
            started = await call(client, "start_service", app="tagged")
            assert started["target"] == "flaky" and started["ready"] and started["workers_healthy_count"] == 1
            twice = await refused(client, "start_service", app="tagged")  # the starter's error, rebuilt
            assert twice.startswith("service 'flaky' is running (supervisor pid ")
            assert twice.endswith(
                f'stop it first: call stop_service with {{"app": "flaky", "namespace": "{NAMESPACE}"}}'
            )

    try:
        asyncio.run(scenario())
        # The member's env reached its loop, as with keepwarm up (the server's own environment has none).
        loop_pid = fleet.member("tagged").service.status().worker_health[0].pid
        environ = Path(f"/proc/{loop_pid}/environ").read_bytes().split(b"\0")
        assert b"MODEL_TAG=v2" in environ and "MODEL_TAG" not in os.environ
    finally:
        fleet.down(timeout=5)


def test_tools_refuse_unknown_and_bad_arguments_in_one_line(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Client(server("--apps-path", APPS, "--expose", "flaky")) as client:
            tools = (await client.list_tools()).tools
            assert all(tool.input_schema.get("additionalProperties") is False for tool in tools)

            typo = await refused(client, "start_service", app="flaky", worker=1)
            assert typo == (
                "unknown argument 'worker' (did you mean 'workers'?); "
                "start_service takes: app, workers, timeout, namespace"
            )
            assert "unknown argument 'bogus'; flaky takes: action, seconds" in await refused(
                client, "flaky", action="ok", bogus=1
            )
            for message in (
                await refused(client, "start_service", app="flaky", workers=0),
                await refused(client, "service_status"),
            ):
                assert message.startswith("invalid arguments: ")
                assert "validation error" not in message and "pydantic" not in message
            assert "workers: input should be greater than or equal to 1 (got 0)" in await refused(
                client, "start_service", app="flaky", workers=0
            )
            assert "app: required but missing" in await refused(client, "service_status")
            # Nothing ran: the refused calls started no service and queued no task.
            assert (await call(client, "service_status", app="flaky"))["status"] == "stopped"
            assert (await call(client, "service_status", app="flaky"))["queue"]["pending"] == 0

    asyncio.run(scenario())


def test_every_tool_takes_a_namespace_checked_like_everywhere_else() -> None:
    flaky_elsewhere = Env("flaky", APPS, namespace="team-b")

    async def scenario() -> None:
        async with Client(server("--apps-path", APPS, "--namespace", NAMESPACE)) as client:
            for tool in (await client.list_tools()).tools:
                assert "namespace" in tool.input_schema["properties"], tool.name

            started = await call(client, "start_service", app="flaky", workers=1, namespace="team-b")
            assert started["namespace"] == "team-b" and started["ready"]
            assert (await call(client, "list_services"))["services"] == []  # the server's namespace
            listed = await call(client, "list_services", namespace="team-b")
            assert [row["app"] for row in listed["services"]] == ["flaky"]
            assert (await call(client, "service_status", app="flaky"))["status"] == "stopped"
            task = await call(client, "submit_task", app="flaky", args={"action": "ok"}, namespace="team-b")
            outcome = await call(
                client, "get_result", app="flaky", task_id=task["task_id"], timeout=30, namespace="team-b"
            )
            assert outcome["status"] == "done"
            run = await call(client, "start_workflow", app="flaky", namespace="team-b")
            assert run["namespace"] == "team-b"
            assert (
                await call(client, "workflow_status", execution_id=run["execution_id"], namespace="team-b")
            )["total"] == 1
            assert "no workflow run" in await refused(
                client, "workflow_status", execution_id=run["execution_id"]
            )
            assert "namespace '../x' is not a safe name" in await refused(
                client, "service_status", app="flaky", namespace="../x"
            )
            stopped = await call(client, "stop_service", app="flaky", namespace="team-b")
            assert stopped["status"] == "stopped"

        # --read-only still holds in any namespace: the write tools are not there at all.
        async with Client(server("--apps-path", APPS, "--read-only")) as client:
            assert (await call(client, "service_status", app="flaky", namespace="team-b"))[
                "status"
            ] == "stopped"
            assert "Unknown tool: start_service" in await refused(
                client, "start_service", app="flaky", namespace="team-b"
            )

    try:
        asyncio.run(scenario())
    finally:
        stop_service(flaky_elsewhere, timeout=5)


def test_submit_task_and_start_workflow_follow_one_rule_on_a_stopped_service() -> None:
    async def scenario() -> None:
        async with Client(server("--apps-path", APPS, "--namespace", NAMESPACE)) as client:
            task = await refused(client, "submit_task", app="mycode_project", args={"x": 3})
            run = await refused(client, "start_workflow", app="mycode_project", count=2, args={"x": 3})
            assert task == run  # one core check, one message
            assert run.startswith(
                "service 'mycode_project' is not running; queue the tasks for its next start"
            )
            assert 'or start it: call start_service with {"app": "mycode_project"' in run
            assert (await call(client, "service_status", app="mycode_project"))["queue"]["pending"] == 0

            queued = await call(client, "submit_task", app="mycode_project", args={"x": 3}, queue_only=True)
            assert queued["state"] == "pending"
            later = await call(
                client, "start_workflow", app="mycode_project", count=2, args={"x": 3}, queue_only=True
            )
            assert later["state"] == "running" and later["progress"]["pending"] == 2

    asyncio.run(scenario())


def test_an_app_named_like_a_keepwarm_tool_cannot_be_exposed(tmp_path: Path) -> None:
    worker = "class Worker:\n    def work(self, item):\n        return 1\n"
    write_app(tmp_path, "list_services", worker)
    result = subprocess.run(
        [KEEPWARM, "mcp", "--apps-path", str(tmp_path / "apps"), "--expose", "list_services"],
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "'list_services' is the name of one of keepwarm's own tools" in result.stderr
    assert "expose each app once" not in result.stderr
