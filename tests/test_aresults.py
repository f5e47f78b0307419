"""The asyncio result channel: waiters on one event loop, no thread each, nothing left by a cancel."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from keepwarm.env import Env
from keepwarm.errors import TaskNotFound
from keepwarm.queue.aresults import AsyncResults, async_results, close_async_results
from keepwarm.queue.task import Task, TaskRecord, terminal_record
from keepwarm.queue.taskqueue import TaskQueue

from .conftest import queue_of

T = TypeVar("T")


@pytest.fixture(params=["inotify", "poll"])
def watch_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with inotify and with polling (``KEEPWARM_WATCH=poll``)."""
    mode: str = request.param
    if mode == "poll":
        monkeypatch.setenv("KEEPWARM_WATCH", "poll")
    return mode


async def eventually(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Yield to the loop until ``predicate`` holds; fail the test with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.001)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(60):
            return await scenario()

    return asyncio.run(bounded())


def submit_one(queue: TaskQueue, x: int = 1) -> Task:
    (task,) = queue.submit([queue.make_task({"x": x})])
    return task


def publish_done(queue: TaskQueue, task: Task, result: int) -> None:
    assert queue.publish_terminal(terminal_record(task, "done", result=result))


def test_a_record_published_after_the_wait_began_wakes_the_waiter(mycode_env: Env, watch_mode: str) -> None:
    queue = queue_of(mycode_env)
    task = submit_one(queue)
    task_id = task.task_id

    async def scenario() -> TaskRecord | None:
        async with AsyncResults(queue) as channel:
            waiter = asyncio.create_task(channel.record(task_id, 30))
            await eventually(lambda: channel.waiting == 1, "the waiter to register")
            assert channel.mode == watch_mode
            publish_done(queue, task, 42)
            return await waiter

    record = run(scenario)
    assert record is not None and record.task_id == task_id and record.result == 42


def test_a_record_already_there_is_returned_at_once(mycode_env: Env, watch_mode: str) -> None:
    queue = queue_of(mycode_env)
    task = submit_one(queue)
    task_id = task.task_id
    publish_done(queue, task, 7)

    async def scenario() -> tuple[TaskRecord | None, TaskRecord | None, int]:
        async with AsyncResults(queue) as channel:
            now = await channel.record(task_id, 0)
            later = await channel.record(task_id, 30)
            return now, later, channel.waiting

    now, later, waiting = run(scenario)
    assert now is not None and now.result == 7
    assert later is not None and later.result == 7
    assert waiting == 0


def test_a_wait_that_times_out_returns_none_and_leaves_no_waiter(mycode_env: Env, watch_mode: str) -> None:
    queue = queue_of(mycode_env)
    task_id = submit_one(queue).task_id

    async def scenario() -> tuple[TaskRecord | None, float, int]:
        async with AsyncResults(queue) as channel:
            started = time.monotonic()
            record = await channel.record(task_id, 0.05)
            return record, time.monotonic() - started, channel.waiting

    record, waited, waiting = run(scenario)
    assert record is None and waiting == 0
    assert waited >= 0.05


def test_500_concurrent_waiters_add_no_thread_and_all_resolve(mycode_env: Env, watch_mode: str) -> None:
    queue = queue_of(mycode_env)
    (*tasks,) = queue.submit([queue.make_task({"x": n}) for n in range(500)])

    async def scenario() -> tuple[list[TaskRecord | None], int, int]:
        async with AsyncResults(queue) as channel:
            threads_before = threading.active_count()
            waiters = [asyncio.create_task(channel.record(task.task_id, 30)) for task in tasks]
            await eventually(lambda: channel.waiting == 500, "500 waiters to register")
            threads_waiting = threading.active_count()
            for n, task in enumerate(tasks):
                assert queue.publish_terminal(terminal_record(task, "done", result=n))
            records = await asyncio.gather(*waiters)
            assert threads_before == threads_waiting
            return records, channel.waiting, threading.active_count() - threads_before

    records, waiting, threads_added = run(scenario)
    assert [record.result if record else None for record in records] == list(range(500))
    assert waiting == 0 and threads_added == 0


