"""Fleets: several services started and stopped as a group from one ``fleet.toml``, and the
namespace's view of its services (``keepwarm ps``).

A fleet file names a namespace and its services::

    [fleet]
    namespace = "team-a"            # required: keeps this fleet apart from other users and teams
    apps_path = "apps"              # optional default for every service (relative to this file)

    [services.calc]
    app = "mycode_project"          # default: the service's name
    workers = 2                     # default: the app's [cluster] slots
    env = { CALC_MODE = "fast" }    # set in the environment of the supervisor and its loops

    [workflow]                      # optional defaults of `keepwarm workflow start --fleet`
    service = "calc"
    count = 10

``up`` starts every enabled service at once and returns when each one's loops are ready (by their
heartbeats, within each app's ``start_timeout_sec``); it refuses when a member already runs, and a
member that fails to start makes it stop the members it started.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keepwarm.api import Service
from keepwarm.env import Env, login_name
from keepwarm.errors import KeepwarmError, Remedy, SettingsError
from keepwarm.groups.workflow import WorkflowStatus, start_workflow
from keepwarm.queue.state import read_service_record, saved_settings
from keepwarm.service.health import GateThresholds, QueueHealth, evaluate_gate
from keepwarm.settings import AppSection, AppSettings, ClusterSettings, describe_error

FLEET_FILE = "fleet.toml"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Seconds a member's starter process gets beyond the member's own start timeout (its imports, the fork).
_STARTER_MARGIN_SEC = 30.0

T = TypeVar("T")
M = TypeVar("M")


class FleetError(KeepwarmError):
    """A fleet could not be brought up or down; says which member and why."""


class FleetAlreadyRunning(FleetError):
    """``up`` found members of the fleet already running."""


class FleetStartError(FleetError):
    """A member of the fleet did not start; the members ``up`` had started were stopped again."""


# ---------------------------------------------------------------------- the file


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FleetSection(_Table):
    """``[fleet]``: the namespace every member runs in."""

    namespace: str = Field(pattern=NAME_PATTERN, description="the namespace the services run in (required)")
    apps_path: str | None = Field(
        default=None, description="folder holding the apps, relative to the fleet file (default: its folder)"
    )
    description: str = Field(default="", description="one line about the fleet")


class ServiceSpec(_Table):
    """``[services.<name>]``: one member of the fleet."""

    app: str | None = Field(default=None, description="the app folder's name (default: the service's name)")
    apps_path: str | None = Field(
        default=None, description="folder holding the app, relative to the fleet file (default: [fleet])"
    )
    enabled: bool = Field(default=True, description="up starts the service only when true")
    workers: int | None = Field(default=None, ge=1, le=1024, description="loops (default: [cluster] slots)")
    backend: Literal["local", "dask"] | None = Field(
        default=None, description="where loops run (default: the app's [cluster] backend)"
    )
    timeout: float | None = Field(
        default=None, gt=0, description="seconds to wait for ready (default: start_timeout_sec)"
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="environment of the service's supervisor and loops"
    )

    @field_validator("env")
    @classmethod
    def _env_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ENV_KEY.fullmatch(key):
                raise ValueError(f"{key!r} is not an environment variable name")
            if key.startswith("KEEPWARM_"):
                raise ValueError(f"{key} is keepwarm's own: the fleet sets the share and namespace")
        return value


class WorkflowDefaults(_Table):
    """``[workflow]``: defaults of ``keepwarm workflow start --fleet``."""

    service: str | None = Field(
        default=None, description="the member that runs the workflow (default: the only enabled one)"
    )
    name: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="execution ids start with it (default: the app)"
    )
    count: int = Field(default=1, ge=1, le=1_000_000, description="tasks per workflow run")
    args: dict[str, Any] = Field(default_factory=dict, description="each task's args")


class FleetFile(_Table):
    """The whole ``fleet.toml``."""

    fleet: FleetSection
    services: dict[str, ServiceSpec] = Field(min_length=1)
    workflow: WorkflowDefaults = Field(default_factory=WorkflowDefaults)


# ---------------------------------------------------------------------- status rows


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


class FleetStatus(BaseModel):
    """A fleet's members, each with its readiness; ``ready`` when every enabled member is ready."""

    model_config = ConfigDict(frozen=True)

    fleet: str
    namespace: str
    ready: bool
    services: list[ServiceSummary]
    workflow: WorkflowStatus | None = None  # the run ``up(workflow=True)`` started


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
        ready=report.status in ("running", "idle"),
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


