"""``keepwarm http`` against real services, with a real HTTP client: every endpoint and status code.

One server and one running service for the module (the tests keep apart by task); the servers with
other options (a token, read-only) are started by the tests that need them.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.web import listen

from .conftest import Services, wait_until, write_app
from .httpserver import HttpServer

APP = "front"
WORKER = """
import time
from pydantic import BaseModel, Field


class Args(BaseModel):
    action: str = "echo"
    value: int = Field(default=0, ge=0)
    seconds: float = 0.0


class Worker:
    args_model = Args

    def work(self, item):
        if item.args.action == "sleep":
            time.sleep(item.args.seconds)
        if item.args.action == "raise":
            raise ValueError(f"front: raised on purpose for {item.task_id}")
        return {"echo": item.args.value}
"""
SETTINGS = textwrap.dedent(
    """
    args_model = "front_code.worker:Args"

    [cluster]
    slots = 1
    max_pending = 3
    max_task_bytes = 2048
    heartbeat_interval_sec = 0.2
    heartbeat_timeout_sec = 5
    """
)


class Front:
    """The module's app, its running service and its server."""

    def __init__(self, root: Path) -> None:
        self.apps = root / "apps"
        write_app(root, APP, WORKER, SETTINGS)
        self.env_vars = {
            "KEEPWARM_SHARE": str(root / "share"),
            "KEEPWARM_LOG_DIR": str(root / "logs"),
            "KEEPWARM_EXPORT": str(root / "export"),
            "KEEPWARM_NAMESPACE": "front",
        }
        self.environment = {k: v for k, v in os.environ.items() if not k.startswith("KEEPWARM_")}
        self.environment |= self.env_vars

    def service(self) -> Service:
        return Service(Env(APP, self.apps, share_dir=self.env_vars["KEEPWARM_SHARE"], namespace="front"))


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    chosen = Front(tmp_path_factory.mktemp("http"))
    services = Services()
    services.envs.append(chosen.service().env)
    chosen.service().start()
    try:
        yield chosen
    finally:
        services.stop_all()


@pytest.fixture(scope="module")
def server(front: Front) -> Iterator[HttpServer]:
    started = HttpServer("--apps-path", str(front.apps), env=front.environment)
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def queue_emptied(front: Front) -> Iterator[None]:
    """Each test leaves nothing pending or running for the next (max_pending is small)."""
    yield
    service = front.service()
    service.cancel([str(row.task_id) for state in ("pending", "running") for row in service.tasks(state)])


def tasks_url(task_id: str = "") -> str:
    return f"/v1/apps/{APP}/tasks" + (f"/{task_id}" if task_id else "")


def submit(server: HttpServer, args: dict[str, Any] | None = None, **params: Any) -> httpx.Response:
    return server.request("POST", tasks_url(), json=args or {}, params=params)


def test_livez_and_the_namespaces_services(server: HttpServer) -> None:
    assert server.request("GET", "/livez").json() == {"status": "ok"}
    listed = server.request("GET", "/v1/apps").json()
    assert listed["namespace"] == "front"
    assert [row["app"] for row in listed["services"]] == [APP]


def test_submit_answers_202_with_the_id_then_the_result_is_read_by_id(server: HttpServer) -> None:
    submitted = submit(server, {"value": 7})
    assert submitted.status_code == 202
    task_id = submitted.json()["task_id"]
    assert submitted.headers["location"] == tasks_url(task_id)

    read = server.request("GET", tasks_url(task_id), params={"wait": 30})
    assert read.status_code == 200
    assert read.json() | {"runtime_sec": None} == {
        "task_id": task_id,
        "finished": True,
        "state": "done",
        "status": "done",
        "result": {"echo": 7},
        "error": None,
        "traceback": None,
        "runtime_sec": None,
        "execution_id": None,
    }


def test_wait_answers_200_with_the_result_in_time_and_202_when_not(server: HttpServer) -> None:
    in_time = submit(server, {"value": 3}, wait=30)
    assert in_time.status_code == 200
    assert in_time.json()["result"] == {"echo": 3}

    late = submit(server, {"action": "sleep", "seconds": 30}, wait=0.3)
    assert late.status_code == 202
    assert late.json()["state"] in ("pending", "running")
    unfinished = server.request("GET", tasks_url(late.json()["task_id"]), params={"wait": 0.2})
    assert unfinished.status_code == 200
    assert unfinished.json()["finished"] is False


