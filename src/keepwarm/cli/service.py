"""Service-mode verbs: start, status, health, stop, the queue's verbs, and the demo."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keepwarm.cli.common import (
    UserError,
    emit_json,
    finite,
    json_object,
    json_option,
    read_text,
    say,
    service_of,
    service_verb,
    table,
    timeout_option,
)
from keepwarm.errors import KeepwarmError
from keepwarm.queue.task import TASK_STATES

if TYPE_CHECKING:
    from keepwarm.queue.task import TaskRecord
    from keepwarm.service.health import GateResult, HealthReport

RESULT_TIMEOUT = "Seconds to wait for results [default: forever]."
HEALTH_COLUMNS = (
    "worker",
    "healthy",
    "reason",
    "future_state",
    "heartbeat_state",
    "heartbeat_age_sec",
    "pid",
    "restarts",
    "last_reason",
)
STATUS_COLOURS = {"running": "green", "idle": "cyan", "degraded": "yellow", "error": "red", "stopped": None}


@click.command()
@service_verb
@click.option("--workers", type=click.IntRange(1, 1024), help="Loops to run [default: [cluster] slots].")
@click.option(
    "--backend", type=click.Choice(["local", "dask"]), help="Where loops run [default: [cluster] backend]."
)
@click.option("--foreground", is_flag=True, help="Run the supervisor in this process (systemd, containers).")
@timeout_option("Seconds to wait for ready [default: start_timeout_sec].")
def start(
    app: str,
    apps_path: Path | None,
    namespace: str | None,
    as_json: bool,
    workers: int | None,
    backend: str | None,
    foreground: bool,
    timeout: float | None,
) -> None:
    """Start the service: a supervisor and its loops; returns when every loop is ready."""
    service = service_of(app, apps_path, namespace)
    from keepwarm.service import lifecycle

    log = lifecycle.supervisor_log(service.env)
    if foreground:
        say(f"supervisor of {service.env.app_target} in the foreground; log: stderr")
        sys.exit(lifecycle.run_foreground(service.env, slots=workers, backend=backend))
    began = time.perf_counter()
    report = service.start(slots=workers, timeout=timeout, backend=backend)
    elapsed = time.perf_counter() - began
    if as_json:
        emit_json(report.to_json_dict() | {"start_sec": round(elapsed, 3), "supervisor_log": str(log)})
        return
    say(
        f"started {service.env.app_target}: {report.workers_healthy_count} loops ready in {elapsed:.2f}s "
        f"(supervisor pid {report.supervisor.pid}); supervisor log: {log}"
    )
    print_health(report)


@click.command()
@service_verb
def status(app: str, apps_path: Path | None, namespace: str | None, as_json: bool) -> None:
    """Show the service's status, queue and loops (read-only, from the files)."""
    # The core function itself rather than Service: the status path imports no more than it reads.
    from keepwarm.env import Env
    from keepwarm.queue.state import version_note
    from keepwarm.service.health import evaluate_health

    env = Env(app, apps_path, namespace=namespace)
    note = version_note(env.service_dir, env.app_target)
    if note:
        say(f"note: {note}", fg="yellow")
    report = evaluate_health(env)
    warn_app_changed(report)
    if as_json:
        emit_json(report.to_json_dict())
    else:
        print_health(report)


