"""The MCP server (``keepwarm mcp``): keepwarm's services, workflow runs and fleets as tools for agents.

Built on the official MCP Python SDK. Each tool calls one core function in a worker thread (the
server's event loop is never blocked) and returns what actually happened: a state read back from
the service's files, or a supervisor's acknowledgement. A keepwarm error becomes a tool error
carrying keepwarm's own message. Transports: stdio (the default), or streamable HTTP on 127.0.0.1
behind a bearer token.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import json
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from pydantic_core import to_jsonable_python

from keepwarm import __version__
from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import (
    KeepwarmError,
    McpOptionError,
    PortUnavailable,
    Remedy,
    ResultTimeout,
    SettingsError,
    TaskFailed,
)
from keepwarm.groups.fleet import (
    Fleet,
    Member,
    ServiceSummary,
    list_services,
    namespace_root,
    resolve_fleet_path,
    start_member,
    summarize,
)
from keepwarm.settings import describe_error

P = ParamSpec("P")
T = TypeVar("T")

TOKEN_VARIABLE = "KEEPWARM_MCP_TOKEN"
MIN_TOKEN_LENGTH = 16
READ_TOOLS = frozenset(
    {"list_services", "service_status", "service_health", "get_result", "workflow_status", "fleet_status"}
)
WRITE_TOOLS = frozenset(
    {
        "start_service",
        "stop_service",
        "submit_task",
        "start_workflow",
        "stop_workflow",
        "fleet_up",
        "fleet_down",
    }
)
MAX_WAIT_SEC = 600.0

Seconds = Annotated[float, Field(ge=0, le=MAX_WAIT_SEC)]


@dataclass
class Scope:
    """What the server works on: where apps are, the namespace, and optionally a fleet.

    With a fleet, the namespace is the fleet's and an app name may be a member's name. Every tool
    may name another namespace; an app is a fleet member only in the fleet's namespace.
    """

    apps_path: Path | None = None
    namespace: str | None = None
    share_dir: str | None = None
    fleet_path: str | None = None
    fleet: Fleet | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.fleet_path is not None:
            self.fleet = Fleet(resolve_fleet_path(self.fleet_path), share_dir=self.share_dir)
            self.namespace = self.fleet.namespace

    def member(self, app: str, namespace: str | None = None) -> Member | None:
        """The fleet's member called ``app``, when there is a fleet and ``namespace`` is its own."""
        if self.fleet is None or namespace not in (None, self.fleet.namespace):
            return None
        try:
            return self.fleet.member(app)
        except KeepwarmError:
            return None

    def env(self, app: str, namespace: str | None = None) -> Env:
        member = self.member(app, namespace)
        if member is not None:
            return member.env
        return Env(app, self.apps_path, share_dir=self.share_dir, namespace=namespace or self.namespace)

    def service(self, app: str, namespace: str | None = None) -> Service:
        return Service(self.env(app, namespace))

    def start(
        self, app: str, namespace: str | None, workers: int | None, timeout: float | None
    ) -> ServiceSummary:
        """Start a fleet member as ``keepwarm up`` does (its workers, env, backend), else the app."""
        member = self.member(app, namespace)
        if member is not None:
            return start_member(member, workers=workers, timeout=timeout)
        service = self.service(app, namespace)
        service.start(slots=workers, timeout=timeout)
        return summarize(service)

    def namespace_name(self, namespace: str | None = None) -> str:
        return namespace_root(namespace or self.namespace, self.share_dir)[1]

    def fleet_of(self, fleet: str | None, namespace: str | None = None) -> Fleet:
        chosen = (
            self.fleet
            if fleet is None and self.fleet is not None
            else Fleet(resolve_fleet_path(fleet), share_dir=self.share_dir)
        )
        if namespace is not None and namespace != chosen.namespace:
            raise SettingsError(
                f"fleet {chosen.path.name} runs in namespace {chosen.namespace!r} (its [fleet] namespace), "
                f"not {namespace!r}; leave namespace out"
            )
        return chosen


