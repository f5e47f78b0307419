"""Run mode's runtime: one partition of a work plan, worked where it is sent, its output written there.

This module runs wherever a partition runs: in the calling process (mode python), in a pool process,
on a Dask worker. Each plan worker gets one instance of the app's worker per process: ``start()``
before its first partition, ``work(partition)`` per partition, ``stop()`` when the runner calls
:func:`finish_worker`. What ``work()`` returns is the partition's output: a table (a pandas
DataFrame, a list of row dicts, or a dict of columns) is written as Parquet (CSV without pyarrow),
any other JSON value as JSON, ``None`` as nothing. The app's prints during ``start``, ``work`` and
``stop`` are captured and returned, so the runner keeps them in the run log.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import io
import json
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from keepwarm.app import App, Partition, load_app, worker_method
from keepwarm.backends.staging import SKIPPED_DIRS, shipped_folder
from keepwarm.env import Env

_MODULE_SUFFIXES = (".py", ".so", ".pyd")


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


def describe_app_exception(exc: BaseException, app_dir: Path) -> str:
    """``Type: message at file:line`` for an exception the app's code raised, at the innermost line
    of the app's own code (not of a library it called); a pydantic error as its fields' problems."""
    from pydantic import ValidationError

    from keepwarm.settings import describe_error

    if isinstance(exc, ValidationError):
        message = f"{exc.title}: " + "; ".join(describe_error(error) for error in exc.errors())
    else:
        message = str(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    root = str(app_dir.resolve()) + os.sep
    own = [frame for frame in frames if str(Path(frame.filename).resolve()).startswith(root)]
    shown = own or frames
    where = f" at {shown[-1].filename}:{shown[-1].lineno}" if shown else ""
    return f"{type(exc).__name__}: {message}{where}"


# ---------------------------------------------------------------- the app's modules in this process


def app_roots(app_dir: Path) -> list[Path]:
    return [folder for folder in (app_dir / "src", app_dir) if folder.is_dir()]


def app_top_names(app_dir: Path) -> set[str]:
    """The top-level module names the app folder provides (its packages and modules)."""
    names = set()
    for root in app_roots(app_dir):
        for entry in root.iterdir():
            stem = entry.name.split(".")[0]
            if not stem.isidentifier() or entry.name in SKIPPED_DIRS:
                continue
            if entry.is_dir() and any(p.suffix in _MODULE_SUFFIXES for p in entry.iterdir()):
                names.add(entry.name)
            elif entry.is_file() and entry.suffix in _MODULE_SUFFIXES:
                names.add(stem)
    return names


def use_app_code(app_dir: Path) -> None:
    """Make ``import <package>`` find the code in ``app_dir``: its folders go first on ``sys.path``
    and modules of the same names imported from elsewhere (another copy of the app, an earlier
    build) are forgotten, so a compiled copy is never shadowed by an already-imported source."""
    roots = [str(folder.resolve()) for folder in app_roots(app_dir)]
    names = app_top_names(app_dir)
    for module_name in [m for m in sys.modules if m.partition(".")[0] in names]:
        module_file = getattr(sys.modules[module_name], "__file__", None) or ""
        if not any(module_file.startswith(root + os.sep) for root in roots):
            del sys.modules[module_name]
    sys.path[:] = roots + [p for p in sys.path if p not in roots]
    importlib.invalidate_caches()


@contextlib.contextmanager
def borrowed_imports(app_dir: Path) -> Iterator[None]:
    """Load the app in this process for a while: afterwards ``sys.path`` and the app's modules are
    as they were (mode python, and the manager's work plan, run in the caller's process)."""
    names = app_top_names(app_dir)
    saved_path = list(sys.path)
    saved = {m: module for m, module in sys.modules.items() if m.partition(".")[0] in names}
    try:
        yield
    finally:
        for module_name in [m for m in sys.modules if m.partition(".")[0] in names]:
            del sys.modules[module_name]
        sys.modules.update(saved)
        sys.path[:] = saved_path
        importlib.invalidate_caches()


# ---------------------------------------------------------------- output


def write_output(value: Any, output_dir: Path, index: int) -> tuple[str | None, int | None, list[str]]:
    """Write a partition's output as ``part-<index>.parquet`` (or ``.csv``, ``.json``); returns the
    file's name, its row count and columns (None, None, [] when ``work()`` returned None)."""
    if value is None:
        return None, None, []
    frame = as_frame(value)
    stem = f"part-{index:05d}"
    if frame is None:
        name = f"{stem}.json"
        _publish(output_dir / name, lambda path: path.write_text(json.dumps(value), encoding="utf-8"))
        return name, None, []
    keep_index = not _plain_index(frame)
    if importlib.util.find_spec("pyarrow") is not None:
        name = f"{stem}.parquet"
        _publish(output_dir / name, lambda path: frame.to_parquet(path, index=keep_index))
    else:
        name = f"{stem}.csv"
        _publish(output_dir / name, lambda path: frame.to_csv(path, index=keep_index))
    return name, len(frame), [str(column) for column in frame.columns]


def as_frame(value: Any) -> Any:
    """A pandas DataFrame for a table-like value (DataFrame, polars/pyarrow table, list of row
    dicts, dict of columns); None for any other value."""
    module = type(value).__module__.partition(".")[0]
    if module == "pandas" and hasattr(value, "to_parquet"):
        return value
    if module in ("polars", "pyarrow") and hasattr(value, "to_pandas"):
        return value.to_pandas()
    rows = isinstance(value, list) and bool(value) and all(isinstance(row, dict) for row in value)
    columns = isinstance(value, dict) and bool(value) and all(isinstance(c, list) for c in value.values())
    if not (rows or columns):
        return None
    try:
        import pandas as pd  # type: ignore[import-untyped]
    except ImportError:
        raise RuntimeError(
            "work() returned a table, and writing it needs pandas: pip install 'keepwarm[data]'"
        ) from None
    return pd.DataFrame(value)


def _plain_index(frame: Any) -> bool:
    index = frame.index
    return type(index).__name__ == "RangeIndex" and index.name is None


def _publish(path: Path, write: Any) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