@click.command()
@service_verb
@click.option("--gate", is_flag=True, help="Exit with the SLA gate's code (0 pass, 2-6 fail).")
@click.option("--allow-idle/--no-allow-idle", default=None, help="Override allow_idle.")
@click.option("--max-unhealthy", type=click.IntRange(min=0), help="Override max_unhealthy.")
@click.option(
    "--max-restart-rate", type=click.FloatRange(min=0), callback=finite, help="Override max_restart_rate."
)
@click.option(
    "--max-pending-age",
    type=click.FloatRange(min=0),
    callback=finite,
    help="Override max_pending_age_sec (seconds).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "prometheus"]),
    default="json",
    show_default=True,
    help="json or prometheus.",
)
@click.option("--output", type=click.Path(path_type=Path), help="Also write the health JSON to this file.")
def health(
    app: str,
    apps_path: Path | None,
    namespace: str | None,
    as_json: bool,
    gate: bool,
    allow_idle: bool | None,
    max_unhealthy: int | None,
    max_restart_rate: float | None,
    max_pending_age: float | None,
    output_format: str,
    output: Path | None,
) -> None:
    """Print the health report (agi.service.health.v1); with --gate, exit with the gate's code."""
    if output_format == "prometheus" and as_json:
        raise click.UsageError("--format prometheus prints text, --json a JSON document: give one of them")
    report, verdict = service_of(app, apps_path, namespace).health(
        output=output,
        allow_idle=allow_idle,
        max_unhealthy=max_unhealthy,
        max_restart_rate=max_restart_rate,
        max_pending_age_sec=max_pending_age,
    )
    warn_app_changed(report)
    if output_format == "prometheus":
        from keepwarm.service.health import to_prometheus

        sys.stdout.write(to_prometheus(report, verdict if gate else None))
    else:
        document = report.to_json_dict()
        if gate:
            document["gate"] = verdict.model_dump(mode="json")
        emit_json(document)
    if gate:
        print_gate(verdict)
        sys.exit(verdict.code)


@click.command()
@service_verb
@timeout_option("Seconds loops get to finish [default: stop_timeout_sec].")
@click.option(
    "--shutdown/--no-shutdown",
    default=None,
    help="Shut down the Dask cluster keepwarm started, or leave it for the next start "
    "[default: shutdown_on_stop].",
)
def stop(
    app: str,
    apps_path: Path | None,
    namespace: str | None,
    as_json: bool,
    timeout: float | None,
    shutdown: bool | None,
) -> None:
    """Stop the service from any process; returns when the supervisor has exited."""
    outcome = service_of(app, apps_path, namespace).stop(timeout=timeout, shutdown=shutdown)
    emit_json(outcome) if as_json else click.echo(outcome["message"])


@click.command()
@service_verb
@click.option("--args", "args", help="The task's args as a JSON object, e.g. '{\"x\": 3}' ('{}' for none).")
@click.option(
    "--file",
    type=click.Path(path_type=Path),
    help="A JSONL file of partial tasks, one object per line ('-' for stdin), instead of --args.",
)
@click.option("--name", default="task", show_default=True, help="The task name.")
@click.option("--execution-id", help="Group the tasks under this execution id.")
@click.option(
    "--task-timeout",
    type=click.FloatRange(min=0, min_open=True),
    callback=finite,
    help="Seconds each task may run before it fails (task-timeout) [default: [cluster] task_timeout_sec].",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    help="Runs a task gets when its loop dies under it [default: [cluster] max_attempts].",
)
@click.option(
    "--queue-only", is_flag=True, help="Queue even when no service is running: the tasks wait for its start."
)
@click.option(
    "--wait", is_flag=True, help="Wait for the results and print them (the ids go to stderr first)."
)
@timeout_option("With --wait: seconds to wait for the results, not the tasks' own limit [default: forever].")
def submit(
    app: str,
    apps_path: Path | None,
    namespace: str | None,
    as_json: bool,
    args: str | None,
    file: Path | None,
    name: str,
    execution_id: str | None,
    task_timeout: float | None,
    max_attempts: int | None,
    queue_only: bool,
    wait: bool,
    timeout: float | None,
) -> None:
    """Queue tasks; print their ids (with --wait, their results). Needs a running service or --queue-only."""
    if args is not None and file is not None:
        raise UserError("give either --args or --file, not both")
    if args is None and file is None:
        raise UserError("give the task's args: --args JSON (--args '{}' for none), or --file TASKS.jsonl")
    if timeout is not None and not wait:
        say(
            "note: --timeout limits how long --wait waits; without --wait it does nothing "
            "(a task's own limit is --task-timeout)",
            fg="yellow",
        )
    service = service_of(app, apps_path, namespace)
    options: dict[str, Any] = {
        "task_name": name,
        "execution_id": execution_id,
        "max_attempts": max_attempts,
        "timeout_sec": task_timeout,
    }
    if file is not None:
        handles = service.submit_jsonl(read_text(file), str(file), queue_only=queue_only, **options)
    else:
        handles = [service.submit(json_object(str(args), "--args"), queue_only=queue_only, **options)]
    ids = [h.task_id for h in handles]
    if not wait:
        emit_json({"task_ids": ids}) if as_json else click.echo("\n".join(ids))
        return
    say("\n".join(f"queued {task_id}" for task_id in ids))
    records = service.wait(ids, timeout)
    if as_json:
        emit_json({"results": [_record_json(r) for r in records]})
    else:
        for record in records:
            shown = (
                json.dumps(record.result) if record.status == "done" else f"{record.status}: {record.error}"
            )
            click.echo(f"{record.task_id}\t{shown}")
    if any(r.status != "done" for r in records):
        sys.exit(1)