def test_a_task_that_raises_is_a_finished_task_with_its_error_and_traceback(server: HttpServer) -> None:
    failed = submit(server, {"action": "raise"}, wait=30)
    assert failed.status_code == 200
    document = failed.json()
    assert document["status"] == "failed" and document["result"] is None
    assert "raised on purpose" in document["error"]
    assert "Traceback" in document["traceback"]


def test_unknown_task_and_unknown_app_are_404(server: HttpServer) -> None:
    for path, params in ((tasks_url("0" * 32), {}), (tasks_url("0" * 32), {"wait": 5})):
        missing = server.request("GET", path, params=params)
        assert missing.status_code == 404
        assert missing.json()["kind"] == "TaskNotFound"
    for app in ("nope", "..", "a%2Fb"):
        unknown = server.request("POST", f"/v1/apps/{app}/tasks", json={})
        assert unknown.status_code == 404, (app, unknown.text)
    for task_id in ("...", "..%2F..%2Fservice.json", "x" * 300):  # no request names a path
        assert server.request("GET", tasks_url(task_id)).status_code == 404, task_id
        assert server.request("DELETE", tasks_url(task_id)).status_code == 404, task_id
    refused = submit(server, {}, execution_id="../../elsewhere")
    assert refused.status_code == 422 and "execution_id" in refused.json()["error"]


def test_args_the_model_refuses_are_422_with_each_field(server: HttpServer) -> None:
    refused = submit(server, {"value": -1, "seconds": "soon"})
    assert refused.status_code == 422
    document = refused.json()
    assert document["kind"] == "InvalidArgs"
    assert {tuple(field["loc"]) for field in document["fields"]} == {("value",), ("seconds",)}
    assert "value" in document["error"] and "seconds" in document["error"]
    for body, kind in ((b"[1, 2]", "BadBody"), (b"{not json", "BadBody")):
        bad = server.request("POST", tasks_url(), content=body)
        assert bad.json()["kind"] == kind and bad.status_code in (400, 422)
    bad_wait = submit(server, {}, wait=-1)
    assert bad_wait.status_code == 422 and bad_wait.json()["fields"][0]["loc"] == ["query", "wait"]


def test_a_body_over_max_task_bytes_is_413_before_it_is_read_whole(server: HttpServer) -> None:
    big = json.dumps({"value": 1, "padding": "x" * 4096}).encode()
    declared = server.request("POST", tasks_url(), content=big)
    assert declared.status_code == 413
    assert "max_task_bytes (2048 bytes)" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        yield big[:1000]
        yield big[1000:]

    streamed = server.request("POST", tasks_url(), content=chunks())
    assert streamed.status_code == 413


def test_a_full_queue_is_429_with_retry_after(server: HttpServer) -> None:
    busy = submit(server, {"action": "sleep", "seconds": 60}).json()["task_id"]
    wait_until(lambda: server.request("GET", tasks_url(busy)).json()["state"] == "running", 30, "running")
    for _ in range(3):  # max_pending = 3
        assert submit(server, {"action": "sleep", "seconds": 60}).status_code == 202
    full = submit(server, {})
    assert full.status_code == 429
    assert full.headers["retry-after"] == "1"
    assert full.json()["kind"] == "QueueFull" and "max_pending = 3" in full.json()["error"]


def test_cancel_a_pending_task_then_a_finished_or_unknown_one(server: HttpServer) -> None:
    busy = submit(server, {"action": "sleep", "seconds": 60}).json()["task_id"]
    waiting = submit(server, {"value": 1}).json()["task_id"]
    cancelled = server.request("DELETE", tasks_url(waiting))
    assert cancelled.status_code == 200
    assert cancelled.json() == {"cancelled": [waiting], "not_cancelled": {}}
    assert server.request("GET", tasks_url(waiting)).json()["status"] == "cancelled"

    running = server.request("DELETE", tasks_url(busy))
    assert running.status_code == 200 and running.json()["cancelled"] == [busy]

    again = server.request("DELETE", tasks_url(waiting))
    assert again.status_code == 409
    assert again.json()["not_cancelled"] == {waiting: "failed"}
    assert server.request("DELETE", tasks_url("0" * 32)).status_code == 404


