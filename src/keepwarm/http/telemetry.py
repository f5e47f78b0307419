"""The server's own metrics and ``GET /metrics``: every service of the namespace (the families
``keepwarm health --format prometheus`` prints, from the same list), and the server's requests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from keepwarm.groups.namespace import namespace_services
from keepwarm.http.gateway import Gateway
from keepwarm.service.metrics import ServicesCollector

# Round trips from a warm loop are around a millisecond; waits run to minutes.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)


class Telemetry:
    """One registry per server: its services' gauges, its request counters and latency histograms."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ServicesCollector(self._reports))
        self.requests = Counter(
            "keepwarm_http_requests",
            "HTTP requests answered, by method, route and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "keepwarm_http_request_duration_seconds",
            "Seconds from a request's arrival to its answer, by method and route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        waiting = Gauge(
            "keepwarm_http_waiting_requests",
            "Requests waiting for a task to finish (?wait=), now",
            registry=self.registry,
        )
        waiting.set_function(lambda: gateway.waiting)

    def _reports(self) -> list[tuple[Any, Any]]:
        scope = self.gateway.scope
        return [service.health() for service in namespace_services(scope.namespace, scope.share_dir)]

    async def exposition(self, request: Request) -> Response:
        """``GET /metrics``: the Prometheus text exposition (the reports are read in a thread)."""
        body = await asyncio.to_thread(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


class MeasuredRequests:
    """ASGI middleware counting every request and timing it, labelled by its route's template
    (``/v1/apps/{app}/tasks``, never the ids a client sent)."""

    def __init__(self, app: Any, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.telemetry.requests.labels(method, route, str(status)).inc()
            self.telemetry.latency.labels(method, route).observe(time.perf_counter() - started)
