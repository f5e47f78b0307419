"""Dynamic batching in service mode (``work_batch``): each task of a batch gets its own outcome, a
raising call retries its tasks, wrong returns and timeouts fail the whole batch, a killed loop loses
nothing, and the batching app answers the same through the Python API, the CLI and ``AGI``.

Most tests share one service of ``tests/apps/flaky_batch`` (one loop, ``max_batch_size = 4``,
``batch_wait_ms = 500``), started with ``AGI.serve``: each test submits its own tasks and waits for
all of them, so the next one starts on an empty queue. Batches are made deterministic by their
size: four tasks submitted at once close a batch at once; fewer wait the 500 ms for company.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keepwarm import AGI
from keepwarm._sys.watch import IN_MOVED_TO, Watcher
from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.queue.results import wait_for_records
from keepwarm.queue.task import TASK_SUFFIX, TaskRecord
from keepwarm.runtime.claims import Claims
from keepwarm.runtime.heartbeat import Heartbeat, read_heartbeat

from .conftest import Loops, Services, supervisor_state, wait_until

BATCH_APP = Path(__file__).resolve().parent / "apps" / "flaky_batch"
KEEPWARM = Path(sys.executable).parent / "keepwarm"
NAMESPACE = "batching"
FAST_CLUSTER: dict[str, object] = {
    "slots": 1,
    "max_batch_size": 4,
    "batch_wait_ms": 500,
    "heartbeat_interval_sec": 0.2,
    "heartbeat_timeout_sec": 2,
    "restart_backoff_sec": 0.1,
    "restart_backoff_max_sec": 0.5,
    "stop_timeout_sec": 5,
}


def batch_app(folder: Path, name: str = "flaky_batch", worker: str = "Worker", **cluster: object) -> Path:
    """A copy of ``tests/apps/flaky_batch`` named ``name``, serving with ``worker`` and ``cluster``."""
    target = folder / name
    shutil.copytree(BATCH_APP, target, ignore=shutil.ignore_patterns("__pycache__"))
    settings = {**FAST_CLUSTER, **cluster}
    (target / "app_settings.toml").write_text(
        "[app]\n"
        f'worker = "flaky_batch.worker:{worker}"\n'
        'args_model = "flaky_batch.worker:Args"\n\n'
        "[args]\n\n"
        "[cluster]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    )
    return target


def batch_size(record: TaskRecord) -> int | None:
    """How many tasks the ``work_batch`` call that ran this task held (None: not run by one)."""
    return (record.model_extra or {}).get("batch_size")


@dataclass
class Shared:
    """The module's service: its app folder, its Env (own share and namespace) and the Service."""

    app_dir: Path
    share: Path
    env: Env
    service: Service

    def submit(self, *args: dict[str, Any], **fields: Any) -> list[str]:
        tasks = [{"args": one, **fields} for one in args]
        return [handle.task_id for handle in self.service.submit_many(tasks)]

    def wait(self, task_ids: list[str], timeout: float = 30) -> list[TaskRecord]:
        return self.service.wait(task_ids, timeout=timeout)

    def heartbeat(self) -> Heartbeat | None:
        return read_heartbeat(self.service.queue.heartbeats / "loop-0.json")

    def serving(self) -> None:
        """Wait for the loop to be ready (an earlier test may have had it killed and restarted)."""
        wait_until(
            lambda: (
                (beat := self.heartbeat()) is not None
                and beat.state in ("ready", "processing")
                and beat.pid == loop_pid(self.env)
            ),
            timeout=30,
            what="the service's loop to be ready",
        )


