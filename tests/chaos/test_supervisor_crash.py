"""What health remembers across a supervisor crash: restarts are named for their whole window."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from keepwarm.env import Env

from ..conftest import Services, copy_app, supervisor_state, wait_until

pytestmark = pytest.mark.chaos


def test_restarts_before_a_supervisor_crash_are_still_named_after_start(
    tmp_path: Path, services: Services
) -> None:
    env = Env(copy_app(tmp_path, "flaky", **{"[cluster]\n": "[cluster]\nstop_timeout_sec = 5\n"}))
    service = services.start(env)
    victim = supervisor_state(env).loops[0]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    wait_until(lambda: service.status().restart_reasons == {"loop-error": 1}, what="the restart on record")
    assert service.status().restart_rate == 0.5

    os.kill(supervisor_state(env).pid, signal.SIGKILL)
    wait_until(lambda: service.status().status == "error", what="status error after the supervisor died")
    service.start()

    report = service.status()
    assert report.restart_reasons == {"loop-error": 1}  # restart_window_sec (1 h) has not passed
    assert report.restart_rate == 0.5
    assert report.workers_restarted == ["loop-0"]
    assert [row.restarts for row in report.worker_health] == [1, 0]