class KeepwarmTool(Tool):
    """A tool that refuses unknown arguments and reports bad ones on one line, and whose keepwarm
    errors reach the agent as keepwarm's own message, with the next step named as a tool call."""

    async def run(
        self, arguments: dict[str, Any], context: Context[Any, Any], convert_result: bool = False
    ) -> Any:
        check_arguments(self.name, self.fn_metadata.arg_model, self.fn_metadata.pre_parse_json(arguments))
        try:
            return await super().run(arguments, context, convert_result)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, KeepwarmError):
                raise ToolError(for_agents(cause, self.name)) from None
            if isinstance(cause, ValueError) or type(cause) is ToolError:
                raise ToolError(str(cause)) from None
            raise


def check_arguments(tool: str, model: type[BaseModel], arguments: dict[str, Any]) -> None:
    """Refuse a call whose arguments the tool does not take (naming those it takes) or whose values
    its schema refuses, in one line each: an agent reads it and corrects the call."""
    known = [info.alias or name for name, info in model.model_fields.items()]
    takes = f"{tool} takes: {', '.join(known) or 'no arguments'}"
    unknown = [key for key in arguments if key not in known]
    if unknown:
        close = [m for key in unknown for m in difflib.get_close_matches(key, known, n=1)]
        hint = f" (did you mean {', '.join(repr(m) for m in close)}?)" if close else ""
        plural = "s" if len(unknown) > 1 else ""
        raise ToolError(f"unknown argument{plural} {', '.join(repr(k) for k in unknown)}{hint}; {takes}")
    try:
        model.model_validate(arguments)
    except ValidationError as exc:
        problems = "; ".join(describe_error(error) for error in exc.errors())
        raise ToolError(f"invalid arguments: {problems}; {takes}") from None


def for_agents(error: KeepwarmError, tool: str) -> str:
    """keepwarm's message for an agent: its remedy as the tool to call and its arguments, not as a
    command line the agent cannot run."""
    remedy = error.remedy
    if remedy is None:
        return str(error)
    if remedy.tool is None and not remedy.arguments:
        return error.problem
    return f"{error.problem}; {remedy.advice}: call {remedy.tool or tool} with {json.dumps(remedy.arguments)}"


def build_server(
    scope: Scope,
    *,
    read_only: bool = False,
    expose: Iterable[str] = (),
    result_timeout: float = 60.0,
) -> MCPServer:
    """The server with keepwarm's tools (only the read tools with ``read_only``), plus one tool per
    exposed app: its arguments are the app's ``args_model``, and a call runs one task on that service."""
    expose = list(expose)
    if read_only and expose:
        raise McpOptionError("--expose adds tools that submit tasks; it cannot be combined with --read-only")
    exposed = [_app_tool(scope, app, result_timeout) for app in expose]
    names = [tool.name for tool in exposed]
    for given, name in zip(expose, names, strict=True):
        if name in READ_TOOLS | WRITE_TOOLS:
            raise McpOptionError(
                f"--expose {given}: {name!r} is the name of one of keepwarm's own tools, so the app "
                "cannot be a tool; rename its folder to expose it"
            )
        if names.count(name) > 1:
            raise McpOptionError(f"--expose: app {name!r} is given twice; expose each app once")
    tools = [
        KeepwarmTool.from_function(
            function,
            name=function.__name__,
            annotations=ToolAnnotations(
                read_only_hint=function.__name__ in READ_TOOLS, open_world_hint=False
            ),
        )
        for function in _tools(scope)
        if not read_only or function.__name__ in READ_TOOLS
    ]
    for tool in tools:  # the advertised schema says what check_arguments enforces
        tool.parameters["additionalProperties"] = False
    return MCPServer(
        "keepwarm",
        version=__version__,
        instructions=(
            "keepwarm keeps an application's workers warm. Services are named by their app; "
            f"namespace: {scope.namespace_name()} (every tool takes another as namespace). Start a "
            "service before submitting tasks to it; a task's result comes back through get_result."
        ),
        tools=[*exposed, *tools],
        log_level="WARNING",
    )


