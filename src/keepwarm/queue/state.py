"""The service's state files: ``service.json`` (desired state) and ``supervisor.json`` (live state).

Both are written by the supervisor (``service.json`` also by ``start`` and ``stop``) with temp file +
rename, and read by anyone: ``status`` and ``health`` are computed from these files alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keepwarm import __version__
from keepwarm._sys.atomic import write_atomic
from keepwarm.errors import AppError
from keepwarm.queue.layout import ServiceLayout
from keepwarm.settings import SETTINGS_FILE, AppSettings, settings_changes

if TYPE_CHECKING:
    from keepwarm.env import Env

SERVICE_SCHEMA = "keepwarm.service.v1"
SUPERVISOR_SCHEMA = "keepwarm.supervisor.v1"


class RestartReason(StrEnum):
    """Why a loop ended or was restarted, as the loop table, the restart ledger and health name it."""

    LOOP_FINISHED = "loop-finished"
    LOOP_ERROR = "loop-error"
    LOOP_CANCELLED = "loop-cancelled"
    MISSING_HEARTBEAT = "missing-heartbeat"
    STALE_HEARTBEAT = "stale-heartbeat"  # written with its age: ``stale-heartbeat(<N>s)``
    TASK_TIMEOUT = "task-timeout"
    MEMORY_LIMIT = "memory-limit"
    RECYCLED = "recycled"
    WORKER_LOST = "worker-lost"
    OPERATOR_RESTART = "operator-restart"
    ROLLING_RESTART = "rolling-restart"
    SCALE_DOWN = "scale-down"
    SCALE_UP = "scale-up"
    STOP = "stop"

    @property
    def planned(self) -> bool:
        """Keepwarm or the operator planned it: no back-off, no attempt spent, not counted in
        restart_rate, and never an unhealthy loop, a degraded service or a gate failure while it happens."""
        return self in _PLANNED

    @classmethod
    def parse(cls, text: str) -> RestartReason | None:
        """The reason a written one names (``stale-heartbeat(42s)``: STALE_HEARTBEAT); None if unknown."""
        word, _, _ = text.partition("(")
        try:
            return cls(word)
        except ValueError:
            return None


_PLANNED = frozenset(
    {
        RestartReason.RECYCLED,
        RestartReason.MEMORY_LIMIT,
        RestartReason.OPERATOR_RESTART,
        RestartReason.ROLLING_RESTART,
        RestartReason.SCALE_DOWN,
        RestartReason.SCALE_UP,
        RestartReason.STOP,
        RestartReason.LOOP_CANCELLED,
    }
)


def stale_heartbeat(age_sec: float) -> str:
    """Why a loop whose heartbeat is ``age_sec`` old is restarted or unhealthy: ``stale-heartbeat(<N>s)``."""
    return f"{RestartReason.STALE_HEARTBEAT}({int(age_sec)}s)"


def is_planned(reason: str | None) -> bool:
    """True if a written reason is one keepwarm or the operator planned (an unknown one is not)."""
    parsed = RestartReason.parse(reason) if reason is not None else None
    return parsed is not None and parsed.planned


class ServiceStatus(StrEnum):
    """The service's status word in ``agi.service.health.v1``, checked by the gate in this vocabulary."""

    RUNNING = "running"
    IDLE = "idle"
    DEGRADED = "degraded"
    ERROR = "error"
    STOPPED = "stopped"

    @property
    def serving(self) -> bool:
        """True while the service serves tasks: running, idle or degraded."""
        return self not in (ServiceStatus.ERROR, ServiceStatus.STOPPED)


class ConditionKind(StrEnum):
    """What a service-wide condition is about; written as ``<kind>`` or ``<kind>: <detail>``."""

    STORAGE = "storage"  # the share is full, read-only or cannot be written
    CLUSTER = "cluster"  # the Dask scheduler is unreachable
    APP = "app"  # the app's files changed under its running service
    START_FAILED = "start-failed"
    SUPERVISOR_DEAD = "supervisor-dead"
    SUPERVISOR_SILENT = "supervisor-silent"
    LOOPS_STARTING = "loops-starting"
    AUTOSCALE_HELD = "autoscale-held"  # the load calls for more loops, but a loop fails to start
    OTHER = "other"  # a condition this keepwarm does not know, kept as written