def test_a_client_that_hangs_up_leaves_no_waiter_behind(server: HttpServer) -> None:
    def waiting_requests() -> float:
        families = text_string_to_metric_families(server.request("GET", "/metrics").text)
        return next(f.samples[0].value for f in families if f.name == "keepwarm_http_waiting_requests")

    busy = submit(server, {"action": "sleep", "seconds": 60}).json()["task_id"]
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(f"GET {tasks_url(busy)}?wait=300 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        wait_until(lambda: waiting_requests() == 1, 10, "the request to wait")
    wait_until(lambda: waiting_requests() == 0, 10, "the waiter to be gone with its client")
    assert server.request("GET", tasks_url(busy)).json()["state"] in ("pending", "running")  # it goes on


def test_fifty_waiting_requests_hold_no_thread_each(server: HttpServer) -> None:
    """The waits are events on the result channel: the server's threads do not grow with them, and
    it answers other requests meanwhile."""

    def threads() -> int:
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])

    def waiting_requests() -> float:
        families = text_string_to_metric_families(server.request("GET", "/metrics").text)
        return next(f.samples[0].value for f in families if f.name == "keepwarm_http_waiting_requests")

    busy = submit(server, {"action": "sleep", "seconds": 60}).json()["task_id"]
    server.request("GET", tasks_url(busy), params={"wait": 0.01})  # the executor's threads started
    before = threads()

    async def fifty() -> int:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            waits = [
                asyncio.ensure_future(client.get(tasks_url(busy), params={"wait": 30})) for _ in range(50)
            ]
            try:
                deadline = time.monotonic() + 20
                while waiting_requests() < 50:
                    assert time.monotonic() < deadline, "the 50 requests never all waited"
                    await asyncio.sleep(0.01)
                during = threads()
                # The server still answers what needs its worker threads (a wait holding one each
                # would have taken them all: there are min(32, CPUs + 4)).
                status = await client.get(f"/v1/apps/{APP}", timeout=5)
                assert status.status_code == 200
                return during
            finally:
                for wait in waits:
                    wait.cancel()
                await asyncio.gather(*waits, return_exceptions=True)

    during = asyncio.run(fifty())
    assert during - before < 10, (before, during)  # a thread per wait would be 50 more
    wait_until(lambda: waiting_requests() == 0, 10, "the waits to end with their clients")


def test_health_is_200_when_the_gate_passes_and_503_when_it_fails(server: HttpServer) -> None:
    health = f"/v1/apps/{APP}/health"
    passing = server.request("GET", health, params={"allow_idle": True, "max_restart_rate": 100})
    assert passing.status_code == 200
    assert passing.json()["gate"]["code"] == 0 and passing.json()["status"] in ("running", "idle")

    busy = submit(server, {"action": "sleep", "seconds": 60}).json()["task_id"]
    wait_until(lambda: server.request("GET", tasks_url(busy)).json()["state"] == "running", 30, "running")
    submit(server, {"value": 1})  # pending behind it: one loop

    def pending_age() -> float:
        return float(server.request("GET", f"/v1/apps/{APP}").json()["queue"]["oldest_pending_age_sec"] or 0)

    # Ages are on the share's clock (file times, a few ms coarse): wait until it says 0.1 s.
    wait_until(lambda: pending_age() > 0.1, 30, "a task pending 0.1 s")
    late = server.request("GET", health, params={"max_pending_age_sec": 0.1, "max_restart_rate": 100})
    assert late.status_code == 503 and late.json()["gate"]["code"] == 6
    status = server.request("GET", f"/v1/apps/{APP}")
    assert status.status_code == 200 and status.json()["app"] == APP


