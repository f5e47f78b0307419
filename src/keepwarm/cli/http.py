"""The HTTP verb: tasks, results, health and metrics of one namespace's services over HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import click

from keepwarm.cli.common import UserError, apps_path_option, number_option, say
from keepwarm.web import DEFAULT_HTTP_PORT, HTTP_TOKEN_VARIABLE, bearer_token, is_loopback


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help=f"The address to listen on; any but loopback requires a bearer token (${HTTP_TOKEN_VARIABLE}).",
)
@number_option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_HTTP_PORT,
    help="The port (0: a free one, printed at start).",
)
@click.option(
    "--read-only", is_flag=True, help="Serve only the GET endpoints (health, status, results, metrics)."
)
@apps_path_option
@click.option("--namespace", help="The namespace [default: $KEEPWARM_NAMESPACE, else your login name].")
@click.option("--fleet", help="A fleet file (or NAME of NAME.toml): its namespace, and its members by name.")
def http(
    host: str, port: int, read_only: bool, apps_path: Path | None, namespace: str | None, fleet: str | None
) -> None:
    """Serve one namespace's services over HTTP: tasks in, results out, health probes, /metrics."""
    try:
        from keepwarm.groups.scope import Scope
        from keepwarm.http.server import serve
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.partition(".")[0] in ("fastapi", "uvicorn", "starlette"):
            raise UserError(
                "the HTTP server needs FastAPI and uvicorn: pip install 'keepwarm[http]'"
            ) from None
        raise
    if fleet is not None and namespace is not None:
        raise UserError("give either --fleet (its namespace) or --namespace, not both")
    token: str | None = None
    generated = False
    if not is_loopback(host) or HTTP_TOKEN_VARIABLE in os.environ:
        token, generated = bearer_token(HTTP_TOKEN_VARIABLE)
    scope = Scope(apps_path=apps_path, namespace=namespace, fleet_path=fleet)
    where = f"namespace {scope.namespace_name()}" + (" (read-only)" if read_only else "")

    def announce(url: str) -> None:
        say(f"keepwarm http: {where} at {url} (API docs at {url}/docs)")
        if generated:
            say(f"keepwarm http: bearer token (set {HTTP_TOKEN_VARIABLE} to choose one): {token}")
        elif token is not None:
            say(f"keepwarm http: bearer token from {HTTP_TOKEN_VARIABLE}")

    serve(scope, host=host, port=port, token=token, read_only=read_only, announce=announce)