@click.command()
@service_verb
@click.argument("task_id", help="The id printed by submit.")
@timeout_option(RESULT_TIMEOUT)
def result(
    app: str,
    apps_path: Path | None,
    namespace: str | None,
    as_json: bool,
    task_id: str,
    timeout: float | None,
) -> None:
    """Wait for a task and print its result (exit 1 with the remote error if it failed)."""
    record = service_of(app, apps_path, namespace).record(task_id, timeout)
    if as_json:
        emit_json(_record_json(record))
    elif record.status == "done":
        click.echo(json.dumps(record.result, indent=2))
    if record.status != "done":
        if not as_json:
            say(f"task {task_id} {record.status}: {record.error}", fg="red")
            if record.traceback:
                say(f"remote traceback:\n{record.traceback.rstrip()}")
        sys.exit(1)


@click.command()
@service_verb
@click.option("--state", type=click.Choice(TASK_STATES), help="Only this state.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many per state."
)
def tasks(
    app: str, apps_path: Path | None, namespace: str | None, as_json: bool, state: str | None, limit: int
) -> None:
    """List tasks per state (newest finished first), with the queue's counts."""
    service = service_of(app, apps_path, namespace)
    rows = service.tasks(state, limit)
    counts = service.counts().__dict__
    if as_json:
        emit_json({"counts": counts, "tasks": rows})
        return
    columns = ("task_id", "task_name", "state", "at", "runtime_sec", "error")
    counted = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "oldest_pending_age_sec")
    table(
        columns, [[row.get(c) for c in columns] for row in rows], title=f"{service.env.app_target}: {counted}"
    )


@click.command()
@service_verb
@click.argument("task_ids", nargs=-1, metavar="[TASK_ID]...", help="Ids of the tasks to cancel.")
@click.option("--execution-id", help="Cancel every task of this execution.")
def cancel(
    app: str,
    apps_path: Path | None,
    namespace: str | None,
    as_json: bool,
    task_ids: tuple[str, ...],
    execution_id: str | None,
) -> None:
    """Cancel tasks by id or execution id (running ones too while the service runs)."""
    if not task_ids and execution_id is None:
        raise UserError("name the tasks to cancel: TASK_ID ... or --execution-id ID")
    service = service_of(app, apps_path, namespace)
    cancelled = service.cancel(task_ids, execution_id)
    not_cancelled = {}
    for task_id in task_ids:
        if task_id not in cancelled:
            try:
                not_cancelled[task_id] = service.queue.locate(task_id).state
            except KeepwarmError:
                not_cancelled[task_id] = "not found"
    if as_json:
        emit_json({"cancelled": cancelled, "not_cancelled": not_cancelled})
    else:
        for task_id in cancelled:
            click.echo(f"cancelled {task_id}")
        for task_id, where in not_cancelled.items():
            say(f"not cancelled {task_id}: {where}")
        if not cancelled and execution_id is not None:
            say(f"no pending or running task of execution {execution_id}")
    if not cancelled:
        sys.exit(1)


