"""A batching worker that fails, sleeps, hangs or crashes when an item of its batch asks it to.

``work_batch`` acts for the whole batch on what its items ask: ``sleep``/``hang`` make the one call
sleep (the longest any item asks), ``poison`` makes it raise, ``crash`` kills the process, and
``not_a_list``/``short`` make it return the wrong thing. ``fail`` fails only its own item: the item's
place in the returned list holds the exception (raised and caught, so it carries its traceback), as a
model server that catches per-item errors would. Each result says how it was made (``method``) and
how large the call was (``batch_of``). ``record_to`` appends ``<task_id> <pid>`` per item, on every
execution, before anything else happens.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Action = Literal["ok", "sleep", "fail", "poison", "hang", "crash", "not_a_list", "short"]


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Action = "ok"
    seconds: float = Field(default=0.0, ge=0)
    value: Any = None
    record_to: str | None = Field(default=None, description="append the task id to this file")
    only_attempt: int | None = Field(default=None, ge=1, description="misbehave on this attempt only")


def action_of(item: Any) -> str:
    args: Args = item.args
    return args.action if args.only_attempt in (None, item.attempt) else "ok"


def record(items: list[Any]) -> None:
    for item in items:
        if item.args.record_to:
            fd = os.open(item.args.record_to, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(fd, f"{item.task_id} {os.getpid()}\n".encode())
            os.close(fd)


def sleep_seconds(items: list[Any]) -> float:
    """How long the batch's one call sleeps: the longest any item asks (an hour for a bare hang)."""
    asked = [
        item.args.seconds or (3600.0 if action_of(item) == "hang" else 0.0)
        for item in items
        if action_of(item) in ("sleep", "hang")
    ]
    return max(asked, default=0.0)


def result_of(item: Any, method: str, batch_of: int) -> dict[str, Any]:
    return {
        "method": method,
        "value": item.args.value,
        "attempt": item.attempt,
        "batch_of": batch_of,
        "pid": os.getpid(),
    }


def fail_one(item: Any) -> ValueError:
    try:
        raise ValueError(f"flaky_batch: item {item.task_id} failed on purpose")
    except ValueError as exc:
        return exc


def finish_batch(items: list[Any], method: str) -> Any:
    """What the call returns once it has slept: results and exception objects, or something wrong."""
    actions = [action_of(item) for item in items]
    if "poison" in actions:
        poison = items[actions.index("poison")]
        raise ValueError(f"flaky_batch: task {poison.task_id} sank its batch of {len(items)}")
    results: list[Any] = [
        fail_one(item) if action == "fail" else result_of(item, method, len(items))
        for item, action in zip(items, actions, strict=True)
    ]
    if "not_a_list" in actions:
        return {"results": results}
    if "short" in actions:
        return results[:-1]
    return results


class Worker:
    """Both ``work`` and ``work_batch``: served in batches unless ``max_batch_size = 1``."""

    def work(self, item: Any) -> Any:
        record([item])
        if action_of(item) == "fail":
            raise ValueError(f"flaky_batch: item {item.task_id} failed on purpose")
        time.sleep(sleep_seconds([item]))
        return result_of(item, "work", 1)

    def work_batch(self, items: list[Any]) -> Any:
        record(items)
        if "crash" in [action_of(item) for item in items]:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(sleep_seconds(items))
        return finish_batch(items, "work_batch")


class BatchOnlyWorker:
    """Only ``work_batch``: always served in batches, even of one."""

    def work_batch(self, items: list[Any]) -> Any:
        record(items)
        time.sleep(sleep_seconds(items))
        return finish_batch(items, "work_batch")


class AsyncWorker:
    """An ``async def work_batch``: its call is awaited with the batch's smallest timeout."""

    async def work_batch(self, items: list[Any]) -> Any:
        record(items)
        await asyncio.sleep(sleep_seconds(items))
        return finish_batch(items, "async work_batch")
