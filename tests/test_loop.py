"""The persistent loop, as real OS processes over real files."""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import InvalidTaskError, ResultTimeout, TaskFailed
from keepwarm.queue.layout import REJECTION_SUFFIX
from keepwarm.queue.results import wait_for_records
from keepwarm.queue.taskfiles import pending_name
from keepwarm.runtime.heartbeat import read_heartbeat

from .conftest import Loops, copy_app, queue_of, wait_until, write_app


def _age(timestamp: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds()


def test_one_incarnation_serves_two_thousand_tasks(mycode_env: Env, loops: Loops) -> None:
    (loop,) = loops.start(mycode_env)
    service = Service(mycode_env)
    handles = service.submit_many(({"args": {"x": x}} for x in range(1, 2001)), queue_only=True)
    records = wait_for_records(service.queue, [h.task_id for h in handles], timeout=120)
    assert all(r.status == "done" for r in records.values())
    assert {r.claim["incarnation"] for r in records.values() if r.claim} == {loop.incarnation}
    assert records[handles[26].task_id].result["collatz_steps"] == 111  # x = 27
    beat = read_heartbeat(service.queue.heartbeats / "loop-0.json")
    wait_until(
        lambda: (b := read_heartbeat(service.queue.heartbeats / "loop-0.json")) and b.tasks_done == 2000,
        what="heartbeat to count 2000 tasks",
    )
    assert beat is not None and beat.pid == loop.pid
    assert loop.process.poll() is None  # still alive, still warm


def test_results_and_remote_errors_round_trip(flaky_env: Env, loops: Loops) -> None:
    loops.start(flaky_env)
    service = Service(flaky_env)
    assert service.submit({"value": {"a": [1, 2]}}, queue_only=True).result(timeout=30)["value"] == {
        "a": [1, 2]
    }
    with pytest.raises(TaskFailed) as failure:
        service.submit({"action": "raise"}, queue_only=True).result(timeout=30)
    assert "ValueError: flaky: raised on purpose" in str(failure.value)
    assert failure.value.remote_traceback is not None
    assert "flaky/worker.py" in failure.value.remote_traceback


def test_results_that_are_not_json_or_too_large_fail_clearly(tmp_path: Path, loops: Loops) -> None:
    env = Env(copy_app(tmp_path, "flaky", "max_result_bytes = 1000\n", **{"[cluster]\n": "[cluster]\n"}))
    loops.start(env)
    service = Service(env)
    with pytest.raises(TaskFailed, match="not JSON"):
        service.submit({"action": "nonjson"}, queue_only=True).result(timeout=30)
    with pytest.raises(TaskFailed, match=r"over max_result_bytes \(1000\)"):
        service.submit({"action": "big", "size": 5000}, queue_only=True).result(timeout=30)
    assert service.submit({"action": "big", "size": 10}, queue_only=True).result(timeout=30) == "x" * 10


def test_invalid_task_args_are_refused_at_submit(mycode_env: Env) -> None:
    service = Service(mycode_env)
    with pytest.raises(InvalidTaskError, match=r"invalid args: x: input should be a valid integer"):
        service.submit({"x": "many"}, queue_only=True)
    with pytest.raises(
        InvalidTaskError, match=r"tasks.jsonl line 3: invalid args: x: input should be greater"
    ):
        service.submit_jsonl('{"args": {"x": 2}}\n\n{"args": {"x": 0}}\n', "tasks.jsonl", queue_only=True)
    assert service.counts().pending == 0


def test_invalid_task_args_that_reach_a_loop_fail_the_task_not_the_loop(
    mycode_env: Env, loops: Loops
) -> None:
    loops.start(mycode_env)
    service = Service(mycode_env, check_args=False)  # as another tool dropping files would
    with pytest.raises(TaskFailed, match=r"invalid args: x: input should be a valid integer"):
        service.submit({"x": "many"}, queue_only=True).result(timeout=30)
    assert service.submit({"x": 6}, queue_only=True).result(timeout=30)["prime_factors"] == [2, 3]


def test_heartbeat_stays_fresh_during_a_five_second_task(tmp_path: Path, loops: Loops) -> None:
    interval = 0.5
    env = Env(
        copy_app(
            tmp_path, "flaky", **{"heartbeat_interval_sec = 0.2": f"heartbeat_interval_sec = {interval}"}
        )
    )
    loops.start(env)
    service = Service(env)
    path = service.queue.heartbeats / "loop-0.json"
    handle = service.submit({"action": "sleep", "seconds": 5}, queue_only=True)
    wait_until(lambda: (b := read_heartbeat(path)) and b.state == "processing", what="processing heartbeat")
    ages = []
    while not handle.done():
        beat = read_heartbeat(path)
        if beat is not None and beat.state == "processing":
            assert beat.task_id == handle.task_id and beat.task_started_at is not None
            ages.append(_age(beat.timestamp))
        time.sleep(0.05)
    assert len(ages) > 20
    assert max(ages) < 2 * interval
    assert handle.result(timeout=5)["ok"] is True


def test_graceful_stop_finishes_the_current_task(flaky_env: Env, loops: Loops) -> None:
    (loop,) = loops.start(flaky_env)
    service = Service(flaky_env)
    handle = service.submit({"action": "sleep", "seconds": 1.5}, queue_only=True)
    path = service.queue.heartbeats / "loop-0.json"
    wait_until(lambda: (b := read_heartbeat(path)) and b.task_id == handle.task_id, what="task to start")
    os.kill(loop.pid, signal.SIGTERM)
    assert loop.process.wait(timeout=30) == 0
    assert handle.result(timeout=1)["ok"] is True
    beat = read_heartbeat(path)
    assert beat is not None and beat.state == "stopped"
    assert not os.listdir(service.queue.running)


def test_stopped_loop_leaves_pending_tasks_pending(flaky_env: Env, loops: Loops) -> None:
    (loop,) = loops.start(flaky_env)
    service = Service(flaky_env)
    os.kill(loop.pid, signal.SIGTERM)
    loop.process.wait(timeout=30)
    handle = service.submit({}, queue_only=True)
    with pytest.raises(ResultTimeout, match="it is pending"):
        handle.result(timeout=0.2)


def _drop(queue_pending: Path, name: str, content: bytes) -> Path:
    tmp = queue_pending / f".{name}.tmp"
    tmp.write_bytes(content)
    os.rename(tmp, queue_pending / name)
    return queue_pending / name


class Exploit:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def test_bad_files_are_rejected_with_reasons_and_the_loop_keeps_serving(tmp_path: Path, loops: Loops) -> None:
    env = Env(
        copy_app(
            tmp_path,
            "flaky",
            **{"[cluster]\n": "[cluster]\nmax_task_bytes = 16384\nrescan_interval_sec = 0.5\n"},
        )
    )
    queue = queue_of(env)
    loops.start(env)
    marker = tmp_path / "pickle-ran"
    valid = {"schema": "agi.service.task.v1", "args": {}}
    seq = 10**19

    def name(task_id: str) -> str:
        nonlocal seq
        seq += 1
        return pending_name(seq, task_id)

    target = tmp_path / "outside.task.json"
    target.write_text(json.dumps({**valid, "task_id": "outside"}))
    fifo = queue.pending / name("fifo")
    bad = {
        name("badjson"): (b"{not json", "invalid JSON"),
        name("schema"): (json.dumps({**valid, "task_id": "schema", "schema": "v0"}).encode(), "wrong schema"),
        name("noschema"): (json.dumps({"task_id": "noschema", "args": {}}).encode(), "wrong schema"),
        name("types"): (json.dumps({**valid, "task_id": "types", "attempt": "one"}).encode(), "attempt"),
        name("big"): (
            json.dumps({**valid, "task_id": "big", "args": {"b": "x" * 20000}}).encode(),
            "oversized",
        ),
        name("deep"): (b"[" * 5000 + b"]" * 5000, "invalid"),
        "0-escape.task.json": (json.dumps({**valid, "task_id": "../../escape"}).encode(), "unsafe task_id"),
        name("mismatch"): (json.dumps({**valid, "task_id": "other"}).encode(), "file name says task"),
        name("exploit").replace(".task.json", ".task.pkl"): (
            pickle.dumps(Exploit(str(marker))),
            "never deserialized",
        ),
        "notes.txt": (b"hello", "not a task file"),
    }
    for file_name, (content, _) in bad.items():
        _drop(queue.pending, file_name, content)
    link = queue.pending / name("link")
    link.symlink_to(target)
    os.mkfifo(fifo)
    bad[link.name] = (b"", "a symlink")
    bad[fifo.name] = (b"", "not a regular file")

    service = Service(env)
    assert service.submit({"value": 7}, queue_only=True).result(timeout=30)["value"] == 7
    wait_until(lambda: queue.count_pending() == 0, what="every bad file to be taken")
    for file_name, (_, reason) in bad.items():
        rejection = queue.failed / (file_name + REJECTION_SUFFIX)
        wait_until(rejection.exists, what=f"rejection of {file_name}")
        assert reason in rejection.read_text(), file_name
        assert os.path.lexists(queue.failed / file_name)
    assert not marker.exists(), "a pickle from the queue was deserialized"
    assert target.exists() and (queue.failed / link.name).is_symlink()
    assert not (tmp_path / "escape").exists()
    assert {e["file"] for e in queue.events.read("rejected")} == set(bad)
    assert service.submit({"value": 8}, queue_only=True).result(timeout=30)["value"] == 8


ASYNC_WORKER = """
import asyncio, time

class Worker:
    async def start(self):
        self.lock = asyncio.Lock()  # bound to the loop start() ran on
        self.active = 0
        self.peak = 0

    async def work(self, item):
        async with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        await asyncio.sleep(item.args.get("seconds", 0.3))
        async with self.lock:
            self.active -= 1
        return {"peak": self.peak}

    async def stop(self):
        pass
"""


def test_async_work_serves_concurrent_tasks_in_one_loop(tmp_path: Path, loops: Loops) -> None:
    env = Env(write_app(tmp_path, "asyncapp", ASYNC_WORKER, "[cluster]\nconcurrency = 4\n"))
    loops.start(env)
    service = Service(env)
    handles = service.submit_many(({"args": {"seconds": 0.5}} for _ in range(8)), queue_only=True)
    peaks = [h.result(timeout=30)["peak"] for h in handles]
    assert max(peaks) >= 2  # several tasks were in flight in the same loop at once
    assert max(peaks) <= 4  # never more than concurrency


@pytest.mark.parametrize("concurrency", [1, 2])
def test_async_task_past_its_timeout_fails(tmp_path: Path, loops: Loops, concurrency: int) -> None:
    env = Env(write_app(tmp_path, "asyncapp", ASYNC_WORKER, f"[cluster]\nconcurrency = {concurrency}\n"))
    loops.start(env)
    service = Service(env)
    with pytest.raises(TaskFailed, match="task-timeout"):
        service.submit({"seconds": 30}, timeout_sec=0.3, queue_only=True).result(timeout=30)
    assert service.submit({"seconds": 0}, queue_only=True).result(timeout=30)["peak"] >= 1


def test_polling_fallback_serves_tasks(
    mycode_env: Env, loops: Loops, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEPWARM_WATCH", "poll")
    (loop,) = loops.start(mycode_env)
    service = Service(mycode_env)
    assert [service.submit({"x": x}, queue_only=True).result(timeout=30)["x"] for x in (3, 4, 5)] == [3, 4, 5]
    assert "waking by poll" in loop.log_path.read_text()


def test_recycled_loop_exits_cleanly_after_max_tasks(mycode_env: Env, loops: Loops) -> None:
    (loop,) = loops.start(mycode_env, max_tasks=5)
    service = Service(mycode_env)
    handles = service.submit_many(({"args": {"x": x}} for x in range(1, 8)), queue_only=True)
    assert loop.process.wait(timeout=30) == 0
    done = [h for h in handles if h.done()]
    assert len(done) == 5
    assert service.queue.count_pending() == 2  # the rest wait for the next incarnation


def test_dead_loop_tasks_are_requeued_not_lost(flaky_env: Env, loops: Loops) -> None:
    (victim,) = loops.start(flaky_env)
    service = Service(flaky_env)
    handle = service.submit({"action": "crash", "only_attempt": 1}, queue_only=True)
    assert victim.process.wait(timeout=30) == -signal.SIGKILL
    location = service.queue.locate(handle.task_id)
    assert location.state == "running" and location.owner == f"loop-0.{victim.incarnation}"
    outcomes = service.queue.requeue(service.queue.running / location.owner, "loop-error")
    assert [o.outcome for o in outcomes] == ["requeued"]
    loops.start(flaky_env, first=1)
    record = handle.record(timeout=30)
    assert record.status == "done" and record.result["attempt"] == 2
    assert [a["outcome"] for a in record.attempts] == ["loop-error", "done"]


def test_hand_written_task_files_get_the_cluster_defaults(tmp_path: Path, loops: Loops) -> None:
    settings = "[cluster]\ntask_timeout_sec = 77\nmax_attempts = 5\n"
    env = Env(copy_app(tmp_path, "flaky", **{"[cluster]\n": settings}))
    queue = queue_of(env)
    loops.start(env)
    task = {"schema": "agi.service.task.v1", "task_id": "byhand", "args": {"value": 1}}
    _drop(queue.pending, "byhand.task.json", json.dumps(task).encode())
    record = wait_for_records(queue, ["byhand"], timeout=30)["byhand"]
    assert record.status == "done"
    assert record.model_extra is not None
    assert record.model_extra["timeout_sec"] == 77 and record.model_extra["max_attempts"] == 5


def test_a_finished_task_is_never_run_again(tmp_path: Path, flaky_env: Env, loops: Loops) -> None:
    queue = queue_of(flaky_env)
    loops.start(flaky_env)
    runs = tmp_path / "runs.txt"
    handle = Service(flaky_env).submit({"record_to": str(runs)}, queue_only=True)
    handle.result(timeout=30)
    again = queue.make_task({"record_to": str(runs)}, task_id=handle.task_id)
    queue.submit([again])
    wait_until(lambda: queue.events.read("duplicate"), what="the duplicate to be seen")
    assert queue.count_pending() == 0
    assert len(runs.read_text().splitlines()) == 1