def test_a_cancelled_waiter_leaves_nothing_behind(mycode_env: Env, watch_mode: str) -> None:
    queue = queue_of(mycode_env)
    task, other = submit_one(queue, 1), submit_one(queue, 2)
    task_id, other_id = task.task_id, other.task_id

    async def scenario() -> None:
        async with AsyncResults(queue) as channel:
            staying = asyncio.create_task(channel.record(task_id, 30))
            leaving = asyncio.create_task(channel.record(task_id, 30))
            alone = asyncio.create_task(channel.record(other_id, 30))
            await eventually(lambda: channel.waiting == 3, "three waiters")
            leaving.cancel()
            alone.cancel()
            for cancelled in (leaving, alone):
                with pytest.raises(asyncio.CancelledError):
                    await cancelled
            assert channel.waiting == 1
            publish_done(queue, task, 5)
            record = await staying
            assert record is not None and record.result == 5
            assert channel.waiting == 0
            await eventually(lambda: not channel.polling, "the poller to stop with no one waiting")

    run(scenario)


def test_closing_answers_the_waiters_left_with_a_last_look(mycode_env: Env, watch_mode: str) -> None:
    queue = queue_of(mycode_env)
    task_id = submit_one(queue).task_id

    async def scenario() -> tuple[TaskRecord | None, int]:
        channel = AsyncResults(queue)
        waiter = asyncio.create_task(channel.record(task_id, 30))
        await eventually(lambda: channel.waiting == 1, "the waiter to register")
        await channel.aclose()
        return await waiter, channel.waiting

    record, waiting = run(scenario)
    assert record is None and waiting == 0


def test_a_record_written_by_another_process_wakes_the_waiter(mycode_env: Env, watch_mode: str) -> None:
    """The child claims the task and finishes it the way a loop does (claim by rename, finish)."""
    queue = queue_of(mycode_env)
    task_id = submit_one(queue, 3).task_id
    child = textwrap.dedent(
        f"""
        from pathlib import Path
        from keepwarm.queue.task import terminal_record
        from keepwarm.queue.taskqueue import TaskQueue
        queue = TaskQueue(Path({str(queue.root)!r}))
        owner = queue.owner_dir("loop-0", "child")
        owner.mkdir(parents=True)
        (name,) = queue.scan_pending()
        claimed = queue.claim(name, owner)
        task = queue.load_claimed(claimed)
        assert queue.finish(claimed, terminal_record(task, "done", result=task.args["x"] * 10))
        """
    )

    async def scenario() -> TaskRecord | None:
        async with AsyncResults(queue) as channel:
            waiter = asyncio.create_task(channel.record(task_id, 30))
            await eventually(lambda: channel.waiting == 1, "the waiter to register")
            process = await asyncio.create_subprocess_exec(sys.executable, "-c", child)
            assert await process.wait() == 0
            return await waiter

    record = run(scenario)
    assert record is not None and record.task_id == task_id and record.result == 30


def test_async_results_keeps_one_channel_per_loop_and_queue(mycode_env: Env, watch_mode: str) -> None:
    queue = queue_of(mycode_env)

    async def scenario() -> AsyncResults:
        channel = async_results(queue)
        assert async_results(TaskQueue(queue.root)) is channel
        await close_async_results()
        assert async_results(queue) is not channel  # a closed channel is forgotten
        return async_results(queue)

    first, second = run(scenario), run(scenario)
    assert first is not second


def test_a_bad_task_id_is_refused(mycode_env: Env, watch_mode: str) -> None:
    queue = queue_of(mycode_env)

    async def scenario() -> None:
        async with AsyncResults(queue) as channel:
            with pytest.raises(TaskNotFound, match="is not a task id"):
                await channel.record("../escape", 1)
            assert channel.waiting == 0

    run(scenario)


@pytest.mark.slow
def test_after_an_inotify_overflow_every_waiter_is_looked_at_again(mycode_env: Env) -> None:
    """More records than the kernel queues (max_queued_events) while the loop is busy: the overflow
    drops the event of the awaited record, and the rescan finds it."""
    queue = queue_of(mycode_env)
    task = submit_one(queue)
    queued_max = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if queued_max > 100_000:
        pytest.skip(f"max_queued_events is {queued_max}: too many files to overflow it in a test")
    filler = terminal_record(task, "done", result=0)

    async def scenario() -> TaskRecord | None:
        async with AsyncResults(queue) as channel:
            waiter = asyncio.create_task(channel.record(task.task_id, 30))
            await eventually(lambda: channel.waiting == 1, "the waiter to register")
            assert channel.mode == "inotify"
            for n in range(queued_max + 10):  # no await: the loop cannot read events meanwhile
                assert queue.publish_terminal(filler.model_copy(update={"task_id": f"filler-{n}"}))
            publish_done(queue, task, 9)
            return await waiter

    record = run(scenario)
    assert record is not None and record.result == 9
