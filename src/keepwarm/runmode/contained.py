"""A run contained in a child process of keepwarm's own, ``python -m keepwarm.runmode.runner``.

The parent (``run_in_child``) starts the child with the run's options and streams its events back
into the run log; the child (``child_main``) works the run and answers with its report. A child that
exits without its report is a failed run: the parent records it, saying what the process died of and
what it was working on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from keepwarm.env import Env
from keepwarm.errors import KeepwarmError, RunError
from keepwarm.queue.task import utc_now
from keepwarm.runmode.modes import RunMode
from keepwarm.runmode.plan import SavedPlan
from keepwarm.runmode.record import RunEvent, RunReport, plan_of_run
from keepwarm.runmode.steps import RunJob

EVENT_PREFIX = "KEEPWARM-RUN-EVENT "
CHILD_MODULE = "keepwarm.runmode.runner"


def run_in_child(job: RunJob, python: Path) -> RunReport:
    """The run in a child process of ``python``, its log streamed back; a child that exits without
    its report is a failed run, recorded here."""
    command = [str(python), "-m", CHILD_MODULE, *job.env.child_args()]
    command += ["--mode", str(job.mode.bits), "--run-id", job.run_id]
    if job.workers:
        command += ["--workers", str(job.workers)]
    if job.args:
        command += ["--args", json.dumps(job.args)]
    if job.scheduler:
        command += ["--scheduler", job.scheduler]
    started_at, began = utc_now(), time.perf_counter()
    output: list[str] = []
    last_line = ""
    with job.logging():
        with subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as process:
            assert process.stdout is not None and process.stderr is not None
            stdout = process.stdout
            reader = threading.Thread(target=lambda: output.append(stdout.read()))
            reader.start()
            for line in process.stderr:
                if not line.startswith(EVENT_PREFIX):  # the interpreter's own words: a crash, a warning
                    last_line = line.strip() or last_line
                    job.log.emit("app", line.rstrip("\n"))
                    continue
                job.log.forward(RunEvent.from_json(line[len(EVENT_PREFIX) :]))
            reader.join()
            code = process.wait()
        try:
            document = json.loads("".join(output))
        except ValueError:
            document = None
        if isinstance(document, dict) and code == 0:
            return RunReport.model_validate(document)
        if isinstance(document, dict):  # the run failed, and its process said so
            raise RunError(str(document.get("error")))
        plan = plan_of_run(job.output_dir)
        error = describe_death(job, python, process.pid, code, last_line, plan)
        return job.conclude(job.report(plan, job.env.app_dir, started_at, time.perf_counter() - began, error))


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
    """``python -m keepwarm.runmode.runner``: one run, events on stderr, the report as JSON on stdout."""
    parser = argparse.ArgumentParser(prog=f"python -m {CHILD_MODULE}", description=__doc__)
    parser.add_argument("--app", required=True)
    parser.add_argument("--share-dir")
    parser.add_argument("--namespace")
    parser.add_argument("--mode", required=True)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--args")
    parser.add_argument("--scheduler")
    parser.add_argument("--run-id")
    options = parser.parse_args(argv)

    def forward(event: RunEvent) -> None:
        sys.stderr.write(EVENT_PREFIX + event.to_json() + "\n")
        sys.stderr.flush()

    with os.fdopen(os.dup(1), "w", encoding="utf-8") as report_out:
        os.dup2(2, 1)  # what the app writes to fd 1 goes to the log (stderr), not into the report
        try:
            env = Env(options.app, share_dir=options.share_dir, namespace=options.namespace)
            args = json.loads(options.args) if options.args else None
            mode = RunMode(int(options.mode))
            report = RunJob(
                env, mode, options.workers, args, options.scheduler, forward, options.run_id
            ).execute()
        except KeepwarmError as exc:
            report_out.write(json.dumps({"error": str(exc)}) + "\n")
            return 1
        report_out.write(report.model_dump_json(by_alias=True) + "\n")
    return 0
