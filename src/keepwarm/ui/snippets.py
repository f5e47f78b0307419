"""The Python and the shell command equivalent to each action of the page, ready to copy.

Each function returns a :class:`Snippet` for one action with the values the operator chose, so what
was clicked can be scripted. The Python calls the same core function the page called; the shell line
is the ``keepwarm`` verb that calls it too (or, for settings, which have no verb, the same Python
through ``python -c``). Pure text: nothing here runs anything or imports Streamlit.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keepwarm.env import Env


@dataclass(frozen=True)
class Snippet:
    """What one action did, as Python and as a shell command."""

    python: str
    shell: str


@dataclass(frozen=True)
class AppRef:
    """The app the snippets address, by absolute paths so they run from any folder."""

    app: str
    apps_path: str
    settings_path: str

    @classmethod
    def of(cls, env: Env) -> AppRef:
        return cls(env.app_target, str(env.app_dir.parent), str(env.settings_path))

    def env_preamble(self) -> str:
        arguments = f"{literal(self.app)}, apps_path={literal(self.apps_path)}"
        return f"import keepwarm\n\nenv = keepwarm.Env({arguments})\n"

    def service_preamble(self) -> str:
        return self.env_preamble() + "service = keepwarm.Service(env)\n"

    def verb(self, verb: str, *options: str) -> str:
        return shlex.join(["keepwarm", verb, self.app, "--apps-path", self.apps_path, *options])


def literal(value: Any) -> str:
    """A Python literal for JSON-like data, with double-quoted strings (as ruff format writes them)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, Path):
        return literal(str(value))
    return repr(value)


# ---------------------------------------------------------------------- settings


def save_settings(ref: AppRef, updates: Sequence[tuple[str, dict[str, Any]]]) -> Snippet:
    """``update_settings`` for each ``(section, values)``: comments kept; ``None`` removes a key."""
    calls = [
        f"update_settings(settings, {literal(section)}, {literal(values)})" for section, values in updates
    ]
    python = (
        "from pathlib import Path\n\n"
        "from keepwarm.settings import update_settings\n\n"
        f"settings = Path({literal(ref.settings_path)})\n" + "\n".join(calls) + "\n"
    )
    one_line = "; ".join(
        [
            "from pathlib import Path",
            "from keepwarm.settings import update_settings",
            f"settings = Path({literal(ref.settings_path)})",
            *calls,
        ]
    )
    return Snippet(python, shlex.join(["python", "-c", one_line]))


# ---------------------------------------------------------------------- service mode


def start(ref: AppRef, slots: int | None = None) -> Snippet:
    argument = f"slots={slots}" if slots is not None else ""
    python = (
        ref.service_preamble() + f"report = service.start({argument})  # returns once every loop is ready\n"
        "print(report.status, report.workers_healthy_count)\n"
    )
    options = ["--workers", str(slots)] if slots is not None else []
    return Snippet(python, ref.verb("start", *options))


def status(ref: AppRef) -> Snippet:
    python = (
        ref.service_preamble() + "report = service.status()\n"
        "print(report.status)\n"
        "for row in report.worker_health:\n"
        "    print(row.worker, row.healthy, row.reason, row.heartbeat_age_sec)\n"
    )
    return Snippet(python, ref.verb("status"))


def health_gate(ref: AppRef) -> Snippet:
    python = (
        ref.service_preamble() + "report, gate = service.health()  # thresholds: [cluster.service_health]\n"
        "print(gate.code, gate.passed, gate.reasons)\n"
    )
    return Snippet(python, ref.verb("health", "--gate"))


def snapshot(ref: AppRef) -> Snippet:
    python = ref.service_preamble() + "print(service.snapshot())  # service_operator_snapshot.json\n"
    return Snippet(python, ref.verb("snapshot"))


def stop(ref: AppRef, timeout: float | None = None) -> Snippet:
    argument = f"timeout={timeout:g}" if timeout is not None else ""
    python = ref.service_preamble() + f'print(service.stop({argument})["message"])\n'
    options = ["--timeout", f"{timeout:g}"] if timeout is not None else []
    return Snippet(python, ref.verb("stop", *options))


def submit(ref: AppRef, args: dict[str, Any], wait_timeout: float | None = None) -> Snippet:
    """Queue one task; with ``wait_timeout``, wait that long for its result."""
    python = ref.service_preamble() + f"handle = service.submit({literal(args)})\n"
    options = ["--args", json.dumps(args)]
    if wait_timeout is None:
        python += "print(handle.task_id)\n"
    else:
        python += f"print(handle.result(timeout={wait_timeout:g}))\n"
        options += ["--wait", "--timeout", f"{wait_timeout:g}"]
    return Snippet(python, ref.verb("submit", *options))
