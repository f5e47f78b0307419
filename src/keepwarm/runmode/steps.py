"""The steps of one run, in the process that works it: choose the plan, build the code, work the
partitions on their executor, record each outcome, and conclude with the run's record and timing."""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from keepwarm._sys.dirs import ensure_private_dir
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError, RunError, RunFailed
from keepwarm.queue.task import utc_now
from keepwarm.runmode.batch import PartitionJob, PartitionOutcome, WorkerLog
from keepwarm.runmode.executors import partition_results
from keepwarm.runmode.modes import RunMode
from keepwarm.runmode.plan import SavedPlan, build_plan, load_plan, plan_path, save_plan
from keepwarm.runmode.record import (
    EventCallback,
    RunFacts,
    RunLog,
    RunReport,
    build_report,
    new_run_id,
    save_report,
    save_run_plan,
)
from keepwarm.runmode.timings import BENCHMARK_FILE, record_timings


class RunJob:
    """One run of ``env``'s app in ``mode``: what it was asked for, where it writes, how far it got."""

    def __init__(
        self,
        env: Env,
        mode: RunMode,
        workers: int | None,
        args: dict[str, Any] | None,
        scheduler: str | None,
        on_event: EventCallback | None,
        run_id: str | None = None,
    ) -> None:
        self.env, self.mode, self.workers, self.args = env, mode, workers, args
        self.scheduler = scheduler
        self.run_id = run_id or new_run_id()
        self.output_dir = env.data_dir / self.run_id
        self.log = RunLog(env.log_dir / f"run-{self.run_id}.log", on_event)
        self.facts = RunFacts(
            self.run_id, env.app_target, mode, self.output_dir, self.log.path, plan_path(env)
        )

    @contextlib.contextmanager
    def logging(self) -> Iterator[None]:
        """The run's folder made and its log open for appending."""
        ensure_private_dir(self.output_dir)
        with self.log.opened():
            yield

    def execute(self) -> RunReport:
        """Work the run here, record it, and return its report; raises ``RunError`` for a failed run."""
        with self.logging():
            return self._execute()

    def _execute(self) -> RunReport:
        started_at, began = utc_now(), time.perf_counter()
        self.log.emit(
            "info", f"run {self.run_id} of {self.env.app_target} in mode {self.mode} (log {self.log.path})"
        )
        error: str | None = None
        code_dir = self.env.app_dir
        plan: SavedPlan | None = None
        try:
            plan = self.plan()
            self.log.total = plan.partition_count
            code_dir = self.code_dir()
            for item in partition_results(self, self.jobs(plan, code_dir), code_dir):
                self.record(item)
        except KeepwarmError as exc:
            error = str(exc)
        except Exception as exc:  # a failure of keepwarm's own machinery: its traceback goes to the log
            error = f"{type(exc).__name__}: {exc}"
            self.log.write("".join(traceback.format_exception(exc)))
        return self.conclude(self.report(plan, code_dir, started_at, time.perf_counter() - began, error))

    def report(
        self, plan: SavedPlan | None, code_dir: Path, started_at: str, seconds: float, error: str | None
    ) -> RunReport:
        """The run's report, as far as it got."""
        return build_report(
            self.facts,
            plan,
            self.log.outcomes,
            code_dir=code_dir,
            started_at=started_at,
            seconds=seconds,
            error=error,
        )

    def conclude(self, report: RunReport) -> RunReport:
        """Write the run's record; raise ``RunFailed`` for a failed run, record the timing of a done one."""
        error = report.error
        save_report(self.output_dir, report)
        if error:
            self.log.emit("warning", f"run {self.run_id} failed: {error}")
            raise RunFailed(
                f"run {self.run_id} of {self.env.app_target} failed: {error}; log: {self.log.path}", report
            )
        self.log.emit(
            "info",
            f"run {self.run_id} done in {report.seconds:.3f}s: {report.rows} rows in {self.output_dir}",
        )
        recorded = record_timings(self.env, [report.timing_entry()])
        self.log.emit("info", f"timing recorded in {recorded.path}")
        for mode, reason in recorded.dropped.items():
            self.log.emit("warning", f"{BENCHMARK_FILE}: the entry of {mode} was dropped: {reason}")
        return report

    def plan(self) -> SavedPlan:
        """The saved work plan, unless it was built from other ``[args]`` or another number of
        workers (or there is none): then a fresh one, saved; either is kept in the run's folder."""
        saved = load_plan(self.env)
        fresh = build_plan(
            self.env, workers=self.workers or (len(saved.workers) if saved else None), args=self.args
        )
        reason = _why_not_saved(saved, fresh)
        if reason is None:
            assert saved is not None
            plan = saved
            moves = ", ".join(f"{m.partition} to {m.to_worker}" for m in saved.moves)
            moved = f"; moved: {moves}" if moves else ""
            self.log.emit(
                "info", f"work plan: {plan_path(self.env)} ({plan.partition_count} partitions{moved})"
            )
        else:
            plan = fresh
            save_plan(self.env, plan)
            self.log.emit("info", f"work plan built ({reason}): {plan_path(self.env)}")
            if saved is not None and saved.moves:
                self.log.emit("warning", f"the {len(saved.moves)} moves of the saved work plan were not kept")
        if not plan.balanced:
            self.log.emit("warning", f"the work plan is unbalanced: imbalance {plan.imbalance():.2f}")
        save_run_plan(self.output_dir, plan)
        return plan

    def code_dir(self) -> Path:
        """The folder of the app's code the partitions run: the app's own, or its compiled copy."""
        if not self.mode.cython:
            return self.env.app_dir
        from keepwarm.runmode.cython_build import compiled_copy

        folder = compiled_copy(self.env, on_output=lambda line: self.log.emit("info", line))
        self.log.emit("info", f"cython: the compiled copy of the app is {folder}")
        return folder

    def jobs(self, plan: SavedPlan, code_dir: Path) -> dict[str, list[PartitionJob]]:
        """Each plan worker's partitions, in the plan's order, as jobs for an executor."""
        jobs: dict[str, list[PartitionJob]] = {worker: [] for worker in plan.workers}
        for worker, index, partition in plan.jobs():
            jobs[worker].append(
                PartitionJob(
                    run_id=self.run_id,
                    app_dir=str(code_dir),
                    share_dir=str(self.env.share_root),
                    namespace=self.env.namespace,
                    worker=worker,
                    index=index,
                    partition=partition.model_dump(mode="json"),
                    output_dir=str(self.output_dir),
                    args=plan.args,
                )
            )
        return jobs

    def record(self, item: PartitionOutcome | WorkerLog) -> None:
        """Log what an executor yielded; a failed partition fails the run."""
        if isinstance(item, WorkerLog):
            for line in item.log.splitlines():
                self.log.emit("app", f"[{item.worker}] {line}")
            return
        self.log.outcomes.append(item)
        for line in item.log.splitlines():
            self.log.emit("app", f"[{item.worker} {item.name}] {line}")
        if item.status == "failed":
            self.log.write(item.traceback or "")
            raise RunError(item.failure())
        started = f", start() {item.start_seconds:.3f}s" if item.start_seconds is not None else ""
        rows = f"{item.rows} rows" if item.rows is not None else (item.file or "no output")
        self.log.emit(
            "partition",
            f"{item.name} done on {item.worker} (pid {item.pid}): {rows} in {item.seconds:.3f}s{started}",
            item,
        )


def _why_not_saved(saved: SavedPlan | None, fresh: SavedPlan) -> str | None:
    """Why the saved plan cannot be run as it is (None: it can)."""
    if saved is None:
        return "no saved work plan"
    if saved.args != fresh.args:
        return "the saved work plan was built from other [args]"
    if len(saved.workers) != len(fresh.workers):
        return f"the saved work plan has {len(saved.workers)} workers, this run {len(fresh.workers)}"
    return None
