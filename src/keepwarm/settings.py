"""``app_settings.toml``: typed models, reading with clear errors, writing with comments kept."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomlkit
import tomlkit.exceptions
import tomlkit.items
from pydantic import BaseModel, Field, ValidationError, field_validator

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.locks import locked_file
from keepwarm.errors import SettingsConflict, SettingsError
from keepwarm.settings_sections import AutoscaleSettings, Section, ServiceHealthSettings

SETTINGS_FILE = "app_settings.toml"
MiB = 1024 * 1024
_UNSET = object()  # settings_changes: a key one side does not have

# The one pattern of a safe name (namespaces, fleet services, workflow names): a folder name on
# every filesystem, never hidden, at most 64 characters.
SAFE_NAME_CHARACTERS = "A-Za-z0-9_.-"
SAFE_NAME_PATTERN = rf"^[A-Za-z0-9][{SAFE_NAME_CHARACTERS}]{{0,63}}$"
SAFE_NAME_RULE = "use letters, digits, '_', '-', '.'"
_SAFE_NAME = re.compile(SAFE_NAME_PATTERN)
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")  # [cluster.hosts]: an address or a DNS name


def is_safe_name(value: str, *, max_length: int = 64) -> bool:
    """Whether ``value`` matches SAFE_NAME_PATTERN and is at most ``max_length`` characters long."""
    # fullmatch: "$" alone would let one trailing newline through ("abc\n").
    return len(value) <= max_length and _SAFE_NAME.fullmatch(value) is not None


class AppSection(Section):
    """``[app]``: where the app's code lives, as ``module:attribute`` entry points."""

    worker: str = Field(
        pattern=r"^[\w.]+:[\w.]+$",
        description='the worker class, "module:Class" relative to the app folder (required)',
    )
    manager: str | None = Field(
        default=None,
        pattern=r"^[\w.]+:[\w.]+$",
        description="run mode: the manager class with build_distribution(workers)",
    )
    args_model: str | None = Field(
        default=None,
        pattern=r"^[\w.]+:[\w.]+$",
        description="a pydantic model validating [args] and each task's args",
    )
    description: str = Field(default="", description="one line about the app")


def _retention_ttl(hours: float, files: str) -> Any:
    """A retention field: ``files`` files older than ``hours`` are removed."""
    return Field(default=hours, gt=0, description=f"retention: remove {files} files older than this")


def _retention_count(count: int, files: str) -> Any:
    """A retention field: at most ``count`` of the ``files`` files are kept."""
    return Field(default=count, gt=0, description=f"retention: keep at most this many {files} files")


