"""Fleet and workflow verbs: up, down, ps, and workflow start/status/stop/list."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from keepwarm.cli.common import (
    UserError,
    apps_path_option,
    emit_json,
    json_object,
    json_option,
    number_option,
    read_text,
    say,
    table,
    timeout_option,
)

if TYPE_CHECKING:
    from keepwarm.groups.fleet import Fleet, ServiceSummary
    from keepwarm.groups.workflow import WorkflowStatus

F = TypeVar("F", bound=Callable[..., Any])

PS_COLUMNS = (
    "service",
    "app",
    "status",
    "ready",
    "loops",
    "pending",
    "running",
    "done",
    "failed",
    "gate",
    "pid",
)
STATE_COLOURS = {"running": "cyan", "completed": "green", "failed": "red", "terminated": "yellow"}


def fleet_argument(function: F) -> F:
    return click.argument(
        "fleet",
        required=False,
        metavar="[FLEET]",
        help="The fleet file: a path, a name (NAME.toml here) [default: $KEEPWARM_FLEET, else ./fleet.toml].",
    )(function)


def namespace_options(function: F) -> F:
    function = click.option(
        "--share-dir",
        type=click.Path(path_type=Path),
        help="The share [default: $KEEPWARM_SHARE, else ~/.local/share/keepwarm].",
    )(function)
    return click.option(
        "--namespace", help="The namespace [default: $KEEPWARM_NAMESPACE, else your login name]."
    )(function)


def run_verb(function: F) -> F:
    """ID, --namespace, --share-dir and --json: the parameters of every verb on one workflow run."""
    return click.argument("execution_id", metavar="ID", help="The execution id printed by workflow start.")(
        namespace_options(json_option(function))
    )


def _fleet(fleet: str | None) -> Fleet:
    from keepwarm.groups.fleet import Fleet

    return Fleet.find(fleet)


@click.command()
@fleet_argument
@timeout_option("Seconds each service gets to be ready [default: its start_timeout_sec].")
@click.option("--workflow", "with_workflow", is_flag=True, help="Then start a run of the fleet's [workflow].")
@json_option
def up(fleet: str | None, timeout: float | None, with_workflow: bool, as_json: bool) -> None:
    """Start every enabled service of a fleet; returns when all are ready (refused if one runs)."""
    chosen = _fleet(fleet)
    began = time.perf_counter()
    status = chosen.up(timeout=timeout, workflow=with_workflow)
    elapsed = time.perf_counter() - began
    if as_json:
        emit_json(status.model_dump(mode="json"))
        return
    ready = len(chosen.enabled)
    services = "1 service" if ready == 1 else f"{ready} services"
    say(f"started fleet {chosen.path.name}: {services} ready in {elapsed:.2f}s")
    print_services(status.services, title=f"fleet {chosen.path.name} (namespace {chosen.namespace})")
    if status.workflow is not None:
        announce_run(status.workflow)


@click.command()
@fleet_argument
@click.option(
    "--all", "every", is_flag=True, help="Stop every service of the namespace instead, fleet or not."
)
@namespace_options
@timeout_option("Seconds loops get to finish [default: each app's stop_timeout_sec].")
@json_option
def down(
    fleet: str | None,
    every: bool,
    namespace: str | None,
    share_dir: Path | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Stop every service of a fleet, or with --all of the namespace; returns once each has stopped."""
    from keepwarm.env import namespace_root
    from keepwarm.groups.namespace import stop_all

    if every:
        if fleet is not None:
            raise UserError("give either FLEET or --all (every service of the namespace), not both")
        where = namespace_root(namespace, share_dir)[1]
        stopped = stop_all(namespace, share_dir, timeout=timeout)
        document: dict[str, Any] = {"namespace": where, "services": stopped}
        if not stopped and not as_json:
            say(f"no running services in namespace {where}")
    else:
        if namespace is not None or share_dir is not None:
            raise UserError("--namespace and --share-dir go with --all; a fleet file names its own namespace")
        chosen = _fleet(fleet)
        stopped = chosen.down(timeout=timeout)
        document = {"fleet": str(chosen.path), "namespace": chosen.namespace, "services": stopped}
    if as_json:
        emit_json(document)
        return
    for row in stopped:
        click.echo(f"{row['service']}: {row['message']}")


