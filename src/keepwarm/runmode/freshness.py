"""Whether a result computed earlier from ``[args]`` (a work plan, a benchmark's timings) still holds.

A plan and each timing record when they were computed and the ``[args]`` they were computed from
(through the app's args model: every field, defaults filled in). ``freshness`` compares those with the
settings file's ``[args]`` as they are now, read the same way, and says in words when the result was
computed and, when the args differ, that it is out of date and by which keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from keepwarm.env import Env
from keepwarm.errors import KeepwarmError


def file_args(env: Env) -> dict[str, Any]:
    """The file's ``[args]`` as a plan records them: validated by the app's args model, its defaults
    filled in, as JSON; as written when the app has no model, or when the model refuses them."""
    from keepwarm.app import load_args_model
    from keepwarm.runmode.appcode import borrowed_imports

    current = env.settings.args
    try:
        with borrowed_imports(env.app_dir):
            model = load_args_model(env)
            value = model.model_validate(current).model_dump(mode="json", by_alias=True) if model else current
    except (KeepwarmError, ValidationError):
        value = current
    return _as_json(value)


def changed_keys(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys whose value differs between two args documents (present in one only included)."""
    return sorted(key for key in recorded.keys() | current.keys() if recorded.get(key) != current.get(key))


@dataclass(frozen=True)
class Freshness:
    """When a result was computed, from which args, and which keys of ``[args]`` changed since."""

    computed_at: str | None
    args: dict[str, Any] | None
    changed: list[str]

    @property
    def stale(self) -> bool:
        """The file's ``[args]`` are not the ones the result was computed from."""
        return bool(self.changed)

    def computed(self, now: datetime | None = None) -> str:
        """``computed 2026-12-03 01:25:09 UTC (4 min ago) with args {...}``."""
        when = "at an unknown time"
        if self.computed_at:
            moment = datetime.fromisoformat(self.computed_at.replace("Z", "+00:00"))
            when = f"{moment:%Y-%m-%d %H:%M:%S} UTC ({_ago(moment, now or datetime.now(UTC))})"
        made = "with unrecorded args"
        if self.args is not None:
            made = f"with args {json.dumps(self.args, sort_keys=True)}"
        return f"computed {when} {made}"

    def out_of_date(self) -> str | None:
        """``out of date: made with other [args] (keys items, seed)``; None while it holds."""
        if not self.changed:
            return None
        return f"out of date: made with other [args] (keys {', '.join(self.changed)})"


def freshness(env: Env, computed_at: str | None, args: dict[str, Any] | None) -> Freshness:
    """How a result computed at ``computed_at`` from ``args`` stands against the file's ``[args]`` now
    (a result without recorded args cannot be compared: it is not marked out of date)."""
    changed = [] if args is None else changed_keys(_as_json(args), file_args(env))
    return Freshness(computed_at, args, changed)


def _as_json(value: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(value, default=str))
    return document if isinstance(document, dict) else {}


def _ago(moment: datetime, now: datetime) -> str:
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"
