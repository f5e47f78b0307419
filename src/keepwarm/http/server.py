"""``keepwarm http``'s ASGI app and its server: FastAPI on uvicorn, bound to loopback by default,
behind a bearer token whenever it binds to anything else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from keepwarm import __version__
from keepwarm.errors import KeepwarmError
from keepwarm.groups.scope import Scope
from keepwarm.http.answers import HttpRefusal, answer, refusal
from keepwarm.http.gateway import Gateway
from keepwarm.http.openapi import openapi_document
from keepwarm.http.routes import router
from keepwarm.http.telemetry import MeasuredRequests, Telemetry
from keepwarm.queue.aresults import close_async_results
from keepwarm.web import BearerTokenGuard, bound_url, listen

OPEN_PATHS = frozenset({"/livez"})  # a liveness probe needs no token: it tells nothing


def build_app(scope: Scope, *, read_only: bool = False, token: str | None = None) -> Any:
    """The server's ASGI app: routes, errors as JSON, request metrics, and the token guard."""
    gateway = Gateway(scope, read_only=read_only)
    telemetry = Telemetry(gateway)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await close_async_results()

    api = FastAPI(
        title="keepwarm",
        version=__version__,
        description=f"Tasks, results, health and metrics of namespace {scope.namespace_name()}'s services"
        + (" (read-only)" if read_only else ""),
        lifespan=lifespan,
    )
    api.state.gateway = gateway
    api.include_router(router)
    api.add_api_route(
        "/metrics", telemetry.exposition, methods=["GET"], tags=["server"], summary="Prometheus"
    )
    api.openapi = lambda: openapi_document(api, gateway)  # type: ignore[method-assign]
    api.add_exception_handler(KeepwarmError, _refused)
    api.add_exception_handler(HttpRefusal, _refused)
    api.add_exception_handler(ValueError, _refused)
    api.add_exception_handler(RequestValidationError, _invalid_request)
    measured = MeasuredRequests(api, telemetry)
    return measured if token is None else BearerTokenGuard(measured, token, OPEN_PATHS)


async def _refused(_: Request, exc: Exception) -> Response:
    return refusal(exc)


async def _invalid_request(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    problems = "; ".join(f"{'.'.join(str(p) for p in f['loc'][1:])}: {f['msg']}" for f in fields)
    return answer({"error": f"invalid request: {problems}", "kind": "InvalidRequest", "fields": fields}, 422)


def serve(
    scope: Scope,
    *,
    host: str,
    port: int,
    token: str | None,
    read_only: bool,
    announce: Callable[[str], None],
) -> None:
    """Serve until interrupted; ``announce`` is told the URL once the socket listens."""
    import uvicorn

    listener = listen(host, port)
    app = build_app(scope, read_only=read_only, token=token)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    announce(bound_url(listener))
    uvicorn.Server(config).run(sockets=[listener])