@click.command()
@namespace_options
@click.option("--fleet", help="Show this fleet's services (and their readiness) instead.")
@json_option
def ps(namespace: str | None, share_dir: Path | None, fleet: str | None, as_json: bool) -> None:
    """List every service of the namespace: status, readiness, loops, queue and SLA gate verdict."""
    from keepwarm.env import namespace_root
    from keepwarm.groups.namespace import list_services

    if fleet is not None:
        if namespace is not None:
            raise UserError("give either --fleet (its namespace) or --namespace, not both")
        status = _fleet(fleet).status()
        rows, where = status.services, status.namespace
        document = status.model_dump(mode="json", exclude={"workflow"})  # the fleet's ready, as up gives it
    else:
        rows, where = list_services(namespace, share_dir), namespace_root(namespace, share_dir)[1]
        document = {"namespace": where, "services": [row.model_dump(mode="json") for row in rows]}
    if as_json:
        emit_json(document)
    elif rows:
        print_services(rows, title=f"namespace {where}")
    else:
        say(f"no services in namespace {where}")


def print_services(rows: list[ServiceSummary], *, title: str) -> None:
    from keepwarm.cli.service import STATUS_COLOURS
    from keepwarm.service.gate import GateCode

    cells = [
        [
            row.service,
            row.app,
            row.status,
            "yes" if row.ready else ("no" if row.enabled else "disabled"),
            f"{row.loops_healthy}/{row.loops}",
            row.queue.pending,
            row.queue.running,
            row.queue.done,
            row.queue.failed,
            "pass" if row.gate_passed else f"fail ({row.gate_code}: {GateCode(row.gate_code).name.lower()})",
            row.supervisor_pid,
        ]
        for row in rows
    ]
    table(PS_COLUMNS, cells, title=title, colours=[STATUS_COLOURS.get(row.status) for row in rows])


# ---------------------------------------------------------------------- workflow runs


class _InOrder(click.Group):
    """Subcommands listed in the order they are declared (start, status, stop, list), not sorted."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_InOrder)
def workflow() -> None:
    """Workflow runs: a batch of tasks under one execution id, tracked and stopped together."""


@workflow.command("start")
@click.argument(
    "app", required=False, metavar="[APP]", help="The app (with --fleet: a service of the fleet)."
)
@click.option("--count", type=click.IntRange(1, 1_000_000), help="Tasks to queue [default: 1].")
@click.option("--args", "args", help="Each task's args as a JSON object, e.g. '{\"x\": 3}'.")
@click.option(
    "--file",
    type=click.Path(path_type=Path),
    help="A JSONL file of partial tasks, one per line ('-' for stdin), instead of --count/--args.",
)
@click.option("--name", help="Execution ids start with this [default: the app].")
@click.option("--fleet", help="Take the namespace, app and defaults from this fleet file's [workflow].")
@click.option(
    "--queue-only", is_flag=True, help="Queue the run even if the service is not running (it waits)."
)
@apps_path_option
@click.option("--namespace", help="The namespace [default: $KEEPWARM_NAMESPACE, [cluster] namespace, login].")
@json_option
def workflow_start(
    app: str | None,
    count: int | None,
    args: str | None,
    file: Path | None,
    name: str | None,
    fleet: str | None,
    queue_only: bool,
    apps_path: Path | None,
    namespace: str | None,
    as_json: bool,
) -> None:
    """Queue a workflow run on a running service and print its execution id at once (name-user-NNNN)."""
    from keepwarm.api import Service
    from keepwarm.env import Env
    from keepwarm.groups.workflow import start_workflow

    if file is not None and (count is not None or args is not None):
        raise UserError("give --count/--args, or --file alone (one task per line): not both")
    task_args = json_object(args, "--args") if args is not None else None
    tasks = _task_lines(file) if file is not None else None
    if fleet is not None:
        if namespace is not None:
            raise UserError("give either --fleet (its namespace) or --namespace, not both")
        status = _fleet(fleet).start_workflow(
            app, count=count, args=task_args, tasks=tasks, name=name, queue_only=queue_only
        )
    elif app is None:
        raise UserError("name the app: keepwarm workflow start APP --count N (or pass --fleet FLEET)")
    else:
        service = Service(Env(app, apps_path, namespace=namespace))
        if tasks is not None:
            status = start_workflow(service, tasks=tasks, name=name, queue_only=queue_only)
        else:
            status = start_workflow(service, count or 1, task_args or {}, name=name, queue_only=queue_only)
    if as_json:
        emit_json(status.model_dump(mode="json"))
        return
    announce_run(status)


def announce_run(run: WorkflowStatus) -> None:
    """A run just started: what it is on stderr, its execution id alone on stdout (for scripts)."""
    tasks = "1 task" if run.total == 1 else f"{run.total} tasks"
    say(f"started {run.execution_id}: {tasks} on {run.app} (namespace {run.namespace})")
    click.echo(run.execution_id)


def _task_lines(file: Path) -> list[dict[str, Any]]:
    from keepwarm.queue.task import parse_task_lines

    try:
        return [obj for _, obj in parse_task_lines(read_text(file), str(file))]
    except ValueError as exc:
        raise UserError(str(exc)) from None


@workflow.command("status")
@run_verb
def workflow_status(execution_id: str, namespace: str | None, share_dir: Path | None, as_json: bool) -> None:
    """Show a run's progress (pending, running, done, failed, cancelled) and state."""
    from keepwarm.groups.workflow import workflow_status as status_of

    status = status_of(execution_id, namespace=namespace, share_dir=share_dir)
    emit_json(status.model_dump(mode="json")) if as_json else print_run(status)