def test_metrics_parse_with_prometheus_own_parser(server: HttpServer) -> None:
    submit(server, {"value": 1}, wait=30)
    families = {f.name: f for f in text_string_to_metric_families(server.request("GET", "/metrics").text)}
    up = families["keepwarm_service_up"].samples
    assert [(s.labels, s.value) for s in up] == [({"app": APP, "namespace": "front"}, 1.0)]
    requests = families["keepwarm_http_requests"].samples
    assert any(
        s.labels == {"method": "POST", "route": "/v1/apps/{app}/tasks", "status": "200"} and s.value >= 1
        for s in requests
    )
    latency = families["keepwarm_http_request_duration_seconds"]
    assert latency.type == "histogram"
    assert any(
        s.name.endswith("_count") and s.labels["route"] == "/v1/apps/{app}/tasks" for s in latency.samples
    )


def test_the_openapi_document_has_each_apps_args_model(server: HttpServer) -> None:
    document = server.request("GET", "/openapi.json").json()
    body = document["paths"][f"/v1/apps/{APP}/tasks"]["post"]["requestBody"]
    reference = body["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][reference.rsplit("/", 1)[1]]
    assert set(schema["properties"]) == {"action", "value", "seconds"}
    assert schema["properties"]["value"]["minimum"] == 0
    assert server.request("GET", "/docs").status_code == 200


def test_a_stopped_service_is_503_with_what_to_do(tmp_path: Path, front: Front) -> None:
    write_app(tmp_path, "idle_app", WORKER)
    with_idle = front.environment | {"KEEPWARM_APPS_PATH": str(tmp_path / "apps")}
    server = HttpServer(env=with_idle)
    try:
        refused = server.request("POST", "/v1/apps/idle_app/tasks", json={})
        assert refused.status_code == 503
        assert refused.json()["kind"] == "ServiceNotRunning"
        assert "keepwarm start idle_app" in refused.json()["error"]
        health = server.request("GET", "/v1/apps/idle_app/health")
        assert health.status_code == 503 and health.json()["gate"]["code"] == 3
    finally:
        server.stop()


def test_read_only_serves_gets_and_refuses_writes(front: Front) -> None:
    server = HttpServer("--read-only", "--apps-path", str(front.apps), env=front.environment)
    try:
        assert server.request("GET", f"/v1/apps/{APP}").status_code == 200
        refused = server.request("POST", tasks_url(), json={})
        assert refused.status_code == 403 and refused.json()["kind"] == "ReadOnly"
        assert server.request("DELETE", tasks_url("0" * 32)).status_code == 403
        assert tasks_url() not in server.request("GET", "/openapi.json").json()["paths"]
    finally:
        server.stop()


def test_beyond_loopback_a_bearer_token_is_required(front: Front) -> None:
    """Bound to every address (0.0.0.0), reached here on 127.0.0.1 only."""
    server = HttpServer(
        "--host", "0.0.0.0", "--apps-path", str(front.apps), env=front.environment, expect_token=True
    )
    try:
        assert server.token is not None and len(server.token) >= 32
        url = server.url.replace("0.0.0.0", "127.0.0.1")
        with httpx.Client(base_url=url) as anonymous:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": server.token}):
                refused = anonymous.get(f"/v1/apps/{APP}", headers=headers)
                assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
            assert anonymous.get("/livez").status_code == 200  # a liveness probe needs no token
            served = anonymous.get(f"/v1/apps/{APP}", headers={"Authorization": f"Bearer {server.token}"})
            assert served.status_code == 200
    finally:
        server.stop()


def test_a_token_too_short_is_refused_at_start(front: Front) -> None:
    environment = front.environment | {"KEEPWARM_HTTP_TOKEN": "short"}
    with pytest.raises(AssertionError, match="KEEPWARM_HTTP_TOKEN is too short") as refused:
        HttpServer("--host", "0.0.0.0", env=environment, expect_token=True)
    assert "Traceback" not in str(refused.value)


def test_connections_to_the_listener_send_without_delay() -> None:
    """asyncio sets TCP_NODELAY on an accepted connection only when its listener says IPPROTO_TCP;
    without it, a response written in two parts waited ~40 ms for the client's delayed ack."""

    async def accepted_nodelay() -> int:
        listener = listen("127.0.0.1", 0)
        option: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_connection(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            option.set_result(
                writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            )
            writer.close()

        async with await asyncio.start_server(on_connection, sock=listener):
            _, writer = await asyncio.open_connection(*listener.getsockname())
            value = await asyncio.wait_for(option, 10)
            writer.close()
            return value

    assert asyncio.run(accepted_nodelay()) != 0