# ---------------------------------------------------------------------- the fleet


@dataclass(frozen=True)
class Member:
    """A service of the fleet, resolved: its name, its spec and its app's Env in the fleet's namespace."""

    name: str
    spec: ServiceSpec
    env: Env

    @property
    def service(self) -> Service:
        return Service(self.env)


class Fleet:
    """Services started and stopped as a group, from a ``fleet.toml``."""

    def __init__(
        self, path: str | os.PathLike[str], *, share_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path).expanduser().absolute()
        self.share_dir = share_dir
        self.config = load_fleet_file(self.path)
        self.namespace = self.config.fleet.namespace

    @classmethod
    def find(cls, fleet: str | os.PathLike[str] | None = None) -> Fleet:
        """The fleet named on the command line: a path, a name (``NAME.toml``), or ``./fleet.toml``."""
        return cls(resolve_fleet_path(fleet))

    def __repr__(self) -> str:
        return f"Fleet({str(self.path)!r}, namespace={self.namespace!r})"

    @cached_property
    def members(self) -> list[Member]:
        """Every service of the file, enabled or not, in the file's order; each app is checked."""
        members = []
        seen: dict[str, str] = {}
        for name, spec in self.config.services.items():
            try:
                env = Env(
                    spec.app or name,
                    self._apps_path(spec),
                    share_dir=self.share_dir,
                    namespace=self.namespace,
                )
            except KeepwarmError as exc:
                raise SettingsError(f"{self.path}: [services.{name}]: {exc}") from None
            if env.app_target in seen:
                raise SettingsError(
                    f"{self.path}: [services.{name}] and [services.{seen[env.app_target]}] both run app "
                    f"{env.app_target!r}; one namespace holds one service per app"
                )
            seen[env.app_target] = name
            members.append(Member(name, spec, env))
        return members

    @property
    def enabled(self) -> list[Member]:
        return [m for m in self.members if m.spec.enabled]

    def member(self, name: str) -> Member:
        """The member called ``name`` (or running the app ``name``); SettingsError listing them otherwise."""
        for member in self.members:
            if name in (member.name, member.env.app_target):
                return member
        names = ", ".join(m.name for m in self.members)
        raise SettingsError(f"{self.path}: no service {name!r} in this fleet; its services: {names}")

    def workflow_member(self, name: str | None = None) -> Member:
        """The member a workflow runs on: ``name``, else ``[workflow] service``, else the only enabled one."""
        chosen = name or self.config.workflow.service
        if chosen is not None:
            return self.member(chosen)
        if len(self.enabled) == 1:
            return self.enabled[0]
        raise SettingsError(
            f"{self.path}: name the service that runs the workflow ([workflow] service, or the APP "
            f"argument); enabled services: {', '.join(m.name for m in self.enabled) or 'none'}"
        )

    def _apps_path(self, spec: ServiceSpec) -> Path:
        chosen = spec.apps_path or self.config.fleet.apps_path
        if chosen is None:
            return self.path.parent
        path = Path(chosen).expanduser()
        return path if path.is_absolute() else self.path.parent / path

    # ------------------------------------------------------------------ up, down, status

    def up(self, *, timeout: float | None = None, workflow: bool = False) -> FleetStatus:
        """Start every enabled member at once; return when all are ready.

        Refuses (FleetAlreadyRunning) when a member already runs. If a member fails to start, the
        members this call started are stopped again and FleetStartError names the one that failed.
        With ``workflow``, a run of the file's ``[workflow]`` starts once all are ready (its service
        and args are checked before anything starts); the status carries it.
        """
        from keepwarm.service.lifecycle import ServiceAlreadyRunning

        members = self.enabled
        if not members:
            raise FleetError(f"{self.path}: no enabled service to start")
        if workflow:
            self._check_workflow()
        running = [m for m in self.members if m.service.status().supervisor.alive]
        if running:
            raise self._already_running(running)
        outcomes = _in_threads(_catching(lambda m: start_member(m, timeout=timeout)), members)
        failed = [(m, o) for m, o in zip(members, outcomes, strict=True) if isinstance(o, KeepwarmError)]
        if failed:
            started = [m for m, o in zip(members, outcomes, strict=True) if not isinstance(o, KeepwarmError)]
            _in_threads(lambda m: m.service.stop(), started)
            if all(isinstance(error, ServiceAlreadyRunning) for _, error in failed):
                raise self._already_running([m for m, _ in failed])
            problems = "\n".join(f"service {m.name!r} (app {m.env.app_target}): {e}" for m, e in failed)
            undone = f"; stopped again: {', '.join(m.name for m in started)}" if started else ""
            raise FleetStartError(
                f"fleet {self.path.name} (namespace {self.namespace}) did not start{undone}\n{problems}"
            )
        run = self.start_workflow() if workflow else None
        return self.status().model_copy(update={"workflow": run})

    def start_workflow(
        self,
        service: str | None = None,
        *,
        count: int | None = None,
        args: dict[str, Any] | None = None,
        tasks: list[dict[str, Any]] | None = None,
        name: str | None = None,
        queue_only: bool = False,
    ) -> WorkflowStatus:
        """Start a workflow run on a member, ``[workflow]`` filling what is not given: the service,
        the name, and (without ``tasks``) the count and args. ``queue_only`` as for start_workflow."""
        defaults = self.config.workflow
        member = self.workflow_member(service)
        name = name or defaults.name
        if tasks is not None:
            return start_workflow(member.service, tasks=tasks, name=name, queue_only=queue_only)
        chosen = defaults.args if args is None else args
        return start_workflow(
            member.service, count or defaults.count, chosen, name=name, queue_only=queue_only
        )

    def _check_workflow(self) -> None:
        """Refuse ``up --workflow`` before anything starts when the run could not start after it."""
        if "workflow" not in self.config.model_fields_set:
            raise SettingsError(
                f"{self.path}: no [workflow] table to start; add one (service, name, count, args), "
                "see docs/fleets.md"
            )
        member = self.workflow_member()
        if not member.spec.enabled:
            raise SettingsError(
                f"{self.path}: [workflow] service {member.name!r} is not enabled: up leaves it stopped"
            )
        try:
            member.service.check_args(self.config.workflow.args)
        except ValueError as exc:
            raise SettingsError(f"{self.path}: [workflow] args: {exc}") from None

    def _already_running(self, running: list[Member]) -> FleetAlreadyRunning:
        names = ", ".join(f"{m.name} (app {m.env.app_target})" for m in running)
        return FleetAlreadyRunning(
            f"fleet {self.path.name} (namespace {self.namespace}): already running: {names}",
            remedy=Remedy(
                "stop it first", f"keepwarm down {self.shown_path}", "fleet_down", {"fleet": str(self.path)}
            ),
        )

    @property
    def shown_path(self) -> str:
        """The fleet file's path as a user would type it: relative to the current folder when inside it."""
        try:
            return str(self.path.relative_to(Path.cwd()))
        except ValueError:
            return str(self.path)

    def down(self, *, timeout: float | None = None) -> list[dict[str, str]]:
        """Stop every member (enabled or not) that runs; one ``{service, app, message}`` per member."""

        def stop(member: Member) -> dict[str, str]:
            outcome = member.service.stop(timeout=timeout)
            return {"service": member.name, "app": member.env.app_target, "message": outcome["message"]}

        results = _in_threads(_catching(stop), self.members)
        errors = [
            f"service {m.name!r}: {r}"
            for m, r in zip(self.members, results, strict=True)
            if isinstance(r, KeepwarmError)
        ]
        if errors:
            raise FleetError(f"fleet {self.path.name}: not every service stopped:\n" + "\n".join(errors))
        return [r for r in results if not isinstance(r, KeepwarmError)]

    def status(self) -> FleetStatus:
        """Every member's status and readiness (read-only, from the files)."""
        rows = [summarize(m.service, m.name, enabled=m.spec.enabled) for m in self.members]
        enabled = [row for row in rows if row.enabled]
        return FleetStatus(
            fleet=str(self.path),
            namespace=self.namespace,
            ready=bool(enabled) and all(row.ready for row in enabled),
            services=rows,
        )

    async def aup(self, *, timeout: float | None = None) -> FleetStatus:
        return await _in_thread(lambda: self.up(timeout=timeout))

    async def adown(self, *, timeout: float | None = None) -> list[dict[str, str]]:
        return await _in_thread(lambda: self.down(timeout=timeout))

    async def astatus(self) -> FleetStatus:
        return await _in_thread(self.status)


