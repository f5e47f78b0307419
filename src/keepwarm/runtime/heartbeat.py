"""Loop heartbeats: ``heartbeats/<slot>.json``, rewritten every interval from a thread of the loop.

A long task keeps the heartbeat fresh; a frozen process (SIGSTOP, a C call holding the GIL) does not,
and ``task_running_sec`` lets the supervisor catch a task past its timeout. Liveness is read from the
loop's own counts, never from its wall clock against the reader's (hosts' clocks disagree): ``seq``
grows with every write, so the supervisor times the beats on its own monotonic clock, and
``task_running_sec`` is the loop's monotonic count of its oldest task's run.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.procs import rss_bytes
from keepwarm.queue.task import epoch_of, utc_now

HeartbeatState = Literal["starting", "ready", "processing", "stopping", "stopped"]


class Heartbeat(BaseModel):
    model_config = ConfigDict(defer_build=True)

    slot: str
    incarnation: str
    pid: int
    host: str
    state: HeartbeatState
    timestamp: str
    seq: int = 0  # this incarnation's writes so far: progress a reader can time on its own clock
    task_id: str | None = None
    task_started_at: str | None = None
    task_timeout_sec: float | None = None
    task_running_sec: float | None = None  # the oldest task's run so far, on the loop's monotonic clock
    tasks_done: int = 0
    tasks_failed: int = 0
    rss_bytes: int | None = None
    running_tasks: int = 0
    start_sec: float | None = None
    error: str | None = None
    storage_error: str | None = None
    stop_reason: str | None = None
    cancels_in_loop: bool = False  # an async loop cancels a running task itself
    batch: list[str] = []  # the tasks of the work_batch() call running now (empty when none is)


class HeartbeatWriter:
    """Holds the loop's live state and writes it every ``interval`` seconds from a daemon thread."""

    def __init__(self, path: Path, slot: str, incarnation: str, interval: float) -> None:
        self.path = path
        self.interval = interval
        self.slot = slot
        self.incarnation = incarnation
        self.host = os.uname().nodename
        self.state: HeartbeatState = "starting"
        self.tasks_done = 0
        self.tasks_failed = 0
        self.start_sec: float | None = None
        self.error: str | None = None
        self.storage_error: str | None = None
        self.stop_reason: str | None = None
        self.cancels_in_loop = False
        self.batch: list[str] = []
        self.seq = 0
        # task_id -> (started_at, timeout, its start on the monotonic clock)
        self._running: dict[str, tuple[str, float | None, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keepwarm-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def task_started(self, task_id: str, timeout_sec: float | None, started_at: str | None = None) -> None:
        began = time.monotonic()
        if started_at is not None:  # started earlier (claimed with its batch): on this same clock
            began -= max(0.0, time.time() - (epoch_of(started_at) or time.time()))
        with self._lock:
            self._running[task_id] = (started_at or utc_now(), timeout_sec, began)
            self.state = "processing"

    def task_finished(self, task_id: str, ok: bool, *, counted: bool = True) -> None:
        """``task_id`` left the loop: finished (``counted``), or sent back for another attempt."""
        with self._lock:
            self._running.pop(task_id, None)
            if counted and ok:
                self.tasks_done += 1
            elif counted:
                self.tasks_failed += 1
            if not self._running and self.state == "processing":
                self.state = "ready"

    def set_state(self, state: HeartbeatState, error: str | None = None) -> None:
        """Change state and write the heartbeat now (state changes are rare: no cost per task)."""
        with self._lock:
            self.state = state
            if error is not None:
                self.error = error
        self.beat()

    def snapshot(self) -> Heartbeat:
        with self._lock:
            oldest = min(self._running.items(), key=lambda item: item[1][0], default=None)
            if oldest is not None and self.batch:  # a batch ends at its smallest timeout
                timeouts = [self._running[t][1] for t in self.batch if t in self._running]
                smallest = min((t for t in timeouts if t is not None), default=oldest[1][1])
                oldest = (oldest[0], (oldest[1][0], smallest, oldest[1][2]))
            self.seq += 1
            return Heartbeat(
                slot=self.slot,
                incarnation=self.incarnation,
                pid=os.getpid(),
                host=self.host,
                state=self.state,
                timestamp=utc_now(),
                seq=self.seq,
                task_id=oldest[0] if oldest else None,
                task_started_at=oldest[1][0] if oldest else None,
                task_timeout_sec=oldest[1][1] if oldest else None,
                task_running_sec=round(time.monotonic() - oldest[1][2], 3) if oldest else None,
                tasks_done=self.tasks_done,
                tasks_failed=self.tasks_failed,
                rss_bytes=rss_bytes(),
                running_tasks=len(self._running),
                start_sec=self.start_sec,
                error=self.error,
                storage_error=self.storage_error,
                stop_reason=self.stop_reason,
                cancels_in_loop=self.cancels_in_loop,
                batch=self.batch,
            )

    def beat(self) -> None:
        try:
            write_atomic(self.path, self.snapshot().model_dump_json().encode())
        except OSError as exc:
            # The storage fault is the supervisor's to see; the loop keeps serving.
            self.storage_error = f"heartbeat not written: {exc}"

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()


def read_heartbeat(path: Path) -> Heartbeat | None:
    try:
        return Heartbeat.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None
