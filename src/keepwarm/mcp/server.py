"""The MCP server (``keepwarm mcp``): keepwarm's services, workflow runs and fleets as tools for agents.

Built on the official MCP Python SDK. Each tool calls one core function in a worker thread (the
server's event loop is never blocked) and returns what actually happened: a state read back from
the service's files, or a supervisor's acknowledgement. A keepwarm error becomes a tool error
carrying keepwarm's own message. Transports: stdio (the default), or streamable HTTP on 127.0.0.1
behind a bearer token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from keepwarm import __version__
from keepwarm.errors import McpOptionError
from keepwarm.groups.scope import Scope
from keepwarm.mcp.app_tool import app_tool
from keepwarm.mcp.tool import KeepwarmTool
from keepwarm.mcp.tools import keepwarm_tools

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
    exposed = [app_tool(scope, app, result_timeout) for app in expose]
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
        for function in keepwarm_tools(scope)
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


def tool_names(server: MCPServer) -> list[str]:
    """The names of the server's tools (for the CLI's start-up line)."""
    return [tool.name for tool in asyncio.run(server.list_tools())]
