"""What keepwarm's HTTP servers share (``keepwarm http`` and ``keepwarm mcp --http``): the bearer
token, the ASGI guard that asks for it, and a listening socket bound with a clear error."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
from typing import Any

from keepwarm.errors import PortUnavailable, ServerOptionError

MIN_TOKEN_LENGTH = 16
HTTP_TOKEN_VARIABLE = "KEEPWARM_HTTP_TOKEN"
HTTP_URL_VARIABLE = "KEEPWARM_HTTP_URL"
DEFAULT_HTTP_PORT = 8787


def bearer_token(variable: str) -> tuple[str, bool]:
    """The bearer token: ``$variable``, else a new random one; and whether it was generated."""
    token = os.environ.get(variable)
    if token is None:
        return secrets.token_urlsafe(32), True
    if len(token) < MIN_TOKEN_LENGTH:
        raise ServerOptionError(f"{variable} is too short: use at least {MIN_TOKEN_LENGTH} characters")
    return token, False


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only ever reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def advertised_http_url() -> str:
    """Where ``keepwarm http`` is reached, for snippets: ``$KEEPWARM_HTTP_URL``, else its default."""
    return os.environ.get(HTTP_URL_VARIABLE, f"http://127.0.0.1:{DEFAULT_HTTP_PORT}").rstrip("/")


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), or PortUnavailable saying why."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said, not 0: asyncio sets TCP_NODELAY only on sockets that say it, and without it
    # a response written in two parts (uvicorn's head, then body) waits ~40 ms for the client's ack.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise PortUnavailable(
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port (or --host)"
        ) from None
    listener.listen(1024)
    return listener


def bound_url(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class BearerTokenGuard:
    """ASGI middleware: an HTTP request without ``Authorization: Bearer <token>`` gets 401 (the
    token compared in constant time). ``open_paths`` are served without it (liveness probes)."""

    def __init__(self, app: Any, token: str, open_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.open_paths = open_paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") not in self.open_paths:
            given = next((v for k, v in scope.get("headers", []) if k.lower() == b"authorization"), b"")
            if not secrets.compare_digest(given, self.expected):
                wrong = "a wrong bearer token" if given else "no bearer token"
                problem = f"unauthorized: {wrong}; send Authorization: Bearer <token>"
                body = json.dumps({"error": problem, "kind": "Unauthorized"}, separators=(",", ":")).encode()
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
