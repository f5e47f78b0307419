"""keepwarm's service metrics as prometheus_client families: the one list behind every Prometheus surface.

``keepwarm health --format prometheus`` renders one service's families; an HTTP ``/metrics`` registers a
:class:`ServicesCollector` for all the services it serves. Both read :data:`GAUGES`, so they cannot drift.
The exposition format wants each family once, so the samples of every service go into one family per gauge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from keepwarm.queue.state import ServiceStatus
from keepwarm.service.gate import GateResult
from keepwarm.service.report import HealthReport

PREFIX = "keepwarm_service_"
SERVICE_LABELS = ("app", "namespace")

ServiceHealth = tuple[HealthReport, GateResult | None]
"""One service's report and, when a gate was evaluated, its verdict."""

Samples = list[tuple[tuple[str, ...], float | None]]
"""The values of the gauge's own labels (none, or one value for ``worker``/``status``), and the value."""

Read = Callable[[HealthReport, GateResult | None], Samples]


@dataclass(frozen=True)
class ServiceGauge:
    """One ``keepwarm_service_<name>`` gauge: its help, its own labels, how to read a service's samples."""

    name: str
    help: str
    read: Read
    labels: tuple[str, ...] = ()
    declared_empty: bool = True  # False: the family is left out when no service has a sample

    def family(self) -> GaugeMetricFamily:
        """The family, empty: labelled ``app``, ``namespace`` and the gauge's own labels."""
        return GaugeMetricFamily(PREFIX + self.name, self.help, labels=[*SERVICE_LABELS, *self.labels])


def _one(value: Callable[[HealthReport], float | None]) -> Read:
    return lambda report, _gate: [((), value(report))]


def _per_worker(value: Callable[[HealthReport], Iterable[tuple[str, float | None]]]) -> Read:
    return lambda report, _gate: [((worker,), number) for worker, number in value(report)]


GAUGES: tuple[ServiceGauge, ...] = (
    ServiceGauge(
        "up",
        "1 while the service serves (status running, idle or degraded)",
        _one(lambda r: int(ServiceStatus(r.status).serving)),
    ),
    ServiceGauge(
        "status",
        "1 for the service's current status word, 0 for the others",
        lambda r, _g: [((word.value,), int(word == r.status)) for word in ServiceStatus],
        labels=("status",),
    ),
    ServiceGauge("workers_healthy", "loops that are healthy", _one(lambda r: r.workers_healthy_count)),
    ServiceGauge(
        "workers_unhealthy", "loops that have an unhealthy reason", _one(lambda r: r.workers_unhealthy_count)
    ),
    ServiceGauge(
        "workers_pending", "loops still starting, within their grace", _one(lambda r: r.workers_pending_count)
    ),
    ServiceGauge(
        "restart_rate", "restarts per slot within the restart window", _one(lambda r: r.restart_rate)
    ),
    ServiceGauge("queue_pending", "tasks waiting in pending/", _one(lambda r: r.queue.pending)),
    ServiceGauge("queue_running", "tasks claimed by a loop", _one(lambda r: r.queue.running)),
    ServiceGauge("queue_done", "terminal files in done/", _one(lambda r: r.queue.done)),
    ServiceGauge("queue_failed", "terminal files in failed/", _one(lambda r: r.queue.failed)),
    ServiceGauge(
        "oldest_pending_age_seconds",
        "age of the oldest pending task (0 when none is pending)",
        _one(lambda r: r.queue.oldest_pending_age_sec or 0.0),
    ),
    ServiceGauge(
        "supervisor_heartbeat_age_seconds",
        "seconds since the supervisor's last heartbeat",
        _one(lambda r: r.supervisor.heartbeat_age_sec),
    ),
    ServiceGauge(
        "heartbeat_age_seconds",
        "seconds since each loop's last heartbeat",
        _per_worker(lambda r: [(row.worker, row.heartbeat_age_sec) for row in r.worker_health]),
        labels=("worker",),
    ),
    ServiceGauge(
        "worker_healthy",
        "1 when the loop is healthy",
        _per_worker(lambda r: [(row.worker, int(row.healthy)) for row in r.worker_health]),
        labels=("worker",),
    ),
    ServiceGauge(
        "loops", "loops the service keeps (starting ones included)", _one(lambda r: len(r.worker_health))
    ),
    ServiceGauge(
        "loops_desired",
        "loops the autoscaler wants (absent without autoscaling)",
        _one(lambda r: r.autoscale.desired if r.autoscale.enabled else None),
    ),
    ServiceGauge(
        "gate_code",
        "the SLA gate's exit code (0 passed)",
        lambda _r, gate: [((), gate.code if gate is not None else None)],
        declared_empty=False,
    ),
)


def service_families(services: Iterable[ServiceHealth]) -> list[Metric]:
    """One family per gauge in :data:`GAUGES`, holding the samples of every service given.

    A value of None is no sample (a loop without a heartbeat, ``loops_desired`` without autoscaling);
    ``gate_code`` is left out entirely unless some service comes with a gate's verdict.
    """
    services = list(services)
    families: list[Metric] = []
    for gauge in GAUGES:
        family = gauge.family()
        for report, gate in services:
            for own_labels, value in gauge.read(report, gate):
                if value is not None:
                    family.add_metric([report.app, report.namespace, *own_labels], value)
        if family.samples or gauge.declared_empty:
            families.append(family)
    return families


class ServicesCollector:
    """A prometheus_client collector of the service families, read afresh from ``services`` at each scrape.

    Register it in a ``CollectorRegistry`` next to other metrics; ``describe`` names every family, so the
    registry refuses a metric that would collide with one of them.
    """

    def __init__(self, services: Callable[[], Iterable[ServiceHealth]]) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        """The families of the services as they are now."""
        yield from service_families(self._services())

    def describe(self) -> Iterator[Metric]:
        """Every family, without samples (for the registry's name check; reads no service)."""
        for gauge in GAUGES:
            yield gauge.family()


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def render(families: Iterable[Metric]) -> str:
    """The families as Prometheus text exposition (version 0.0.4), written by prometheus_client."""
    return generate_latest(_Families(families)).decode()
