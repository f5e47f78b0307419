"""Run mode's runtime: one partition of a work plan, worked where it is sent, its output written there.

This module runs wherever a partition runs: in the calling process (mode python), in a pool process,
on a Dask worker. Each plan worker gets one instance of the app's worker per process: ``start()``
before its first partition, ``work(partition)`` per partition, ``stop()`` when the runner calls
:func:`finish_worker`. What ``work()`` returns is the partition's output, written by ``output.py``:
a table (a pandas DataFrame, a list of row dicts, or a dict of columns) as Parquet (CSV without
pyarrow), any other JSON value as JSON, ``None`` as nothing. The app's prints during ``start``, ``work`` and
``stop`` are captured and returned, so the runner keeps them in the run log.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from keepwarm.app import App, Partition, load_app, worker_method
from keepwarm.backends.staging import shipped_folder
from keepwarm.env import Env
from keepwarm.runmode.appcode import describe_app_exception, use_app_code
from keepwarm.runmode.output import write_output


@dataclass(frozen=True)
class PartitionJob:
    """Everything a process needs to work one partition (picklable: it crosses process boundaries)."""

    run_id: str
    app_dir: str
    share_dir: str
    namespace: str
    worker: str
    index: int
    partition: dict[str, Any]
    output_dir: str
    args: dict[str, Any] | None = None  # the run's args, which the plan was built from (None: [args])
    shipped: str | None = None


@dataclass(frozen=True)
class WorkerLog:
    """Lines a plan worker wrote outside its partitions: its ``stop()``'s prints, or what its pool
    process wrote on stderr."""

    worker: str
    log: str


# Where a partition failed: loading the app's worker, its start(), work(), or writing the output.
Phase = Literal["load", "start", "work", "output"]


class PartitionOutcome(BaseModel):
    """What became of one partition: where it ran, how long it took, what it wrote."""

    model_config = ConfigDict(extra="forbid")

    index: int
    name: str
    worker: str
    weight: float
    status: Literal["done", "failed"]
    rows: int | None = None
    columns: list[str] = []
    file: str | None = None
    seconds: float = 0.0
    start_seconds: float | None = None
    pid: int
    host: str
    code_from: Literal["app", "shipped"] = "app"
    worker_module_file: str | None = None
    log: str = ""
    failed_in: Phase | None = None
    error: str | None = None
    traceback: str | None = None

    def failure(self) -> str:
        """What failed, where, and why: one line for the run's error."""
        where = f"(pid {self.pid})"
        if self.failed_in == "load":
            return f"{self.worker} could not create the app's worker {where}: {self.error}"
        if self.failed_in == "start":
            return f"start() of {self.worker} failed {where}, before partition {self.name}: {self.error}"
        if self.failed_in == "output":
            return (
                f"partition {self.name} on {self.worker} {where}: its output cannot be written: {self.error}"
            )
        return f"partition {self.name} on {self.worker} {where} failed: {self.error}"


class _AsyncRunner:
    """An event loop in a thread of its own, so async workers run even when the caller's thread
    already runs one; what ``start()`` opens stays bound to this loop until ``stop()``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="keepwarm-batch", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@dataclass
class _LiveWorker:
    app: App
    instance: Any
    app_dir: Path
    code_from: Literal["app", "shipped"]
    start_seconds: float = 0.0
    runner: _AsyncRunner | None = None
    partitions: int = field(default=0)

    def start(self) -> None:
        began = time.perf_counter()
        self.call("start")
        self.start_seconds = time.perf_counter() - began

    def call(self, method: str, *args: Any) -> Any:
        result = worker_method(self.instance, method)(*args)
        if inspect.isawaitable(result):
            if self.runner is None:
                self.runner = _AsyncRunner()
            return self.runner.run(_await(result))
        return result

    @property
    def module_file(self) -> str | None:
        module = sys.modules.get(self.app.worker_class.__module__)
        return getattr(module, "__file__", None)


async def _await(awaitable: Any) -> Any:
    return await awaitable


# (run_id, plan worker) -> the app's worker instance this process keeps for that plan worker
_LIVE: dict[tuple[str, str], _LiveWorker] = {}


def run_partition(job: PartitionJob) -> PartitionOutcome:
    """Work one partition (starting this plan worker's instance on its first) and write its output.

    App errors do not raise: they come back as a failed outcome with the error and traceback.
    """
    partition = Partition.model_validate(job.partition)
    captured = io.StringIO()
    outcome: dict[str, Any] = {
        "index": job.index,
        "name": partition.name,
        "worker": job.worker,
        "weight": partition.weight,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    began = time.perf_counter()
    phase: Phase = "load"
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            live = _LIVE.get((job.run_id, job.worker))
            if live is None:
                live = _new_worker(job)
                phase = "start"
                live.start()
                _LIVE[(job.run_id, job.worker)] = live
                outcome["start_seconds"] = round(live.start_seconds, 6)
            outcome |= {"code_from": live.code_from, "worker_module_file": live.module_file}
            phase, began = "work", time.perf_counter()
            value = live.call("work", partition)
            seconds = time.perf_counter() - began
            phase = "output"
            file, rows, columns = write_output(value, Path(job.output_dir), job.index)
            live.partitions += 1
    except Exception as exc:
        return PartitionOutcome(
            **outcome,
            status="failed",
            failed_in=phase,
            seconds=round(time.perf_counter() - began, 6),
            log=captured.getvalue(),
            error=describe_app_exception(exc, Path(job.app_dir)),
            traceback="".join(traceback.format_exception(exc)),
        )
    return PartitionOutcome(
        **outcome,
        status="done",
        rows=rows,
        columns=columns,
        file=file,
        seconds=round(seconds, 6),
        log=captured.getvalue(),
    )


def finish_worker(run_id: str, worker: str) -> str:
    """Call ``stop()`` on this process's instance for ``worker`` of ``run_id``; returns its prints."""
    live = _LIVE.pop((run_id, worker), None)
    if live is None:
        return ""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            live.call("stop")
    except Exception as exc:
        captured.write(f"stop() of {worker} raised {type(exc).__name__}: {exc}\n")
    finally:
        if live.runner is not None:
            live.runner.close()
    return captured.getvalue()


def _new_worker(job: PartitionJob) -> _LiveWorker:
    """This plan worker's instance of the app's worker, not started yet."""
    app_dir, code_from = Path(job.app_dir), "app"
    if job.shipped:
        found = shipped_folder(job.shipped)
        if found is not None:
            app_dir, code_from = found, "shipped"
    env = Env(app_dir, share_dir=job.share_dir, namespace=job.namespace)
    use_app_code(app_dir)
    app = load_app(env)
    return _LiveWorker(app, app.new_worker(job.args), app_dir, code_from)  # type: ignore[arg-type]