Namespace = Annotated[
    str | None,
    Field(description="the namespace to act in (default: the server's); letters, digits, '_', '-', '.'"),
]


def _tools(scope: Scope) -> list[Callable[..., Awaitable[dict[str, Any]]]]:
    """keepwarm's tools, in the order an agent reads them."""

    async def list_services_tool(namespace: Namespace = None) -> dict[str, Any]:
        """Every service of the namespace: status, readiness, loops, queue and SLA gate verdict."""
        rows = await _thread(list_services, namespace or scope.namespace, scope.share_dir)
        return {
            "namespace": scope.namespace_name(namespace),
            "services": [r.model_dump(mode="json") for r in rows],
        }

    async def service_status(app: str, namespace: Namespace = None) -> dict[str, Any]:
        """A service's health report (agi.service.health.v1): status word, loops, queue, supervisor."""
        report = await scope.service(app, namespace).astatus()
        return report.to_json_dict()

    async def service_health(
        app: str,
        allow_idle: bool | None = None,
        max_unhealthy: Annotated[int, Field(ge=0)] | None = None,
        max_restart_rate: Annotated[float, Field(ge=0)] | None = None,
        max_pending_age_sec: Annotated[float, Field(ge=0)] | None = None,
        namespace: Namespace = None,
    ) -> dict[str, Any]:
        """A service's health report with the SLA gate's verdict under "gate" (code 0 = pass; 2
        unhealthy loops, 3 status error/degraded/stopped, 4 idle, 5 restart rate, 6 pending age).
        The thresholds come from the app's [cluster.service_health]; each argument overrides one."""
        report, gate = await scope.service(app, namespace).ahealth(
            allow_idle=allow_idle,
            max_unhealthy=max_unhealthy,
            max_restart_rate=max_restart_rate,
            max_pending_age_sec=max_pending_age_sec,
        )
        return report.to_json_dict() | {"gate": gate.model_dump(mode="json")}

    async def start_service(
        app: str,
        workers: Annotated[int, Field(ge=1, le=1024)] | None = None,
        timeout: Seconds | None = None,
        namespace: Namespace = None,
    ) -> dict[str, Any]:
        """Start a service (a supervisor and its loops); returns once every loop is ready, with its
        health report (as service_status gives it) and its readiness, or fails with the loops' own
        errors. Refused if it already runs. A member of the server's fleet starts as keepwarm up
        starts it (its workers, env, backend)."""
        row = await _thread(scope.start, app, namespace, workers, timeout)
        report = await scope.service(app, namespace).astatus()
        return report.to_json_dict() | {"started": True, "ready": row.ready}

    async def stop_service(
        app: str, timeout: Seconds | None = None, namespace: Namespace = None
    ) -> dict[str, Any]:
        """Stop a service: loops finish their current task (within timeout), the rest is requeued.
        Returns once the supervisor has exited; a stopped service says so."""
        return await scope.service(app, namespace).astop(timeout=timeout)

    async def submit_task(
        app: str,
        args: dict[str, Any] | None = None,
        task_name: str = "task",
        execution_id: str | None = None,
        queue_only: bool = False,
        namespace: Namespace = None,
    ) -> dict[str, Any]:
        """Queue one task on a running service; returns its task id and where it is now. The args
        are checked by the app's args model. Refused when the service is not running, unless
        queue_only (the task then waits for the service's next start)."""
        service = scope.service(app, namespace)
        handle = await service.asubmit(
            args or {}, task_name=task_name, execution_id=execution_id, queue_only=queue_only
        )
        return {"task_id": handle.task_id, "app": service.env.app_target, "state": handle.state}

    async def get_result(
        app: str, task_id: str, timeout: Seconds = 0.0, namespace: Namespace = None
    ) -> dict[str, Any]:
        """A task's state and, once it has finished, its outcome: status (done, failed, cancelled),
        result or error. Waits up to timeout seconds for it to finish."""
        outcome = await _thread(scope.service(app, namespace).outcome, task_id, timeout)
        return outcome.to_json_dict()

    async def start_workflow(
        app: str,
        count: Annotated[int, Field(ge=1, le=1_000_000)] = 1,
        args: dict[str, Any] | None = None,
        name: str | None = None,
        queue_only: bool = False,
        namespace: Namespace = None,
    ) -> dict[str, Any]:
        """Start a workflow run on a running service: queue count tasks with these args under a new
        execution id (name-user-NNNN, unique in the namespace), returned at once with the run's
        progress. Refused when the service is not running, unless queue_only (the tasks then wait)."""
        from keepwarm.groups.workflow import astart_workflow

        status = await astart_workflow(
            scope.service(app, namespace), count, args or {}, name=name, queue_only=queue_only
        )
        return status.model_dump(mode="json")

    async def workflow_status(execution_id: str, namespace: Namespace = None) -> dict[str, Any]:
        """A workflow run's progress (pending, running, done, failed, cancelled) and state
        (running, completed, failed, terminated)."""
        from keepwarm.groups.workflow import aworkflow_status

        status = await aworkflow_status(
            execution_id, namespace=namespace or scope.namespace, share_dir=scope.share_dir
        )
        return status.model_dump(mode="json")

    async def stop_workflow(execution_id: str, namespace: Namespace = None) -> dict[str, Any]:
        """Stop a workflow run: cancel its pending tasks, and only those (running ones finish), and
        mark it terminated. Returns the ids cancelled and the run's progress."""
        from keepwarm.groups.workflow import astop_workflow

        status = await astop_workflow(
            execution_id, namespace=namespace or scope.namespace, share_dir=scope.share_dir
        )
        return status.model_dump(mode="json")

    async def fleet_up(
        fleet: str | None = None, timeout: Seconds | None = None, namespace: Namespace = None
    ) -> dict[str, Any]:
        """Start every enabled service of a fleet file (default: the server's --fleet, else
        ./fleet.toml); returns when all are ready. Refused if one runs already; if one fails, the
        ones started are stopped again and the error names it. A fleet runs in its file's namespace."""
        started = await scope.fleet_of(fleet, namespace).aup(timeout=timeout)
        return started.model_dump(mode="json")

    async def fleet_down(
        fleet: str | None = None, timeout: Seconds | None = None, namespace: Namespace = None
    ) -> dict[str, Any]:
        """Stop every service of a fleet; returns once each supervisor has exited."""
        chosen = scope.fleet_of(fleet, namespace)
        stopped = await chosen.adown(timeout=timeout)
        return {"fleet": str(chosen.path), "namespace": chosen.namespace, "services": stopped}

    async def fleet_status(fleet: str | None = None, namespace: Namespace = None) -> dict[str, Any]:
        """Every service of a fleet with its readiness ("ready": supervisor alive and every loop
        healthy) and, beside it, the SLA gate's verdict; the fleet is ready when every enabled one is."""
        status = await scope.fleet_of(fleet, namespace).astatus()
        return status.model_dump(mode="json")

    list_services_tool.__name__ = "list_services"
    return [
        list_services_tool,
        service_status,
        service_health,
        start_service,
        stop_service,
        submit_task,
        get_result,
        start_workflow,
        workflow_status,
        stop_workflow,
        fleet_up,
        fleet_down,
        fleet_status,
    ]


