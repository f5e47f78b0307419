"""The persistent worker loop: ``start()`` once, then claim → work → publish for as long as it lives.

One loop occupies a slot; each (re)start of a slot is a new incarnation with its own folder
``running/<slot>.<incarnation>/``. The loop finds its next task from inotify events (or a poll with
back-off on shared storage) plus a periodic rescan, never by parsing the backlog, and never parses a
file it has not claimed.

Run as a process: ``python -m keepwarm.runtime.loop --app APP --apps-path P --slot loop-0``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import heapq
import inspect
import logging
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import fields
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from keepwarm._sys.child import child_parser
from keepwarm._sys.procs import set_parent_death_signal
from keepwarm._sys.watch import IN_CLOSE_WRITE, IN_MOVED_TO, Watcher
from keepwarm.app import App, describe_args_error, load_app, worker_method
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.queue.task import Task, TaskItem, TaskRecord, TaskStatus, utc_now
from keepwarm.queue.taskqueue import TaskQueue, encode, json_problem, terminal_record
from keepwarm.runtime.asyncrunner import AsyncRunner
from keepwarm.runtime.heartbeat import HeartbeatWriter

log = logging.getLogger("keepwarm.runtime.loop")

STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.EACCES})
STORAGE_RETRY_MAX_SEC = 2.0
CANCEL_MARKER = ".cancel."  # the supervisor asks an async loop to cancel one running task
CANCEL_CHECK_SEC = 0.05


def new_incarnation() -> str:
    return uuid.uuid4().hex[:12]


def _item_of(task: Task, args: Any) -> TaskItem:
    """What ``work()`` receives for ``task``: the validated ``args``, every other field the task's own."""
    return TaskItem(**{field.name: getattr(task, field.name) for field in fields(TaskItem)} | {"args": args})


