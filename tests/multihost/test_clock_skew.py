"""Clocks that disagree: a service whose processes run 30 s off the reader's clock is judged right.

Each "host" here is a set of processes whose wall clock is shifted: every ``time.time()`` and
``time.time_ns()`` of theirs (all keepwarm reads of the wall clock) runs ``SKEW_SEC`` off, while the
monotonic clock and the times the kernel stamps on files are left alone, as on a host with a wrong
clock writing to a share whose file times come from the share's own clock. Liveness must never compare
one process's wall clock with another's, so every verdict below holds at any skew.

The shift is a ``sitecustomize`` module on the processes' ``PYTHONPATH`` (children inherit it), not
Debian's libfaketime: libfaketime 0.9.10 under Python 3.11 either hangs every
``threading.Event.wait(timeout)`` (monotonic clock faked: ``sem_clockwait`` is not intercepted) or fails
every ``time.sleep`` with EINVAL (``FAKETIME_DONT_FAKE_MONOTONIC=1``: its ``clock_nanosleep`` wrapper).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.queue.shareclock import Clock
from keepwarm.queue.task import epoch_of, iso_of
from keepwarm.runtime.heartbeat import Heartbeat, read_heartbeat
from keepwarm.service.clocks import rebase_heartbeat

from ..conftest import Services, copy_app, supervisor_state, wait_until

KEEPWARM = Path(sys.executable).parent / "keepwarm"
SKEW_SEC = 30.0
FRESH_SEC = 3.0  # a heartbeat age, seen from any clock, stays under this (the beat is every 0.2 s)

# Read once, when the process starts: a process started after the file changed gets the new offset.
SITECUSTOMIZE = """
import os
import time

def _offset():
    try:
        with open(os.environ["SKEWED_CLOCK_FILE"]) as source:
            return float(source.read())
    except (KeyError, OSError, ValueError):
        return 0.0

_SKEW = _offset()
if _SKEW:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _SKEW
    time.time_ns = lambda: _time_ns() + int(_SKEW * 1e9)
