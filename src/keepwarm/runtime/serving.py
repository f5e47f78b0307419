"""How a loop serves: one task at a time, several at once (async ``work``), or in batches (``work_batch``).

Each way claims at most what it starts at once, so a claimed task never waits behind a busy loop:
one for ``work``, the free concurrency for an async ``work``, a batch for ``work_batch``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from keepwarm.app import describe_results
from keepwarm.queue.taskfiles import seq_from_name
from keepwarm.runtime.tasks import Outcome, Started

if TYPE_CHECKING:
    from keepwarm.runtime.loop import WorkerLoop

CANCEL_MARKER = ".cancel."  # the supervisor asks an async loop to cancel one running task
CANCEL_CHECK_SEC = 0.05
BATCH_FAILED = "batch-failed"  # the requeue reason of a raising batch's tasks: next time, each runs alone


def serve_one_by_one(loop: WorkerLoop) -> None:
    """``work(item)``, one task after another."""
    claims, steps, work = loop.claims, loop.steps, loop.worker.work
    while loop.serving():
        claimed = claims.take(1)
        if not claimed:
            claims.wait()
            continue
        started = steps.begin(claimed[0])
        if started is None:
            continue
        began = time.perf_counter()
        try:
            outcome = Outcome(True, loop.call(work, started.item))
        except Exception as exc:
            outcome = Outcome.failure(exc)
        steps.complete(started, outcome, time.perf_counter() - began)


# ---------------------------------------------------------------------- async work(), concurrency N


def serve_concurrent(loop: WorkerLoop) -> None:
    """An async ``work(item)``: up to ``concurrency`` tasks at once on the loop's event loop."""
    runner = loop.runner
    assert runner is not None
    free = threading.BoundedSemaphore(loop.settings.concurrency)
    in_flight: set[Future[Any]] = set()
    while loop.serving():
        if in_flight:
            _obey_cancel_markers(loop)
        if not free.acquire(timeout=0.05):
            continue
        slots = 1 + _acquire_more(free, loop.settings.claim_batch - 1)
        claimed = loop.claims.take(slots)
        for _ in range(slots - len(claimed)):
            free.release()
        if not claimed:
            loop.claims.wait(CANCEL_CHECK_SEC if in_flight else None)
            continue
        for path in claimed:
            started = loop.steps.begin(path)
            if started is None:
                free.release()
                continue
            future = runner.submit(_work_async(loop, started))
            in_flight.add(future)
            future.add_done_callback(functools.partial(_release, in_flight, free))
    for future in list(in_flight):
        future.result()


def _acquire_more(free: threading.BoundedSemaphore, most: int) -> int:
    taken = 0
    while taken < most and free.acquire(blocking=False):
        taken += 1
    return taken


async def _work_async(loop: WorkerLoop, started: Started) -> None:
    task = started.task
    began = time.perf_counter()
    current = asyncio.current_task()
    if current is not None:
        loop.in_flight[task.task_id] = current
    try:
        value = await asyncio.wait_for(loop.worker.work(started.item), timeout=task.timeout_sec)
        outcome = Outcome(True, value)
    except TimeoutError:
        outcome = Outcome(False, error=f"task-timeout: work() ran past {task.timeout_sec}s")
    except asyncio.CancelledError:  # keepwarm cancel: the other tasks of this loop go on
        outcome = Outcome(False, error="cancelled while running", status="cancelled")
    except Exception as exc:
        outcome = Outcome.failure(exc)
    finally:
        loop.in_flight.pop(task.task_id, None)
    loop.steps.complete(started, outcome, time.perf_counter() - began)


def _obey_cancel_markers(loop: WorkerLoop) -> None:
    """Cancel the running async tasks the supervisor marked (``.cancel.<task_id>`` in our folder)."""
    assert loop.runner is not None
    for name in _listdir(loop.owner):
        if not name.startswith(CANCEL_MARKER):
            continue
        running = loop.in_flight.get(name[len(CANCEL_MARKER) :])
        if running is not None:
            loop.runner.loop.call_soon_threadsafe(running.cancel)
        try:
            os.unlink(loop.owner / name)
        except FileNotFoundError:
            pass


def _release(in_flight: set[Future[Any]], free: threading.BoundedSemaphore, future: Future[Any]) -> None:
    in_flight.discard(future)
    free.release()


def _listdir(folder: os.PathLike[str]) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------------- work_batch(items)


