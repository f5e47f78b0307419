"""The MCP verb: keepwarm's tools served to AI assistants."""

from __future__ import annotations

from pathlib import Path

import click

from keepwarm.cli.common import UserError, apps_path_option, number_option, say


@click.command()
@click.option(
    "--http", is_flag=True, help="Serve streamable HTTP on 127.0.0.1 (bearer token) instead of stdio."
)
@number_option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    help="The HTTP port on 127.0.0.1 (0: a free one, printed at start).",
)
@click.option("--read-only", is_flag=True, help="Expose only the tools that read (status, health, results).")
@click.option(
    "--expose",
    multiple=True,
    metavar="APP",
    help="Add a tool that runs one task on APP's running service (repeatable).",
)
@apps_path_option
@click.option("--namespace", help="The namespace [default: $KEEPWARM_NAMESPACE, else your login name].")
@click.option(
    "--fleet",
    help="A fleet file (or NAME of NAME.toml): its namespace, its services, the fleet tools' default.",
)
@number_option(
    "--result-timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    help="Seconds an exposed app's tool waits for its task's result.",
)
def mcp(
    http: bool,
    port: int,
    read_only: bool,
    expose: tuple[str, ...],
    apps_path: Path | None,
    namespace: str | None,
    fleet: str | None,
    result_timeout: float,
) -> None:
    """Serve keepwarm's services, workflows and fleets as MCP tools (stdio, or HTTP with a token)."""
    try:
        from keepwarm.groups.scope import Scope
        from keepwarm.mcp import server as mcp_server
        from keepwarm.mcp import transports
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.partition(".")[0] in ("mcp", "mcp_types"):
            raise UserError("the MCP server needs the 'mcp' package: pip install 'keepwarm[mcp]'") from None
        raise
    if fleet is not None and namespace is not None:
        raise UserError("give either --fleet (its namespace) or --namespace, not both")
    scope = Scope(apps_path=apps_path, namespace=namespace, fleet_path=fleet)
    server = mcp_server.build_server(scope, read_only=read_only, expose=expose, result_timeout=result_timeout)
    names = mcp_server.tool_names(server)
    where = f"namespace {scope.namespace_name()}" + (" (read-only)" if read_only else "")
    if not http:
        say(f"keepwarm mcp: {len(names)} tools on stdio, {where}")
        transports.serve_stdio(server)
        return
    token, generated = transports.http_token()

    def announce(url: str) -> None:
        say(f"keepwarm mcp: {len(names)} tools at {url}, {where}")
        if generated:
            say(f"keepwarm mcp: bearer token (set {transports.TOKEN_VARIABLE} to choose one): {token}")
        else:
            say(f"keepwarm mcp: bearer token from {transports.TOKEN_VARIABLE}")

    transports.serve_http(server, port, token, announce)
