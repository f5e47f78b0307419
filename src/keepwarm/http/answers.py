"""How keepwarm's answers and errors are said over HTTP: one JSON shape, one status code per kind.

A core call's document is the body as the other surfaces give it; the status code is the only thing
this surface adds. Errors are ``{"error": message, "kind": class name}`` (plus ``fields`` for args a
model refused), as ``keepwarm … --json`` prints them.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from keepwarm.errors import (
    AppError,
    ControlTimeout,
    InvalidArgs,
    InvalidTaskError,
    QueueFull,
    ServiceCannotDeliver,
    ServiceError,
    ServiceNotRunning,
    ServiceStarting,
    StorageError,
    TaskNotFound,
    WorkflowNotFound,
)

RETRY_AFTER_SEC = 1  # what a 429 asks a client to wait before it submits again

# The most specific class first: an error takes the first status whose class it is.
STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (QueueFull, 429),
    (TaskNotFound, 404),
    (WorkflowNotFound, 404),
    (AppError, 404),
    (InvalidTaskError, 422),
    (ServiceNotRunning, 503),
    (ServiceStarting, 503),
    (ServiceCannotDeliver, 503),
    (StorageError, 503),  # the share refuses writes for now
    (ControlTimeout, 504),  # the supervisor did not answer in time
    (ServiceError, 503),
    (ValueError, 422),
)  # any other error is the server's: 500, with its message


class HttpRefusal(Exception):
    """A request this surface refuses before any core call: its status, and what to do."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def answer(document: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response (compact, no ASCII escaping: results may be any text)."""
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    return Response(body, status, headers, media_type="application/json")


def refusal(exc: Exception) -> Response:
    """The response for an error a core call (or this surface) raised."""
    if isinstance(exc, HttpRefusal):
        return answer({"error": str(exc), "kind": exc.kind}, exc.status)
    status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 500)
    document: dict[str, Any] = {"error": str(exc), "kind": type(exc).__name__}
    if isinstance(exc, InvalidArgs):
        document["fields"] = exc.fields
    headers = {"Retry-After": str(RETRY_AFTER_SEC)} if isinstance(exc, QueueFull) else None
    return answer(document, status, headers)
