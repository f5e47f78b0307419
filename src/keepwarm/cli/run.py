"""Run-mode verbs: init, install, distribute, run (and --benchmark), data, export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keepwarm.cli.common import (
    UserError,
    app_verb,
    apps_path_option,
    emit_json,
    json_object,
    json_option,
    number_option,
    say,
    table,
)

if TYPE_CHECKING:
    from rich.progress import Progress

    from keepwarm.env import Env
    from keepwarm.runmode.benchmark import BenchmarkReport
    from keepwarm.runmode.plan import SavedPlan
    from keepwarm.runmode.runner import RunEvent, RunReport

MODE_HELP = (
    "python, pool, cython, dask, rapids, or a combination (pool+cython, dask+cython); also the "
    "reference's bits (1 pool, 2 cython, 4 dask, 8 rapids) [default: from [cluster]]."
)
EVENT_STYLES = {"warning": "yellow", "app": "dim", "info": None, "partition": None}


def _env(app: str, apps_path: Path | None) -> Env:
    from keepwarm.env import Env

    return Env(app, apps_path)


@contextmanager
def _progress(total: int | None, label: str) -> Iterator[tuple[Progress, Any]]:
    """A Rich progress display on stderr (a spinner without ``total``); lines print above it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield progress, progress.add_task(label, total=total)


def _print_above(progress: Progress, message: str, style: str | None = None) -> None:
    """A line above the progress display (Rich styles: colour on a terminal only)."""
    progress.console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- init


@click.command()
@click.argument("name", metavar="NAME", help="The new app's name: a lowercase Python identifier.")
@apps_path_option
@click.option(
    "--args-form",
    is_flag=True,
    help="Also write app_args_form.py: the app's own form for [args] on the page (keepwarm ui).",
)
@click.option(
    "--batching",
    is_flag=True,
    help="The worker also defines work_batch(items), so service mode serves tasks in batches "
    "([cluster] max_batch_size, batch_wait_ms); its test covers work_batch.",
)
@json_option
def init(name: str, apps_path: Path | None, args_form: bool, batching: bool, as_json: bool) -> None:
    """Create a new app: commented settings, worker, manager, args model, requirements.txt, a test."""
    from keepwarm.runmode.scaffold import init_app

    files = init_app(name, apps_path, args_form=args_form, batching=batching)
    folder = files[0].parent
    if as_json:
        emit_json({"app": name, "app_dir": str(folder), "files": [str(f) for f in files]})
        return
    say(f"created {folder}:")
    for file in files:
        click.echo(f"  {file.relative_to(folder)}")
    where = f" --apps-path {apps_path}" if apps_path else ""
    say(
        f"next: keepwarm install {name}{where} && keepwarm run {name}{where}"
        f"   (service mode: keepwarm start {name}{where})"
    )


# ---------------------------------------------------------------- install


@click.command()
@app_verb
@click.option(
    "--cython/--no-cython",
    default=None,
    help="Also compile the worker with Cython [default: [cluster] cython].",
)
@click.option(
    "--dask/--no-dask",
    default=None,
    help="Ship the code to the Dask cluster and check every worker imports it [default: when [cluster] "
    "names a scheduler, hosts or the dask backend].",
)
def install(app: str, apps_path: Path | None, as_json: bool, cython: bool | None, dask: bool | None) -> None:
    """Provision the app for run mode: its environment, dependencies, a check, Cython, Dask workers."""
    from keepwarm.runmode.installer import STEPS
    from keepwarm.runmode.installer import install as install_app

    env = _env(app, apps_path)
    marks = {"done": ("✓", "green"), "skipped": ("-", None), "failed": ("✗", "red")}
    with _progress(len(STEPS), f"install {env.app_target}") as (progress, job):

        def on_step(step: str, state: str, detail: str) -> None:
            if state == "start":
                progress.update(job, description=f"install {env.app_target}: {step}")
                return
            mark, colour = marks[state]
            _print_above(progress, f"{mark} {step}: {detail}", colour)
            progress.advance(job)

        report = install_app(
            env,
            cython=cython,
            dask=dask,
            on_step=on_step,
            on_output=lambda line: _print_above(progress, f"  {line}", "dim"),
        )
    if as_json:
        emit_json(report.model_dump(mode="json"))
        return
    say(f"installed {env.app_target} in {report.seconds:.2f}s for {report.python}; log: {report.log_path}")


