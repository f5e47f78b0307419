"""Pipeline verbs: ``keepwarm pipeline run|show|add|remove APP``, over ``<app>/pipeline.toml``."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from keepwarm.cli.common import app_verb, emit_json, say, table

if TYPE_CHECKING:
    from keepwarm.env import Env
    from keepwarm.pipeline.steps import Pipeline

STATUS_COLOURS = {"ok": "green", "failed": "red", "timed out": "red", "not run": "yellow"}


class _InOrder(click.Group):
    """Subcommands listed in the order they are declared (run, show, add, remove), not sorted."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def _env(app: str, apps_path: Path | None) -> Env:
    from keepwarm.env import Env

    return Env(app, apps_path)


@click.group(cls=_InOrder)
def pipeline() -> None:
    """An app's pipeline: its saved snippets run as steps, in order (<app>/pipeline.toml)."""


@pipeline.command("run")
@app_verb
@click.option("--step", "number", type=click.IntRange(min=1), help="Run only step N (1 is the first).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SEC",
    help="Kill any step still running after SEC seconds (a step's own timeout_sec may be tighter). "
    "Default: no limit.",
)
def pipeline_run(
    app: str, apps_path: Path | None, as_json: bool, number: int | None, timeout: float | None
) -> None:
    """Run the steps in order, each `python <file>` in the app folder; exit 1 at the first that fails."""
    from keepwarm.pipeline.runner import run_pipeline

    env = _env(app, apps_path)
    # SIGTERM as an exception: the running step's process group is killed on the way out
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ran = run_pipeline(
        env, number, on_output=None if as_json else lambda line: say(line, dim=True), timeout=timeout
    )
    document = ran.model_dump(mode="json")
    if as_json:
        emit_json(document if ran.ok else document | {"error": ran.message})
    else:
        rows = [(o.number, o.file, o.status, o.exit_code, o.seconds, o.stale) for o in ran.steps]
        colours = [STATUS_COLOURS[o.status] for o in ran.steps]
        table(("step", "file", "status", "exit", "seconds", "stale args"), rows, colours=colours)
        say(ran.message, fg="green" if ran.ok else "red")
    if not ran.ok:
        sys.exit(1)


@pipeline.command("show")
@app_verb
def pipeline_show(app: str, apps_path: Path | None, as_json: bool) -> None:
    """The steps, each with its source, whether it is stale, and how it went the last time it ran."""
    from keepwarm.pipeline.runner import last_outcome
    from keepwarm.pipeline.steps import current_args, load_pipeline, pipeline_path, stale

    env = _env(app, apps_path)
    steps = load_pipeline(env).steps
    args = current_args(env)
    shown = [
        (number, step, last_outcome(env, step), stale(env, step, args).describe())
        for number, step in enumerate(steps, 1)
    ]
    if as_json:
        rows = [
            {
                "number": number,
                "file": step.file,
                "source": step.source,
                "timeout_sec": step.timeout_sec,
                "stale": changed,
                "last_run": None if outcome is None else outcome.model_dump(mode="json"),
            }
            for number, step, outcome, changed in shown
        ]
        emit_json({"app": env.app_target, "pipeline": str(pipeline_path(env)), "steps": rows})
        return
    if not shown:
        say(f"{env.app_target}'s pipeline has no steps ({pipeline_path(env)})")
        return
    table(
        ("step", "file", "source", "timeout", "last run", "stale args"),
        [
            (
                number,
                step.file,
                step.source,
                "none" if step.timeout_sec is None else f"{step.timeout_sec:g} s",
                "not run" if outcome is None else outcome.status,
                changed,
            )
            for number, step, outcome, changed in shown
        ],
        title=f"pipeline of {env.app_target} ({pipeline_path(env)})",
    )


def _steps_said(env: Env, changed: Pipeline, as_json: bool, message: str) -> None:
    if as_json:
        emit_json({"app": env.app_target, "steps": [step.model_dump(mode="json") for step in changed.steps]})
    else:
        say(message)


@pipeline.command("add")
@app_verb
@click.argument(
    "file", metavar="FILE", help="A snippet file in the app folder (relative to it, or absolute)."
)
def pipeline_add(app: str, apps_path: Path | None, as_json: bool, file: str) -> None:
    """Append a snippet file of the app folder as the last step."""
    from keepwarm.pipeline.steps import add_step

    env = _env(app, apps_path)
    changed = add_step(env, file)
    _steps_said(env, changed, as_json, f"{changed.steps[-1].file} is step {len(changed.steps)}")


@pipeline.command("remove")
@app_verb
@click.argument("number", metavar="N", type=click.IntRange(min=1))
def pipeline_remove(app: str, apps_path: Path | None, as_json: bool, number: int) -> None:
    """Remove step N (its file stays in the app folder)."""
    from keepwarm.pipeline.steps import remove_step

    env = _env(app, apps_path)
    changed = remove_step(env, number)
    _steps_said(env, changed, as_json, f"removed step {number}; {len(changed.steps)} left")
