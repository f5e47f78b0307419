"""Where a server (MCP, HTTP) works: the apps, the namespace, and optionally a fleet."""

from __future__ import annotations

import os
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
from keepwarm.settings import SETTINGS_FILE


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
    _services: dict[tuple[str, str | None], tuple[object, Service]] = field(
        default_factory=dict, init=False, repr=False
    )

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
        """The app's Service, kept while its settings file is unchanged (an Env takes milliseconds
        to resolve; a server asks for one per request)."""
        key = (app, namespace or self.namespace)
        kept = self._services.get(key)
        if kept is not None and _stamp(kept[1].env.settings_path) == kept[0]:
            return kept[1]
        service = Service(self.env(app, namespace))
        self._services[key] = (_stamp(service.env.settings_path), service)
        return service

    def app_names(self) -> list[str]:
        """The apps this scope can name: the app folders under its apps path and the fleet's members."""
        folder = Path(self.apps_path or os.environ.get("KEEPWARM_APPS_PATH") or ".").expanduser()
        names = {p.parent.name for p in folder.glob(f"*/{SETTINGS_FILE}")}
        if self.fleet is not None:
            names |= {member.name for member in self.fleet.members}
        return sorted(names)

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


def _stamp(path: Path) -> object:
    """What changes when a file is rewritten (keepwarm writes by rename: a new inode)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)
