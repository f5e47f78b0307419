"""A run contained in a child process of keepwarm's own, ``python -m keepwarm.runmode.runner``.

The parent (``run_in_child``) starts the child with the run's options and streams its events back
into the run log; the child (``child_main``) works the run and answers with its report. A child that
exits without its report is a failed run: the parent records it, saying what the process died of and
what it was working on. ``distribute_in_child`` has the child build and save the work plan only (the
app's manager runs there, never in the caller), and answer with it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from keepwarm import errors
from keepwarm._sys.child import (
    child_command,
    child_parser,
    flag,
    keep_stdout_for_reports,
    last_report,
    parse_report,
    report,
)
from keepwarm.env import Env, app_python
from keepwarm.errors import KeepwarmError, PlanError, RunError, RunFailed
from keepwarm.queue.task import utc_now
from keepwarm.runmode.modes import RunMode
from keepwarm.runmode.plan import SavedPlan, distribute, plan_from_json
from keepwarm.runmode.record import RUN_RECORD, RunEvent, RunReport, plan_of_run
from keepwarm.runmode.steps import RunJob

CHILD_MODULE = "keepwarm.runmode.runner"
# what the child reports (keepwarm._sys.child's line protocol): each event of the run on stderr,
# in order with the app's own output, then on stdout the run's report or why it failed
EVENT, DONE, FAILED = "run-event", "run-done", "run-failed"
PLANNED = "plan-done"  # what the child of distribute_in_child answers: the plan it built and saved


def run_in_child(job: RunJob, python: Path) -> RunReport:
    """The run in a child process of ``python``, its log streamed back; a child that exits without
    its report is a failed run, recorded here."""
    started_at, began = utc_now(), time.perf_counter()
    output: list[str] = []
    with job.logging():
        with subprocess.Popen(
            _child_command(job, python),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stdout is not None and process.stderr is not None
            stdout = process.stdout
            reader = threading.Thread(target=lambda: output.append(stdout.read()))
            reader.start()
            last_line = _relay_log(process.stderr, job)
            reader.join()
            code = process.wait()
        answer = last_report("".join(output), DONE, FAILED)
        if answer is not None and answer.kind == DONE and code == 0:
            return RunReport.model_validate(answer.fields["report"])
        if answer is not None:  # the run failed, and its process said so (and kept its record)
            message = str(answer.fields.get("error"))
            try:
                recorded = RunReport.model_validate_json((job.output_dir / RUN_RECORD).read_bytes())
            except (OSError, ValueError):
                raise RunError(message) from None  # it failed before it had a record
            raise RunFailed(message, recorded)
        plan = plan_of_run(job.output_dir)
        error = describe_death(job, python, process.pid, code, last_line, plan)
        return job.conclude(job.report(plan, job.env.app_dir, started_at, time.perf_counter() - began, error))


def distribute_in_child(
    env: Env, *, workers: int | None = None, args: dict[str, Any] | None = None
) -> SavedPlan:
    """``distribute`` in a child process of the app's interpreter: the plan built by the app's
    manager there and saved; an error of the app is raised here as there, and a child that dies (the
    manager ended its interpreter) is a ``PlanError`` that says so, with nothing saved."""
    python = app_python(env)
    options = ["--plan-only", *flag("--workers", workers)]
    options += flag("--args", json.dumps(args) if args else None)
    with subprocess.Popen(
        child_command(CHILD_MODULE, *options, env=env, python=python),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        stdout, stderr = process.communicate()
    answer = last_report(stdout, PLANNED, FAILED)
    if answer is not None and answer.kind == PLANNED and process.returncode == 0:
        return plan_from_json(answer.fields["plan"])
    if answer is not None:
        raise _error_of(str(answer.fields.get("error_type")), str(answer.fields.get("error")))
    code = process.returncode
    how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    last_line = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    said = f"; its last words on stderr: {last_line}" if last_line else ""
    raise PlanError(
        f"the process building the work plan of {env.app_target} with its manager "
        f"({env.settings.app.manager}, pid {process.pid}) {how} before it answered (os._exit, or a "
        f"crash of the interpreter): no plan was saved{said}"
    )


def _error_of(name: str, message: str) -> KeepwarmError:
    """The error a child reported, as the class it raised there (a ``PlanError`` when unknown here)."""
    kind = getattr(errors, name, None)
    if isinstance(kind, type) and issubclass(kind, KeepwarmError):
        try:
            return kind(message)
        except TypeError:  # a class whose constructor takes more than a message
            pass
    return PlanError(message)


def _child_command(job: RunJob, python: Path) -> list[str]:
    options = ["--mode", str(job.mode.bits), "--run-id", job.run_id, *flag("--workers", job.workers or None)]
    options += flag("--args", json.dumps(job.args) if job.args else None)
    options += flag("--scheduler", job.scheduler or None)
    return child_command(CHILD_MODULE, *options, env=job.env, python=python)


def _relay_log(stderr: IO[str], job: RunJob) -> str:
    """Pass the child's events on and log every other line it writes; returns its last such line."""
    last_line = ""
    for line in stderr:
        event = parse_report(line)
        if event is None or event.kind != EVENT:  # the interpreter's own words: a crash, a warning
            last_line = line.strip() or last_line
            job.log.emit("app", line.rstrip("\n"))
            continue
        job.log.forward(RunEvent.from_json_dict(event.fields["event"]))
    return last_line


