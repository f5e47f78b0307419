"""Run mode: execute the saved work plan once, in the chosen mode, and keep what it produced.

``run(env, mode)`` takes the saved work plan (building it when there is none, or when it was built
from other ``[args]`` or another number of workers), and works every partition on its plan worker:

- ``python``: in this process, one plan worker after the other;
- ``pool``: one process of keepwarm's own per plan worker, all in parallel (``pool.py``: each starts
  cold, and never from the caller's script);
- ``dask``: one task per partition on the Dask backend's cluster (``keepwarm.backends.cluster``), each plan
  worker pinned to one Dask worker, the app's code shipped to the workers with ``UploadDirectory``;
- ``cython`` on any of these: the same, with the app's worker module compiled (``cython_build.py``).

Each partition's output lands in ``<share_dir>/<namespace>/data/<app_target>/<run_id>/`` beside the
run's record (``run.json``) and the plan it executed; the run log, streamed live through ``on_event``,
is ``<log_dir>/run-<run_id>.log``. An app with ``[cluster] isolated = true`` runs in its own virtual
environment (made by ``keepwarm install``): the whole run happens in that interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from keepwarm._sys.atomic import write_atomic
from keepwarm.env import Env, ensure_private_dir
from keepwarm.errors import KeepwarmError
from keepwarm.queue.task import utc_now
from keepwarm.runmode.batch import (
    PartitionJob,
    PartitionOutcome,
    WorkerLog,
    borrowed_imports,
    finish_worker,
    run_partition,
)
from keepwarm.runmode.modes import RunMode, require_available, settings_mode
from keepwarm.runmode.plan import SavedPlan, build_plan, load_plan, plan_from_json, plan_path, save_plan
from keepwarm.runmode.timings import BENCHMARK_FILE, BenchmarkEntry, record_timings, timing

RUN_SCHEMA = "keepwarm.runmode.v1"
RUN_RECORD = "run.json"
EVENT_PREFIX = "KEEPWARM-RUN-EVENT "
DASK_LIVENESS_SEC = 2.0


class RunError(KeepwarmError):
    """A run failed: the message names the partition, its worker and the error; the log has more."""


@dataclass(frozen=True)
class RunEvent:
    """One line of a run's live log. ``kind``: ``info``, ``warning``, ``partition`` (one finished:
    ``done`` of ``total``), ``app`` (the app's own output)."""

    kind: Literal["info", "warning", "partition", "app"]
    message: str
    done: int = 0
    total: int = 0
    outcome: PartitionOutcome | None = None  # with kind ``partition``: the partition that finished

    def to_json(self) -> str:
        outcome = self.outcome.model_dump(mode="json") if self.outcome is not None else None
        return json.dumps({**self.__dict__, "outcome": outcome})

    @classmethod
    def from_json(cls, text: str) -> RunEvent:
        document = json.loads(text)
        outcome = document.pop("outcome", None)
        return cls(**document, outcome=PartitionOutcome.model_validate(outcome) if outcome else None)


EventCallback = Callable[[RunEvent], None]


class RunReport(BaseModel):
    """A finished (or failed) run, as saved in ``<output_dir>/run.json``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str = Field(default=RUN_SCHEMA, alias="schema")
    run_id: str
    app: str
    status: Literal["done", "failed"]
    mode: str
    mode_bits: int
    executor: str
    workers: list[str]
    host: str
    python: str
    started_at: str
    finished_at: str
    seconds: float
    rows: int
    columns: list[str]
    output_dir: str
    log_path: str
    plan_path: str
    moves: int
    code_dir: str
    args: dict[str, Any] | None = None  # of the plan it ran (None before the plan was made)
    error: str | None = None
    partitions: list[PartitionOutcome]

    @property
    def nodes(self) -> int:
        return len(self.workers)

    def timing_entry(self, digest: str | None = None) -> BenchmarkEntry:
        """This run's entry of ``benchmark.json``."""
        return BenchmarkEntry(
            variant=self.mode_bits,
            nodes=self.nodes,
            node=self.host,
            mode=self.mode,
            timing=timing(self.seconds),
            seconds=self.seconds,
            date=self.finished_at,
            args=self.args,
            run_id=self.run_id,
            rows=self.rows,
            digest=digest,
        )

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


# ---------------------------------------------------------------- the run


def run(
    env: Env,
    mode: str | int | RunMode | None = None,
    *,
    workers: int | None = None,
    args: dict[str, Any] | None = None,
    scheduler: str | None = None,
    on_event: EventCallback | None = None,
    contained: bool = False,
) -> RunReport:
    """Run the app's work plan once in ``mode`` (default: what ``[cluster]`` asks for) and return
    the run's report; raises ``RunError`` (or ``ModeError`` before anything starts).

    ``contained``: the modes that work partitions in this process (python, cython) run them in a
    child process of keepwarm's own instead, so that an app that ends its interpreter (``os._exit``,
    a crash) fails the run, recorded as such, instead of ending the caller (the CLI does this).
    A run on a Dask cluster that keepwarm starts here always runs in such a process, so that the
    cluster's worker processes start from keepwarm, never from the caller's script.
    """
    chosen = RunMode.parse(mode) if mode is not None else settings_mode(env.settings.cluster)
    require_available(chosen)
    job = _Run(env, chosen, workers, args, scheduler, on_event)
    if env.settings.cluster.isolated and not _in_app_venv(env):
        from keepwarm.runmode.installer import app_python

        job.emit("info", f"isolated app: running in its virtual environment ({app_python(env)})")
        return job.execute_in(app_python(env))
    cluster = env.settings.cluster
    local_cluster = chosen.dask and not (scheduler or cluster.scheduler or cluster.hosts)
    if local_cluster or (contained and chosen.executor == "python"):
        return job.execute_in(Path(sys.executable))
    return job.execute()


class _Run:
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
        self.scheduler, self.on_event = scheduler, on_event
        self.run_id = run_id or new_run_id()
        self.output_dir = env.data_dir / self.run_id
        self.log_path = env.log_dir / f"run-{self.run_id}.log"
        self.outcomes: list[PartitionOutcome] = []
        self.total = 0
        self._log: IO[str] | None = None

    def emit(
        self,
        kind: Literal["info", "warning", "partition", "app"],
        message: str,
        outcome: PartitionOutcome | None = None,
    ) -> None:
        event = RunEvent(kind, message, len(self.outcomes), self.total, outcome)
        if self._log is not None:
            prefix = {"warning": "WARNING ", "app": "| "}.get(kind, "")
            self._log.write(f"{utc_now()} {prefix}{message}\n")
            self._log.flush()
        if self.on_event is not None:
            self.on_event(event)

    @contextlib.contextmanager
    def logging(self) -> Iterator[None]:
        """The run log open for appending (a run in a child process appends to it too)."""
        ensure_private_dir(self.env.log_dir)
        ensure_private_dir(self.output_dir)
        with open(self.log_path, "a", encoding="utf-8") as log:
            self._log = log
            try:
                yield
            finally:
                self._log = None

    def execute(self) -> RunReport:
        with self.logging():
            return self._execute()

    def _execute(self) -> RunReport:
        started_at, began = utc_now(), time.perf_counter()
        self.emit(
            "info", f"run {self.run_id} of {self.env.app_target} in mode {self.mode} (log {self.log_path})"
        )
        error: str | None = None
        code_dir = self.env.app_dir
        plan: SavedPlan | None = None
        try:
            plan = self.plan()
            self.total = plan.partition_count
            code_dir = self.code_dir()
            for item in self.executor(plan, code_dir):
                self.record(item)
        except KeepwarmError as exc:
            error = str(exc)
        except Exception as exc:  # a failure of keepwarm's own machinery: its traceback goes to the log
            error = f"{type(exc).__name__}: {exc}"
            self.write_log("".join(traceback.format_exception(exc)))
        return self.conclude(self.report(plan, code_dir, started_at, time.perf_counter() - began, error))

    def conclude(self, report: RunReport) -> RunReport:
        """Write the run's record; raise ``RunError`` for a failed run."""
        error = report.error
        write_atomic(self.output_dir / RUN_RECORD, report.model_dump_json(by_alias=True, indent=2).encode())
        if error:
            self.emit("warning", f"run {self.run_id} failed: {error}")
            raise RunError(
                f"run {self.run_id} of {self.env.app_target} failed: {error}; log: {self.log_path}"
            )
        self.emit(
            "info",
            f"run {self.run_id} done in {report.seconds:.3f}s: {report.rows} rows in {self.output_dir}",
        )
        recorded = record_timings(self.env, [report.timing_entry()])
        self.emit("info", f"timing recorded in {recorded.path}")
        for mode, reason in recorded.dropped.items():
            self.emit("warning", f"{BENCHMARK_FILE}: the entry of {mode} was dropped: {reason}")
        return report

    def execute_in(self, python: Path) -> RunReport:
        """The run in a child process (``python -m keepwarm.runmode.runner`` of ``python``), its log streamed
        back; a child that exits without its report is a failed run, recorded here."""
        command = [str(python), "-m", "keepwarm.runmode.runner", *self.env.child_args()]
        command += ["--mode", str(self.mode.bits), "--run-id", self.run_id]
        if self.workers:
            command += ["--workers", str(self.workers)]
        if self.args:
            command += ["--args", json.dumps(self.args)]
        if self.scheduler:
            command += ["--scheduler", self.scheduler]
        started_at, began = utc_now(), time.perf_counter()
        output: list[str] = []
        last_line = ""
        with self.logging():
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
                        self.emit("app", line.rstrip("\n"))
                        continue
                    event = RunEvent.from_json(line[len(EVENT_PREFIX) :])
                    self.total = event.total or self.total
                    if event.outcome is not None:
                        self.outcomes.append(event.outcome)
                    if self.on_event is not None:
                        self.on_event(event)
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
            plan = _plan_of_run(self.output_dir)
            error = self.death(python, process.pid, code, last_line, plan)
            return self.conclude(
                self.report(plan, self.env.app_dir, started_at, time.perf_counter() - began, error)
            )

    def death(self, python: Path, pid: int, code: int, last_line: str, plan: SavedPlan | None) -> str:
        """What became of a run whose process exited without its report (``plan``: None when it died
        before it had one)."""
        how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        said = f"; its last words on stderr: {last_line}" if last_line else ""
        if plan is None:
            isolated = python != Path(sys.executable)
            hint = f"; reinstall the app: keepwarm install {self.env.app_target}" if isolated else ""
            return f"the run's interpreter {python} (pid {pid}) {how} before the run had a plan{said}{hint}"
        jobs = plan.jobs()
        done = f"{len(self.outcomes)} of {len(jobs)} partitions done"
        if self.mode.executor != "python":
            return f"the run's process (pid {pid}) {how}, {done}{said}"
        working = ""
        if len(self.outcomes) < len(jobs):
            worker, _, partition = jobs[len(self.outcomes)]
            working = f" while working partition {partition.name} on {worker}"
        return (
            f"the run's process (pid {pid}) {how}{working}, {done}: mode {self.mode} works the "
            f"partitions in that process, so the app ended it (os._exit, or a crash of the interpreter){said}"
        )

    def write_log(self, text: str) -> None:
        if self._log is not None:
            self._log.write(text)
            self._log.flush()

    def plan(self) -> SavedPlan:
        saved = load_plan(self.env)
        fresh = build_plan(
            self.env, workers=self.workers or (len(saved.workers) if saved else None), args=self.args
        )
        reason = None
        if saved is None:
            reason = "no saved work plan"
        elif saved.args != fresh.args:
            reason = "the saved work plan was built from other [args]"
        elif len(saved.workers) != len(fresh.workers):
            reason = f"the saved work plan has {len(saved.workers)} workers, this run {len(fresh.workers)}"
        if reason is None:
            assert saved is not None
            plan = saved
            moves = ", ".join(f"{m.partition} to {m.to_worker}" for m in saved.moves)
            moved = f"; moved: {moves}" if moves else ""
            self.emit("info", f"work plan: {plan_path(self.env)} ({plan.partition_count} partitions{moved})")
        else:
            plan = fresh
            save_plan(self.env, plan)
            self.emit("info", f"work plan built ({reason}): {plan_path(self.env)}")
            if saved is not None and saved.moves:
                self.emit("warning", f"the {len(saved.moves)} moves of the saved work plan were not kept")
        if not plan.balanced:
            self.emit("warning", f"the work plan is unbalanced: imbalance {plan.imbalance():.2f}")
        write_atomic(self.output_dir / "work_plan.json", json.dumps(plan.to_json_dict(), indent=2).encode())
        return plan

    def code_dir(self) -> Path:
        if not self.mode.cython:
            return self.env.app_dir
        from keepwarm.runmode.cython_build import compiled_copy

        folder = compiled_copy(self.env, on_output=lambda line: self.emit("info", line))
        self.emit("info", f"cython: the compiled copy of the app is {folder}")
        return folder

    def jobs(self, plan: SavedPlan, code_dir: Path) -> dict[str, list[PartitionJob]]:
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

    def executor(self, plan: SavedPlan, code_dir: Path) -> Iterator[PartitionOutcome | WorkerLog]:
        jobs = self.jobs(plan, code_dir)
        if self.mode.executor == "dask":
            return _on_dask(self, jobs, code_dir)
        if self.mode.executor == "pool":
            from keepwarm.runmode.pool import in_pools

            return in_pools(self.run_id, jobs)
        return _in_process(self.run_id, jobs, code_dir)

    def record(self, item: PartitionOutcome | WorkerLog) -> None:
        if isinstance(item, WorkerLog):
            for line in item.log.splitlines():
                self.emit("app", f"[{item.worker}] {line}")
            return
        self.outcomes.append(item)
        for line in item.log.splitlines():
            self.emit("app", f"[{item.worker} {item.name}] {line}")
        if item.status == "failed":
            self.write_log(item.traceback or "")
            raise RunError(item.failure())
        started = f", start() {item.start_seconds:.3f}s" if item.start_seconds is not None else ""
        rows = f"{item.rows} rows" if item.rows is not None else (item.file or "no output")
        self.emit(
            "partition",
            f"{item.name} done on {item.worker} (pid {item.pid}): {rows} in {item.seconds:.3f}s{started}",
            item,
        )

    def report(
        self, plan: SavedPlan | None, code_dir: Path, started_at: str, seconds: float, error: str | None
    ) -> RunReport:
        outcomes = sorted(self.outcomes, key=lambda o: o.index)
        columns: list[str] = []
        for outcome in outcomes:
            columns += [c for c in outcome.columns if c not in columns]
        return RunReport(
            run_id=self.run_id,
            app=self.env.app_target,
            status="failed" if error else "done",
            mode=self.mode.name,
            mode_bits=self.mode.bits,
            executor=self.mode.executor,
            workers=list(plan.workers) if plan else [],
            host=socket.gethostname(),
            python=sys.executable,
            started_at=started_at,
            finished_at=utc_now(),
            seconds=round(seconds, 6),
            rows=sum(o.rows or 0 for o in outcomes),
            columns=columns,
            output_dir=str(self.output_dir),
            log_path=str(self.log_path),
            plan_path=str(plan_path(self.env)),
            moves=len(plan.moves) if plan else 0,
            code_dir=str(code_dir),
            args=plan.args if plan else None,
            error=error,
            partitions=outcomes,
        )


# ---------------------------------------------------------------- executors


def _in_process(
    run_id: str, jobs: dict[str, list[PartitionJob]], code_dir: Path
) -> Iterator[PartitionOutcome | WorkerLog]:
    with borrowed_imports(code_dir):
        try:
            for worker, worker_jobs in jobs.items():
                for job in worker_jobs:
                    yield run_partition(job)
                yield WorkerLog(worker, finish_worker(run_id, worker))
        finally:
            for worker in jobs:
                finish_worker(run_id, worker)


def _on_dask(
    run: _Run, jobs: dict[str, list[PartitionJob]], code_dir: Path
) -> Iterator[PartitionOutcome | WorkerLog]:
    from keepwarm.backends.staging import open_run_cluster, ship_to_dask, stage_app

    folder = code_dir if run.mode.cython else stage_app(run.env)
    began = time.perf_counter()
    handle = open_run_cluster(run.env, workers=len(jobs), scheduler=run.scheduler)
    try:
        client = handle.client
        shipped = ship_to_dask(client, folder)
        addresses = dask_worker_addresses(client)
        if not addresses:
            raise RunError(f"the Dask cluster at {handle.address} has no worker")
        placement = {worker: addresses[i % len(addresses)] for i, worker in enumerate(jobs)}
        run.emit(
            "info",
            f"dask: {len(addresses)} workers at {handle.address} ready in "
            f"{time.perf_counter() - began:.2f}s; code shipped as {shipped}",
        )
        futures = []
        for worker, worker_jobs in jobs.items():
            for position, job in enumerate(worker_jobs):
                future = client.submit(
                    run_partition,
                    replace(job, shipped=shipped),
                    key=f"keepwarm-{run.run_id}-{job.index:05d}",
                    workers=[placement[worker]],
                    allow_other_workers=False,
                    priority=len(worker_jobs) - position,  # a worker's partitions in the plan's order
                    pure=False,
                )
                futures.append(future)
        finished: queue.Queue[Any] = queue.Queue()
        for future in futures:
            future.add_done_callback(finished.put)
        for _ in futures:
            while True:
                try:
                    future = finished.get(timeout=DASK_LIVENESS_SEC)
                    break
                except queue.Empty:
                    _check_placement(client, placement)
            yield _result_while_placed(future, client, placement)
        stops = {
            client.submit(
                finish_worker,
                run.run_id,
                worker,
                key=f"keepwarm-{run.run_id}-stop-{worker}",
                workers=[address],
                pure=False,
            ): worker
            for worker, address in placement.items()
        }
        for future, worker in stops.items():
            yield WorkerLog(worker, future.result(timeout=60))
    finally:
        handle.close(shutdown=True)


def _result_while_placed(future: Any, client: Any, placement: dict[str, str]) -> Any:
    """A done future's result: a future whose worker died can read as done and then wait forever for
    a worker it is pinned to, so its placement is checked while it waits."""
    while True:
        try:
            return future.result(timeout=DASK_LIVENESS_SEC)
        except TimeoutError:
            _check_placement(client, placement)


def dask_worker_addresses(client: Any) -> list[str]:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return sorted(workers, key=lambda address: (str(workers[address].get("name")), address))


def _check_placement(client: Any, placement: dict[str, str]) -> None:
    alive = set(client.scheduler_info(n_workers=-1)["workers"])
    for worker, address in placement.items():
        if address not in alive:
            raise RunError(
                f"the Dask worker of {worker} ({address}) left the cluster during the run "
                "(its process died: killed, or the app crashed the interpreter)"
            )


# ---------------------------------------------------------------- a run in a child process


def _in_app_venv(env: Env) -> bool:
    from keepwarm.runmode.installer import venv_dir

    return Path(sys.prefix).resolve() == venv_dir(env).resolve()


def new_run_id() -> str:
    """UTC time, then a random suffix: ``20261122T114927746501Z-40d3``."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(2)}"


def _plan_of_run(output_dir: Path) -> SavedPlan | None:
    """The plan a run saved in its folder (None before it got that far)."""
    try:
        return plan_from_json(json.loads((output_dir / "work_plan.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    """``python -m keepwarm.runmode.runner``: one run, events on stderr, the report as JSON on stdout."""
    parser = argparse.ArgumentParser(prog="python -m keepwarm.runmode.runner", description=__doc__)
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
            report = _Run(
                env, mode, options.workers, args, options.scheduler, forward, options.run_id
            ).execute()
        except KeepwarmError as exc:
            report_out.write(json.dumps({"error": str(exc)}) + "\n")
            return 1
        report_out.write(report.model_dump_json(by_alias=True) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
