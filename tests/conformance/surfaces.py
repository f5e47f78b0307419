"""The four surfaces of keepwarm, driven as their users drive them, each answering in one shape.

- ``python``: ``keepwarm.Service``, ``keepwarm.groups.workflow`` and ``keepwarm.groups.fleet.Fleet``, in
  this process;
- ``cli``: the ``keepwarm`` console script in a subprocess, always with ``--json``;
- ``mcp``: ``keepwarm mcp`` over stdio, through the official SDK's client (one server for the session);
- ``agi``: the reference's façade, ``keepwarm.AGI`` with ``keepwarm.AgiEnv``;
- ``http``: ``keepwarm http`` (one server per namespace, started on first use) through httpx.

Every action returns an :class:`Outcome`: whether it succeeded, the surface's JSON document, and on
failure the error text and, where the surface has one, its kind (the exception class) and exit code.
A surface that does not offer an action has no method for it; ``TABLE`` in ``test_conformance.py``
says which and why.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mcp import Client, StdioServerParameters

import keepwarm
from keepwarm.errors import KeepwarmError, TaskFailed

from ..httpserver import HttpServer

KEEPWARM = str(Path(sys.executable).parent / "keepwarm")
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    doc: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    kind: str | None = None  # the exception class, where the surface names it
    code: int | None = None  # the CLI's exit code, or a gate's code


def gist(message: str) -> str:
    """What is wrong, without what to do about it: surfaces may point to their own next step
    (``keepwarm start …`` on the CLI, ``start_service(app=…)`` over MCP)."""
    first = " ".join(message.split())
    for separator in ("; ", ": start it first", ": stop it first"):
        first = first.split(separator)[0]
    # Each scenario's services are its own: their pids differ, what is said of them must not.
    return re.sub(r"pid \d+", "pid N", first.removeprefix("error: ").strip())


def _caught(function: Callable[[], dict[str, Any]]) -> Outcome:
    try:
        return Outcome(True, function())
    except TaskFailed as exc:
        doc = {"task_id": exc.task_id, "status": exc.status, "error": exc.error}
        return Outcome(False, doc | {"traceback": exc.remote_traceback}, str(exc), type(exc).__name__)
    except (KeepwarmError, ValueError) as exc:
        return Outcome(False, {}, str(exc), type(exc).__name__)


class PythonSurface:
    name = "python"

    def __init__(self, apps_path: Path) -> None:
        self.apps_path = apps_path

    def service(self, app: str, namespace: str) -> keepwarm.Service:
        return keepwarm.Service(keepwarm.Env(app, self.apps_path, namespace=namespace))

    def start(self, app: str, namespace: str, workers: int | None = None) -> Outcome:
        return _caught(lambda: self.service(app, namespace).start(slots=workers).to_json_dict())

    def stop(self, app: str, namespace: str) -> Outcome:
        return _caught(lambda: self.service(app, namespace).stop())

    def status(self, app: str, namespace: str) -> Outcome:
        return _caught(lambda: self.service(app, namespace).status().to_json_dict())

    def health(self, app: str, namespace: str, **thresholds: Any) -> Outcome:
        def run() -> dict[str, Any]:
            report, gate = self.service(app, namespace).health(**thresholds)
            return report.to_json_dict() | {"gate": gate.model_dump(mode="json")}

        return _caught(run)

    def submit(self, app: str, namespace: str, args: dict[str, Any], **options: Any) -> Outcome:
        return _caught(lambda: {"task_ids": [self.service(app, namespace).submit(args, **options).task_id]})

    def result(self, app: str, namespace: str, task_id: str) -> Outcome:
        def run() -> dict[str, Any]:
            value = self.service(app, namespace).result(task_id, timeout=60)
            return {"task_id": task_id, "status": "done", "result": value, "error": None, "traceback": None}

        return _caught(run)

    def cancel(self, app: str, namespace: str, task_ids: list[str]) -> Outcome:
        return _caught(lambda: {"cancelled": self.service(app, namespace).cancel(task_ids)})

    def retry(self, app: str, namespace: str, task_ids: list[str]) -> Outcome:
        def run() -> dict[str, Any]:
            retried = self.service(app, namespace).retry(task_ids)
            return {"retried": list(retried), "not_retried": retried.not_retried}

        return _caught(run)

    def scale(self, app: str, namespace: str, workers: int) -> Outcome:
        return _caught(lambda: self.service(app, namespace).scale(workers))

    def scale_auto(self, app: str, namespace: str) -> Outcome:
        return _caught(lambda: self.service(app, namespace).scale(auto=True))

    def workflow_start(self, app: str, namespace: str, count: int, args: dict[str, Any]) -> Outcome:
        from keepwarm.groups.workflow import start_workflow

        return _caught(
            lambda: start_workflow(self.service(app, namespace), count, args).model_dump(mode="json")
        )

    def workflow_status(self, namespace: str, execution_id: str) -> Outcome:
        from keepwarm.groups.workflow import workflow_status

        return _caught(lambda: workflow_status(execution_id, namespace=namespace).model_dump(mode="json"))

    def workflow_stop(self, namespace: str, execution_id: str) -> Outcome:
        from keepwarm.groups.workflow import stop_workflow

        return _caught(lambda: stop_workflow(execution_id, namespace=namespace).model_dump(mode="json"))

    def fleet_up(self, fleet: Path) -> Outcome:
        from keepwarm.groups.fleet import Fleet

        return _caught(lambda: Fleet(fleet).up().model_dump(mode="json"))

    def fleet_status(self, fleet: Path) -> Outcome:
        from keepwarm.groups.fleet import Fleet

        return _caught(lambda: Fleet(fleet).status().model_dump(mode="json"))

    def fleet_down(self, fleet: Path) -> Outcome:
        from keepwarm.groups.fleet import Fleet

        return _caught(lambda: {"services": Fleet(fleet).down()})

    def fleet_up_with_workflow(self, fleet: Path) -> Outcome:
        from keepwarm.groups.fleet import Fleet

        return _caught(lambda: Fleet(fleet).up(workflow=True).model_dump(mode="json"))

    def stop_namespace(self, namespace: str) -> Outcome:
        from keepwarm.groups.namespace import stop_all

        return _caught(lambda: {"services": stop_all(namespace)})

    def pipeline_run(self, app: str, step: int | None = None) -> Outcome:
        from keepwarm.pipeline.runner import run_pipeline

        outcome = _caught(
            lambda: run_pipeline(keepwarm.Env(app, self.apps_path), step).model_dump(mode="json")
        )
        if outcome.ok and not outcome.doc["ok"]:  # a step failed: the run's answer, not an exception
            return Outcome(False, outcome.doc, outcome.doc["message"])
        return outcome


class CliSurface:
    name = "cli"

    def __init__(self, apps_path: Path) -> None:
        self.apps_path = apps_path

    def run(self, *argv: str) -> Outcome:
        """One ``keepwarm … --json``: exactly one JSON document on stdout, success or not."""
        completed = subprocess.run(
            [KEEPWARM, *argv, "--json"], capture_output=True, text=True, timeout=120, check=False
        )
        assert "Traceback" not in completed.stderr, completed.stderr
        try:
            doc = json.loads(completed.stdout)
        except json.JSONDecodeError:
            raise AssertionError(
                f"keepwarm {' '.join(argv)} --json printed no single JSON document on stdout "
                f"(exit {completed.returncode}):\n{completed.stdout!r}\nstderr: {completed.stderr}"
            ) from None
        assert isinstance(doc, dict), doc
        if completed.returncode == 0:
            return Outcome(True, doc, code=0)
        return Outcome(False, doc, doc.get("error", ""), doc.get("kind"), completed.returncode)

    def verb(self, verb: str, app: str, namespace: str, *rest: str) -> Outcome:
        return self.run(verb, app, "--apps-path", str(self.apps_path), "--namespace", namespace, *rest)

    def start(self, app: str, namespace: str, workers: int | None = None) -> Outcome:
        return self.verb("start", app, namespace, *(["--workers", str(workers)] if workers else []))

    def stop(self, app: str, namespace: str) -> Outcome:
        return self.verb("stop", app, namespace)

    def status(self, app: str, namespace: str) -> Outcome:
        return self.verb("status", app, namespace)

    def health(self, app: str, namespace: str, **thresholds: Any) -> Outcome:
        flags = ["--gate"]
        if thresholds.get("allow_idle") is not None:
            flags.append("--allow-idle" if thresholds["allow_idle"] else "--no-allow-idle")
        if thresholds.get("max_pending_age_sec") is not None:
            flags += ["--max-pending-age", str(thresholds["max_pending_age_sec"])]
        if thresholds.get("max_restart_rate") is not None:
            flags += ["--max-restart-rate", str(thresholds["max_restart_rate"])]
        outcome = self.verb("health", app, namespace, *flags)
        # The gate's verdict is the exit code; the document is the report either way.
        gate = outcome.doc.get("gate", {})
        assert outcome.code == gate.get("code"), (outcome.code, gate)
        return Outcome("error" not in outcome.doc, outcome.doc, outcome.error, outcome.kind, outcome.code)

    def submit(self, app: str, namespace: str, args: dict[str, Any], **options: Any) -> Outcome:
        flags = ["--args", json.dumps(args)]
        names = {"task_name": "--name", "timeout_sec": "--task-timeout", "max_attempts": "--max-attempts"}
        for key, value in options.items():
            if key == "queue_only":
                flags += ["--queue-only"] if value else []
            else:
                flags += [names[key], str(value)]
        return self.verb("submit", app, namespace, *flags)

    def result(self, app: str, namespace: str, task_id: str) -> Outcome:
        return self.verb("result", app, namespace, task_id, "--timeout", "60")

    def cancel(self, app: str, namespace: str, task_ids: list[str]) -> Outcome:
        return self.verb("cancel", app, namespace, *task_ids)

    def retry(self, app: str, namespace: str, task_ids: list[str]) -> Outcome:
        return self.verb("retry", app, namespace, *task_ids)

    def scale(self, app: str, namespace: str, workers: int) -> Outcome:
        return self.verb("scale", app, namespace, str(workers))

    def scale_auto(self, app: str, namespace: str) -> Outcome:
        return self.verb("scale", app, namespace, "--auto")

    def workflow_start(self, app: str, namespace: str, count: int, args: dict[str, Any]) -> Outcome:
        return self.run(
            "workflow",
            "start",
            app,
            "--apps-path",
            str(self.apps_path),
            "--namespace",
            namespace,
            "--count",
            str(count),
            "--args",
            json.dumps(args),
        )

    def workflow_status(self, namespace: str, execution_id: str) -> Outcome:
        return self.run("workflow", "status", execution_id, "--namespace", namespace)

    def workflow_stop(self, namespace: str, execution_id: str) -> Outcome:
        return self.run("workflow", "stop", execution_id, "--namespace", namespace)

    def fleet_up(self, fleet: Path) -> Outcome:
        return self.run("up", str(fleet))

    def fleet_status(self, fleet: Path) -> Outcome:
        return self.run("ps", "--fleet", str(fleet))

    def fleet_down(self, fleet: Path) -> Outcome:
        return self.run("down", str(fleet))

    def fleet_up_with_workflow(self, fleet: Path) -> Outcome:
        return self.run("up", str(fleet), "--workflow")

    def stop_namespace(self, namespace: str) -> Outcome:
        return self.run("down", "--all", "--namespace", namespace)

    def pipeline_run(self, app: str, step: int | None = None) -> Outcome:
        chosen = ["--step", str(step)] if step is not None else []
        return self.run("pipeline", "run", app, "--apps-path", str(self.apps_path), *chosen)


class McpSurface:
    """One ``keepwarm mcp`` server over stdio for the whole session; its client lives in a thread of
    its own so that the synchronous tests can call tools one after another."""

    name = "mcp"

    def __init__(self, apps_path: Path, cwd: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mcp-client", daemon=True)
        self.thread.start()
        self.client: Client | None = None
        self.closed = asyncio.Event()
        self.ready: Future[None] = Future()
        parameters = StdioServerParameters(
            command=KEEPWARM, args=["mcp", "--apps-path", str(apps_path)], env=dict(os.environ), cwd=str(cwd)
        )
        self.session = asyncio.run_coroutine_threadsafe(self._hold(parameters), self.loop)
        self.ready.result(timeout=60)

    async def _hold(self, parameters: StdioServerParameters) -> None:
        try:
            async with Client(parameters) as client:
                self.client = client
                self.ready.set_result(None)
                await self.closed.wait()
        except BaseException as exc:
            if not self.ready.done():
                self.ready.set_exception(exc)
            raise

    def _await(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.closed.set)
        self.session.result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def call(self, tool: str, **arguments: Any) -> Outcome:
        assert self.client is not None
        result = self._await(self.client.call_tool(tool, arguments))
        if result.is_error:
            text = getattr(result.content[0], "text", "")
            assert "Traceback" not in text, text
            return Outcome(False, {}, text)
        assert result.structured_content is not None
        return Outcome(True, result.structured_content)

    def start(self, app: str, namespace: str, workers: int | None = None) -> Outcome:
        extra = {"workers": workers} if workers else {}
        return self.call("start_service", app=app, namespace=namespace, **extra)

    def stop(self, app: str, namespace: str) -> Outcome:
        return self.call("stop_service", app=app, namespace=namespace)

    def status(self, app: str, namespace: str) -> Outcome:
        return self.call("service_status", app=app, namespace=namespace)

    def health(self, app: str, namespace: str, **thresholds: Any) -> Outcome:
        given = {key: value for key, value in thresholds.items() if value is not None}
        return self.call("service_health", app=app, namespace=namespace, **given)

    def submit(self, app: str, namespace: str, args: dict[str, Any], **options: Any) -> Outcome:
        outcome = self.call("submit_task", app=app, namespace=namespace, args=args, **options)
        if outcome.ok:
            return Outcome(True, outcome.doc | {"task_ids": [outcome.doc["task_id"]]})
        return outcome

    def result(self, app: str, namespace: str, task_id: str) -> Outcome:
        outcome = self.call("get_result", app=app, namespace=namespace, task_id=task_id, timeout=60)
        return Outcome(outcome.doc.get("status") == "done", outcome.doc, outcome.doc.get("error") or "")

    def workflow_start(self, app: str, namespace: str, count: int, args: dict[str, Any]) -> Outcome:
        return self.call("start_workflow", app=app, namespace=namespace, count=count, args=args)

    def workflow_status(self, namespace: str, execution_id: str) -> Outcome:
        return self.call("workflow_status", namespace=namespace, execution_id=execution_id)

    def workflow_stop(self, namespace: str, execution_id: str) -> Outcome:
        return self.call("stop_workflow", namespace=namespace, execution_id=execution_id)

    def fleet_up(self, fleet: Path) -> Outcome:
        return self.call("fleet_up", fleet=str(fleet))

    def fleet_status(self, fleet: Path) -> Outcome:
        return self.call("fleet_status", fleet=str(fleet))

    def fleet_down(self, fleet: Path) -> Outcome:
        return self.call("fleet_down", fleet=str(fleet))


class AgiSurface:
    """The reference's façade: ``AGI.serve(env, action=…)`` and ``AGI.submit(env, …)``."""

    name = "agi"

    def __init__(self, apps_path: Path) -> None:
        self.apps_path = apps_path

    def _serve(self, app: str, namespace: str, action: str, **options: Any) -> Outcome:
        env = keepwarm.AgiEnv(apps_path=self.apps_path, app=app, namespace=namespace)
        return _caught(lambda: asyncio.run(keepwarm.AGI.serve(env, action=action, **options)))

    def start(self, app: str, namespace: str, workers: int | None = None) -> Outcome:
        return self._serve(app, namespace, "start", workers=workers)

    def stop(self, app: str, namespace: str) -> Outcome:
        return self._serve(app, namespace, "stop")

    def status(self, app: str, namespace: str) -> Outcome:
        return self._serve(app, namespace, "status")

    def submit(self, app: str, namespace: str, args: dict[str, Any], **options: Any) -> Outcome:
        env = keepwarm.AgiEnv(apps_path=self.apps_path, app=app, namespace=namespace)
        return _caught(lambda: asyncio.run(keepwarm.AGI.submit(env, args=args, **options)))


