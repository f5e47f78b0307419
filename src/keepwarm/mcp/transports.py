"""The MCP server's transports: stdio, or streamable HTTP on 127.0.0.1 behind a bearer token."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer

from keepwarm.errors import (
    McpOptionError,
    PortUnavailable,
)

TOKEN_VARIABLE = "KEEPWARM_MCP_TOKEN"
MIN_TOKEN_LENGTH = 16


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
