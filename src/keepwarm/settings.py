"""``app_settings.toml``: typed models, reading with clear errors, writing with comments kept."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import tomlkit
import tomlkit.exceptions
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keepwarm.atomic import write_atomic
from keepwarm.errors import SettingsError

SETTINGS_FILE = "app_settings.toml"
MiB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class AppSection(_Section):
    """``[app]``: where the app's code lives, as ``module:attribute`` entry points."""

    worker: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    manager: str | None = Field(default=None, pattern=r"^[\w.]+:[\w.]+$")
    args_model: str | None = Field(default=None, pattern=r"^[\w.]+:[\w.]+$")
    description: str = ""


class ServiceHealthSettings(_Section):
    """``[cluster.service_health]``: the SLA gate's thresholds (the reference's defaults)."""

    allow_idle: bool = False
    max_unhealthy: int = Field(default=0, ge=0)
    max_restart_rate: float = Field(default=0.25, ge=0)
    max_pending_age_sec: float | None = Field(default=None, gt=0)


class ClusterSettings(_Section):
    """``[cluster]``: backend, placement, queue limits, timings and retention."""

    backend: Literal["local", "dask"] = "local"
    slots: int = Field(default=2, ge=1, le=1024)
    scheduler: str | None = None
    hosts: dict[str, int] = Field(default_factory=dict)
    share_dir: str | None = None
    namespace: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    durable: bool = False
    concurrency: int = Field(default=1, ge=1, le=10_000)
    max_task_bytes: int = Field(default=16 * MiB, gt=0)
    max_result_bytes: int = Field(default=16 * MiB, gt=0)
    max_pending: int | None = Field(default=None, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    task_timeout_sec: float = Field(default=3600, gt=0)
    heartbeat_interval_sec: float = Field(default=1.0, gt=0)
    heartbeat_timeout_sec: float = Field(default=10.0, gt=0)
    start_timeout_sec: float = Field(default=60.0, gt=0)
    stop_timeout_sec: float = Field(default=30.0, gt=0)
    idle_after_sec: float = Field(default=300.0, gt=0)
    rescan_interval_sec: float = Field(default=5.0, gt=0)
    max_tasks_per_loop: int | None = Field(default=None, gt=0)
    max_memory_mb: int | None = Field(default=None, gt=0)
    restart_backoff_sec: float = Field(default=1.0, gt=0)
    restart_backoff_max_sec: float = Field(default=60.0, gt=0)
    restart_reset_sec: float = Field(default=600.0, gt=0)
    restart_window_sec: float = Field(default=3600.0, gt=0)
    shutdown_on_stop: bool = True
    done_ttl_hours: float = Field(default=168, gt=0)
    done_max_files: int = Field(default=2000, gt=0)
    failed_ttl_hours: float = Field(default=336, gt=0)
    failed_max_files: int = Field(default=2000, gt=0)
    heartbeat_ttl_hours: float = Field(default=24, gt=0)
    heartbeat_max_files: int = Field(default=1000, gt=0)
    retention_min_age_sec: float = Field(default=600, ge=0)
    isolated: bool = False
    pool: bool = False
    cython: bool = False
    rapids: bool = False
    service_health: ServiceHealthSettings = Field(default_factory=ServiceHealthSettings)


class AppSettings(_Section):
    """The whole file. ``args`` stays a plain table here; the app's ``args_model`` validates it."""

    app: AppSection
    args: dict[str, Any] = Field(default_factory=dict)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)


def load_settings(path: Path) -> AppSettings:
    """Read and validate an ``app_settings.toml``; errors name the file, the key and what is expected."""
    return _validate(path, _parse(path).unwrap())


def update_settings(path: Path, section: str, values: dict[str, Any]) -> AppSettings:
    """Set ``values`` in ``[section]`` (dotted, e.g. ``cluster.service_health``), keeping comments.

    The result is validated before anything is written, so a bad value leaves the file as it was.
    """
    document = _parse(path)
    table: Any = document
    for part in section.split("."):
        if part not in table:
            table[part] = tomlkit.table()
        table = table[part]
    for key, value in values.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    settings = _validate(path, document.unwrap())
    write_atomic(path, tomlkit.dumps(document).encode())
    return settings


def _parse(path: Path) -> tomlkit.TOMLDocument:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(
            f"{path}: not found; an app folder needs an {SETTINGS_FILE} (create one with: keepwarm init NAME)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot be read: {exc}") from None
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None


def _validate(path: Path, data: dict[str, Any]) -> AppSettings:
    try:
        return AppSettings.model_validate(data)
    except ValidationError as exc:
        problems = [describe_error(error, AppSettings) for error in exc.errors()]
        raise SettingsError(f"{path}: " + "; ".join(problems)) from None


def describe_error(error: Any, root: type[BaseModel] | None = None) -> str:
    """One pydantic error as ``[section] key: problem`` with a hint for unknown keys."""
    loc = [str(part) for part in error["loc"]]
    key = loc[-1] if loc else "?"
    section = ".".join(loc[:-1])
    where = f"[{section}] {key}" if section else key
    if error["type"] == "extra_forbidden":
        known = _known_keys(root, loc[:-1]) if root else []
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        if known and not close:
            hint = f"; known keys: {', '.join(known)}"
        return f"{where}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{where}: required but missing"
    value = error.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a table"
    return f"{where}: {error['msg'].lower()} (got {shown})"


def _known_keys(root: type[BaseModel], path: list[str]) -> list[str]:
    model: type[BaseModel] | None = root
    for part in path:
        field = model.model_fields.get(part) if model else None
        annotation = field.annotation if field else None
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation if is_model else None  # type: ignore[assignment]
    return sorted(model.model_fields) if model else []
