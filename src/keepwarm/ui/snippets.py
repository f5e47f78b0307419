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

    def env_preamble(self, *imports: str) -> str:
        """``import keepwarm`` (and ``imports``) and the app's ``env``."""
        head = "\n".join(["import keepwarm", *imports])
        return f"{head}\n\nenv = keepwarm.Env({literal(self.app)}, apps_path={literal(self.apps_path)})\n"

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


# ---------------------------------------------------------------------- run mode


def install(ref: AppRef) -> Snippet:
    python = (
        ref.env_preamble()
        + "report = keepwarm.install(env, on_output=print)  # InstallError names the step that failed\n"
        "print([(step.name, step.status) for step in report.steps])\n"
    )
    return Snippet(python, ref.verb("install"))


def distribute(ref: AppRef, workers: int) -> Snippet:
    python = (
        ref.env_preamble("from keepwarm.runmode.plan import render_tree")
        + f"plan = keepwarm.distribute(env, workers={workers})  # saved; run executes it\n"
        "print(render_tree(plan))\n"
    )
    return Snippet(python, ref.verb("distribute", "--workers", str(workers), "--tree"))


def move_partition(ref: AppRef, partition: str, worker: str) -> Snippet:
    python = (
        ref.env_preamble("from keepwarm.runmode.plan import move_partition, render_tree")
        + f"plan = move_partition(env, {literal(partition)}, {literal(worker)})  # and saved\n"
        "print(render_tree(plan))\n"
    )
    return Snippet(python, ref.verb("distribute", "--move", partition, "--to", worker))


def run(ref: AppRef, mode: str) -> Snippet:
    python = (
        ref.env_preamble()
        + f"report = keepwarm.run(env, {literal(mode)}, on_event=lambda event: print(event.message))\n"
        "print(report.status, report.seconds, report.rows, report.output_dir)\n"
    )
    return Snippet(python, ref.verb("run", "--mode", mode))


def benchmark(ref: AppRef, modes: list[str] | None = None) -> Snippet:
    """Every available mode (``modes=None``), or these, timed and ranked into ``benchmark.json``."""
    chosen = "" if modes is None else f"{literal(modes)}, "
    python = (
        ref.env_preamble("from keepwarm.runmode.benchmark import benchmark")
        + f"report = benchmark(env, {chosen}on_event=lambda event: print(event.message))\n"
        "for entry in report.ranked:\n"
        "    print(entry.order, entry.mode, entry.timing)\n"
    )
    options = [] if modes is None else ["--mode", ",".join(modes)]
    return Snippet(python, ref.verb("run", "--benchmark", *options))


def load_data(ref: AppRef, rows: int) -> Snippet:
    python = (
        ref.env_preamble("from keepwarm.runmode.data import head")
        + f"run, table = head(env, rows={rows})  # the latest run's output\n"
        "print(run.run_id)\n"
        "print(table)\n"
    )
    return Snippet(python, ref.verb("data", "--head", str(rows)))


def export(ref: AppRef, columns: list[str] | None) -> Snippet:
    """Chosen columns of the latest output to ``export.csv`` (``None``: every column)."""
    python = (
        ref.env_preamble("from keepwarm.runmode.data import export_columns")
        + f"print(export_columns(env, {literal(columns) if columns is not None else 'None'}).path)\n"
    )
    options = ["--all"] if columns is None else ["--columns", ",".join(columns)]
    return Snippet(python, ref.verb("export", *options))
