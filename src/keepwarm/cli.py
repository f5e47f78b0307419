"""The ``keepwarm`` command line. Each verb calls one core function and renders its result.

Imports are lazy: ``keepwarm --help`` loads neither Dask nor Streamlit (nor pydantic models it does not need).
"""

from __future__ import annotations

import enum
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from keepwarm.errors import KeepwarmError

if TYPE_CHECKING:
    from keepwarm.api import Service
    from keepwarm.health import GateResult, HealthReport
    from keepwarm.task import TaskRecord

app = typer.Typer(
    name="keepwarm",
    help="Keep an application's workers warm: persistent loops fed through a file queue.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

AppArg = Annotated[
    str, typer.Argument(metavar="APP", help="The app: a folder under --apps-path, or a path to it.")
]
AppsPath = Annotated[
    Path | None,
    typer.Option(
        "--apps-path",
        envvar="KEEPWARM_APPS_PATH",
        help="Folder holding the apps [default: $KEEPWARM_APPS_PATH, else .].",
        show_default=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout, nothing else.")]
Timeout = Annotated[
    float | None, typer.Option("--timeout", min=0, help="Seconds to wait for results [default: forever].")
]


class TaskState(enum.StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class Backend(enum.StrEnum):
    local = "local"
    dask = "dask"


class OutputFormat(enum.StrEnum):
    json = "json"
    prometheus = "prometheus"


class UserError(Exception):
    """A bad argument found by a verb itself (not by the parser)."""


def _service(app_name: str, apps_path: Path | None) -> Service:
    from keepwarm.api import Service
    from keepwarm.env import Env

    return Service(Env(app_name, apps_path))


def _emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def _stdout() -> Any:
    """Rich output on stdout; not cut to 80 columns when it goes to a file or a pipe."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _record_json(record: TaskRecord) -> dict[str, Any]:
    return {
        "task_id": record.task_id,
        "status": record.status,
        "result": record.result,
        "error": record.error,
        "runtime_sec": record.runtime_sec,
    }


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print keepwarm's version and exit.")] = False,
) -> None:
    if version:
        from keepwarm import __version__

        typer.echo(f"keepwarm {__version__}")
        raise typer.Exit(0)


@app.command()
def submit(
    app: AppArg,
    args: Annotated[
        str | None, typer.Option("--args", help="The task's args as a JSON object, e.g. '{\"x\": 3}'.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="A JSONL file of partial tasks, one object per line ('-' for stdin)."),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="The task name.")] = "task",
    execution_id: Annotated[
        str | None, typer.Option("--execution-id", help="Group the tasks under this execution id.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the results and print them.")] = False,
    timeout: Timeout = None,
    apps_path: AppsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Queue tasks; print their ids (with --wait, their results)."""
    if args is not None and file is not None:
        raise UserError("give either --args or --file, not both")
    service = _service(app, apps_path)
    if file is not None:
        handles = service.submit_jsonl(_read_text(file), str(file), task_name=name, execution_id=execution_id)
    else:
        task_args = _json_object(args or "{}", "--args")
        handles = [service.submit(task_args, task_name=name, execution_id=execution_id)]
    ids = [h.task_id for h in handles]
    if not wait:
        if as_json:
            _emit_json({"task_ids": ids})
        else:
            typer.echo("\n".join(ids))
        return
    from keepwarm.results import wait_for_records

    records = wait_for_records(service.queue, ids, timeout)
    ordered = [records[task_id] for task_id in ids]
    if as_json:
        _emit_json({"results": [_record_json(r) for r in ordered]})
    else:
        for record in ordered:
            shown = (
                json.dumps(record.result) if record.status == "done" else f"{record.status}: {record.error}"
            )
            typer.echo(f"{record.task_id}\t{shown}")
    if any(r.status != "done" for r in ordered):
        raise typer.Exit(1)


@app.command()
def result(
    app: AppArg,
    task_id: Annotated[str, typer.Argument(help="The id printed by submit.")],
    timeout: Timeout = None,
    apps_path: AppsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Wait for a task and print its result (exit 1 with the remote error if it failed)."""
    from keepwarm.results import wait_for_records

    service = _service(app, apps_path)
    service.queue.locate(task_id)
    record = wait_for_records(service.queue, [task_id], timeout)[task_id]
    if as_json:
        _emit_json(_record_json(record) | {"traceback": record.traceback})
    elif record.status == "done":
        typer.echo(json.dumps(record.result, indent=2))
    if record.status != "done":
        if not as_json:
            console = _stderr()
            console.print(f"[red]task {task_id} {record.status}[/]: {record.error}", highlight=False)
            if record.traceback:
                console.print(
                    f"remote traceback:\n{record.traceback.rstrip()}", highlight=False, markup=False
                )
        raise typer.Exit(1)


@app.command()
def tasks(
    app: AppArg,
    state: Annotated[TaskState | None, typer.Option("--state", help="Only tasks in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many per state.")] = 100,
    apps_path: AppsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """List tasks per state (newest finished first), with the queue's counts."""
    service = _service(app, apps_path)
    rows = service.tasks(state.value if state else None, limit)
    counts = service.counts()
    if as_json:
        _emit_json({"counts": counts.__dict__, "tasks": rows})
        return
    from rich.table import Table

    table = Table(title=f"{service.env.app_target}: {_counts_line(counts.__dict__)}")
    for column in ("task_id", "state", "at", "runtime_sec", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in ("task_id", "state", "at", "runtime_sec", "error")))
    _stdout().print(table)


@app.command()
def cancel(
    app: AppArg,
    task_ids: Annotated[list[str] | None, typer.Argument(help="Ids of the tasks to cancel.")] = None,
    execution_id: Annotated[
        str | None, typer.Option("--execution-id", help="Cancel every task of this execution.")
    ] = None,
    apps_path: AppsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Cancel tasks by id or execution id (running ones too while the service runs)."""
    if not task_ids and execution_id is None:
        raise UserError("name the tasks to cancel: TASK_ID ... or --execution-id ID")
    service = _service(app, apps_path)
    cancelled = service.cancel(task_ids or (), execution_id)
    not_cancelled = {}
    for task_id in task_ids or ():
        if task_id not in cancelled:
            try:
                not_cancelled[task_id] = service.queue.locate(task_id).state
            except KeepwarmError:
                not_cancelled[task_id] = "not found"
    if as_json:
        _emit_json({"cancelled": cancelled, "not_cancelled": not_cancelled})
    else:
        for task_id in cancelled:
            typer.echo(f"cancelled {task_id}")
        for task_id, where in not_cancelled.items():
            typer.echo(f"not cancelled {task_id}: {where}", err=True)
        if not cancelled and execution_id is not None:
            typer.echo(f"no pending or running task of execution {execution_id}", err=True)
    if not cancelled:
        raise typer.Exit(1)


@app.command()
def start(
    app: AppArg,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, max=1024, help="Loops to run [default: [cluster] slots]."),
    ] = None,
    backend: Annotated[
        Backend | None, typer.Option("--backend", help="Where loops run [default: [cluster] backend].")
    ] = None,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Run the supervisor in this process (systemd, containers).")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0, help="Seconds to wait for ready [default: start_timeout_sec]."),
    ] = None,
    apps_path: AppsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Start the service: a supervisor and its loops; returns when every loop is ready."""
    service = _service(app, apps_path)
    chosen = backend.value if backend else service.env.settings.cluster.backend
    if chosen != "local":
        raise UserError(f"backend {chosen!r} is not available in this release; use --backend local")
    from keepwarm import lifecycle

    log = lifecycle.supervisor_log(service.env)
    if foreground:
        _stderr().print(
            f"supervisor of {service.env.app_target} in the foreground; log: stderr", highlight=False
        )
        raise typer.Exit(lifecycle.run_foreground(service.env, slots=workers))
    began = time.perf_counter()
    report = service.start(slots=workers, timeout=timeout)
    elapsed = time.perf_counter() - began
    if as_json:
        _emit_json(report.to_json_dict() | {"start_sec": round(elapsed, 3), "supervisor_log": str(log)})
        return
    _stderr().print(
        f"started {service.env.app_target}: {report.workers_healthy_count} loops ready in {elapsed:.2f}s "
        f"(supervisor pid {report.supervisor.pid}); supervisor log: {log}",
        highlight=False,
    )
    _print_health(report)


@app.command()
def status(app: AppArg, apps_path: AppsPath = None, as_json: JsonFlag = False) -> None:
    """Show the service's status, queue and loops (read-only, from the files)."""
    service = _service(app, apps_path)
    _version_note(service)
    report = service.status()
    if as_json:
        _emit_json(report.to_json_dict())
    else:
        _print_health(report)


@app.command()
def health(
    app: AppArg,
    gate: Annotated[
        bool, typer.Option("--gate", help="Exit with the SLA gate's code (0 pass, 2-6 fail).")
    ] = False,
    allow_idle: Annotated[
        bool | None,
        typer.Option("--allow-idle/--no-allow-idle", help="Override allow_idle.", show_default=False),
    ] = None,
    max_unhealthy: Annotated[
        int | None, typer.Option("--max-unhealthy", min=0, help="Override max_unhealthy.")
    ] = None,
    max_restart_rate: Annotated[
        float | None, typer.Option("--max-restart-rate", min=0, help="Override max_restart_rate.")
    ] = None,
    max_pending_age: Annotated[
        float | None, typer.Option("--max-pending-age", min=0, help="Override max_pending_age_sec (seconds).")
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="json or prometheus.")
    ] = OutputFormat.json,
    output: Annotated[
        Path | None, typer.Option("--output", help="Also write the health JSON to this file.")
    ] = None,
    apps_path: AppsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Print the health report (agi.service.health.v1); with --gate, exit with the gate's code."""
    service = _service(app, apps_path)
    report, verdict = service.health(
        output=output,
        allow_idle=allow_idle,
        max_unhealthy=max_unhealthy,
        max_restart_rate=max_restart_rate,
        max_pending_age_sec=max_pending_age,
    )
    if output_format == OutputFormat.prometheus and not as_json:
        from keepwarm.health import to_prometheus

        sys.stdout.write(to_prometheus(report, verdict if gate else None))
    else:
        document = report.to_json_dict()
        if gate:
            document["gate"] = verdict.model_dump(mode="json")
        _emit_json(document)
    if gate:
        _print_gate(verdict)
        raise typer.Exit(verdict.code)


@app.command()
def stop(
    app: AppArg,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0, help="Seconds loops get to finish [default: stop_timeout_sec]."),
    ] = None,
    apps_path: AppsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Stop the service from any process; returns when the supervisor has exited."""
    outcome = _service(app, apps_path).stop(timeout=timeout)
    if as_json:
        _emit_json(outcome)
    else:
        typer.echo(outcome["message"])


@app.command()
def scale(
    app: AppArg,
    workers: Annotated[int, typer.Argument(metavar="N", min=1, max=1024, help="How many loops to run.")],
    apps_path: AppsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Run N loops from now on (new ones start, surplus ones finish their task and stop)."""
    result = _service(app, apps_path).scale(workers)
    _emit_json(result) if as_json else typer.echo(f"scaled from {result['from']} to {result['to']} loops")


@app.command()
def drain(app: AppArg, apps_path: AppsPath = None, as_json: JsonFlag = False) -> None:
    """Serve until nothing is pending or running, then stop."""
    message = _service(app, apps_path).drain()
    _emit_json({"message": message}) if as_json else typer.echo(message)


@app.command()
def restart(
    app: AppArg,
    loop: Annotated[str | None, typer.Option("--loop", help="The slot to restart, e.g. loop-0.")] = None,
    rolling: Annotated[bool, typer.Option("--rolling", help="Restart every loop, one at a time.")] = False,
    apps_path: AppsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Restart one loop, or all of them one at a time (never below N-1 ready)."""
    if (loop is None) == (not rolling):
        raise UserError("give exactly one of --loop SLOT or --rolling")
    message = _service(app, apps_path).restart(loop, rolling=rolling)
    _emit_json({"message": message}) if as_json else typer.echo(message)


@app.command()
def retry(
    app: AppArg,
    task_ids: Annotated[list[str] | None, typer.Argument(help="Ids of failed or cancelled tasks.")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Retry every failed and cancelled task.")] = False,
    apps_path: AppsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Send failed or cancelled tasks back to the queue as fresh attempts."""
    if not task_ids and not failed:
        raise UserError("name the tasks to retry: TASK_ID ... or --failed")
    retried = _service(app, apps_path).retry(task_ids or (), failed=failed)
    if as_json:
        _emit_json({"retried": retried})
    else:
        typer.echo("\n".join(f"retried {task_id}" for task_id in retried) or "nothing to retry")
    if not retried:
        raise typer.Exit(1)


@app.command()
def snapshot(app: AppArg, apps_path: AppsPath = None, as_json: JsonFlag = False) -> None:
    """Write the operator snapshot (service_operator_snapshot.json) to the log dir."""
    path = _service(app, apps_path).snapshot()
    _emit_json({"path": str(path)}) if as_json else typer.echo(f"wrote {path}")


@app.command()
def logs(
    app: AppArg,
    loop: Annotated[str | None, typer.Option("--loop", help="Only this loop's log (e.g. loop-0).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing what is appended.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines to show from the end.")] = 40,
    apps_path: AppsPath = None,
) -> None:
    """Show the supervisor's and the loops' logs."""
    service = _service(app, apps_path)
    folder = service.env.log_dir
    names = (
        [f"{loop}.log"] if loop else ["supervisor.log", *sorted(p.name for p in folder.glob("loop-*.log"))]
    )
    paths = [folder / name for name in names if (folder / name).is_file()]
    if not paths:
        raise UserError(
            f"no logs in {folder}" + (f" for {loop}" if loop else "; has the service been started?")
        )
    offsets = {}
    for path in paths:
        text = path.read_text(errors="replace")
        tail = text.splitlines()[-lines:] if lines else []
        if len(paths) > 1:
            typer.echo(f"==> {path} <==")
        typer.echo("\n".join(tail))
        offsets[path] = len(text.encode())
    while follow:
        time.sleep(0.25)
        for path in paths:
            size = path.stat().st_size if path.exists() else 0
            if size < offsets[path]:
                offsets[path] = 0  # rotated
            if size > offsets[path]:
                with open(path, "rb") as handle:
                    handle.seek(offsets[path])
                    chunk = handle.read().decode(errors="replace")
                offsets[path] = size
                prefix = f"{path.stem}| " if len(paths) > 1 else ""
                typer.echo("".join(prefix + line for line in chunk.splitlines(keepends=True)), nl=False)


def _print_health(report: HealthReport) -> None:
    from rich.table import Table

    colour = {"running": "green", "idle": "cyan", "degraded": "yellow", "error": "red", "stopped": "dim"}
    out = _stdout()
    queue, word = report.queue, f"[{colour.get(report.status, 'white')}]{report.status}[/]"
    out.print(
        f"[bold]{report.app}[/] ({report.namespace}): {word}"
        f" · loops {report.workers_healthy_count} healthy, {report.workers_unhealthy_count} unhealthy, "
        f"{report.workers_pending_count} starting · restart rate {report.restart_rate:.2f}"
        f" · queue pending {queue.pending}, running {queue.running}, "
        f"done {queue.done}, failed {queue.failed}",
        highlight=False,
    )
    for condition in report.conditions:
        out.print(f"[yellow]condition:[/] {condition}", highlight=False)
    if not report.worker_health:
        return
    table = Table()
    columns = (
        "worker",
        "healthy",
        "reason",
        "future_state",
        "heartbeat_state",
        "heartbeat_age_sec",
        "pid",
        "restarts",
    )
    for column in columns:
        table.add_column(column)
    for row in report.worker_health:
        style = "green" if row.healthy else "red"
        values = [getattr(row, column) for column in columns]
        table.add_row(*(_cell(v) for v in values), style=style)
    out.print(table)


def _print_gate(verdict: GateResult) -> None:
    word = "[green]passed[/]" if verdict.passed else f"[red]failed (exit {verdict.code})[/]"
    _stderr().print(
        f"gate {word}" + "".join(f"\n  - {reason}" for reason in verdict.reasons), highlight=False
    )


def _version_note(service: Service) -> None:
    from keepwarm.state import version_note

    note = version_note(service.env.service_dir, service.env.app_target)
    if note:
        _stderr().print(f"[yellow]note:[/] {note}", highlight=False)


@app.command()
def demo(
    tasks_count: Annotated[int, typer.Option("--tasks", min=1, help="Tasks in the burst.")] = 300,
    loops: Annotated[int, typer.Option("--loops", min=1, max=64, help="Loops the service runs.")] = 2,
    share_dir: Annotated[
        Path | None, typer.Option("--share-dir", help="Keep the queue here [default: a temp dir, removed].")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Start the bundled example service, send it tasks, show its health and timings, stop it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from keepwarm.demo import run_demo

    console = _stderr()
    with Progress(
        TextColumn("tasks"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
    ) as bar:
        job = bar.add_task("tasks", total=tasks_count)
        report = run_demo(
            tasks_count,
            loops,
            share_dir=share_dir,
            say=lambda m: console.print(f"[dim]{m}[/]", highlight=False),
            progress=lambda done, total: bar.update(job, completed=done),
        )
    summary = {
        "app": report.app,
        "loops": report.loops,
        "start_sec": round(report.start_sec, 3),
        "stop_sec": round(report.stop_sec, 3),
        "tasks": report.tasks,
        "failed": report.failed,
        "burst_sec": round(report.burst_sec, 4),
        "throughput_per_sec": round(report.throughput, 1),
        "roundtrip_p50_ms": round(report.p50_ms, 3),
        "roundtrip_p99_ms": round(report.p99_ms, 3),
        "tasks_per_loop": report.per_slot,
        "samples": [{"x": x, "result": r} for x, r in report.samples],
        "health": report.health.to_json_dict(),
        "share_dir": str(report.share_dir) if report.kept else None,
        "log_dir": str(report.log_dir),
    }
    if as_json:
        _emit_json(summary)
        raise typer.Exit(1 if report.failed else 0)
    from rich.table import Table

    out = _stdout()
    samples = Table(title=f"{report.app}: first results of {report.tasks}")
    samples.add_column("x", justify="right")
    samples.add_column("result")
    for x, value in report.samples:
        samples.add_row(str(x), json.dumps(value))
    out.print(samples)
    out.print("health while serving:")
    _print_health(report.health)
    timings = Table(title="timings")
    timings.add_column("measure")
    timings.add_column("value", justify="right")
    timings.add_row(f"start → {report.loops} loops ready (s)", f"{report.start_sec:.3f}")
    timings.add_row(f"burst of {report.tasks} tasks (s)", f"{report.burst_sec:.3f}")
    timings.add_row("throughput (tasks/s)", f"{report.throughput:,.0f}")
    timings.add_row("submit→result p50 (ms)", f"{report.p50_ms:.3f}")
    timings.add_row("submit→result p99 (ms)", f"{report.p99_ms:.3f}")
    timings.add_row("tasks per loop", ", ".join(f"{k}: {v}" for k, v in report.per_slot.items()))
    timings.add_row("stop (s)", f"{report.stop_sec:.3f}")
    timings.add_row("failed", str(report.failed))
    out.print(timings)
    if report.failed:
        raise typer.Exit(1)


def _read_text(file: Path) -> str:
    try:
        return sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: cannot be read: {exc}") from None


def _json_object(text: str, where: str) -> dict[str, Any]:
    from keepwarm.task import parse_json_object

    try:
        return parse_json_object(text, where)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _counts_line(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if k != "oldest_pending_age_sec")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _fail(message: str) -> NoReturn:
    _stderr().print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one clear message and exit 1, never a traceback."""
    from keepwarm.errors import KeepwarmError

    try:
        code = app(args=argv, prog_name="keepwarm", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _fail("aborted")
    except typer.TyperException as exc:  # usage errors: bad option, missing argument, bad value
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message())
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        hint = f"\nsee: {ctx.command_path} --help" if ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}")
    except (KeepwarmError, UserError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted")
    sys.exit(code if isinstance(code, int) else 0)
