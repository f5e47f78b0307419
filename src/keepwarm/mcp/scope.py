"""Where the MCP server works: the apps, the namespace, and optionally a fleet."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from keepwarm.api import Service
from keepwarm.env import Env, namespace_root
from keepwarm.errors import (
    KeepwarmError,
    SettingsError,
)
from keepwarm.groups.fleet import (
    Fleet,
    Member,
    ServiceSummary,
    resolve_fleet_path,
    start_member,
    summarize,
)


@dataclass
class Scope:
    """What the server works on: where apps are, the namespace, and optionally a fleet.

    With a fleet, the namespace is the fleet's and an app name may be a member's name. Every tool
    may name another namespace; an app is a fleet member only in the fleet's namespace.
    """

    apps_path: Path | None = None
    namespace: str | None = None
    share_dir: str | None = None
    fleet_path: str | None = None
    fleet: Fleet | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.fleet_path is not None:
            self.fleet = Fleet(resolve_fleet_path(self.fleet_path), share_dir=self.share_dir)
            self.namespace = self.fleet.namespace

    def member(self, app: str, namespace: str | None = None) -> Member | None:
        """The fleet's member called ``app``, when there is a fleet and ``namespace`` is its own."""
        if self.fleet is None or namespace not in (None, self.fleet.namespace):
            return None
        try:
            return self.fleet.member(app)
        except KeepwarmError:
            return None

    def env(self, app: str, namespace: str | None = None) -> Env:
        member = self.member(app, namespace)
        if member is not None:
            return member.env
        return Env(app, self.apps_path, share_dir=self.share_dir, namespace=namespace or self.namespace)

    def service(self, app: str, namespace: str | None = None) -> Service:
        return Service(self.env(app, namespace))

    def start(
        self, app: str, namespace: str | None, workers: int | None, timeout: float | None
    ) -> ServiceSummary:
        """Start a fleet member as ``keepwarm up`` does (its workers, env, backend), else the app."""
        member = self.member(app, namespace)
        if member is not None:
            return start_member(member, workers=workers, timeout=timeout)
        service = self.service(app, namespace)
        service.start(slots=workers, timeout=timeout)
        return summarize(service)

    def namespace_name(self, namespace: str | None = None) -> str:
        return namespace_root(namespace or self.namespace, self.share_dir)[1]

    def fleet_of(self, fleet: str | None, namespace: str | None = None) -> Fleet:
        chosen = (
            self.fleet
            if fleet is None and self.fleet is not None
            else Fleet(resolve_fleet_path(fleet), share_dir=self.share_dir)
        )
        if namespace is not None and namespace != chosen.namespace:
            raise SettingsError(
                f"fleet {chosen.path.name} runs in namespace {chosen.namespace!r} (its [fleet] namespace), "
                f"not {namespace!r}; leave namespace out"
            )
        return chosen