class WorkerLoop:
    """One loop incarnation of one slot."""

    def __init__(
        self,
        env: Env,
        slot: str,
        incarnation: str | None = None,
        *,
        max_tasks: int | None = None,
    ) -> None:
        self.env = env
        self.settings = env.settings.cluster
        self.slot = slot
        self.incarnation = incarnation or new_incarnation()
        self.max_tasks = max_tasks or self.settings.max_tasks_per_loop
        self.queue = TaskQueue.for_env(env).ensure()
        self.owner = self.queue.owner_dir(slot, self.incarnation)
        self.heartbeat = HeartbeatWriter(
            self.queue.layout.heartbeat(slot),
            slot,
            self.incarnation,
            self.settings.heartbeat_interval_sec,
        )
        self.handled = 0
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._candidates: list[str] = []
        self._in_flight: dict[str, asyncio.Task[Any]] = {}
        self._next_rescan = 0.0
        self._runner: AsyncRunner | None = None
        self._app: App | None = None
        self._worker: Any = None

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Stop after the current task (safe from a signal handler or another thread)."""
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> int:
        """Start the worker, serve tasks until stopped (or recycled), then stop the worker."""
        self.owner.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.heartbeat.start()
        try:
            self._start_worker()
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, KeepwarmError) else str(exc)
            log.error(
                "slot %s: start failed: %s",
                self.slot,
                message,
                exc_info=not isinstance(exc, KeepwarmError),
            )
            self.heartbeat.set_state("stopped", error=f"start failed: {message}")
            self._close()
            return 1
        self.heartbeat.set_state("ready")
        log.info(
            "slot %s incarnation %s ready in %.3fs",
            self.slot,
            self.incarnation,
            self.heartbeat.start_sec or 0,
        )
        with Watcher([self.queue.pending], mask=IN_MOVED_TO | IN_CLOSE_WRITE) as watcher:
            log.info("slot %s: waking by %s on %s", self.slot, watcher.mode, self.queue.pending)
            if self._app is not None and "work" in self._app.async_methods:
                self._serve_concurrent(watcher)
            else:
                self._serve(watcher)
        self.heartbeat.set_state("stopping")
        self._stop_worker()
        self._release_leftovers()
        if self._recycle_due():
            self.heartbeat.stop_reason = "max-tasks"
        self.heartbeat.set_state("stopped")
        self._close()
        log.info(
            "slot %s incarnation %s stopped after %d tasks",
            self.slot,
            self.incarnation,
            self.handled,
        )
        return 0

    # ------------------------------------------------------------------ worker lifecycle

    def _start_worker(self) -> None:
        began = time.perf_counter()
        self._app = load_app(self.env)
        if self._app.async_methods:
            self._runner = AsyncRunner()
        self._worker = self._app.new_worker()
        self._call(worker_method(self._worker, "start"))
        self.heartbeat.start_sec = round(time.perf_counter() - began, 6)
        self.heartbeat.cancels_in_loop = "work" in self._app.async_methods  # told with "ready"

    def _stop_worker(self) -> None:
        try:
            self._call(worker_method(self._worker, "stop"))
        except Exception:
            log.exception("slot %s: worker.stop() raised", self.slot)

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        result = method(*args)
        if inspect.isawaitable(result):
            if self._runner is None:
                self._runner = AsyncRunner()
            return self._runner.call(result)
        return result

    def _close(self) -> None:
        self.heartbeat.close()
        if self._runner is not None:
            self._runner.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        try:
            os.rmdir(self.owner)
        except OSError:
            pass

    def _release_leftovers(self) -> None:
        # Claimed but never finished (a publish the storage kept refusing): back to pending, no attempt.
        if any(not name.startswith(".") for name in _listdir(self.owner)):
            self.queue.requeue(self.owner, "loop-stopped", count_attempt=False)

    # ------------------------------------------------------------------ serving

    def _recycle_due(self) -> bool:
        return self.max_tasks is not None and self.handled >= self.max_tasks

    def _serve(self, watcher: Watcher) -> None:
        while not self.stopping and not self._recycle_due():
            claimed = self._claim_next()
            if claimed is None:
                self._wait_for_work(watcher)
                continue
            watcher.found_work()
            begun = self._begin(claimed)
            if begun is None:
                continue
            task, item, claimed_at = begun
            started = time.perf_counter()
            try:
                outcome = _Outcome.of(self._call(self._worker.work, item), self.settings.max_result_bytes)
            except Exception as exc:
                outcome = _Outcome.failure(exc)
            self._complete(claimed, task, outcome, claimed_at, time.perf_counter() - started)

    def _serve_concurrent(self, watcher: Watcher) -> None:
        assert self._runner is not None
        slots = threading.BoundedSemaphore(self.settings.concurrency)
        in_flight: set[Future[Any]] = set()
        while not self.stopping and not self._recycle_due():
            if in_flight:
                self._obey_cancel_markers()
            if not slots.acquire(timeout=0.05):
                continue
            claimed = self._claim_next()
            if claimed is None:
                slots.release()
                self._wait_for_work(watcher, CANCEL_CHECK_SEC if in_flight else None)
                continue
            watcher.found_work()
            begun = self._begin(claimed)
            if begun is None:
                slots.release()
                continue
            future = self._runner.submit(self._work_async(claimed, *begun))
            in_flight.add(future)
            future.add_done_callback(functools.partial(_release, in_flight, slots))
        for future in list(in_flight):
            future.result()

    async def _work_async(self, claimed: Path, task: Task, item: TaskItem, claimed_at: str) -> None:
        started = time.perf_counter()
        current = asyncio.current_task()
        if current is not None:
            self._in_flight[task.task_id] = current
        try:
            value = await asyncio.wait_for(self._worker.work(item), timeout=task.timeout_sec)
            outcome = _Outcome.of(value, self.settings.max_result_bytes)
        except TimeoutError:
            outcome = _Outcome(ok=False, error=f"task-timeout: work() ran past {task.timeout_sec}s")
        except asyncio.CancelledError:  # keepwarm cancel: the other tasks of this loop go on
            outcome = _Outcome(ok=False, error="cancelled while running", status="cancelled")
        except Exception as exc:
            outcome = _Outcome.failure(exc)
        finally:
            self._in_flight.pop(task.task_id, None)
        self._complete(claimed, task, outcome, claimed_at, time.perf_counter() - started)

    def _obey_cancel_markers(self) -> None:
        """Cancel the running async tasks the supervisor marked (``.cancel.<task_id>`` in our folder)."""
        assert self._runner is not None
        for name in _listdir(self.owner):
            if not name.startswith(CANCEL_MARKER):
                continue
            running = self._in_flight.get(name[len(CANCEL_MARKER) :])
            if running is not None:
                self._runner.loop.call_soon_threadsafe(running.cancel)
            try:
                os.unlink(self.owner / name)
            except FileNotFoundError:
                pass

    def _claim_next(self) -> Path | None:
        while self._candidates:
            name = heapq.heappop(self._candidates)
            claimed = self.queue.claim(name, self.owner)
            if claimed is not None:
                return claimed
        return None

    def _wait_for_work(self, watcher: Watcher, at_most: float | None = None) -> None:
        timeout = max(0.0, self._next_rescan - time.monotonic())
        wakeup = watcher.wait(
            timeout if at_most is None else min(timeout, at_most), interrupt_fd=self._wake_r
        )
        if wakeup.interrupted:
            _drain(self._wake_r)
        for name in wakeup.names:
            if name[0] != ".":
                heapq.heappush(self._candidates, name)
        if wakeup.rescan or time.monotonic() >= self._next_rescan:
            self._candidates = self.queue.scan_pending()  # sorted, so already a heap
            self._next_rescan = time.monotonic() + self.settings.rescan_interval_sec

    def _begin(self, claimed: Path) -> tuple[Task, TaskItem, str] | None:
        """Parse a claimed file and hand back what ``work`` needs, or None if it was dealt with."""
        claimed_at = utc_now()
        task = self.queue.load_claimed(claimed)
        if task is None:
            return None
        if self.queue.terminal_path(task.task_id) is not None:
            # Already finished (e.g. resubmitted by hand): never run a task's side effects twice.
            os.unlink(claimed)
            self.queue.events.append("duplicate", task_id=task.task_id, slot=self.slot, during="claim")
            return None
        self.heartbeat.task_started(task.task_id, task.timeout_sec)
        try:
            args = self._app.validate_args(task.args) if self._app else task.args
        except ValidationError as exc:
            self._complete(claimed, task, _Outcome(ok=False, error=describe_args_error(exc)), claimed_at, 0.0)
            return None
        return task, _item_of(task, args), claimed_at

    def _complete(
        self, claimed: Path, task: Task, outcome: _Outcome, claimed_at: str, runtime: float
    ) -> None:
        record = terminal_record(
            task,
            outcome.status,
            result=outcome.value,
            error=outcome.error,
            traceback=outcome.traceback,
            slot=self.slot,
            incarnation=self.incarnation,
            claimed_at=claimed_at,
            runtime_sec=round(runtime, 6),
        )
        self._publish(claimed, record)
        self.heartbeat.task_finished(task.task_id, outcome.ok)
        self.handled += 1

    def _publish(self, claimed: Path, record: TaskRecord) -> None:
        """Publish a terminal record; while storage refuses, keep the task and retry."""
        delay = 0.05
        while True:
            try:
                self.queue.finish(claimed, record)
                self.heartbeat.storage_error = None
                return
            except OSError as exc:
                if exc.errno not in STORAGE_ERRNOS:
                    raise
                self.heartbeat.storage_error = f"cannot publish task {record.task_id}: {exc.strerror}"
                log.warning("slot %s: %s; retrying in %.2fs", self.slot, self.heartbeat.storage_error, delay)
                if self._stopping.wait(delay):
                    return  # the claim stays in running/ and is requeued on the way out
                delay = min(delay * 2, STORAGE_RETRY_MAX_SEC)


class _Outcome:
    __slots__ = ("error", "ok", "status", "traceback", "value")

    def __init__(
        self,
        ok: bool,
        value: Any = None,
        error: str | None = None,
        tb: str | None = None,
        status: TaskStatus | None = None,
    ) -> None:
        self.ok, self.value, self.error, self.traceback = ok, value, error, tb
        self.status: TaskStatus = status or ("done" if ok else "failed")

    @classmethod
    def of(cls, value: Any, max_bytes: int) -> _Outcome:
        problem = json_problem(value, f"work()'s result ({type(value).__name__})")
        if problem is not None:
            return cls(False, error=problem)
        size = len(encode(value))
        if size > max_bytes:
            return cls(False, error=f"result is {size} bytes, over max_result_bytes ({max_bytes})")
        return cls(True, value)

    @classmethod
    def failure(cls, exc: BaseException) -> _Outcome:
        return cls(False, error=f"{type(exc).__name__}: {exc}", tb="".join(traceback.format_exception(exc)))


def _release(in_flight: set[Future[Any]], slots: threading.BoundedSemaphore, future: Future[Any]) -> None:
    in_flight.discard(future)
    slots.release()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def main(argv: list[str] | None = None) -> int:
    """``python -m keepwarm.runtime.loop``: one loop of an app's service until SIGTERM."""
    parser = child_parser("keepwarm.runtime.loop", __doc__)
    parser.add_argument("--slot", required=True)
    parser.add_argument("--incarnation")
    parser.add_argument("--max-tasks", type=int)
    parser.add_argument("--parent-pid", type=int, help="stop when this process dies")
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {options.slot} pid={os.getpid()} %(levelname)s %(message)s",
    )
    try:
        env = Env.of_child(options)
        loop = WorkerLoop(env, options.slot, options.incarnation, max_tasks=options.max_tasks)
    except KeepwarmError as exc:
        log.error("%s", exc)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: loop.request_stop())
    if options.parent_pid:
        set_parent_death_signal(options.parent_pid)
    return loop.run()


if __name__ == "__main__":
    sys.exit(main())
