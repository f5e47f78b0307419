"""The file queue: names, back-pressure, claims, terminal files, requeue, cancel, counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import InvalidTaskError, QueueFull, TaskNotFound
from keepwarm.queue.layout import ServiceLayout
from keepwarm.queue.recovery import RequeueResult
from keepwarm.queue.task import TaskRecord, TaskState, terminal_record
from keepwarm.queue.taskfiles import seq_from_name
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.settings import ClusterSettings

from .conftest import Loops, copy_app, queue_of


def test_submit_publishes_time_ordered_v1_task_files(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    tasks = queue.submit([queue.make_task({"x": n}, task_name="n") for n in range(1, 6)])
    names = sorted(os.listdir(queue.pending))
    assert [name.split("-", 1)[1] for name in names] == [f"{t.task_id}.task.json" for t in tasks]
    seqs = [seq_from_name(name) for name in names]
    assert all(len(name.split("-")[0]) == 20 for name in names)
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    content = json.loads((queue.pending / names[0]).read_text())
    assert content["schema"] == "agi.service.task.v1"
    assert content["args"] == {"x": 1} and content["task_name"] == "n"
    assert content["attempt"] == 1 and content["max_attempts"] == 3
    assert content["timeout_sec"] == 3600
    assert set(content) >= {"task_id", "created_at", "plan", "execution_id"}


def test_submit_leaves_no_temp_files_behind(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    queue.submit([queue.make_task({"x": 1}) for _ in range(50)])
    assert not [n for n in os.listdir(queue.pending) if n.startswith(".")]


def test_max_pending_refuses_the_whole_batch_with_a_clear_error(tmp_path: Path) -> None:
    app = copy_app(tmp_path, "mycode_project", **{"[cluster]": "[cluster]\nmax_pending = 3"})
    env = Env(app)
    queue = queue_of(env)
    queue.submit([queue.make_task({"x": 1}) for _ in range(2)])
    with pytest.raises(QueueFull, match=r"max_pending = 3"):
        queue.submit([queue.make_task({"x": 1}) for _ in range(2)])
    assert queue.count_pending() == 2
    queue.submit([queue.make_task({"x": 1})])
    assert queue.count_pending() == 3


def test_oversized_and_unsafe_tasks_are_refused_at_submit(mycode_env: Env) -> None:
    queue = TaskQueue(mycode_env.queue_dir, settings=ClusterSettings(max_task_bytes=1000)).ensure()
    with pytest.raises(InvalidTaskError, match="over max_task_bytes"):
        queue.submit([queue.make_task({"blob": "x" * 2000})])
    with pytest.raises(InvalidTaskError, match="unsafe task_id"):
        queue.make_task({}, task_id="../escape")
    with pytest.raises(InvalidTaskError, match="unsafe execution_id"):
        queue.make_task({}, execution_id="a/b")
    assert queue.count_pending() == 0


def test_jsonl_lines_are_validated_all_or_nothing(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    with pytest.raises(InvalidTaskError, match=r"tasks.jsonl line 2: colour: unknown key"):
        queue.submit_partials(
            [(1, {"args": {"x": 1}}), (2, {"args": {}, "colour": "red"})], source="tasks.jsonl"
        )
    with pytest.raises(InvalidTaskError, match=r"task 1: args: required but missing"):
        queue.submit_partials([(1, {"task_name": "t"})])
    assert queue.count_pending() == 0
    tasks = queue.submit_partials([(1, {"args": {"x": 1}, "execution_id": "e1", "max_attempts": 5})])
    assert tasks[0].execution_id == "e1" and tasks[0].max_attempts == 5


CLAIMER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from keepwarm.queue.taskqueue import TaskQueue
    queue = TaskQueue(Path(sys.argv[1]))
    owner = queue.owner_dir(sys.argv[2], "i1")
    owner.mkdir(parents=True)
    sys.stdin.readline()  # start together
    won = []
    for name in queue.scan_pending():
        if queue.claim(name, owner) is not None:
            won.append(name)
    print("\\n".join(won))
    """
)


