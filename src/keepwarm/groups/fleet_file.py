"""``fleet.toml``: the fleet file's typed model, finding the file, and reading it with clear errors.

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
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keepwarm.errors import Remedy, SettingsError
from keepwarm.settings import SAFE_NAME_PATTERN, SAFE_NAME_RULE, describe_error, is_safe_name

FLEET_FILE = "fleet.toml"
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FleetSection(_Table):
    """``[fleet]``: the namespace every member runs in."""

    namespace: str = Field(
        pattern=SAFE_NAME_PATTERN, description="the namespace the services run in (required)"
    )
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
        default=None, pattern=SAFE_NAME_PATTERN, description="execution ids start with it (default: the app)"
    )
    count: int = Field(default=1, ge=1, le=1_000_000, description="tasks per workflow run")
    args: dict[str, Any] = Field(default_factory=dict, description="each task's args")


class FleetFile(_Table):
    """The whole ``fleet.toml``."""

    fleet: FleetSection
    services: dict[str, ServiceSpec] = Field(min_length=1)
    workflow: WorkflowDefaults = Field(default_factory=WorkflowDefaults)


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
        if not is_safe_name(name):
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
        return f"{where}: {error['input']!r} is not a safe name: {SAFE_NAME_RULE}"
    if error["type"] == "extra_forbidden" and len(loc) == 3 and loc[0] == "services":
        known = sorted(ServiceSpec.model_fields)
        close = difflib.get_close_matches(str(loc[2]), known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
        return f"[services.{loc[1]}] {loc[2]}: unknown key; {hint}"
    return describe_error(error, FleetFile)