@dataclass(frozen=True)
class Condition:
    """A service-wide condition: its kind and what it says (written as ``<kind>: <detail>``)."""

    kind: ConditionKind
    detail: str | None = None

    def __str__(self) -> str:
        if self.kind is ConditionKind.OTHER:
            return self.detail or ""
        return str(self.kind) if self.detail is None else f"{self.kind}: {self.detail}"

    @classmethod
    def parse(cls, text: str) -> Condition:
        """The condition a written one says; an unknown one is OTHER, written back as it was."""
        word, colon, detail = text.partition(": ")
        try:
            kind = ConditionKind(word)
        except ValueError:
            kind = ConditionKind.OTHER
        if kind is ConditionKind.OTHER:
            return cls(ConditionKind.OTHER, text)
        return cls(kind, detail if colon else None)


FutureState = Literal["pending", "running", "finished", "error", "cancelled", "lost"]


class _State(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")


class SupervisorIdentity(_State):
    pid: int
    host: str
    incarnation: str
    started_at: str
    log: str | None = None


class ClusterRecord(_State):
    """The Dask cluster a service runs on: joined (never shut down by keepwarm) or started by it."""

    address: str
    owned: bool
    keeper_pid: int | None = None  # the process that holds a local cluster keepwarm started
    kept: bool = False  # left running by ``stop --no-shutdown``, for the next start to reuse


class ServiceRecord(_State):
    """``service.json``: what the service should be, and who runs it."""

    schema_: str = Field(default=SERVICE_SCHEMA, alias="schema")
    app: str
    namespace: str
    desired: Literal["running", "stopped"]
    backend: str = "local"
    cluster: ClusterRecord | None = None
    slots: int
    supervisor: SupervisorIdentity | None = None
    started_at: str | None = None
    stopped_at: str | None = None
    app_dir: str | None = None  # the app folder the loops load their code from
    settings: dict[str, Any] = Field(default_factory=dict)  # the whole app_settings.toml in force
    version: str
    start_error: str | None = None


class LoopRow(_State):
    """One slot in the supervisor's loop table."""

    slot: str
    incarnation: str
    pid: int | None = None
    host: str
    future_state: FutureState = "pending"
    started_at: float  # epoch seconds
    restarts: int = 0
    last_reason: str | None = None
    unhealthy_reason: str | None = None
    exit_code: int | None = None
    # The planned change in progress (a planned RestartReason): written before keepwarm signals the loop,
    # cleared when the slot's next incarnation is ready; an unplanned end clears it.
    planned: str | None = None
    # The last start error of the slot, in the loop's words ("start failed: RuntimeError: ..."),
    # until an incarnation is ready.
    start_error: str | None = None
    forked: bool = False  # forked from the service's preloaded template ([cluster] preload); else spawned


TemplateWord = Literal["starting", "ready", "failed", "stopped"]


class TemplateState(_State):
    """The preloaded template of a service with ``[cluster] preload`` on (``keepwarm.runtime.template``)."""

    state: TemplateWord  # failed: its preload (loops are spawned cold)
    pid: int | None = None
    preload_sec: float | None = None
    error: str | None = None
    starts: int = 0  # more than 1: the template died and was started again (a planned event)

    def summary(self) -> str:
        """One line for people: ``template ready (pid 812), preload 1.67 s; new loops are forked``."""
        line = f"template {self.state}" + (f" (pid {self.pid})" if self.pid else "")
        if self.state == "ready":
            line += f", preload {self.preload_sec:.2f} s; new loops are forked"
        elif self.state == "failed":
            line += f": {(self.error or 'unknown').splitlines()[0]}; new loops are spawned cold"
        return line + (f"; started {self.starts} times" if self.starts > 1 else "")


class RestartEntry(_State):
    slot: str
    at: float  # epoch seconds
    reason: str
    incarnation: str


class AutoscaleDecision(_State):
    """One autoscaling decision the supervisor carried out: ``from`` and ``to`` loops, and why."""

    model_config = ConfigDict(defer_build=True, extra="ignore", populate_by_name=True)

    at: float  # epoch seconds
    from_loops: int = Field(alias="from")
    to_loops: int = Field(alias="to")
    why: str


class AutoscaleState(_State):
    """``supervisor.json``'s ``autoscale``: what the autoscaler decided and from what (health shows it)."""

    min_loops: int
    max_loops: int
    desired: int
    current: int
    starting: int = 0
    pinned: int | None = None  # keepwarm scale APP N: the count, until keepwarm scale APP --auto
    held: str | None = None  # why it does not grow although the load calls for it
    pending: int = 0
    running: int = 0
    target_pending_per_loop: float
    target_pending_age_sec: float | None = None
    last_decision: AutoscaleDecision | None = None


class SupervisorState(_State):
    """``supervisor.json``: rewritten every heartbeat interval by the live supervisor."""

    schema_: str = Field(default=SUPERVISOR_SCHEMA, alias="schema")
    pid: int
    host: str
    incarnation: str
    timestamp: float  # epoch seconds: the supervisor's heartbeat
    mode: Literal["running", "draining", "stopping", "stopped"] = "running"
    desired_slots: int
    loops: list[LoopRow] = Field(default_factory=list)
    restarts: list[RestartEntry] = Field(default_factory=list)
    conditions: list[str] = Field(default_factory=list)
    last_task_at: float | None = None
    autoscale: AutoscaleState | None = None
    template: TemplateState | None = None  # None: loops are spawned ([cluster] preload off)
    version: str

    def parsed_conditions(self) -> list[Condition]:
        """The supervisor's conditions as the vocabulary names them."""
        return [Condition.parse(text) for text in self.conditions]


def write_state(path: Path, state: BaseModel, durable: bool = False) -> None:
    write_atomic(path, state.model_dump_json(by_alias=True, indent=1).encode(), durable)


def read_service_record(path: Path) -> ServiceRecord | None:
    try:
        return ServiceRecord.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def read_supervisor_state(path: Path) -> SupervisorState | None:
    try:
        return SupervisorState.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def saved_settings(record: ServiceRecord | None) -> AppSettings | None:
    """The settings a service was started with, as ``service.json`` saved them (None if it did not)."""
    try:
        return AppSettings.model_validate(record.settings) if record is not None else None
    except ValidationError:
        return None  # saved by a keepwarm that kept only [cluster], or not at all


def settings_in_force(env: Env, record: ServiceRecord | None) -> AppSettings:
    """The settings of the service: those it was started with while it runs, else the app's own.

    An edit of ``app_settings.toml`` does not change a running service's timeouts, slots or retention
    until it is started again; every reader of the service (status, health, stop) judges it by these.
    """
    running = record is not None and record.desired == "running"
    return (saved_settings(record) if running else None) or env.settings


def app_change(env: Env, record: ServiceRecord | None) -> str | None:
    """How the app's files differ from what its running service was started with, in one line (else None).

    ``settings unreadable since start: <error>``, ``folder <path> moved or removed since start``, or
    ``settings changed since start: [section] key: old -> new; ...``.
    """
    if record is None or record.desired != "running":
        return None
    if record.app_dir and not (Path(record.app_dir) / SETTINGS_FILE).is_file():
        return f"folder {record.app_dir} moved or removed since start"
    if isinstance(env.settings_error, AppError):
        return None  # found by the service's name: its own folder is where it was
    if env.settings_error is not None:
        return f"settings unreadable since start: {env.settings_error}"
    saved = saved_settings(record)
    changes = settings_changes(saved, env.settings) if saved is not None else []
    return f"settings changed since start: {'; '.join(changes)}" if changes else None


def version_note(service_dir: Path, app: str) -> str | None:
    """A note when the running service was started by another keepwarm version."""
    record = read_service_record(ServiceLayout(service_dir).service_record)
    if record is not None and record.desired == "running" and record.version != __version__:
        return f"service {app} was started by keepwarm {record.version}; this is {__version__}"
    return None