def resolve_fleet_path(fleet: str | os.PathLike[str] | None) -> Path:
    """The fleet file: a path, a name (``NAME.toml`` here), else ``$KEEPWARM_FLEET``, else fleet.toml."""
    chosen = fleet if fleet is not None else os.environ.get("KEEPWARM_FLEET") or FLEET_FILE
    path = Path(chosen).expanduser()
    if not path.is_file() and path.suffix != ".toml" and path.with_name(path.name + ".toml").is_file():
        path = path.with_name(path.name + ".toml")
    if path.is_dir():
        inside = path / FLEET_FILE
        hint = (
            f"pass the file: {inside}" if inside.is_file() else f"pass a fleet file (no {FLEET_FILE} in it)"
        )
        raise SettingsError(f"fleet file {str(path)!r} is a folder; {hint}")
    if not path.is_file():
        remedy = (
            None
            if fleet is not None
            else Remedy(
                "pass one", "keepwarm up path/to/fleet.toml", arguments={"fleet": "path/to/fleet.toml"}
            )
        )
        raise SettingsError(f"fleet file {str(path)!r} not found (see docs/fleets.md)", remedy=remedy)
    return path


def load_fleet_file(path: Path) -> FleetFile:
    """Read and validate a ``fleet.toml``; errors name the file and the key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"fleet file {str(path)!r} not found (see docs/fleets.md)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = FleetFile.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise SettingsError(f"{path}: " + "; ".join(problems)) from None
    for name in config.services:
        if not _NAME.fullmatch(name):
            raise SettingsError(
                f"{path}: [services.{name}]: a service name is letters, digits, '_', '-', '.'"
            )
    if config.workflow.service is not None and config.workflow.service not in config.services:
        raise SettingsError(
            f"{path}: [workflow] service: no [services.{config.workflow.service}] in this file; "
            f"its services: {', '.join(config.services)}"
        )
    return config


def _describe(error: Any) -> str:
    loc = tuple(error["loc"])
    where = f"[{'.'.join(str(p) for p in loc[:-1])}] {loc[-1]}" if len(loc) > 1 else str(loc[0])
    # A model validator's message (env keys) is clearer without pydantic's "Value error, " prefix.
    if error["type"] == "value_error":
        return f"{where}: {error['ctx']['error']!s}"
    if error["type"] == "string_pattern_mismatch":  # pydantic's message would show the regex, lower-cased
        return f"{where}: {error['input']!r} is not a safe name: use letters, digits, '_', '-', '.'"
    if error["type"] == "extra_forbidden" and len(loc) == 3 and loc[0] == "services":
        known = sorted(ServiceSpec.model_fields)
        close = difflib.get_close_matches(str(loc[2]), known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
        return f"[services.{loc[1]}] {loc[2]}: unknown key; {hint}"
    return describe_error(error, FleetFile)


# ---------------------------------------------------------------------- starting one member


def start_member(
    member: Member, *, workers: int | None = None, timeout: float | None = None
) -> ServiceSummary:
    """Start one member of a fleet as ``up`` does, and return its row once every loop is ready.

    The member's ``workers``, ``backend``, ``timeout`` and ``env`` apply; ``workers`` and
    ``timeout`` given here override the file's. The service starts from a starter process whose
    environment carries the member's ``env``: the supervisor and its loops inherit the environment
    of the process that starts them, and the variables must not be set in this process, where other
    threads may be starting other members. Raises ServiceAlreadyRunning, or ServiceStartError with
    the loops' own errors.
    """
    from keepwarm.service.lifecycle import ServiceAlreadyRunning, ServiceStartError

    env = member.env
    wait = timeout if timeout is not None else member.spec.timeout
    slots = workers if workers is not None else member.spec.workers
    command = [sys.executable, "-m", "keepwarm.groups.fleet", *env.child_args()]
    if slots is not None:
        command += ["--slots", str(slots)]
    if member.spec.backend is not None:
        command += ["--backend", member.spec.backend]
    if wait is not None:
        command += ["--timeout", str(wait)]
    deadline = (wait if wait is not None else env.settings.cluster.start_timeout_sec) + _STARTER_MARGIN_SEC
    starter = subprocess.Popen(
        command,
        env={**os.environ, **member.spec.env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = starter.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        starter.kill()
        starter.communicate()
        raise ServiceStartError(
            f"no answer from the starter of service {env.app_target!r} within {deadline:.0f}s"
        ) from None
    for line in reversed(out.splitlines()):
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and answer.get("ok") is True:
            return summarize(member.service, member.name, enabled=member.spec.enabled)
        if isinstance(answer, dict) and "error" in answer:
            remedy = Remedy(**answer["remedy"]) if answer.get("remedy") else None
            kind = (
                ServiceAlreadyRunning if answer.get("kind") == "ServiceAlreadyRunning" else ServiceStartError
            )
            raise kind(str(answer["error"]), remedy=remedy)
    raise ServiceStartError(
        f"the starter of service {env.app_target!r} exited {starter.returncode}: {err.strip()[-2000:]}"
    )


def _starter_main(argv: list[str] | None = None) -> int:
    """``python -m keepwarm.groups.fleet``: start one service and print one JSON line saying how it went."""
    import argparse

    from keepwarm.service import lifecycle

    parser = argparse.ArgumentParser(
        prog="python -m keepwarm.groups.fleet", description=_starter_main.__doc__
    )
    parser.add_argument("--app", required=True)
    parser.add_argument("--share-dir", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--slots", type=int)
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--backend", choices=("local", "dask"))
    options = parser.parse_args(argv)
    try:
        env = Env(options.app, share_dir=options.share_dir, namespace=options.namespace)
        # ``backend`` is passed only when the fleet names one: the keyword comes with the Dask backend.
        start: Callable[..., str] = lifecycle.start_service
        chosen = {"backend": options.backend} if options.backend else {}
        start(env, slots=options.slots, timeout=options.timeout, **chosen)
    except KeepwarmError as exc:
        remedy = asdict(exc.remedy) if exc.remedy else None
        print(json.dumps({"ok": False, "kind": type(exc).__name__, "error": exc.problem, "remedy": remedy}))
        return 1
    except Exception as exc:  # reported to the fleet as this member's error, not lost in a traceback
        print(json.dumps({"ok": False, "kind": type(exc).__name__, "error": repr(exc)}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


# ---------------------------------------------------------------------- the namespace's services


class _RecordedEnv(Env):
    """An Env rebuilt from a service's own ``service.json``, for services whose app folder is not at hand.

    ``ps`` lists every service of a namespace, whoever started it and from wherever: the service
    folder records the settings the service runs with, which is all its health needs.
    """

    def __init__(self, service_dir: Path, share_root: Path, namespace: str) -> None:
        saved = saved_settings(read_service_record(service_dir / "service.json"))
        self.verbose = 0
        self.settings_error = None
        self.apps_path = service_dir.parent
        self.app_dir = service_dir
        self.app_target = self.app = service_dir.name
        self.settings_path = service_dir / "service.json"
        self.settings = saved or AppSettings.model_construct(
            app=AppSection.model_construct(worker="unknown:Worker"), args={}, cluster=ClusterSettings()
        )
        self.share_root = share_root
        self.namespace = namespace


def namespace_root(
    namespace: str | None = None, share_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, str]:
    """The share and namespace of the verbs that take no app: explicit, else the environment, else defaults.

    The share is ``share_dir``, else ``$KEEPWARM_SHARE``, else ``$XDG_DATA_HOME/keepwarm``; the
    namespace is ``namespace``, else ``$KEEPWARM_NAMESPACE``, else the login name.
    """
    chosen = share_dir or os.environ.get("KEEPWARM_SHARE")
    if chosen:
        share = Path(chosen).expanduser().absolute()
    else:
        share = Path(os.environ.get("XDG_DATA_HOME") or "~/.local/share").expanduser().absolute() / "keepwarm"
    name = namespace or os.environ.get("KEEPWARM_NAMESPACE") or login_name()
    if not _NAME.fullmatch(name):
        raise SettingsError(f"namespace {name!r} is not a safe name: use letters, digits, '_', '-', '.'")
    return share, name


def list_services(
    namespace: str | None = None, share_dir: str | os.PathLike[str] | None = None
) -> list[ServiceSummary]:
    """Every service of a namespace (every folder under ``<share>/<namespace>/service/``), by name."""
    return [summarize(service) for service in _namespace_services(namespace, share_dir)]


def stop_all(
    namespace: str | None = None,
    share_dir: str | os.PathLike[str] | None = None,
    *,
    timeout: float | None = None,
) -> list[dict[str, str]]:
    """Stop every service of a namespace that is not stopped (``keepwarm down --all``), all at once,
    each as ``stop`` does; one ``{service, app, message}`` per service stopped."""
    services = [s for s in _namespace_services(namespace, share_dir) if s.status().status != "stopped"]

    def stop(service: Service) -> dict[str, str]:
        outcome = service.stop(timeout=timeout)
        return {
            "service": service.env.app_target,
            "app": service.env.app_target,
            "message": outcome["message"],
        }

    results = _in_threads(_catching(stop), services)
    errors = [
        f"service {s.env.app_target!r}: {r}"
        for s, r in zip(services, results, strict=True)
        if isinstance(r, KeepwarmError)
    ]
    if errors:
        raise FleetError(
            f"namespace {namespace_root(namespace, share_dir)[1]}: not every service stopped:\n"
            + "\n".join(errors)
        )
    return [r for r in results if not isinstance(r, KeepwarmError)]


def _namespace_services(namespace: str | None, share_dir: str | os.PathLike[str] | None) -> list[Service]:
    share, name = namespace_root(namespace, share_dir)
    folder = share / name / "service"
    try:
        dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except FileNotFoundError:
        return []
    return [Service(_RecordedEnv(d, share, name), check_args=False) for d in dirs]


# ---------------------------------------------------------------------- helpers


def _in_threads(function: Callable[[M], T], items: list[M]) -> list[T]:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(function, items))


def _catching(function: Callable[[M], T]) -> Callable[[M], T | KeepwarmError]:
    def run(item: M) -> T | KeepwarmError:
        try:
            return function(item)
        except KeepwarmError as exc:
            return exc

    return run


async def _in_thread(function: Callable[[], T]) -> T:
    import asyncio

    return await asyncio.to_thread(function)


if __name__ == "__main__":
    sys.exit(_starter_main())