# ---------------------------------------------------------------- distribute


@click.command()
@app_verb
@click.option("--workers", type=click.IntRange(1, 1024), help="Plan workers [default: [cluster] slots].")
@click.option("--tree", is_flag=True, help="Print the plan as a tree with weights.")
@click.option("--move", "partition", metavar="PARTITION", help="Reassign this partition (needs --to).")
@click.option("--to", "to_worker", metavar="WORKER", help="The worker --move gives the partition to.")
@click.option("--saved", is_flag=True, help="Show the saved plan instead of building a new one.")
def distribute(
    app: str,
    apps_path: Path | None,
    as_json: bool,
    workers: int | None,
    tree: bool,
    partition: str | None,
    to_worker: str | None,
    saved: bool,
) -> None:
    """Build the work plan with the app's manager and save it (run executes it); move partitions."""
    from keepwarm.runmode import plan as plans

    if (partition is None) != (to_worker is None):
        raise UserError("--move PARTITION and --to WORKER go together")
    if partition is not None and workers is not None:
        raise UserError("--move edits the saved plan; --workers builds a new one: use one or the other")
    env = _env(app, apps_path)
    if partition is not None and to_worker is not None:
        outcome = plans.move(env, partition, to_worker)
        plan = outcome.plan
        say(f"{outcome.message}; saved {plans.plan_path(env)}" if outcome.moved else outcome.message)
    elif saved:
        found = plans.load_plan(env)
        if found is None:
            raise UserError(f"no saved work plan for {env.app_target}: keepwarm distribute {env.app_target}")
        plan = found
    else:
        plan = plans.distribute(env, workers=workers)
        say(f"work plan saved: {plans.plan_path(env)}")
    if as_json:
        emit_json(plan.to_json_dict() | {"path": str(plans.plan_path(env))})
    elif tree:
        click.echo(plans.render_tree(plan))
    else:
        _print_plan(plan)
    if not plan.balanced:
        say(
            f"unbalanced: imbalance {plan.imbalance():.2f} (over {plans.IMBALANCE_LIMIT}); move partitions "
            f"with: keepwarm distribute {env.app_target} --move PARTITION --to WORKER",
            fg="yellow",
        )


def _print_plan(plan: SavedPlan) -> None:
    loads = plan.loads()
    total = sum(loads.values()) or 1.0
    rows = [
        (
            worker,
            len(parts),
            f"{loads[worker]:g}",
            f"{100 * loads[worker] / total:.1f}%",
            " ".join(p.name for p in parts),
        )
        for worker, parts in plan.workers.items()
    ]
    table(
        ("worker", "partitions", plan.weights_key, "share", "names"),
        rows,
        title=f"{plan.app}: {plan.partition_count} partitions, imbalance {plan.imbalance():.2f}",
    )


# ---------------------------------------------------------------- run


@click.command()
@app_verb
@click.option("--mode", help=MODE_HELP)
@click.option("--workers", type=click.IntRange(1, 1024), help="Plan workers [default: the saved plan's].")
@click.option("--args", "args_json", help="Values over [args] for this run, as a JSON object.")
@click.option(
    "--benchmark",
    is_flag=True,
    help="Run every available mode (or those --mode lists, comma-separated); write benchmark.json.",
)
def run(
    app: str,
    apps_path: Path | None,
    as_json: bool,
    mode: str | None,
    workers: int | None,
    args_json: str | None,
    benchmark: bool,
) -> None:
    """Run the saved work plan once in a mode; keep each partition's output, the timings and the log."""
    from keepwarm.runmode.modes import RunMode

    env = _env(app, apps_path)
    overrides = json_object(args_json, "--args") if args_json is not None else None
    if benchmark:
        modes = None if mode is None else [RunMode.parse(part) for part in mode.split(",")]
        report = _benchmark(env, modes, workers, overrides)
        if as_json:
            emit_json(report.model_dump(mode="json") | {"same_output": report.same_output})
        else:
            _print_benchmark(report)
        return
    from keepwarm.runmode.runner import run as run_app

    with _progress(None, f"run {env.app_target}") as (progress, job):
        result = run_app(
            env,
            RunMode.parse(mode) if mode is not None else None,
            workers=workers,
            args=overrides,
            on_event=lambda event: _show_event(progress, job, event),
            contained=True,
        )
    if as_json:
        emit_json(result.to_json_dict())
        return
    _print_run(result)