def serve_batches(loop: WorkerLoop) -> None:
    """``work_batch(items)``: gather up to ``max_batch_size`` tasks, waiting at most ``batch_wait_ms``
    after the first for more to join, and make one call for all of them."""
    size = loop.settings.max_batch_size
    per_claim = min(size, loop.settings.claim_batch)
    wait_sec = loop.settings.batch_wait_ms / 1000
    while loop.serving():
        batch = _begin_all(loop, loop.claims.take(per_claim))
        if not batch:
            loop.claims.wait()
            continue
        deadline = time.monotonic() + wait_sec - _waited_already(batch, wait_sec)
        while len(batch) < size and not loop.stopping:
            claimed = loop.claims.take(min(per_claim, size - len(batch)))  # names known: no wait
            if claimed:
                batch += _begin_all(loop, claimed)
                continue
            left = deadline - time.monotonic()
            if left <= 0 or loop.claims.wait(left):
                break
        suspects = [started for started in batch if _was_in_a_failed_batch(started)]
        for started in suspects:  # alone, so that a poison item fails without sinking the others again
            run_batch(loop, [started])
        if len(suspects) < len(batch):
            run_batch(loop, [started for started in batch if started not in suspects])


def _waited_already(batch: list[Started], wait_sec: float) -> float:
    """How long the batch's oldest task has waited since it was submitted (its name's sequence is
    the submit time), at most ``wait_sec``: a batch waits ``batch_wait_ms`` from its first task's
    arrival, not from its claim, and a task that waited in a backlog waits no more."""
    submitted = min((seq_from_name(os.path.basename(s.claimed)) or 0 for s in batch), default=0)
    if not submitted:
        return 0.0
    return min(wait_sec, max(0.0, time.time() - submitted / 1e9))


def _was_in_a_failed_batch(started: Started) -> bool:
    attempts = started.task.attempts
    return bool(attempts) and str(attempts[-1].get("outcome", "")).startswith(BATCH_FAILED)


def _begin_all(loop: WorkerLoop, claimed: list[str]) -> list[Started]:
    return [started for path in claimed if (started := loop.steps.begin(path)) is not None]


def run_batch(loop: WorkerLoop, batch: list[Started]) -> None:
    """One ``work_batch`` call; each task gets its own terminal file with its own result or error."""
    size = len(batch)
    timeout = min((s.task.timeout_sec for s in batch if s.task.timeout_sec), default=None)
    loop.heartbeat.batch = [s.task.task_id for s in batch]
    began = time.perf_counter()
    try:
        results = _call_batch(loop, [s.item for s in batch], timeout)
    except TimeoutError:
        error = f"task-timeout: work_batch() ran past {timeout}s (this task was in a batch of {size})"
        _complete_all(loop, batch, [Outcome(False, error=error)] * size, began)
        return
    except Exception as exc:
        _batch_raised(loop, batch, exc, began)
        return
    finally:
        loop.heartbeat.batch = []
    if not isinstance(results, list) or len(results) != size:
        error = (
            f"work_batch() returned {describe_results(results)} for a batch of {size}: "
            f"expected a list of {size}, one result (or exception object) per item, in order"
        )
        _complete_all(loop, batch, [Outcome(False, error=error)] * size, began)
        return
    outcomes = [
        Outcome.failure(value) if isinstance(value, BaseException) else Outcome(True, value)
        for value in results
    ]
    _complete_all(loop, batch, outcomes, began)


def _call_batch(loop: WorkerLoop, items: list[Any], timeout: float | None) -> Any:
    work_batch = loop.worker.work_batch
    if loop.runner is not None and asyncio.iscoroutinefunction(work_batch):
        return loop.runner.call(asyncio.wait_for(work_batch(items), timeout=timeout))
    return loop.call(work_batch, items)  # the supervisor ends a sync batch past its timeout


def _batch_raised(loop: WorkerLoop, batch: list[Started], exc: Exception, began: float) -> None:
    """``work_batch`` raised: one item may have sunk the others, so each task gets another attempt,
    alone (``serve_batches``), while it has attempts left, and fails with the batch's error after its
    last."""
    size = len(batch)
    if size == 1:
        _complete_all(loop, batch, [Outcome.failure(exc)], began)
        return
    reason = f"{BATCH_FAILED}: work_batch() raised {type(exc).__name__} for a batch of {size}"
    outcome = Outcome.failure(exc, f" (work_batch() raised it for the batch of {size} this task was in)")
    runtime = time.perf_counter() - began
    for started in batch:
        if started.task.attempt < started.task.max_attempts:
            loop.steps.requeue(started, reason)
            loop.claims.forget(started.claimed)
        else:
            loop.steps.complete(started, outcome, runtime, producer="work_batch()", batch_size=size)


def _complete_all(loop: WorkerLoop, batch: list[Started], outcomes: list[Outcome], began: float) -> None:
    runtime = time.perf_counter() - began
    for started, outcome in zip(batch, outcomes, strict=True):
        loop.steps.complete(started, outcome, runtime, producer="work_batch()", batch_size=len(batch))
