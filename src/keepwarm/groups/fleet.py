"""Fleets: several services started and stopped as a group from one ``fleet.toml`` (see fleet_file).

``up`` starts every enabled service at once and returns when each one's loops are ready (by their
heartbeats, within each app's ``start_timeout_sec``); it refuses when a member already runs, and a
member that fails to start makes it stop the members it started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import (
    FleetAlreadyRunning,
    FleetError,
    FleetStartError,
    KeepwarmError,
    Remedy,
    ServiceAlreadyRunning,
    SettingsError,
)
from keepwarm.groups.fleet_file import (
    FLEET_FILE,
    FleetFile,
    FleetSection,
    ServiceSpec,
    WorkflowDefaults,
    load_fleet_file,
    resolve_fleet_path,
)
from keepwarm.groups.namespace import ServiceSummary, list_services, stop_all, summarize
from keepwarm.groups.parallel import StoppedService, catching, in_thread, in_threads, stop_services
from keepwarm.groups.starter import start_member
from keepwarm.groups.workflow import WorkflowStatus, start_workflow

__all__ = [
    "FLEET_FILE",
    "Fleet",
    "FleetAlreadyRunning",
    "FleetError",
    "FleetFile",
    "FleetSection",
    "FleetStartError",
    "FleetStatus",
    "Member",
    "ServiceSpec",
    "ServiceSummary",
    "StoppedService",
    "WorkflowDefaults",
    "list_services",
    "load_fleet_file",
    "resolve_fleet_path",
    "start_member",
    "stop_all",
    "summarize",
]


class FleetStatus(BaseModel):
    """A fleet's members, each with its readiness; ``ready`` when every enabled member is ready."""

    model_config = ConfigDict(frozen=True)

    fleet: str
    namespace: str
    ready: bool
    services: list[ServiceSummary]
    workflow: WorkflowStatus | None = None  # the run ``up(workflow=True)`` started


@dataclass(frozen=True)
class Member:
    """A service of the fleet, resolved: its name, its spec and its app's Env in the fleet's namespace."""

    name: str
    spec: ServiceSpec
    env: Env

    @property
    def service(self) -> Service:
        """The member's Service."""
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
        """The members ``up`` starts."""
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

    @property
    def shown_path(self) -> str:
        """The fleet file's path as a user would type it: relative to the current folder when inside it."""
        try:
            return str(self.path.relative_to(Path.cwd()))
        except ValueError:
            return str(self.path)

    # ------------------------------------------------------------------ up, down, status

    def up(self, *, timeout: float | None = None, workflow: bool = False) -> FleetStatus:
        """Start every enabled member at once; return when all are ready.

        Refuses (FleetAlreadyRunning) when a member already runs. If a member fails to start, the
        members this call started are stopped again and FleetStartError names the one that failed.
        With ``workflow``, a run of the file's ``[workflow]`` starts once all are ready (its service
        and args are checked before anything starts); the status carries it.
        """
        members = self.enabled
        if not members:
            raise FleetError(f"{self.path}: no enabled service to start")
        if workflow:
            self._check_workflow()
        running = [m for m in self.members if m.service.status().supervisor.alive]
        if running:
            raise self._already_running(running)
        outcomes = in_threads(catching(lambda m: start_member(m, timeout=timeout)), members)
        failed = [(m, o) for m, o in zip(members, outcomes, strict=True) if isinstance(o, KeepwarmError)]
        if failed:
            started = [m for m, o in zip(members, outcomes, strict=True) if not isinstance(o, KeepwarmError)]
            in_threads(lambda m: m.service.stop(), started)
            raise self._start_failed(failed, started)
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

    def down(self, *, timeout: float | None = None) -> list[StoppedService]:
        """Stop every member (enabled or not) that runs; one ``{service, app, message}`` per member."""
        services = {member.name: member.service for member in self.members}
        return stop_services(services, f"fleet {self.path.name}", timeout=timeout)

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
        """``up`` in a worker thread."""
        return await in_thread(lambda: self.up(timeout=timeout))

    async def adown(self, *, timeout: float | None = None) -> list[StoppedService]:
        """``down`` in a worker thread."""
        return await in_thread(lambda: self.down(timeout=timeout))

    async def astatus(self) -> FleetStatus:
        """``status`` in a worker thread."""
        return await in_thread(self.status)

    # ------------------------------------------------------------------ refusals

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

    def _start_failed(self, failed: list[tuple[Member, KeepwarmError]], started: list[Member]) -> FleetError:
        """The error of an ``up`` whose ``failed`` members did not start (``started`` were stopped again)."""
        if all(isinstance(error, ServiceAlreadyRunning) for _, error in failed):
            return self._already_running([m for m, _ in failed])
        problems = "\n".join(f"service {m.name!r} (app {m.env.app_target}): {e}" for m, e in failed)
        undone = f"; stopped again: {', '.join(m.name for m in started)}" if started else ""
        return FleetStartError(
            f"fleet {self.path.name} (namespace {self.namespace}) did not start{undone}\n{problems}"
        )