@click.command()
@service_verb
@click.argument("task_ids", nargs=-1, metavar="[TASK_ID]...", help="Ids of failed or cancelled tasks.")
@click.option("--failed", is_flag=True, help="Retry every failed and cancelled task.")
def retry(
    app: str,
    apps_path: Path | None,
    namespace: str | None,
    as_json: bool,
    task_ids: tuple[str, ...],
    failed: bool,
) -> None:
    """Send failed or cancelled tasks back to the queue as fresh attempts."""
    if not task_ids and not failed:
        raise UserError("name the tasks to retry: TASK_ID ... or --failed")
    retried = service_of(app, apps_path, namespace).retry(task_ids, failed=failed)
    if as_json:
        emit_json({"retried": list(retried), "not_retried": retried.not_retried})
    else:
        for task_id in retried:
            click.echo(f"retried {task_id}")
        for task_id, why in retried.not_retried.items():
            say(f"not retried {task_id}: {why}")
        if not retried and not retried.not_retried:
            say("nothing to retry: no failed or cancelled task")
    if not retried:
        sys.exit(1)


@click.command()
@service_verb
@click.argument("workers", metavar="N", type=click.IntRange(1, 1024), help="How many loops to run.")
def scale(app: str, apps_path: Path | None, namespace: str | None, as_json: bool, workers: int) -> None:
    """Run N loops from now on (new ones start, surplus ones finish their task and stop)."""
    outcome = service_of(app, apps_path, namespace).scale(workers)
    emit_json(outcome) if as_json else click.echo(f"scaled from {outcome['from']} to {outcome['to']} loops")


@click.command()
@service_verb
def drain(app: str, apps_path: Path | None, namespace: str | None, as_json: bool) -> None:
    """Serve until nothing is pending or running, then stop."""
    message = service_of(app, apps_path, namespace).drain()
    emit_json({"message": message}) if as_json else click.echo(message)


@click.command()
@service_verb
@click.option("--loop", help="The slot to restart, e.g. loop-0.")
@click.option("--rolling", is_flag=True, help="Restart every loop, one at a time.")
def restart(
    app: str, apps_path: Path | None, namespace: str | None, as_json: bool, loop: str | None, rolling: bool
) -> None:
    """Restart one loop, or all of them one at a time (never below N-1 ready)."""
    if (loop is None) == (not rolling):
        raise UserError("give exactly one of --loop SLOT or --rolling")
    message = service_of(app, apps_path, namespace).restart(loop, rolling=rolling)
    emit_json({"message": message}) if as_json else click.echo(message)


@click.command()
@service_verb
def snapshot(app: str, apps_path: Path | None, namespace: str | None, as_json: bool) -> None:
    """Write the operator snapshot (service_operator_snapshot.json) to the log dir."""
    path = service_of(app, apps_path, namespace).snapshot()
    emit_json({"path": str(path)}) if as_json else click.echo(f"wrote {path}")


@click.command()
@service_verb
@click.option("--loop", help="Only this loop's log (e.g. loop-0).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing what is appended.")
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(min=0),
    default=40,
    show_default=True,
    help="Lines to show from the end.",
)
def logs(
    app: str,
    apps_path: Path | None,
    namespace: str | None,
    as_json: bool,
    loop: str | None,
    follow: bool,
    lines: int,
) -> None:
    """Show the supervisor's and the loops' logs (--json: their paths)."""
    folder = service_of(app, apps_path, namespace).env.log_dir
    names = (
        [f"{loop}.log"] if loop else ["supervisor.log", *sorted(p.name for p in folder.glob("loop-*.log"))]
    )
    paths = [folder / name for name in names if (folder / name).is_file()]
    if not paths:
        raise UserError(
            f"no logs in {folder}" + (f" for {loop}" if loop else "; has the service been started?")
        )
    if as_json:
        emit_json({"logs": [str(path) for path in paths]})
        return
    offsets = {}
    for path in paths:
        text = path.read_text(errors="replace")
        if len(paths) > 1:
            click.echo(f"==> {path} <==")
        click.echo("\n".join(text.splitlines()[-lines:] if lines else []))
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
                click.echo("".join(prefix + line for line in chunk.splitlines(keepends=True)), nl=False)


