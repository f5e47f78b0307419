"""The queue's verbs: submit, result, tasks, cancel, retry."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keepwarm.cli.common import (
    UserError,
    emit_json,
    finite,
    json_object,
    number_option,
    read_text,
    say,
    service_of,
    service_verb,
    table,
    timeout_option,
)
from keepwarm.errors import ResultTimeout
from keepwarm.queue.task import TASK_STATES

if TYPE_CHECKING:
    from keepwarm.queue.task import TaskRecord

RESULT_TIMEOUT = "Seconds to wait for results [default: forever]."


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
    outcome = service_of(app, apps_path, namespace).outcome(task_id, timeout, watch_delivery=True)
    record = outcome.record
    if record is None:
        raise ResultTimeout(str(outcome.gave_up))
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
@number_option("--limit", type=click.IntRange(min=1), default=100, help="At most this many per state.")
def tasks(
    app: str, apps_path: Path | None, namespace: str | None, as_json: bool, state: str | None, limit: int
) -> None:
    """List tasks per state (newest finished first), with the queue's counts."""
    service = service_of(app, apps_path, namespace)
    rows = [row.to_json_dict() for row in service.tasks(state, limit)]
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
    not_cancelled = cancelled.not_cancelled
    if as_json:
        emit_json({"cancelled": list(cancelled), "not_cancelled": not_cancelled})
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


def _record_json(record: TaskRecord) -> dict[str, Any]:
    return {
        "task_id": record.task_id,
        "status": record.status,
        "result": record.result,
        "error": record.error,
        "traceback": record.traceback,
        "runtime_sec": record.runtime_sec,
    }