# ---------------------------------------------------------------------- exposed apps


def _app_tool(scope: Scope, app: str, result_timeout: float) -> Tool:
    """A tool that runs one task on ``app``'s running service and returns what ``work()`` returned.

    Its input schema is the app's ``args_model`` (without one, the tool takes ``args``, an object);
    it acts in the server's namespace (an argument named ``namespace`` would be the app's own).
    """
    from keepwarm.app import load_args_model

    env = scope.env(app)
    model = load_args_model(env)
    description = (
        f"Run one task on the keepwarm service {env.app_target!r} (it must be running) and return "
        f"what its worker returned. {env.settings.app.description or (model.__doc__ if model else '') or ''}"
    ).strip()

    async def run(**arguments: Any) -> dict[str, Any]:
        args = to_jsonable_python(arguments if model is not None else arguments.get("args") or {})
        service = Service(env)
        # The tool runs a task now, never queues one for later: its refusal names only "start it",
        # so it checks here and submit does not check again (queue_only=True).
        await _thread(service.require_running)
        handle = await service.asubmit(args, task_name=f"mcp:{env.app_target}", queue_only=True)
        try:
            value = await handle.aresult(timeout=result_timeout)
        except ResultTimeout:
            raise ResultTimeout(
                f"task {handle.task_id} has not finished after {result_timeout:g}s (it is {handle.state})",
                remedy=Remedy(
                    "fetch its result later",
                    f"keepwarm result {env.app_target} {handle.task_id}",
                    "get_result",
                    {"app": env.app_target, "task_id": handle.task_id},
                ),
            ) from None
        except TaskFailed as exc:
            raise TaskFailed(exc.task_id, exc.status, exc.error, None) from None
        return {"task_id": handle.task_id, "result": value}

    parameters = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty
            if info.is_required()
            else info.get_default(call_default_factory=True),
            annotation=Annotated[(info.annotation, *info.metadata, Field(description=info.description))],
        )
        for name, info in (model.model_fields.items() if model is not None else [])
    ] or [
        inspect.Parameter(
            "args", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=dict[str, Any] | None
        )
    ]
    run.__signature__ = inspect.Signature(parameters, return_annotation=dict[str, Any])  # type: ignore[attr-defined]
    tool = KeepwarmTool.from_function(run, name=env.app_target, description=description)
    # Advertise the app's own schema (its title, required keys); unknown keys are refused either way.
    schema = model.model_json_schema() if model is not None else tool.parameters
    return tool.model_copy(update={"parameters": schema | {"additionalProperties": False}})