def _show_event(progress: Progress, job: Any, event: RunEvent) -> None:
    if event.total:
        progress.update(job, total=event.total, completed=event.done)
    _print_above(progress, event.message, EVENT_STYLES.get(event.kind))


def _print_run(report: RunReport) -> None:
    rows = [
        (o.name, o.worker, o.pid, o.rows if o.rows is not None else o.file, f"{o.seconds:.4f}")
        for o in report.partitions
    ]
    table(
        ("partition", "worker", "pid", "rows", "seconds"),
        rows,
        title=f"{report.app} run {report.run_id}: mode {report.mode}, {report.seconds:.3f}s, "
        f"{report.rows} rows",
    )
    say(f"output: {report.output_dir}\nlog: {report.log_path}")


def _benchmark(
    env: Env, modes: list[Any] | None, workers: int | None, overrides: dict[str, Any] | None
) -> BenchmarkReport:
    from keepwarm.runmode.benchmark import benchmark

    with _progress(None, f"benchmark {env.app_target}") as (progress, job):
        return benchmark(
            env,
            modes,
            workers=workers,
            args=overrides,
            on_event=lambda event: _show_event(progress, job, event),
        )


def _print_benchmark(report: BenchmarkReport) -> None:
    rows = [
        (e.order, e.mode, e.variant, f"{e.seconds:.3f}", f"+{e.delta:.3f}", e.nodes, e.rows, e.date, e.digest)
        for e in report.ranked
    ]
    table(
        ("order", "mode", "variant", "seconds", "delta", "nodes", "rows", "date", "output digest"),
        rows,
        title="benchmark, fastest first",
    )
    for name, reason in report.skipped.items():
        say(f"skipped {name}: {reason}", fg="yellow")
    if report.kept:
        say(f"kept from earlier runs of the same work plan: {', '.join(report.kept)} (see their dates)")
    for name, reason in report.dropped.items():
        say(f"dropped the earlier entry of {name}: {reason}", fg="yellow")
    verdict = "the same output in every mode" if report.same_output else "OUTPUTS DIFFER between modes"
    say(f"{verdict}; written: {report.path}", fg=None if report.same_output else "red")


# ---------------------------------------------------------------- data and export


@click.command()
@app_verb
@number_option("--head", "rows", type=click.IntRange(min=1), default=5, help="Rows to show.")
@click.option("--run", "run_id", help="This run's output [default: the latest successful run].")
def data(app: str, apps_path: Path | None, as_json: bool, rows: int, run_id: str | None) -> None:
    """Preview the output table of the latest run (or of --run RUN_ID)."""
    from keepwarm.runmode.data import head

    report, frame = head(_env(app, apps_path), rows, run_id)
    records = json.loads(frame.to_json(orient="records"))
    if as_json:
        emit_json(
            {"run_id": report.run_id, "mode": report.mode, "rows": report.rows, "columns": report.columns}
            | {"output_dir": report.output_dir, "head": records}
        )
        return
    say(f"run {report.run_id} (mode {report.mode}, {report.rows} rows): {report.output_dir}")
    columns = [str(c) for c in frame.columns]
    table(columns, [[record.get(c) for c in columns] for record in records])


@click.command()
@app_verb
@click.option("--columns", help="The columns to export, comma-separated (e.g. x,collatz_steps).")
@click.option("--all", "all_columns", is_flag=True, help="Export every column.")
@click.option("--run", "run_id", help="This run's output [default: the latest successful run].")
def export(
    app: str,
    apps_path: Path | None,
    as_json: bool,
    columns: str | None,
    all_columns: bool,
    run_id: str | None,
) -> None:
    """Write chosen columns of the latest output to export.csv in the app's export folder."""
    from keepwarm.runmode.data import export_columns, find_run

    env = _env(app, apps_path)
    if columns is not None and all_columns:
        raise UserError("give either --columns or --all, not both")
    if columns is None and not all_columns:
        available = ", ".join(find_run(env, run_id).columns)
        raise UserError(f"choose what to export: --columns a,b or --all; columns: {available}")
    chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns is not None else None
    report = export_columns(env, chosen, run_id)
    if as_json:
        emit_json(report.model_dump())
        return
    say(
        f"exported {report.rows} rows × {len(report.columns)} columns ({', '.join(report.columns)}) "
        f"of run {report.run_id}"
    )
    click.echo(report.path)
