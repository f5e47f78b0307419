"""Running a pipeline: each step is ``python <file>`` in a child process, with the app folder as its
working directory, one after another; the first step that fails stops the run.

Each step's output (stdout and stderr, interleaved as they came) is kept in
``<log_dir>/pipeline/<file>.log`` and its outcome in ``<log_dir>/pipeline/<file>.json``, replaced at
the step's next run, so that the page and ``keepwarm pipeline show`` can say how each step last went.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from keepwarm._sys.atomic import write_atomic
from keepwarm.env import Env
from keepwarm.errors import PipelineError, StepNotFound
from keepwarm.pipeline.step_process import run_step_process
from keepwarm.pipeline.steps import Step, current_args, load_pipeline, stale, step_number

LOG_FOLDER = "pipeline"

StepStatus = Literal["ok", "failed", "timed out", "not run"]


class StepOutcome(BaseModel):
    """How one step's last run went."""

    number: int
    file: str
    status: StepStatus
    exit_code: int | None = None
    seconds: float | None = None
    started_at: str | None = None
    log: str = ""
    stale: str = ""  # the [args] that changed since the step was generated ("" when none)
    timeout_sec: float | None = None  # the time limit it ran under (None: none)

    def describe(self) -> str:
        """``ok: exit code 0 in 1.20s, at …``, or ``timed out after 5 s (killed), at …``."""
        if self.status == "not run":
            return "not run"
        at = f", at {self.started_at}" if self.started_at else ""
        if self.status == "timed out":
            return f"timed out after {self.timeout_sec:g} s (killed){at}"
        return f"{self.status}: exit code {self.exit_code} in {self.seconds or 0:.2f}s{at}"


class PipelineRun(BaseModel):
    """A run of the whole pipeline, or of one step: each step's outcome, in order."""

    app: str
    steps: list[StepOutcome]
    ok: bool
    message: str


def log_folder(env: Env) -> Path:
    return env.log_dir / LOG_FOLDER


def _stem(step: Step) -> str:
    return step.file.replace("/", "__")


def step_log(env: Env, step: Step) -> Path:
    """Where ``step``'s output of its last run is kept."""
    return log_folder(env) / f"{_stem(step)}.log"


def last_outcome(env: Env, step: Step) -> StepOutcome | None:
    """How ``step`` went the last time it ran (None: never, or its record is unreadable)."""
    try:
        return StepOutcome.model_validate_json((log_folder(env) / f"{_stem(step)}.json").read_bytes())
    except (OSError, ValidationError):
        return None


def step_timeout(step: Step, timeout: float | None) -> float | None:
    """The time limit of ``step``: the tighter of its own ``timeout_sec`` and the run's ``timeout``
    (None: neither sets one, no limit)."""
    limits = [limit for limit in (step.timeout_sec, timeout) if limit is not None]
    return min(limits) if limits else None


def run_step(
    env: Env,
    number: int,
    step: Step,
    on_output: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> StepOutcome:
    """``python <file>`` in the app folder, its output kept in its log (and given to ``on_output``
    line by line), killed past its time limit (:func:`step_timeout`); its exit code, seconds, status."""
    folder = log_folder(env)
    folder.mkdir(parents=True, exist_ok=True)
    log = step_log(env, step)
    changed = stale(env, step, current_args(env))
    limit = step_timeout(step, timeout)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    began = time.perf_counter()
    path = env.app_dir / step.file
    timed_out = False
    if not path.is_file():
        log.write_text(f"snippet file {path} does not exist: save it again, or remove the step\n")
        code = 127
    else:
        script = path.name if path.parent == env.app_dir else str(path)
        ended = run_step_process(script, env.app_dir, log, on_output, limit)
        code, timed_out = ended.code, ended.timed_out
    outcome = StepOutcome(
        number=number,
        file=step.file,
        status="timed out" if timed_out else "ok" if code == 0 else "failed",
        exit_code=code,
        seconds=round(time.perf_counter() - began, 3),
        started_at=started,
        log=str(log),
        stale=changed.describe(),
        timeout_sec=limit,
    )
    write_atomic(folder / f"{_stem(step)}.json", outcome.model_dump_json(indent=2).encode())
    return outcome


def run_pipeline(
    env: Env,
    step: int | None = None,
    on_output: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> PipelineRun:
    """Run every step in order (or only step number ``step``), stopping at the first that fails.

    Returns each step's outcome (those after a failure: ``not run``); ``ok`` is whether every step
    run succeeded. ``on_output`` gets each line the steps print, as it comes. ``timeout``: seconds any
    one step may run (a step's own ``timeout_sec`` may be tighter); a step past it is killed, its
    outcome ``timed out``, and the run stops there like at any failure.
    """
    if timeout is not None and not timeout > 0:
        raise PipelineError(
            f"a step's timeout must be more than 0 seconds, not {timeout}: give a number of seconds"
        )
    pipeline = load_pipeline(env)
    if not pipeline.steps:
        raise StepNotFound(
            f"{env.app_target}'s pipeline has no steps ({env.app_dir / 'pipeline.toml'}); add one on the "
            f"PIPELINE page, or: keepwarm pipeline add {env.app_target} FILE"
        )
    chosen = range(len(pipeline.steps))
    if step is not None:
        index = step_number(pipeline, env, step)
        chosen = range(index, index + 1)
    outcomes: list[StepOutcome] = []
    failed: StepOutcome | None = None
    for index in chosen:
        current = pipeline.steps[index]
        if failed is not None:
            outcomes.append(StepOutcome(number=index + 1, file=current.file, status="not run"))
            continue
        if on_output is not None:
            on_output(f"== step {index + 1}: python {current.file}")
        outcome = run_step(env, index + 1, current, on_output, timeout)
        outcomes.append(outcome)
        if outcome.status in ("failed", "timed out"):
            failed = outcome
    return PipelineRun(
        app=env.app_target, steps=outcomes, ok=failed is None, message=_message(outcomes, failed)
    )


def _message(outcomes: list[StepOutcome], failed: StepOutcome | None) -> str:
    ran = [o for o in outcomes if o.status != "not run"]
    seconds = sum(o.seconds or 0 for o in ran)
    if failed is None:
        steps = "1 step" if len(ran) == 1 else f"{len(ran)} steps"
        return f"{steps} ok in {seconds:.2f}s"
    skipped = [str(o.number) for o in outcomes if o.status == "not run"]
    after = f"; not run: step {', '.join(skipped)}" if skipped else ""
    how = (
        f"timed out after {failed.timeout_sec:g} s and was killed"
        if failed.status == "timed out"
        else f"failed with exit code {failed.exit_code} after {failed.seconds:.2f}s"
    )
    return f"step {failed.number} ({failed.file}) {how}; the run stopped there{after}; its log: {failed.log}"