# ---------------------------------------------------------------------- what the tools share


async def _thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    return await asyncio.to_thread(function, *args, **kwargs)


# ---------------------------------------------------------------------- transports


def serve_stdio(server: MCPServer) -> None:
    server.run("stdio")


def http_token() -> tuple[str, bool]:
    """The bearer token: ``$KEEPWARM_MCP_TOKEN``, else a new random one; and whether it was generated."""
    token = os.environ.get(TOKEN_VARIABLE)
    if token is None:
        return secrets.token_urlsafe(32), True
    if len(token) < MIN_TOKEN_LENGTH:
        raise McpOptionError(f"{TOKEN_VARIABLE} is too short: use at least {MIN_TOKEN_LENGTH} characters")
    return token, False


def serve_http(server: MCPServer, port: int, token: str, announce: Callable[[str], None]) -> None:
    """Serve streamable HTTP on 127.0.0.1 only, refusing any request without the bearer token."""
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as exc:
        listener.close()
        raise PortUnavailable(
            f"cannot listen on 127.0.0.1:{port}: {exc.strerror}; choose another --port"
        ) from None
    listener.listen(128)
    bound = listener.getsockname()[1]
    app = BearerTokenGuard(server.streamable_http_app(), token)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    announce(f"http://127.0.0.1:{bound}/mcp")
    uvicorn.Server(config).run(sockets=[listener])


class BearerTokenGuard:
    """ASGI middleware: an HTTP request without ``Authorization: Bearer <token>`` gets 401."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = next((v for k, v in scope.get("headers", []) if k.lower() == b"authorization"), b"")
            if not secrets.compare_digest(given, self.expected):
                body = b'{"error": "unauthorized: send Authorization: Bearer <token>"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b'Bearer realm="keepwarm"'),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def tool_names(server: MCPServer) -> list[str]:
    """The names of the server's tools (for the CLI's start-up line)."""
    return [tool.name for tool in asyncio.run(server.list_tools())]