class ClusterSettings(Section):
    """``[cluster]``: backend, placement, queue limits, timings and retention."""

    backend: Literal["local", "dask"] = Field(
        default="local", description='where loops run: "local" (one OS process per loop) or "dask"'
    )
    slots: int = Field(default=2, ge=1, le=1024, description="how many loops a service starts")
    scheduler: str | None = Field(
        default=None, description="Dask scheduler address to join; none starts a local cluster"
    )
    hosts: dict[str, int] = Field(
        default_factory=dict,
        description="Dask over SSH: host = loops on it; the first also runs the scheduler",
    )
    ssh_config: str | None = Field(
        default=None, description="[cluster.hosts]: the OpenSSH client config (default ~/.ssh/config)"
    )
    remote_python: str | None = Field(
        default=None, pattern=r"^/", description="[cluster.hosts]: the Python with keepwarm on every host"
    )
    share_dir: str | None = Field(
        default=None,
        description="root of the service and data folders (relative to the app folder); $KEEPWARM_SHARE wins",
    )
    namespace: str | None = Field(
        default=None,
        pattern=SAFE_NAME_PATTERN,
        description="keeps users' and teams' services apart on one share (default: the login name)",
    )
    durable: bool = Field(
        default=False,
        description="fsync task and terminal files and their folders: the queue survives a machine crash",
    )
    concurrency: int = Field(
        default=1, ge=1, le=10_000, description="tasks one loop runs at once (async work() only)"
    )
    claim_batch: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="most tasks a loop claims in one go; never more than it starts at once (one for a "
        "work() loop, max_batch_size for work_batch(), its free concurrency for an async work())",
    )
    max_batch_size: int = Field(
        default=32, ge=1, le=4096, description="work_batch(): most tasks one call receives"
    )
    batch_wait_ms: float = Field(
        default=5.0,
        ge=0,
        le=60_000,
        description="work_batch(): how long a loop waits after a batch's first task for more to join it",
    )
    max_task_bytes: int = Field(default=16 * MiB, gt=0, description="a larger task file is rejected")
    max_result_bytes: int = Field(default=16 * MiB, gt=0, description="a larger result fails its task")
    max_pending: int | None = Field(
        default=None, gt=0, description="submit refuses when this many tasks are pending (default: unlimited)"
    )
    max_attempts: int = Field(
        default=3, ge=1, description="default attempts per task before it fails with max-attempts"
    )
    task_timeout_sec: float = Field(default=3600, gt=0, description="default timeout_sec of a task")
    heartbeat_interval_sec: float = Field(
        default=1.0, gt=0, description="how often a loop writes its heartbeat"
    )
    heartbeat_timeout_sec: float = Field(
        default=10.0, gt=0, description="a heartbeat older than this makes the loop stale"
    )
    start_timeout_sec: float = Field(
        default=60.0,
        gt=0,
        description="how long start waits for every loop to be ready; a new loop with no heartbeat "
        "after this long (or heartbeat_timeout_sec, if longer) is restarted as missing-heartbeat",
    )
    stop_timeout_sec: float = Field(
        default=30.0, gt=0, description="how long stop lets a loop finish its task before killing it"
    )
    idle_after_sec: float = Field(
        default=300.0, gt=0, description="no work for this long makes a service idle"
    )
    rescan_interval_sec: float = Field(
        default=5.0, gt=0, description="a loop relists pending/ at least this often (catches missed events)"
    )
    max_tasks_per_loop: int | None = Field(
        default=None, gt=0, description="recycle a loop after this many tasks (default: never)"
    )
    max_memory_mb: int | None = Field(
        default=None, gt=0, description="recycle a loop whose RSS passes this (default: never)"
    )
    restart_backoff_sec: float = Field(
        default=1.0, gt=0, description="first delay between restarts of a crash-looping slot"
    )
    restart_backoff_max_sec: float = Field(default=60.0, gt=0, description="the back-off doubles up to this")
    restart_reset_sec: float = Field(default=600.0, gt=0, description="healthy this long resets the back-off")
    restart_window_sec: float = Field(
        default=3600.0, gt=0, description="restarts within this window count towards restart_rate"
    )
    shutdown_on_stop: bool = Field(default=True, description="stop shuts down a cluster keepwarm started")
    done_ttl_hours: float = _retention_ttl(168, "done/")
    done_max_files: int = _retention_count(2000, "done/")
    failed_ttl_hours: float = _retention_ttl(336, "failed/")
    failed_max_files: int = _retention_count(2000, "failed/")
    heartbeat_ttl_hours: float = _retention_ttl(24, "heartbeat")
    heartbeat_max_files: int = _retention_count(1000, "heartbeat")
    retention_interval_sec: float = Field(
        default=30.0, gt=0, description="how often the supervisor enforces retention (in small batches)"
    )
    retention_min_age_sec: float = Field(
        default=600, ge=0, description="the file-count limits never remove a file younger than this"
    )
    isolated: bool = Field(
        default=False,
        description="keepwarm install makes the app a virtual environment of its own; run mode and "
        "the service's local loops run in it",
    )
    allow_shared_writers: bool = Field(
        default=False,
        description="let start accept a queue folder that other users can write (a team share whose "
        "members you trust: any of them can queue work that runs as you)",
    )
    preload: bool | None = Field(
        default=None, description="fork local loops from a template that ran preload() (default: if defined)"
    )
    pool: bool = Field(default=False, description="run mode: use a process pool")
    cython: bool = Field(default=False, description="run mode: compile the worker with Cython")
    rapids: bool = Field(default=False, description="run mode: use RAPIDS (needs a CUDA GPU and cuDF)")
    service_health: ServiceHealthSettings = Field(
        default_factory=ServiceHealthSettings, description="the SLA gate: see [cluster.service_health]"
    )
    autoscale: AutoscaleSettings = Field(
        default_factory=AutoscaleSettings, description="autoscaling: see [cluster.autoscale]"
    )

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: dict[str, int]) -> dict[str, int]:
        bad = [f'"{name}" = {n}' for name, n in hosts.items() if n < 1 or not _HOST_NAME.fullmatch(name)]
        if bad:
            raise ValueError(
                f"{', '.join(bad)}: name each host by its address or DNS name, with 1 loop or more"
            )
        return hosts