def test_racing_processes_claim_each_task_exactly_once(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    tasks = queue.submit([queue.make_task({"x": n}) for n in range(1, 2001)])
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(queue.root), f"racer{index}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(4)
    ]
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    claimed: list[str] = []
    for racer in racers:
        out, _ = racer.communicate(timeout=60)
        assert racer.returncode == 0
        claimed += out.split()
    assert len(claimed) == len(set(claimed)) == 2000
    assert {name.split("-", 1)[1] for name in claimed} == {f"{t.task_id}.task.json" for t in tasks}
    assert queue.count_pending() == 0


def test_first_terminal_file_wins_and_a_duplicate_is_counted(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    (task,) = queue.submit([queue.make_task({"x": 1})])
    first = terminal_record(task, "done", result=1)
    second = terminal_record(task, "failed", error="late")
    assert queue.publish_terminal(first)
    owner = queue.owner_dir("loop-0", "i1")
    owner.mkdir(parents=True)
    claimed = owner / "x.task.json"
    claimed.write_text("{}")
    assert not queue.finish(claimed, second)
    assert queue.read_record(task.task_id).result == 1  # type: ignore[union-attr]
    assert not (queue.failed / f"{task.task_id}.task.json").exists()
    assert [e["task_id"] for e in queue.events.read("duplicate")] == [task.task_id]
    assert not claimed.exists()


def _claim_all(queue: TaskQueue, slot: str) -> Path:
    owner = queue.owner_dir(slot, "i1")
    owner.mkdir(parents=True, exist_ok=True)
    for name in queue.scan_pending():
        queue.claim(name, owner)
    return owner


def test_requeue_keeps_order_and_counts_attempts(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    tasks = queue.submit([queue.make_task({"x": n}, max_attempts=2) for n in range(1, 4)])
    names_before = queue.scan_pending()
    owner = _claim_all(queue, "loop-0")
    outcomes = queue.requeue(owner, "loop-error")
    assert [o.outcome for o in outcomes] == ["requeued"] * 3
    assert queue.scan_pending() == names_before  # same names: same place in the FIFO
    requeued = [json.loads((queue.pending / n).read_text()) for n in names_before]
    assert [t["attempt"] for t in requeued] == [2, 2, 2]
    assert requeued[0]["attempts"][0]["outcome"] == "loop-error"
    assert not owner.exists()

    owner = _claim_all(queue, "loop-1")
    outcomes = queue.requeue(owner, "loop-error")
    assert [o.outcome for o in outcomes] == ["max-attempts"] * 3
    record = queue.read_record(tasks[0].task_id)
    assert record is not None and record.status == "failed"
    assert record.error is not None and record.error.startswith("max-attempts")
    assert len(record.attempts) == 3
    assert queue.counts().failed == 3 and queue.counts().pending == 0


def test_requeue_from_stop_does_not_count_an_attempt(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    queue.submit([queue.make_task({"x": 1}, max_attempts=1)])
    owner = _claim_all(queue, "loop-0")
    assert [o.outcome for o in queue.requeue(owner, "stop", count_attempt=False)] == ["requeued"]
    (name,) = queue.scan_pending()
    assert json.loads((queue.pending / name).read_text())["attempt"] == 1


def test_a_task_with_a_terminal_file_is_not_requeued(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    (task,) = queue.submit([queue.make_task({"x": 1})])
    owner = _claim_all(queue, "loop-0")
    assert queue.publish_terminal(terminal_record(task, "done", result=1))
    assert [o.outcome for o in queue.requeue(owner, "loop-error")] == ["already-terminal"]
    assert queue.count_pending() == 0


def test_cancel_by_id_and_by_execution_touches_only_those_pending_tasks(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    a, b = queue.submit([queue.make_task({"x": 1}, execution_id="run-a") for _ in range(2)])
    (c,) = queue.submit([queue.make_task({"x": 1}, execution_id="run-b")])
    (d,) = queue.submit([queue.make_task({"x": 1})])
    assert queue.cancel([d.task_id]) == [d.task_id]
    assert sorted(queue.cancel(execution_id="run-a")) == sorted([a.task_id, b.task_id])
    assert [n for n in queue.scan_pending() if c.task_id in n]
    for task in (a, b, d):
        record = queue.read_record(task.task_id)
        assert record is not None and record.status == "cancelled"
    assert queue.cancel(["no-such-task"]) == []
    assert queue.counts().pending == 1 and queue.counts().failed == 3
    assert not os.listdir(queue.running)  # the canceller's claim folder is gone


def test_counts_and_oldest_age_come_from_listings(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    tasks = queue.submit([queue.make_task({"x": n}) for n in range(1, 1001)])
    owner = queue.owner_dir("loop-0", "i1")
    owner.mkdir()
    names = queue.scan_pending()
    for name in names[:10]:
        queue.claim(name, owner)
    for task in tasks[500:520]:
        queue.publish_terminal(terminal_record(task, "done", result=0))
    counts = queue.counts()
    assert (counts.pending, counts.running, counts.done, counts.failed) == (990, 10, 20, 0)
    assert counts.oldest_pending_age_sec is not None and counts.oldest_pending_age_sec >= 0
    assert queue.locate(tasks[0].task_id).state == "running"
    assert queue.locate(tasks[600].task_id).state == "pending"
    assert queue.locate(tasks[510].task_id).state == "done"


def test_share_and_queue_folders_are_private(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    share = mycode_env.share_root
    folders = [share, share / mycode_env.namespace, mycode_env.service_dir, queue.root]
    folders += [queue.pending, queue.running, queue.done, queue.failed, queue.heartbeats]
    for folder in folders:
        assert folder.stat().st_mode & 0o777 == 0o700, folder


def test_task_ids_from_callers_cannot_leave_the_queue(mycode_env: Env, tmp_path: Path) -> None:
    queue = queue_of(mycode_env)
    (tmp_path / "evil.task.json").write_text("{}")
    for bad in ("../../evil", "/etc/passwd", "..", ".hidden", "a/b"):
        with pytest.raises(TaskNotFound, match="is not a task id"):
            queue.locate(bad)
        with pytest.raises(TaskNotFound):
            queue.cancel([bad])


def test_zero_attempts_or_timeout_are_refused_not_defaulted(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    with pytest.raises(InvalidTaskError, match="max_attempts"):
        queue.make_task({}, max_attempts=0)
    with pytest.raises(InvalidTaskError, match="timeout_sec"):
        queue.make_task({}, timeout_sec=0)


def test_locate_finds_a_task_that_moves_while_it_looks(mycode_env: Env, loops: Loops) -> None:
    loops.start(mycode_env, count=2)
    queue = queue_of(mycode_env)
    for _ in range(300):
        (task,) = queue.submit([queue.make_task({"x": 5})])
        assert queue.locate(task.task_id).state in ("pending", "running", "done")


# ---------------------------------------------------------------- retry


def rejected(queue: TaskQueue, name: str, content: str) -> None:
    """Write a hand-made file into pending/ and claim it as a loop does: the loop rejects it."""
    (queue.pending / name).write_text(content)
    owner = queue.owner_dir("loop-0", "by-hand")
    owner.mkdir(parents=True, exist_ok=True)
    claimed = queue.claim(name, owner)
    assert claimed is not None and queue.load_claimed(claimed) is None


def test_bulk_retry_skips_what_is_not_a_failed_task_says_why_and_retries_the_rest(mycode_env: Env) -> None:
    from .test_cli import APPS, keepwarm_cli

    queue = queue_of(mycode_env)
    cancelled = queue.submit([queue.make_task({"x": 3})])[0].task_id
    assert queue.cancel([cancelled]) == [cancelled]
    rejected(queue, "listed.task.json", "[1, 2, 3]")  # JSON, but not an object
    rejected(queue, f"{'1' * 20}-named.task.json", "[1, 2, 3]")  # its name carries an id: a record too

    result = keepwarm_cli("retry", "mycode_project", "--apps-path", APPS, "--failed", "--json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["retried"] == [cancelled] and queue.locate(cancelled).state == "pending"
    skipped = document["not_retried"]
    assert sorted(skipped) == sorted(["listed", f"{'1' * 20}-named", "named"])
    assert skipped["listed"].startswith("failed/listed.task.json is a rejected file (invalid task:")
    assert "fix it and submit it again" in skipped["listed"]
    assert skipped["named"].startswith("its task file was rejected: ")
    again = Service(mycode_env).retry(failed=True)  # the same answer from Python, now with nothing to retry
    assert again == [] and again.not_retried == skipped


def test_retry_of_an_id_that_is_not_a_failed_task_says_where_it_is(mycode_env: Env) -> None:
    from .test_cli import APPS, keepwarm_cli

    queue = queue_of(mycode_env)
    pending = queue.submit([queue.make_task({"x": 3})])[0].task_id

    result = keepwarm_cli("retry", "mycode_project", "--apps-path", APPS, "nosuch", pending)

    assert result.returncode == 1 and result.stdout == ""
    assert "not retried nosuch: not found among failed tasks, nor anywhere else in the queue" in result.stderr
    assert f"not retried {pending}: not found among failed tasks: it is pending" in result.stderr


def test_a_hand_written_name_with_a_19_digit_sequence_is_rejected_saying_it_needs_20(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    task = queue.make_task({"x": 3}, task_id="byhand")
    name = f"{'1' * 19}-byhand.task.json"

    rejected(queue, name, json.dumps(task.to_json_dict()))

    reason = (queue.failed / f"{name}.rejection.txt").read_text()
    assert "starts with a 19-digit sequence, but a sequence must be 20 digits" in reason
    assert f"0{'1' * 19}-byhand.task.json" in reason and "or no sequence: byhand.task.json" in reason


def test_every_path_of_a_service_comes_from_its_layout(mycode_env: Env) -> None:
    layout = ServiceLayout.of(mycode_env.share_root, mycode_env.namespace, mycode_env.app_target)
    root = mycode_env.share_root / mycode_env.namespace / "service" / mycode_env.app_target
    assert mycode_env.layout == layout and mycode_env.service_dir == layout.root == root
    assert mycode_env.queue_dir == layout.queue.root == root / "queue"
    files = (layout.service_record, layout.supervisor_state, layout.health, layout.lock, layout.events)
    assert [f.name for f in files] == [
        "service.json",
        "supervisor.json",
        "health.json",
        "service.lock",
        "events.jsonl",
    ]
    assert layout.cluster_keeper == root / "cluster.json"
    assert layout.command_file("c1") == root / "control" / "c1.cmd.json"
    assert layout.ack_file("c1") == root / "control" / "c1.ack.json"
    assert layout.run_marker("loop-0", "i1") == root / "loops" / "loop-0.i1.run"
    queue = queue_of(mycode_env)
    assert queue.layout == layout.queue and queue.events.path == layout.events
    assert queue.heartbeats / "loop-0.json" == layout.queue.heartbeat("loop-0")
    assert queue.owner_dir("loop-0", "i1") == root / "queue" / "running" / "loop-0.i1"
    assert [f.name for f in layout.queue.folders] == ["pending", "running", "done", "failed", "heartbeats"]


def test_task_states_are_a_vocabulary_and_finished_ones_have_a_record() -> None:
    assert [s.value for s in TaskState] == ["pending", "running", "done", "failed", "cancelled"]
    assert [s for s in TaskState if s.finished] == [TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED]
    assert TaskState("cancelled") == "cancelled" and f"{TaskState.RUNNING}" == "running"


def test_terminal_record_is_a_model_whose_file_keeps_the_task(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    (task,) = queue.submit([queue.make_task({"x": 2}, task_name="double")])
    record = terminal_record(task, "done", result=4, slot="loop-0", runtime_sec=0.5)
    assert isinstance(record, TaskRecord) and record.state is TaskState.DONE
    assert queue.publish_terminal(record)
    saved = json.loads((queue.done / f"{task.task_id}.task.json").read_text())
    assert saved["schema"] == "agi.service.task.v1" and saved["args"] == {"x": 2}
    assert saved["status"] == "done" and saved["result"] == 4 and saved["runtime_sec"] == 0.5
    assert saved["claim"]["slot"] == "loop-0" and saved["attempts"][-1]["outcome"] == "done"
    assert queue.locate(task.task_id).state is TaskState.DONE


def test_task_rows_are_typed_and_print_each_state_with_its_own_fields(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    done, running, cancelled, pending = queue.submit([queue.make_task({"x": i}) for i in range(4)])
    owner = _claim_all(queue, "loop-0")
    for name in sorted(os.listdir(owner))[2:]:  # the last two go back: one to cancel, one to wait
        os.rename(owner / name, queue.pending / name)
    finished = terminal_record(done, "done", result=0, runtime_sec=1.0)
    queue.finish(owner / sorted(os.listdir(owner))[0], finished)
    assert queue.cancel([cancelled.task_id]) == [cancelled.task_id]
    rows = {row.task_id: row for row in queue.list_tasks()}
    assert {task_id: row.state for task_id, row in rows.items()} == {
        done.task_id: TaskState.DONE,
        running.task_id: TaskState.RUNNING,
        cancelled.task_id: TaskState.CANCELLED,
        pending.task_id: TaskState.PENDING,
    }
    assert list(rows[pending.task_id].to_json_dict()) == ["task_id", "task_name", "state", "at"]
    assert rows[running.task_id].to_json_dict()["owner"] == "loop-0.i1"
    assert rows[done.task_id].to_json_dict() == {
        "task_id": done.task_id,
        "task_name": "task",
        "state": "done",
        "at": finished.finished_at,  # the record's own ISO-8601 text
        "runtime_sec": 1.0,
        "error": None,
    }
    assert rows[cancelled.task_id].to_json_dict()["error"] == "cancelled"
    assert all(row.at is not None and row.at.utcoffset() == timedelta(0) for row in rows.values())
    assert [row.task_id for row in queue.list_tasks("cancelled")] == [cancelled.task_id]
    assert queue.list_tasks("failed") == []


def test_requeue_outcomes_are_a_vocabulary(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    queue.submit([queue.make_task({"x": 1}, max_attempts=1)])
    outcomes = queue.requeue(_claim_all(queue, "loop-0"), "loop-error")
    assert [o.outcome for o in outcomes] == [RequeueResult.MAX_ATTEMPTS]
    assert {r.value for r in RequeueResult} == {"requeued", "max-attempts", "already-terminal", "rejected"}


def test_task_ids_and_temp_names_do_not_repeat_when_an_app_seeds_random(tmp_path: Path) -> None:
    """ML apps call random.seed(); ids drawn from the shared generator would then repeat."""
    import random

    from keepwarm._sys.atomic import temp_name
    from keepwarm.queue.task import new_task_id

    random.seed(42)
    first = (new_task_id(), temp_name(tmp_path, "x"))
    random.seed(42)
    second = (new_task_id(), temp_name(tmp_path, "x"))
    assert first[0] != second[0] and first[1] != second[1]
    assert len(first[0]) == 32 and int(first[0], 16) >= 0

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a forked child draws its own ids, not its parent's next ones
        os.write(write, new_task_id().encode())
        os._exit(0)
    os.close(write)
    in_child = os.read(read, 64).decode()
    os.waitpid(child, 0)
    os.close(read)
    assert in_child != new_task_id()


def _finish_by_hand(queue: TaskQueue, task_id: str, value: int) -> None:
    """Claim a pending task like a loop and publish its done record."""
    owner = queue.owner_dir("hand", task_id[:8])
    owner.mkdir(parents=True)
    (name,) = [n for n in queue.scan_pending() if task_id in n]
    claimed = queue.claim(name, owner)
    assert claimed is not None
    task = queue.load_claimed(claimed)
    assert task is not None
    queue.finish(claimed, terminal_record(task, "done", result=value))


def test_a_result_seen_by_an_earlier_wait_of_the_thread_is_not_missed(mycode_env: Env) -> None:
    """A handle made after this thread's watch began skips the first look for its record: the
    events an earlier wait read for other tasks must be kept for it."""
    from keepwarm.api import Service

    service = Service(mycode_env)
    first, second = service.submit_many([{"args": {"x": 1}}, {"args": {"x": 2}}], queue_only=True)
    assert first.since is not None  # the watch vouches for every event after the submit
    _finish_by_hand(service.queue, first.task_id, 10)
    _finish_by_hand(service.queue, second.task_id, 20)
    assert second.result(timeout=5) == 20  # this wait reads both records' events
    assert first.result(timeout=5) == 10  # found from what the earlier wait saw, not lost
    assert second.record(timeout=5).result == 20  # and a second wait for a record finds it again

    third = service.submit({"x": 3}, queue_only=True)
    _finish_by_hand(service.queue, third.task_id, 30)
    records: dict[str, object] = {}
    waiter = threading.Thread(target=lambda: records.update(value=third.result(timeout=5)))
    waiter.start()  # another thread has its own watch, which cannot vouch: it looks first
    waiter.join()
    assert records == {"value": 30}
