"""The endpoints of ``keepwarm http``: each one core call (``Service``, ``list_services``), its
document as the body, its outcome as the status code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from keepwarm.groups.namespace import list_services
from keepwarm.http.answers import HttpRefusal, answer
from keepwarm.http.gateway import Gateway
from keepwarm.queue.outcomes import TaskOutcome

T = TypeVar("T")
MAX_WAIT_SEC = 600.0

router = APIRouter()
Wait = Annotated[
    float,
    Query(ge=0, le=MAX_WAIT_SEC, description="seconds to wait for the task to finish (0: answer at once)"),
]
ARGS_BODY = {
    "requestBody": {
        "required": False,
        "description": "The task's args, checked by the app's args model (an app's own path shows it).",
        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
    }
}


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


@router.get("/livez", tags=["server"], summary="Liveness of the server itself")
async def livez() -> Response:
    return answer({"status": "ok"})


@router.get("/v1/apps", tags=["services"], summary="Every service of the namespace")
async def apps(request: Request) -> Response:
    """Each service of the namespace with its status, readiness, loops, queue and SLA gate verdict
    (as ``keepwarm ps`` and MCP ``list_services`` give them)."""
    gateway = gateway_of(request)
    rows = await asyncio.to_thread(list_services, gateway.scope.namespace, gateway.scope.share_dir)
    return answer(
        {"namespace": gateway.scope.namespace_name(), "services": [r.model_dump(mode="json") for r in rows]}
    )


@router.get("/v1/apps/{app}", tags=["services"], summary="A service's health report")
async def status(request: Request, app: str) -> Response:
    """The ``agi.service.health.v1`` report: status word, loops, queue, supervisor (``keepwarm status``)."""
    report = await asyncio.to_thread(gateway_of(request).service(app).status)
    return answer(report.to_json_dict())


@router.get("/v1/apps/{app}/health", tags=["services"], summary="Health and the SLA gate (a readiness probe)")
async def health(
    request: Request,
    app: str,
    allow_idle: bool | None = None,
    max_unhealthy: Annotated[int | None, Query(ge=0)] = None,
    max_restart_rate: Annotated[float | None, Query(ge=0)] = None,
    max_pending_age_sec: Annotated[float | None, Query(ge=0)] = None,
) -> Response:
    """The health report with the SLA gate's verdict under ``gate``: 200 when the gate passes, 503
    when it fails. Thresholds come from the app's ``[cluster.service_health]``; each parameter
    overrides one (as ``keepwarm health --gate``)."""
    report, gate = await asyncio.to_thread(
        gateway_of(request).service(app).health,
        allow_idle=allow_idle,
        max_unhealthy=max_unhealthy,
        max_restart_rate=max_restart_rate,
        max_pending_age_sec=max_pending_age_sec,
    )
    document = report.to_json_dict() | {"gate": gate.model_dump(mode="json")}
    return answer(document, 200 if gate.code == 0 else 503)


@router.post(
    "/v1/apps/{app}/tasks",
    tags=["tasks"],
    summary="Submit a task",
    status_code=202,
    openapi_extra=ARGS_BODY,
)
async def submit(
    request: Request,
    app: str,
    wait: Wait = 0.0,
    task_name: str = "task",
    execution_id: str | None = None,
    timeout_sec: Annotated[float | None, Query(gt=0)] = None,
    max_attempts: Annotated[int | None, Query(ge=1)] = None,
    queue_only: bool = False,
) -> Response:
    """Queue one task with the body as its args (``keepwarm submit``): 202 with its id, or with
    ``wait``, 200 with its outcome once it finishes within that time. Refused (503) when the service
    is not running, unless ``queue_only`` (the task then waits for its next start)."""
    gateway = gateway_of(request)
    gateway.require_writable()
    service = gateway.service(app)
    args = await read_args(request, service.queue.settings.max_task_bytes)
    # On the event loop: a submit is a write and a rename of a small file, less than a hand-off
    # to a thread and back costs.
    handle = service.submit(
        args,
        task_name=task_name,
        execution_id=execution_id,
        timeout_sec=timeout_sec,
        max_attempts=max_attempts,
        queue_only=queue_only,
    )
    if wait > 0:
        record = await until_disconnect(request, gateway.record(service, handle.task_id, wait))
        if record is not None:
            return answer(TaskOutcome.of(record).to_json_dict())
    url = f"/v1/apps/{app}/tasks/{handle.task_id}"
    document = {"task_id": handle.task_id, "app": service.env.app_target, "state": "pending", "url": url}
    return answer(document, 202, {"Location": url})


@router.get("/v1/apps/{app}/tasks/{task_id}", tags=["tasks"], summary="A task's state and outcome")
async def task(request: Request, app: str, task_id: str, wait: Wait = 0.0) -> Response:
    """Where the task is and, once it has finished, its record: status, result or error and remote
    traceback (MCP ``get_result``'s document). With ``wait``, waits up to that long for it to finish."""
    gateway = gateway_of(request)
    service = gateway.service(app)
    if wait > 0:
        await asyncio.to_thread(service.queue.locate, task_id)  # an unknown id is 404 at once
        record = await until_disconnect(request, gateway.record(service, task_id, wait))
        if record is not None:
            return answer(TaskOutcome.of(record).to_json_dict())
    outcome = await asyncio.to_thread(service.outcome, task_id, 0.0)
    return answer(outcome.to_json_dict())


@router.delete("/v1/apps/{app}/tasks/{task_id}", tags=["tasks"], summary="Cancel a task")
async def cancel(request: Request, app: str, task_id: str) -> Response:
    """Cancel a pending or running task (``keepwarm cancel``): 200 when cancelled, 404 for an unknown
    id, 409 when it has finished already; the body says where it is."""
    gateway = gateway_of(request)
    gateway.require_writable()
    cancelled = await asyncio.to_thread(gateway.service(app).cancel, [task_id])
    document = {"cancelled": list(cancelled), "not_cancelled": cancelled.not_cancelled}
    where = cancelled.not_cancelled.get(task_id)
    if where is None:
        return answer(document)
    status = 404 if where == "not found" else 409
    problem = f"task {task_id} not found" if status == 404 else f"task {task_id} is {where} already"
    return answer(document | {"error": f"{problem}; nothing was cancelled", "kind": "NotCancelled"}, status)


async def read_args(request: Request, limit: int) -> dict[str, Any]:
    """The body as the task's args: a JSON object of at most ``limit`` bytes (413 past it, before the
    rest is read), empty meaning no args."""
    too_large = HttpRefusal(
        413,
        f"the body is over this app's max_task_bytes ({limit} bytes); pass large inputs by reference "
        "(a path the app can read), or raise [cluster] max_task_bytes",
        "BodyTooLarge",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    if not body.strip():
        return {}
    try:
        args = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"the body is not JSON ({exc}); send the task's args as a JSON object"
        raise HttpRefusal(400, problem, "BadBody") from None
    if not isinstance(args, dict):
        raise HttpRefusal(
            422, f"the body is a JSON {type(args).__name__}; send the task's args as a JSON object", "BadBody"
        )
    return args


async def until_disconnect(request: Request, waiting: Awaitable[T]) -> T | None:
    """``waiting``'s value, or None as soon as the client hangs up (the wait is cancelled: nothing of
    it is left behind)."""
    waiter = asyncio.ensure_future(waiting)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (waiter, gone):
            pending.cancel()
    return waiter.result() if waiter.done() and not waiter.cancelled() else None


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
