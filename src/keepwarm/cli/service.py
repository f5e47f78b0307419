"""Service-mode verbs: start, status, health, stop, scale, drain, restart, snapshot, logs; and how a
health report is printed."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from keepwarm.cli.common import (
    UserError,
    emit_json,
    finite,
    number_option,
    say,
    service_of,
    service_verb,
    table,
    timeout_option,
)

if TYPE_CHECKING:
    from keepwarm.service.gate import GateResult
    from keepwarm.service.report import HealthReport

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
    "forked",
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
    log = service.supervisor_log
    if foreground:
        say(f"supervisor of {service.env.app_target} in the foreground; log: stderr")
        sys.exit(service.run_foreground(slots=workers, backend=backend))
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
        from keepwarm.service.exports import to_prometheus

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
@click.argument(
    "workers",
    metavar="N",
    type=click.IntRange(1, 1024),
    required=False,
    help="How many loops to run (none with --auto).",
)
@click.option("--auto", is_flag=True, help="Hand the count back to autoscaling ([cluster.autoscale]).")
def scale(
    app: str, apps_path: Path | None, namespace: str | None, as_json: bool, workers: int | None, auto: bool
) -> None:
    """Run N loops from now on (new ones start, surplus ones finish their task and stop); while
    autoscaling, N pins the count until --auto."""
    if (workers is None) == (not auto):
        raise UserError("give N (how many loops) or --auto, not both")
    outcome = service_of(app, apps_path, namespace).scale(workers, auto=auto)
    if as_json:
        emit_json(outcome)
        return
    said = []
    if "to" in outcome:
        said.append(f"scaled from {outcome['from']} to {outcome['to']} loops")
    if "autoscale" in outcome:
        said.append(f"autoscaling {outcome['autoscale']}")
    click.echo("; ".join(said))


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
@number_option("--lines", "-n", type=click.IntRange(min=0), default=40, help="Lines to show from the end.")
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
    service = service_of(app, apps_path, namespace)
    tail = service.logs(loop)
    if not tail.paths:
        raise UserError(
            f"no logs in {service.env.log_dir}"
            + (f" for {loop}" if loop else "; has the service been started?")
        )
    if as_json:
        emit_json({"logs": [str(path) for path in tail.paths]})
        return
    several = len(tail.paths) > 1
    for chunk in tail.last_lines(lines):
        if several:
            click.echo(f"==> {chunk.path} <==")
        click.echo(chunk.text)
    if follow:
        for chunk in tail.follow():
            prefix = f"{chunk.path.stem}| " if several else ""
            click.echo("".join(prefix + line for line in chunk.text.splitlines(keepends=True)), nl=False)


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
    scaling = report.autoscale.summary()
    if scaling:
        click.echo(scaling)
    if report.template is not None:
        click.echo(report.template.summary())
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
    """A warning on stderr when the app's files changed under its running service (an ``app`` condition)."""
    from keepwarm.queue.state import ConditionKind

    change = report.condition(ConditionKind.APP)
    if change is not None:
        say(
            f"warning: the app of service {report.app} changed since it started "
            f"({change.detail}); it runs, and is judged and stopped, with the "
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
