"""Cleaning up after a dead supervisor (service/leftovers.py), with a real process as its loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from keepwarm._sys.procs import process_alive
from keepwarm.backends.local import LocalBackend
from keepwarm.env import Env
from keepwarm.queue.state import LoopRow, SupervisorState
from keepwarm.service.leftovers import Leftovers

from .conftest import queue_of, wait_until

INCARNATION = "leftover0001"  # on the process's command line: how a loop is told from a reused pid


def _dead_supervisor_state(loop_pid: int) -> SupervisorState:
    row = LoopRow(slot="loop-0", incarnation=INCARNATION, pid=loop_pid, host="here", started_at=time.time())
    return SupervisorState(
        pid=1 << 22, host="here", incarnation="gone", timestamp=0.0, desired_slots=1, loops=[row], version="0"
    )


def test_a_dead_supervisors_loop_is_stopped_and_its_task_requeued_without_an_attempt(
    mycode_env: Env,
) -> None:
    queue = queue_of(mycode_env)
    [task] = queue.submit([queue.make_task({"x": 1})])
    owner = queue.owner_dir("loop-0", INCARNATION)
    owner.mkdir()
    assert queue.claim(os.listdir(queue.pending)[0], owner) is not None
    loop = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", INCARNATION])
    try:
        time.sleep(0.2)  # its command line is in place
        left = Leftovers(queue, LocalBackend(mycode_env), _dead_supervisor_state(loop.pid), stop_timeout=5.0)
        assert left.found == 1 and not left.settled

        left.stop_and_requeue("stop", kill_grace=5.0)

        assert loop.wait(timeout=5) == -signal.SIGTERM
        assert left.settled and left.requeued == 1
        assert not owner.exists()
        [name] = os.listdir(queue.pending)
        assert task.task_id in name
        assert json.loads((queue.pending / name).read_bytes())["attempt"] == 1
    finally:
        loop.kill()
        loop.wait()


def test_a_claim_whose_loop_is_gone_is_requeued_at_the_next_supervisors_first_step(mycode_env: Env) -> None:
    queue = queue_of(mycode_env)
    queue.submit([queue.make_task({"x": 1})])
    owner = queue.owner_dir("loop-0", INCARNATION)
    owner.mkdir()
    assert queue.claim(os.listdir(queue.pending)[0], owner) is not None
    left = Leftovers(queue, LocalBackend(mycode_env), _dead_supervisor_state(1 << 22), stop_timeout=5.0)
    assert left.found == 0

    assert left.settle("supervisor-restart") == set()

    assert left.settled and left.requeued == 1
    assert queue.count_pending() == 1 and not owner.exists()
    [name] = os.listdir(queue.pending)
    assert json.loads((queue.pending / name).read_bytes())["attempt"] == 2  # its loop died: an attempt spent


def test_a_loop_the_dead_supervisor_had_not_recorded_keeps_its_claims_while_it_lives(mycode_env: Env) -> None:
    """A supervisor killed moments after starting a loop left no row for it: the loop's heartbeat
    names its pid, so its claims are not requeued under it (another loop would run them again)."""
    from keepwarm.runtime.heartbeat import HeartbeatWriter

    queue = queue_of(mycode_env)
    queue.submit([queue.make_task({"x": 1})])
    owner = queue.owner_dir("loop-0", INCARNATION)
    owner.mkdir()
    assert queue.claim(os.listdir(queue.pending)[0], owner) is not None
    loop = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", INCARNATION])
    try:
        wait_until(lambda: process_alive(loop.pid, INCARNATION), what="the loop's command line")
        beat = HeartbeatWriter(queue.layout.heartbeat("loop-0"), "loop-0", INCARNATION, 1.0)
        beat.beat()  # as the loop does before its first claim, with the loop's pid in place of ours
        record = json.loads(queue.layout.heartbeat("loop-0").read_bytes())
        queue.layout.heartbeat("loop-0").write_text(json.dumps(record | {"pid": loop.pid}))
        state = _dead_supervisor_state(loop.pid).model_copy(update={"loops": []})  # no row for it

        left = Leftovers(queue, LocalBackend(mycode_env), state, stop_timeout=60.0)
        assert left.settle("supervisor-restart") == {"loop-0"}  # still running: its slot waits

        assert os.listdir(owner) != [] and os.listdir(queue.pending) == []  # not requeued under it
        loop.kill()
        loop.wait()
        assert left.settle("supervisor-restart") == set()
        assert left.requeued == 1 and len(os.listdir(queue.pending)) == 1  # once it is gone
    finally:
        loop.kill()
        loop.wait()