@click.command()
@click.option(
    "--tasks",
    "tasks_count",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Tasks in the burst.",
)
@click.option(
    "--loops", type=click.IntRange(1, 64), default=2, show_default=True, help="Loops the service runs."
)
@click.option(
    "--share-dir", type=click.Path(path_type=Path), help="Keep the queue here [default: a temp dir, removed]."
)
@json_option
def demo(tasks_count: int, loops: int, share_dir: Path | None, as_json: bool) -> None:
    """Start the bundled example service, send it tasks, show its health and timings, stop it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from keepwarm.demo import run_demo

    console = Console(stderr=True)
    with Progress(
        TextColumn("tasks"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
    ) as bar:
        job = bar.add_task("tasks", total=tasks_count)
        report = run_demo(
            tasks_count,
            loops,
            share_dir=share_dir,
            say=lambda m: say(m, dim=True),
            progress=lambda done, total: bar.update(job, completed=done),
        )
    if as_json:
        emit_json(
            {
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
        )
    else:
        rows = [(x, json.dumps(value)) for x, value in report.samples]
        table(("x", "result"), rows, title=f"{report.app}: first results of {report.tasks}")
        click.echo("\nhealth while serving:")
        print_health(report.health)
        timings = [
            (f"start → {report.loops} loops ready (s)", f"{report.start_sec:.3f}"),
            (f"burst of {report.tasks} tasks (s)", f"{report.burst_sec:.3f}"),
            ("throughput (tasks/s)", f"{report.throughput:,.0f}"),
            ("submit→result p50 (ms)", f"{report.p50_ms:.3f}"),
            ("submit→result p99 (ms)", f"{report.p99_ms:.3f}"),
            ("tasks per loop", ", ".join(f"{k}: {v}" for k, v in report.per_slot.items())),
            ("stop (s)", f"{report.stop_sec:.3f}"),
            ("failed", str(report.failed)),
        ]
        click.echo()
        table(("measure", "value"), timings, title="timings")
    if report.failed:
        sys.exit(1)


def print_health(report: HealthReport) -> None:
    """The status line, why the status is error or degraded, any conditions, the worker-health table
    coloured by health (a loop in a planned change shows it as its reason), and each loop's last
    start error."""
    queue = report.queue
    word = click.style(report.status, fg=STATUS_COLOURS.get(report.status))
    click.echo(
        click.style(report.app, bold=True) + f" ({report.namespace}): {word}"
        f" · loops {report.workers_healthy_count} healthy, {report.workers_unhealthy_count} unhealthy, "
        f"{report.workers_pending_count} starting · restart rate {report.restart_rate:.2f}"
        f" · queue pending {queue.pending}, running {queue.running}, done {queue.done}, failed {queue.failed}"
    )
    if report.status_reason:
        click.echo(click.style("reason:", fg=STATUS_COLOURS.get(report.status)) + f" {report.status_reason}")
    for condition in report.conditions:
        click.echo(click.style("condition:", fg="yellow") + f" {condition}")
    if report.worker_health:
        rows = [
            [
                row.reason or (f"planned: {row.planned}" if row.planned and not row.healthy else None)
                if column == "reason"
                else getattr(row, column)
                for column in HEALTH_COLUMNS
            ]
            for row in report.worker_health
        ]
        table(
            HEALTH_COLUMNS, rows, colours=["green" if row.healthy else "red" for row in report.worker_health]
        )
    for row in report.worker_health:
        if row.start_error:
            click.echo(click.style(f"{row.worker} start error:", fg="red") + f" {row.start_error}")


def warn_app_changed(report: HealthReport) -> None:
    """A warning on stderr when the app's files changed under its running service (an ``app:`` condition)."""
    for condition in report.conditions:
        if condition.startswith("app: "):
            say(
                f"warning: the app of service {report.app} changed since it started "
                f"({condition.removeprefix('app: ')}); it runs, and is judged and stopped, with the "
                "settings it was started with until it is stopped and started again",
                fg="yellow",
            )


def print_gate(verdict: GateResult) -> None:
    word = (
        click.style("passed", fg="green")
        if verdict.passed
        else click.style(f"failed (exit {verdict.code})", fg="red")
    )
    say("gate " + word + "".join(f"\n  - {reason}" for reason in verdict.reasons))


def _record_json(record: TaskRecord) -> dict[str, Any]:
    return {
        "task_id": record.task_id,
        "status": record.status,
        "result": record.result,
        "error": record.error,
        "traceback": record.traceback,
        "runtime_sec": record.runtime_sec,
    }