"""


@pytest.fixture
def skewed(tmp_path: Path) -> Path:
    """The file holding the skew (seconds) a process started with ``skewed_environ`` reads at start."""
    folder = tmp_path / "skewed-clock"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    offset = folder / "offset"
    offset.write_text("0")
    return offset


def skewed_environ(offset: Path) -> dict[str, str]:
    """This test's environment for a process whose clock is off by what ``offset`` says at its start."""
    path = os.pathsep.join(p for p in (str(offset.parent), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ) | {"PYTHONPATH": path, "SKEWED_CLOCK_FILE": str(offset)}


def keepwarm(env: Env, *args: str, environ: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI for ``env``'s app, run with ``environ`` (a skewed clock, or this test's)."""
    return subprocess.run(
        [str(KEEPWARM), *args, env.app_target, "--apps-path", str(env.app_dir.parent)],
        env=dict(environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def flaky(tmp_path: Path, slots: int) -> Env:
    """The bundled ``flaky`` app: heartbeats every 0.2 s, stale after 2 s (far under the skew)."""
    return Env(copy_app(tmp_path, "flaky", **{"slots = 2": f"slots = {slots}"}))


def loop_incarnations(env: Env) -> dict[str, str]:
    return {row.slot: row.incarnation for row in supervisor_state(env).loops}


def test_a_service_behind_is_healthy_to_readers_ahead_and_on_time(
    tmp_path: Path, services: Services, skewed: Path
) -> None:
    """Supervisor and loops 30 s behind; ``status`` and the gate run 30 s ahead, this test on time."""
    env = flaky(tmp_path, slots=2)
    services.envs.append(env)  # stopped (by its supervisor's pid) at the end
    skewed.write_text(f"-{SKEW_SEC}")
    started = keepwarm(env, "start", environ=skewed_environ(skewed))
    assert started.returncode == 0, started.stderr
    incarnations = loop_incarnations(env)
    beat = read_heartbeat(env.layout.queue.heartbeat("loop-0"))
    assert beat is not None and time.time() - (epoch_of(beat.timestamp) or 0) > SKEW_SEC - FRESH_SEC

    service = Service(env)
    handle = service.submit({"action": "sleep", "seconds": 1}, timeout_sec=5)
    assert handle.result(timeout=30) is not None  # run 1 s of its 5: not overdue on any clock
    time.sleep(2.5)  # heartbeat_timeout_sec (2 s) passes: a loop misjudged as stale would be restarted

    skewed.write_text(f"{SKEW_SEC}")
    ahead = skewed_environ(skewed)
    gate = keepwarm(env, "health", "--gate", "--allow-idle", "--json", environ=ahead)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    status = json.loads(keepwarm(env, "status", "--json", environ=ahead).stdout)
    for report in (status, service.status().to_json_dict()):
        assert report["status"] in ("running", "idle"), report["status_reason"]
        assert report["workers_healthy_count"] == 2, report["worker_health"]
        assert report["supervisor"]["alive"] and report["supervisor"]["heartbeat_age_sec"] < FRESH_SEC
        assert all(row["heartbeat_age_sec"] < FRESH_SEC for row in report["worker_health"])
    assert loop_incarnations(env) == incarnations  # no loop was judged stale or missing and restarted
    assert supervisor_state(env).restarts == []


def test_one_loop_behind_its_supervisor_is_neither_stale_nor_overdue(
    tmp_path: Path, services: Services, skewed: Path
) -> None:
    """The supervisor on time, its loop 30 s behind: each process reads the offset once, at its start,
    so the supervisor keeps 0 and the loop restarted after the file changed gets -30 s (keepwarm itself
    has no clock hook)."""
    env = flaky(tmp_path, slots=1)
    services.envs.append(env)
    started = keepwarm(env, "start", environ=skewed_environ(skewed))
    assert started.returncode == 0, started.stderr
    skewed.write_text(f"-{SKEW_SEC}")
    before = loop_incarnations(env)["loop-0"]
    service = Service(env)
    service.restart("loop-0")

    def skewed_loop_ready() -> bool:
        beat = read_heartbeat(env.layout.queue.heartbeat("loop-0"))
        return beat is not None and beat.incarnation != before and beat.state == "ready"

    wait_until(skewed_loop_ready, timeout=20, what="loop-0 restarted behind its supervisor")
    beat = read_heartbeat(env.layout.queue.heartbeat("loop-0"))
    assert beat is not None and time.time() - (epoch_of(beat.timestamp) or 0) > SKEW_SEC - FRESH_SEC
    skewed_incarnation = beat.incarnation

    handle = service.submit({"action": "sleep", "seconds": 1}, timeout_sec=5)
    assert handle.result(timeout=30) is not None  # 1 s of its 5, however far behind its loop's clock
    time.sleep(2.5)  # past heartbeat_timeout_sec: a stale verdict would have restarted the loop
    assert loop_incarnations(env)["loop-0"] == skewed_incarnation
    report = service.status()
    assert report.workers_healthy_count == 1, report.worker_health
    assert report.worker_health[0].heartbeat_age_sec is not None
    assert report.worker_health[0].heartbeat_age_sec < FRESH_SEC
    assert [entry.reason for entry in supervisor_state(env).restarts] == ["operator-restart"]


def test_a_written_time_is_aged_by_its_file_on_the_share_clock(tmp_path: Path) -> None:
    """A heartbeat written 5 s ago (by the share's file time) by a loop whose clock is an hour off,
    about a task it began 2 s before writing (by its own count), reads as 5 s and 7 s old here."""
    path = tmp_path / "loop-0.json"
    written_at = time.time() - 3600.0  # the writer's clock
    path.write_text("{}")
    clock = Clock.of_share(tmp_path, time.time())
    assert clock.share_now is not None
    os.utime(path, (clock.share_now - 5.0, clock.share_now - 5.0))
    beat = Heartbeat(
        slot="loop-0",
        incarnation="i",
        pid=1,
        host="h",
        state="processing",
        timestamp=iso_of(written_at),
        task_id="t",
        task_started_at=iso_of(written_at - 2.0),
        task_running_sec=2.0,
    )
    moved = rebase_heartbeat(beat, path, clock)
    assert clock.now - (epoch_of(moved.timestamp) or 0) == pytest.approx(5.0, abs=0.01)
    assert clock.now - (epoch_of(moved.task_started_at) or 0) == pytest.approx(7.0, abs=0.01)
    assert rebase_heartbeat(beat, path, Clock.fixed(clock.now)) == beat  # no share clock: as written


@pytest.mark.parametrize("skew", [-SKEW_SEC, SKEW_SEC], ids=["behind", "ahead"])
def test_a_dask_loop_off_its_supervisors_clock_keeps_serving(
    tmp_path: Path, services: Services, skewed: Path, skew: float
) -> None:
    """A joined cluster whose one ``dask worker`` runs ``skew`` off the supervisor's clock (this
    test's): its loop serves, is neither restarted nor stops itself as "supervisor silent" over two
    heartbeat timeouts. The loop watches ``supervisor.json`` change on its own monotonic clock: judged
    by the supervisor's written time, a loop ahead stopped itself as "supervisor silent" (restarted
    every few seconds); one behind read that time as in its future (the supervisor's verdicts on it)."""
    from ..test_dask import DaskProcesses, dask_app

    cluster = DaskProcesses(tmp_path)
    try:
        cluster.start_scheduler()
        skewed.write_text(f"{skew}")
        cluster.start_worker(env=skewed_environ(skewed))
        cluster.wait_for_workers(1)
        env = dask_app(tmp_path, cluster.address)
        service = services.start(env, slots=1)
        (row,) = supervisor_state(env).loops
        beat = read_heartbeat(env.layout.queue.heartbeat(row.slot))
        assert beat is not None and beat.incarnation == row.incarnation
        # The loop writes on the skewed clock (the shift reached the Dask worker process).
        assert abs((epoch_of(beat.timestamp) or 0.0) - (time.time() + skew)) < FRESH_SEC
        assert service.submit({"x": 3}).result(timeout=60)["x"] == 3

        timeout = env.settings.cluster.heartbeat_timeout_sec
        time.sleep(2 * timeout)  # a loop misjudged stale is restarted; one that misjudges stops itself
        report = service.status()
        (health,) = report.worker_health
        assert health.restarts == 0 and health.incarnation == row.incarnation, health
        assert report.workers_healthy_count == 1, report.worker_health
        assert [row.incarnation for row in supervisor_state(env).loops] == [row.incarnation]
        loop_log = (env.log_dir / f"{row.slot}.log").read_text()
        assert "stopping" not in loop_log, loop_log
        assert service.submit({"x": 4}).result(timeout=30)["x"] == 4
        assert service.stop(timeout=10)["status"] == "stopped"
    finally:
        cluster.stop()