def describe_death(
    job: RunJob, python: Path, pid: int, code: int, last_line: str, plan: SavedPlan | None
) -> str:
    """What became of a run whose process exited without its report (``plan``: None when it died
    before it had one)."""
    how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    said = f"; its last words on stderr: {last_line}" if last_line else ""
    if plan is None:
        isolated = python != Path(sys.executable)
        hint = f"; reinstall the app: keepwarm install {job.env.app_target}" if isolated else ""
        return f"the run's interpreter {python} (pid {pid}) {how} before the run had a plan{said}{hint}"
    jobs = plan.jobs()
    done = len(job.log.outcomes)
    progress = f"{done} of {len(jobs)} partitions done"
    if job.mode.executor != "python":
        return f"the run's process (pid {pid}) {how}, {progress}{said}"
    working = ""
    if done < len(jobs):
        worker, _, partition = jobs[done]
        working = f" while working partition {partition.name} on {worker}"
    return (
        f"the run's process (pid {pid}) {how}{working}, {progress}: mode {job.mode} works the "
        f"partitions in that process, so the app ended it (os._exit, or a crash of the interpreter){said}"
    )


def child_main(argv: list[str] | None = None) -> int:
    """``python -m keepwarm.runmode.runner``: one run, its events reported on stderr, then its report
    (or why it failed) on stdout."""
    parser = child_parser(CHILD_MODULE, __doc__)
    parser.add_argument("--mode")
    parser.add_argument("--plan-only", action="store_true")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--args")
    parser.add_argument("--scheduler")
    parser.add_argument("--run-id")
    options = parser.parse_args(argv)

    def forward(event: RunEvent) -> None:
        report(EVENT, stream=sys.stderr, event=event.to_json_dict())

    with keep_stdout_for_reports() as report_out:  # what the app writes to fd 1 goes to the log
        try:
            env = Env.of_child(options)
            args = json.loads(options.args) if options.args else None
            if options.plan_only:
                plan = distribute(env, workers=options.workers, args=args)
                report(PLANNED, stream=report_out, plan=plan.to_json_dict())
                return 0
            mode = RunMode(int(options.mode))
            job = RunJob(env, mode, options.workers, args, options.scheduler, forward, options.run_id)
            done = job.execute()
        except KeepwarmError as exc:
            report(FAILED, stream=report_out, error=str(exc), error_type=type(exc).__name__)
            return 1
        report(DONE, stream=report_out, report=done.to_json_dict())
    return 0