@workflow.command("stop")
@run_verb
def workflow_stop(execution_id: str, namespace: str | None, share_dir: Path | None, as_json: bool) -> None:
    """Cancel a run's pending tasks (only those: running ones finish) and mark it terminated."""
    from keepwarm.groups.workflow import stop_workflow

    status = stop_workflow(execution_id, namespace=namespace, share_dir=share_dir)
    if as_json:
        emit_json(status.model_dump(mode="json"))
        return
    if status.already_ended:
        say(f"{execution_id} had already ended ({status.state}); nothing to stop")
    else:
        say(f"stopped {execution_id}: cancelled {len(status.cancelled)} pending tasks")
    print_run(status)


@workflow.command("list")
@namespace_options
@number_option("--limit", type=click.IntRange(min=1), default=20, help="At most this many runs.")
@json_option
def workflow_list(namespace: str | None, share_dir: Path | None, limit: int, as_json: bool) -> None:
    """List the namespace's most recent runs, newest first, with their live state and progress."""
    from keepwarm.groups.workflow import WorkflowProgress, list_workflows

    runs = list_workflows(namespace=namespace, share_dir=share_dir, limit=limit)
    if as_json:
        emit_json({"workflows": [run.model_dump(mode="json", exclude={"cancelled"}) for run in runs]})
        return
    columns = ("execution_id", "app", "state", "tasks", *WorkflowProgress.model_fields, "created_at")
    cells = [
        [r.execution_id, r.app, r.state, r.total, *r.progress.model_dump().values(), r.created_at]
        for r in runs
    ]
    table(columns, cells, colours=[STATE_COLOURS.get(r.state) for r in runs])


def print_run(status: WorkflowStatus) -> None:
    progress = status.progress
    word = click.style(status.state, fg=STATE_COLOURS.get(status.state))
    counted = ", ".join(
        f"{key} {value}" for key, value in progress.model_dump().items() if value or key != "missing"
    )
    click.echo(
        click.style(status.execution_id, bold=True)
        + f" ({status.app}, namespace {status.namespace}): {word} · {counted} (of {status.total})"
    )
    if status.state == "failed":
        sys.stderr.write(f"see the failed tasks: keepwarm tasks {status.app} --state failed\n")
