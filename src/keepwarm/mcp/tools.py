"""keepwarm's own MCP tools: services, tasks, workflow runs and fleets, each one core call in a
worker thread, answering what actually happened."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ParamSpec, TypeVar

from pydantic import Field

from keepwarm.groups.fleet import (
    list_services,
)
from keepwarm.groups.scope import Scope

P = ParamSpec("P")
T = TypeVar("T")

MAX_WAIT_SEC = 600.0

Seconds = Annotated[float, Field(ge=0, le=MAX_WAIT_SEC)]
Namespace = Annotated[
    str | None,
    Field(description="the namespace to act in (default: the server's); letters, digits, '_', '-', '.'"),
]


def keepwarm_tools(scope: Scope) -> list[Callable[..., Awaitable[dict[str, Any]]]]:
    """keepwarm's tools, in the order an agent reads them."""

    async def list_services_tool(namespace: Namespace = None) -> dict[str, Any]:
        """Every service of the namespace: status, readiness, loops, queue and SLA gate verdict."""
        rows = await in_thread(list_services, namespace or scope.namespace, scope.share_dir)
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
        row = await in_thread(scope.start, app, namespace, workers, timeout)
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
        outcome = await in_thread(scope.service(app, namespace).outcome, task_id, timeout)
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


async def in_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking core call off the server's event loop."""
    return await asyncio.to_thread(function, *args, **kwargs)