class AppSettings(Section):
    """The whole file. ``args`` stays a plain table here; the app's ``args_model`` validates it."""

    app: AppSection
    args: dict[str, Any] = Field(default_factory=dict)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)


def load_settings(path: Path) -> AppSettings:
    """Read and validate an ``app_settings.toml``; errors name the file, the key and what is expected."""
    return _validate(path, _parse(path).unwrap())


def settings_changes(before: AppSettings, after: AppSettings, limit: int = 5) -> list[str]:
    """What differs, one ``[section] key: old -> new`` per key (values as JSON), at most ``limit``."""
    old, new = _flat(before.model_dump(mode="json")), _flat(after.model_dump(mode="json"))
    keys = [key for key in sorted(old.keys() | new.keys()) if old.get(key, _UNSET) != new.get(key, _UNSET)]
    changes = [
        f"[{'.'.join(key[:-1])}] {key[-1]}: {_shown(old.get(key, _UNSET))} -> {_shown(new.get(key, _UNSET))}"
        for key in keys[:limit]
    ]
    return changes + ([f"{len(keys) - limit} more"] if len(keys) > limit else [])


def _flat(table: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat |= _flat(value, (*prefix, key))  # an empty table has no keys to compare
        else:
            flat[(*prefix, key)] = value
    return flat


def _shown(value: Any) -> str:
    return "unset" if value is _UNSET else json.dumps(value)


def update_settings(
    path: Path, section: str, values: dict[str, Any], *, expected: dict[str, Any] | None = None
) -> AppSettings:
    """Set ``values`` in ``[section]`` (dotted, e.g. ``cluster.service_health``), keeping comments.

    ``expected`` makes it a compare-and-set: each key's value in the file when the caller read it
    (``None``: not in the file). A key whose value in the file is now another one, and not the one
    being saved, refuses the whole update with :class:`SettingsConflict`. The result is validated
    before anything is written, so a bad value, or a conflict, leaves the file as it was.
    """
    return update_sections(path, [(section, values, expected or {})])


SectionUpdate = tuple[str, dict[str, Any], dict[str, Any]]  # (section, values, expected)


def update_sections(path: Path, updates: Sequence[SectionUpdate]) -> AppSettings:
    """:func:`update_settings` of several sections at once: all of them are written, or none.

    The file is locked while it is read, checked and replaced, so two writers using this function
    cannot interleave (a writer that does not lock, such as an editor, is caught by ``expected``).
    """
    with _locked(path):
        document = _parse(path)
        current = document.unwrap()
        conflicts = [
            (section, key, loaded, now, values[key])
            for section, values, expected in updates
            for key, loaded in expected.items()
            if key in values
            and (now := section_values(current, section).get(key)) != loaded
            and now != values[key]
        ]
        if conflicts:
            raise SettingsConflict(_conflict_message(path, conflicts), conflicts)
        for section, values, _ in updates:
            _set_values(document, section, values)
        settings = _validate(path, document.unwrap())
        write_atomic(path, tomlkit.dumps(document).encode())
    return settings


@dataclass(frozen=True)
class SettingsSnapshot:
    """The file as read once: its settings, its raw tables (no defaults), when it was last changed,
    and a digest of its text (a form compares it to notice a change made elsewhere)."""

    settings: AppSettings
    table: dict[str, Any]
    digest: str
    mtime: float


def read_snapshot(path: Path) -> SettingsSnapshot:
    """Read and validate ``path`` once, with its digest and mtime (errors as :func:`load_settings`)."""
    text = _read(path)
    table = _parse_text(path, text).unwrap()
    digest = hashlib.sha256(text.encode()).hexdigest()
    return SettingsSnapshot(_validate(path, table), table, digest, path.stat().st_mtime)


def section_values(table: dict[str, Any], section: str) -> dict[str, Any]:
    """The keys ``[section]`` (dotted) of a file's raw ``table`` sets, as written there."""
    found: Any = table
    for part in section.split("."):
        found = found.get(part) if isinstance(found, dict) else None
    return dict(found) if isinstance(found, dict) else {}


def _set_values(document: tomlkit.TOMLDocument, section: str, values: dict[str, Any]) -> None:
    table: Any = document
    for part in section.split("."):
        if part not in table:
            table[part] = tomlkit.table()
        table = table[part]
    for key, value in values.items():
        if value is None:
            table.pop(key, None)
        elif key in table:
            table[key] = value
        else:
            _add_after_last_value(table, key, value)


def _conflict_message(path: Path, conflicts: list[tuple[str, str, Any, Any, Any]]) -> str:
    keys = "; ".join(
        f"[{section}] {key} is {_shown_raw(now)} in the file (it was {_shown_raw(loaded)} when "
        f"loaded; this save sets {_shown_raw(saving)})"
        for section, key, loaded, now, saving in conflicts
    )
    return (
        f"{path.name} changed on disk since it was loaded: {keys}. Nothing was saved: reload to see "
        f"the file's values, then make the change again ({path})"
    )


def _shown_raw(value: Any) -> str:
    return "unset" if value is None else json.dumps(value, default=str)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on the file at ``path`` (``_sys.locks.locked_file``), a missing or
    unreadable file said as a :class:`SettingsError`."""
    entered = False
    try:
        with locked_file(path):
            entered = True
            yield
    except OSError:
        if not entered:
            _read(path)  # raises SettingsError, saying what is wrong
        raise


def _add_after_last_value(table: Any, key: str, value: Any) -> None:
    """Add a key after the table's last value, not after the comment that introduces a sub-table.

    tomlkit's public ``table[key] = value`` puts a new key after the comments that end the table's
    values, taking the comment that introduces the next sub-table from it; its container's
    ``_insert_at`` (in every tomlkit release since 0.5) puts it right after the last value.
    """
    container = getattr(table, "value", None)
    body = getattr(container, "body", None) or []
    after = [
        index
        for index, (name, item) in enumerate(body)
        if name is not None and not isinstance(item, (tomlkit.items.Table, tomlkit.items.AoT))
    ]
    insert_at = getattr(container, "_insert_at", None)
    if not after or after[-1] + 1 >= len(body) or insert_at is None:
        table[key] = value
    else:
        insert_at(after[-1] + 1, key, value)


def _parse(path: Path) -> tomlkit.TOMLDocument:
    return _parse_text(path, _read(path))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(
            f"{path}: not found; an app folder needs an {SETTINGS_FILE} with at least "
            '[app] worker = "module:Class" (see docs/apps.md)'
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot be read: {exc}") from None


def _parse_text(path: Path, text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as exc:  # a syntax error, or a key or table given twice
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None


def _validate(path: Path, data: dict[str, Any]) -> AppSettings:
    try:
        return AppSettings.model_validate(data)
    except ValidationError as exc:
        problems = [describe_error(error, AppSettings) for error in exc.errors()]
        raise SettingsError(f"{path}: " + "; ".join(problems)) from None


def describe_error(error: Any, root: type[BaseModel] | None = None) -> str:
    """One pydantic error as ``[section] key: problem`` with a hint for unknown keys."""
    # A key that is not printable (a line break in a quoted TOML key) is shown quoted, on one line.
    loc = [str(part) if str(part).isprintable() else repr(str(part)) for part in error["loc"]]
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