def loop_pid(env: Env) -> int | None:
    (row,) = supervisor_state(env).loops
    return row.pid


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One batching service for the module, started through ``AGI.serve`` and stopped by it (its
    supervisor killed by pid if the stop fails)."""
    root = tmp_path_factory.mktemp("batching")
    app_dir = batch_app(root / "apps")
    share = root / "share"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEPWARM_LOG_DIR", str(root / "logs"))
        env = Env(app_dir, share_dir=share, namespace=NAMESPACE)
        _ = env.log_dir  # resolved now, under this module's folder
        keeper = Services()
        keeper.envs.append(env)
        try:
            started = asyncio.run(AGI.serve(env, action="start"))
            assert started["workers_healthy_count"] == 1, started
            yield Shared(app_dir, share, env, Service(env))
            stopped = asyncio.run(AGI.serve(env, action="stop"))
            assert stopped["status"] == "stopped", stopped
        finally:
            keeper.stop_all()


@pytest.fixture
def service(shared: Shared) -> Shared:
    shared.serving()
    return shared


# ---------------------------------------------------------------------- each task its own outcome


def test_items_returned_as_exceptions_fail_alone_and_the_others_get_their_own_results(
    service: Shared,
) -> None:
    ids = service.submit({"value": 1}, {"action": "fail"}, {"value": 3}, {"action": "fail", "value": 4})

    first, second, third, fourth = records = service.wait(ids)

    assert [r.status for r in records] == ["done", "failed", "done", "failed"]
    assert first.result["value"] == 1 and third.result["value"] == 3  # each its own, in order
    assert first.result["method"] == "work_batch" and first.result["batch_of"] == 4
    for failed in (second, fourth):
        assert failed.error == f"ValueError: flaky_batch: item {failed.task_id} failed on purpose"
        assert failed.traceback is not None and "in fail_one" in failed.traceback  # its own traceback
        assert failed.attempt == 1 and len(failed.attempts) == 1  # failed, not retried
    assert [batch_size(r) for r in records] == [4, 4, 4, 4]


def test_a_raising_work_batch_retries_each_of_its_tasks_alone_so_only_the_poison_fails(
    service: Shared,
) -> None:
    # Every task has the same attempts: regathered as the same batch, all four would fail together.
    poison = service.service.submit_many([{"args": {"action": "poison"}, "max_attempts": 3}])[0].task_id
    others = service.submit({"value": 1}, {"value": 2}, {"value": 3}, max_attempts=3)

    sunk, *saved = service.wait([poison, *others])

    first_outcome = "batch-failed: work_batch() raised ValueError for a batch of 4"
    # The batch of four raised; each task was retried alone: the poison failed at once, by itself.
    assert sunk.status == "failed" and sunk.attempt == 2
    assert sunk.error == f"ValueError: flaky_batch: task {poison} sank its batch of 1"
    assert sunk.traceback is not None and "in finish_batch" in sunk.traceback
    assert [a["outcome"] for a in sunk.attempts] == [first_outcome, "failed"]
    assert batch_size(sunk) == 1
    # The others were sent back once, then done, each alone.
    for record, value in zip(saved, (1, 2, 3), strict=True):
        assert record.status == "done" and record.result["value"] == value
        assert record.attempt == record.result["attempt"] == 2
        assert [a["outcome"] for a in record.attempts] == [first_outcome, "done"]
        assert batch_size(record) == record.result["batch_of"] == 1
    assert service.service.queue.counts().pending == 0


def test_a_task_of_a_raising_batch_fails_with_the_batchs_error_after_its_last_attempt(
    service: Shared,
) -> None:
    poison = service.service.submit_many([{"args": {"action": "poison"}, "max_attempts": 3}])[0].task_id
    (last,) = service.submit({"value": 1}, max_attempts=1)

    sunk, spent = service.wait([poison, last])

    assert spent.status == "failed" and spent.attempt == 1
    assert spent.error == (
        f"ValueError: flaky_batch: task {poison} sank its batch of 2 "
        "(work_batch() raised it for the batch of 2 this task was in)"
    )
    assert batch_size(spent) == 2
    assert sunk.status == "failed" and sunk.attempt == 2 and batch_size(sunk) == 1


def test_a_raising_batch_of_one_fails_like_work_would(service: Shared) -> None:
    (task_id,) = service.submit({"action": "poison"}, max_attempts=3)

    (record,) = service.wait([task_id])

    assert record.status == "failed" and record.attempt == 1 and len(record.attempts) == 1
    assert record.error == f"ValueError: flaky_batch: task {task_id} sank its batch of 1"
    assert batch_size(record) == 1


@pytest.mark.parametrize(
    ("wrong", "returned"), [("not_a_list", "a dict"), ("short", "a list of 3")], ids=["dict", "too-short"]
)
def test_a_wrong_return_fails_every_task_of_the_batch_with_a_clear_error(
    service: Shared, wrong: str, returned: str
) -> None:
    ids = service.submit({"value": 1}, {"action": wrong}, {"value": 3}, {"value": 4})

    records = service.wait(ids)

    expected = (
        f"work_batch() returned {returned} for a batch of 4: "
        "expected a list of 4, one result (or exception object) per item, in order"
    )
    assert [(r.status, r.error, r.attempt) for r in records] == [("failed", expected, 1)] * 4
    assert [batch_size(r) for r in records] == [4] * 4


# ---------------------------------------------------------------------- gathering


def test_tasks_arriving_within_batch_wait_ms_join_the_first_tasks_call(service: Shared) -> None:
    queue = service.service.queue
    (first,) = service.submit({"value": 0})
    wait_until(lambda: queue.locate(first).state == "running", what="the first task to be claimed")

    later = service.submit({"value": 1}, {"value": 2}, {"value": 3})  # while the loop waits for more
    records = service.wait([first, *later])

    assert [r.result["value"] for r in records] == [0, 1, 2, 3]
    assert [(batch_size(r), r.result["batch_of"]) for r in records] == [(4, 4)] * 4


def test_max_batch_size_caps_every_call(service: Shared) -> None:
    ids = service.submit(*({"value": n} for n in range(10)))

    records = service.wait(ids)

    assert all(r.status == "done" and batch_size(r) == r.result["batch_of"] for r in records)
    sizes = Counter(batch_size(r) for r in records)
    assert max(sizes) == 4  # ten tasks at once: full batches, none larger than max_batch_size
    assert all(count % size == 0 for size, count in sizes.items() if size is not None), sizes


def test_max_batch_size_one_serves_work_when_the_app_has_it_and_work_batch_alone_otherwise(
    tmp_path: Path, loops: Loops
) -> None:
    both = Env(batch_app(tmp_path, "both_methods", max_batch_size=1))
    only_batch = Env(batch_app(tmp_path, "batch_only", worker="BatchOnlyWorker", max_batch_size=1))
    for env in (both, only_batch):
        loops.start(env)
    handles = {
        env.app_target: Service(env).submit_many(({"args": {"value": n}} for n in range(3)), queue_only=True)
        for env in (both, only_batch)
    }

    by_work = wait_for_records(Service(both).queue, [h.task_id for h in handles["both_methods"]], 30)
    by_batch = wait_for_records(Service(only_batch).queue, [h.task_id for h in handles["batch_only"]], 30)

    assert [(r.result["method"], batch_size(r)) for r in by_work.values()] == [("work", None)] * 3
    assert [(r.result["method"], batch_size(r)) for r in by_batch.values()] == [("work_batch", 1)] * 3


# ---------------------------------------------------------------------- timeouts


def test_an_async_work_batch_past_the_smallest_timeout_fails_its_whole_batch_and_the_loop_goes_on(
    tmp_path: Path, loops: Loops
) -> None:
    env = Env(batch_app(tmp_path, "async_batch", worker="AsyncWorker"))
    (loop,) = loops.start(env)
    service = Service(env)
    slow = {"args": {"action": "sleep", "seconds": 60}, "timeout_sec": 60}
    tight = {"args": {"action": "sleep", "seconds": 60}, "timeout_sec": 0.5}
    ids = [h.task_id for h in service.submit_many([slow, tight, slow, slow], queue_only=True)]

    records = wait_for_records(service.queue, ids, timeout=30)

    expected = "task-timeout: work_batch() ran past 0.5s (this task was in a batch of 4)"
    assert [(r.status, r.error) for r in records.values()] == [("failed", expected)] * 4
    assert [batch_size(r) for r in records.values()] == [4] * 4
    after = service.submit({"value": 7}, queue_only=True).result(timeout=30)  # the same loop serves on
    assert after["method"] == "async work_batch" and after["pid"] == loop.process.pid
    assert loop.process.poll() is None


def test_a_hanging_sync_work_batch_is_ended_by_the_supervisor_for_every_task_of_its_batch(
    service: Shared,
) -> None:
    victim = loop_pid(service.env)
    ids = [service.submit({"value": 1}, timeout_sec=120)[0]]
    ids += service.submit({"action": "hang"}, timeout_sec=1)
    ids += service.submit({"value": 3}, {"value": 4}, timeout_sec=120)

    records = service.wait(ids)  # within its deadline: the batch ends at its smallest timeout, 1 s

    expected = (
        "task-timeout: its work_batch() call, a batch of 4, ran past 1.0s, the smallest timeout of its tasks"
    )
    assert [(r.status, r.error) for r in records] == [("failed", expected)] * 4  # not only the oldest
    wait_until(lambda: loop_pid(service.env) not in (None, victim), timeout=30, what="a new loop")
    assert "task-timeout" in service.service.status().restart_reasons
    service.serving()
    (after,) = service.submit({"value": 5})
    assert service.wait([after])[0].result["value"] == 5  # the restarted loop serves


# ---------------------------------------------------------------------- the heartbeat, a killed loop


def test_the_heartbeat_lists_the_running_batch(service: Shared) -> None:
    ids = service.submit(*({"action": "sleep", "seconds": 1.0, "value": n} for n in range(4)))

    wait_until(
        lambda: (beat := service.heartbeat()) is not None and sorted(beat.batch) == sorted(ids),
        what="the heartbeat to list the batch's four tasks",
    )
    assert all(r.status == "done" for r in service.wait(ids))
    wait_until(
        lambda: (beat := service.heartbeat()) is not None and beat.batch == [],
        what="the heartbeat to list no batch once it is done",
    )


def test_a_loop_killed_under_a_batch_requeues_each_of_its_tasks_once_and_loses_nothing(
    service: Shared, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    ids = service.submit(
        *({"action": "sleep", "seconds": 1.0, "value": n, "record_to": str(runs)} for n in range(8))
    )
    wait_until(
        lambda: (beat := service.heartbeat()) is not None and len(beat.batch) == 4,
        what="a batch of four to run",
    )
    beat = service.heartbeat()
    assert beat is not None and beat.pid == loop_pid(service.env)
    in_flight = set(beat.batch)
    os.kill(beat.pid, signal.SIGKILL)

    records = dict(zip(ids, service.wait(ids, timeout=60), strict=True))

    assert all(r.status == "done" for r in records.values())
    queue = service.service.queue
    terminal = Counter(
        name.removesuffix(TASK_SUFFIX)
        for folder in (queue.done, queue.failed)
        for name in os.listdir(folder)
        if name.endswith(TASK_SUFFIX)
    )
    assert [terminal[task_id] for task_id in ids] == [1] * 8  # exactly one terminal file each
    assert queue.counts().pending == queue.counts().running == 0
    killed = {task_id for task_id, r in records.items() if r.attempt == 2}
    assert killed == in_flight  # the batch in flight, each attempt counted once for the one kill
    assert all(records[task_id].attempt == 1 for task_id in set(ids) - killed)
    for task_id in killed:
        assert records[task_id].attempts[0]["outcome"] == "loop-error"
    executions = Counter(line.split()[0] for line in runs.read_text().splitlines())
    assert {task_id: executions[task_id] for task_id in ids} == {
        task_id: records[task_id].attempt for task_id in ids
    }


# ---------------------------------------------------------------------- every surface


def test_the_python_api_the_cli_and_agi_get_the_same_results_from_a_batching_app(
    service: Shared, tmp_path: Path
) -> None:
    values = [1, 2, 3, 4]
    python = [
        h.result(timeout=30) for h in service.service.submit_many({"args": {"value": v}} for v in values)
    ]

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"args": {"value": v}}) + "\n" for v in values))
    common = [str(service.app_dir), "--namespace", NAMESPACE, "--json"]
    cli_env = dict(os.environ, KEEPWARM_SHARE=str(service.share))
    submitted = cli(cli_env, "submit", *common, "--file", str(tasks), "--wait", "--timeout", "30")
    by_cli = json.loads(submitted.stdout)["results"]
    asked = cli(cli_env, "result", *common, by_cli[0]["task_id"], "--timeout", "30")

    queued = [asyncio.run(AGI.submit(service.env, args={"value": v}))["task_ids"][0] for v in values]
    by_agi = [r.result for r in service.wait(queued)]
    status = asyncio.run(AGI.serve(service.env, action="status"))

    def seen(results: list[dict[str, Any]]) -> list[tuple[str, int]]:
        return [(r["method"], r["value"]) for r in results]

    expected = [("work_batch", v) for v in values]
    assert seen(python) == seen([r["result"] for r in by_cli]) == seen(by_agi) == expected
    assert json.loads(asked.stdout)["result"] == by_cli[0]["result"]
    for shown in by_cli:  # the CLI's JSON leaves batch_size out: the record on disk has it
        record = service.service.queue.read_record(shown["task_id"])
        assert record is not None and batch_size(record) == shown["result"]["batch_of"]
    assert status["workers_healthy_count"] == 1 and status["status"] in ("running", "idle")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(KEEPWARM), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_batch_waits_batch_wait_ms_from_its_first_tasks_submit_not_from_its_claim(
    tmp_path: Path, loops: Loops
) -> None:
    """A task that already waited longer than ``batch_wait_ms`` in the queue runs at once, alone."""
    env = Env(batch_app(tmp_path, "patient", max_batch_size=4, batch_wait_ms=60_000))
    service = Service(env)
    (handle,) = service.submit_many([{"args": {"value": 5}}], queue_only=True)
    pending = service.queue.pending
    (name,) = os.listdir(pending)
    # Submitted two minutes ago by its name's sequence (the submit time): its wait is over.
    two_minutes_ago = int(name[:20]) - 120 * 10**9
    os.rename(pending / name, pending / f"{two_minutes_ago:020d}{name[20:]}")
    loops.start(env)

    record = handle.record(timeout=30)  # a wait from the claim would hold it for 60 s

    assert record.status == "done" and batch_size(record) == 1


def test_a_batch_claimed_in_several_claims_takes_the_known_names_without_waiting(
    tmp_path: Path, loops: Loops
) -> None:
    """``claim_batch`` below ``max_batch_size``: the rest of a batch comes from names already known,
    at once, not after ``batch_wait_ms`` (60 s here) of waiting for news."""
    env = Env(
        batch_app(
            tmp_path, "chunked", max_batch_size=8, claim_batch=2, batch_wait_ms=60_000, rescan_interval_sec=60
        )
    )
    service = Service(env)
    handles = service.submit_many([{"args": {"value": n}} for n in range(8)], queue_only=True)
    loops.start(env)

    records = wait_for_records(service.queue, [h.task_id for h in handles], timeout=30)

    assert [batch_size(r) for r in records.values()] == [8] * 8


def test_a_name_learnt_twice_is_claimed_once(tmp_path: Path) -> None:
    """A pending name can be learnt twice: a candidate gone stale (another loop took the task), then
    the event of its requeue. Its second claim finds the file already in the loop's own folder, which
    is no win: one batch held the same task twice and ran it twice (the batch chaos run found it)."""
    service = Service(Env(batch_app(tmp_path, "twice")))
    queue = service.queue.ensure()
    owner = queue.owner_dir("loop-0", "learner")
    elsewhere = queue.owner_dir("loop-1", "other")
    owner.mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    interrupt, _ = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with Watcher([queue.pending], mask=IN_MOVED_TO) as watcher:
        claims = Claims(queue, owner, watcher, rescan_sec=60, interrupt_fd=interrupt)
        service.submit_many([{"args": {"value": 1}}], queue_only=True)
        claims.wait(0)  # the name, from its event and from the first relisting
        (name,) = os.listdir(queue.pending)
        os.rename(queue.pending / name, elsewhere / name)  # another loop's claim...
        os.rename(elsewhere / name, queue.pending / name)  # ...and its requeue, under the same name
        claims.wait(0)  # the requeue's event: the name again

        assert claims.take(8) == [str(owner / name)]
        assert os.listdir(owner) == [name]
