"""A namespace's services, whoever started them and from wherever: one row each (``keepwarm ps``),
and stopping them all (``keepwarm down --all``)."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict

from keepwarm.api import Service
from keepwarm.env import Env, namespace_root
from keepwarm.groups.parallel import StoppedService, stop_services
from keepwarm.queue.layout import services_dir
from keepwarm.queue.state import ServiceStatus
from keepwarm.service.gate import GateThresholds, evaluate_gate
from keepwarm.service.report import QueueHealth


class ServiceSummary(BaseModel):
    """One service as ``ps``, ``fleet_status`` and ``list_services`` show it.

    ``ready`` means the service serves: its supervisor is alive and every loop is healthy (status
    ``running`` or ``idle``). The SLA gate's verdict (``gate_*``, with the app's thresholds) is a
    separate judgement: a service that recovered from a crash an hour ago is ready, though its
    restart rate may still fail the gate.
    """

    model_config = ConfigDict(frozen=True)

    service: str
    app: str
    namespace: str
    enabled: bool = True
    status: str
    ready: bool
    loops: int
    loops_healthy: int
    supervisor_pid: int | None
    supervisor_alive: bool
    queue: QueueHealth
    gate_code: int
    gate_passed: bool
    gate_reasons: list[str]
    conditions: list[str]


def summarize(service: Service, name: str | None = None, *, enabled: bool = True) -> ServiceSummary:
    """A service's status, readiness and gate verdict, from its files alone."""
    report = service.status()
    gate = evaluate_gate(report, GateThresholds.from_settings(service.env.settings.cluster.service_health))
    return ServiceSummary(
        service=name or report.target,
        app=report.target,
        namespace=report.namespace,
        enabled=enabled,
        status=report.status,
        ready=report.status in (ServiceStatus.RUNNING, ServiceStatus.IDLE),
        loops=len(report.worker_health),
        loops_healthy=report.workers_healthy_count,
        supervisor_pid=report.supervisor.pid if report.supervisor.alive else None,
        supervisor_alive=report.supervisor.alive,
        queue=report.queue,
        gate_code=gate.code,
        gate_passed=gate.passed,
        gate_reasons=gate.reasons,
        conditions=report.conditions,
    )


def list_services(
    namespace: str | None = None, share_dir: str | os.PathLike[str] | None = None
) -> list[ServiceSummary]:
    """Every service of a namespace (every folder under ``<share>/<namespace>/service/``), by name."""
    return [summarize(service) for service in namespace_services(namespace, share_dir)]


def stop_all(
    namespace: str | None = None,
    share_dir: str | os.PathLike[str] | None = None,
    *,
    timeout: float | None = None,
) -> list[StoppedService]:
    """Stop every service of a namespace that is not stopped (``keepwarm down --all``), all at once,
    each as ``stop`` does; one ``{service, app, message}`` per service stopped."""
    running = {
        service.env.app_target: service
        for service in namespace_services(namespace, share_dir)
        if service.status().status != ServiceStatus.STOPPED
    }
    return stop_services(running, f"namespace {namespace_root(namespace, share_dir)[1]}", timeout=timeout)


def namespace_services(
    namespace: str | None = None, share_dir: str | os.PathLike[str] | None = None
) -> list[Service]:
    """A Service for every folder under ``<share>/<namespace>/service/``, each from its own records."""
    share, name = namespace_root(namespace, share_dir)
    folder = services_dir(share, name)
    try:
        dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except FileNotFoundError:
        return []
    return [Service(Env.of_service_folder(d, share, name), check_args=False) for d in dirs]
