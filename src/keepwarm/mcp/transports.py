"""The MCP server's transports: stdio, or streamable HTTP on 127.0.0.1 behind a bearer token."""

from __future__ import annotations

from collections.abc import Callable

from mcp.server.mcpserver import MCPServer

from keepwarm.web import BearerTokenGuard, bearer_token, bound_url, listen

TOKEN_VARIABLE = "KEEPWARM_MCP_TOKEN"


def serve_stdio(server: MCPServer) -> None:
    server.run("stdio")


def http_token() -> tuple[str, bool]:
    """The bearer token: ``$KEEPWARM_MCP_TOKEN``, else a new random one; and whether it was generated."""
    return bearer_token(TOKEN_VARIABLE)


def serve_http(server: MCPServer, port: int, token: str, announce: Callable[[str], None]) -> None:
    """Serve streamable HTTP on 127.0.0.1 only, refusing any request without the bearer token."""
    import uvicorn

    listener = listen("127.0.0.1", port)
    app = BearerTokenGuard(server.streamable_http_app(), token)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    announce(f"{bound_url(listener)}/mcp")
    uvicorn.Server(config).run(sockets=[listener])