SURFACE_NAMES = ("python", "cli", "mcp", "agi", "http")


class HttpSurface:
    """``keepwarm http`` as a web client drives it: a server per namespace (a server serves one),
    each a child process started on first use and kept for the session."""

    name = "http"

    def __init__(self, apps_path: Path) -> None:
        self.apps_path = apps_path
        self.servers: dict[str, HttpServer] = {}

    def server(self, namespace: str) -> HttpServer:
        if namespace not in self.servers:
            self.servers[namespace] = HttpServer("--apps-path", str(self.apps_path), "--namespace", namespace)
        return self.servers[namespace]

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()

    def call(self, namespace: str, method: str, path: str, **options: Any) -> Outcome:
        response = self.server(namespace).request(method, path, **options)
        doc = response.json()
        assert isinstance(doc, dict), doc
        assert "Traceback" not in (doc.get("error") or ""), doc
        if response.is_success:
            return Outcome(True, doc, code=response.status_code)
        return Outcome(False, doc, doc.get("error", ""), doc.get("kind"), response.status_code)

    def status(self, app: str, namespace: str) -> Outcome:
        return self.call(namespace, "GET", f"/v1/apps/{app}")

    def health(self, app: str, namespace: str, **thresholds: Any) -> Outcome:
        given = {key: value for key, value in thresholds.items() if value is not None}
        outcome = self.call(namespace, "GET", f"/v1/apps/{app}/health", params=given)
        # The gate's verdict is the status code (200 or 503); the document is the report either way.
        gate = outcome.doc.get("gate", {})
        assert outcome.code == (200 if gate.get("code") == 0 else 503), (outcome.code, gate)
        return Outcome("error" not in outcome.doc, outcome.doc, outcome.error, outcome.kind, gate.get("code"))

    def submit(self, app: str, namespace: str, args: dict[str, Any], **options: Any) -> Outcome:
        outcome = self.call(namespace, "POST", f"/v1/apps/{app}/tasks", json=args, params=options)
        if outcome.ok:
            assert outcome.code == 202, outcome
            return Outcome(True, outcome.doc | {"task_ids": [outcome.doc["task_id"]]})
        return outcome

    def result(self, app: str, namespace: str, task_id: str) -> Outcome:
        outcome = self.call(namespace, "GET", f"/v1/apps/{app}/tasks/{task_id}", params={"wait": 60})
        return Outcome(outcome.doc.get("status") == "done", outcome.doc, outcome.doc.get("error") or "")

    def cancel(self, app: str, namespace: str, task_ids: list[str]) -> Outcome:
        """One DELETE per id (a URL names one task), their answers merged as one cancel's."""
        answers = [self.call(namespace, "DELETE", f"/v1/apps/{app}/tasks/{task_id}") for task_id in task_ids]
        doc = {
            "cancelled": [i for a in answers for i in a.doc["cancelled"]],
            "not_cancelled": {k: v for a in answers for k, v in a.doc["not_cancelled"].items()},
        }
        return Outcome(all(a.ok for a in answers), doc)
