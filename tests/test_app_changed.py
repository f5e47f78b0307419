"""A running service stays reachable when its app changes under it (issue 13, 2.4).

The settings a service was started with are saved in ``service.json``: while it runs, status, health
and stop work from them — from the CLI, ``Service`` and ``AGI`` — and say how the app changed. When no
service runs, a broken app is the error it always was.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from keepwarm import AGI
from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import AppError, SettingsError

from .conftest import Services, copy_app, supervisor_state, wait_until

KEEPWARM = Path(sys.executable).parent / "keepwarm"


def keepwarm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KEEPWARM), *args], capture_output=True, text=True, timeout=60, check=False)


def started(tmp_path: Path, services: Services) -> Env:
    env = Env(copy_app(tmp_path, "flaky", **{"[cluster]\n": "[cluster]\nstop_timeout_sec = 5\n"}))
    services.start(env)
    return env


def test_broken_settings_leave_a_running_service_reachable_and_then_stoppable(
    tmp_path: Path, services: Services
) -> None:
    env = started(tmp_path, services)
    settings = env.settings_path
    settings.write_text(settings.read_text() + "garbage = [\n")
    unreadable = f"app: settings unreadable since start: {settings}: not valid TOML: "

    service = Service(Env(env.app_dir))  # the same Env(...) call a user makes
    report = service.status()
    assert report.status in ("running", "idle")
    assert next(c for c in report.conditions if c.startswith("app: ")).startswith(unreadable)
    assert service.health()[0].conditions == report.conditions
    assert asyncio.run(AGI.serve(Env(env.app_dir), action="status"))["conditions"] == report.conditions

    # A loop restarted meanwhile loads the settings the service runs with, and serves.
    victim = supervisor_state(env).loops[0].pid
    os.kill(victim or 0, signal.SIGKILL)
    wait_until(lambda: service.status().workers_healthy_count == 2, timeout=30, what="the loop replaced")
    assert service.submit({"value": 7}).result(timeout=30)["value"] == 7

    status = keepwarm("status", str(env.app_dir))
    assert status.returncode == 0, status.stderr
    assert any(line.startswith(f"condition: {unreadable}") for line in status.stdout.splitlines())
    assert "warning: the app of service flaky changed since it started (settings unreadable" in status.stderr
    health = keepwarm("health", str(env.app_dir), "--gate", "--allow-idle", "--max-restart-rate", "1")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["conditions"] == report.conditions
    assert "warning: the app of service flaky changed" in health.stderr

    stop = keepwarm("stop", str(env.app_dir))
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.startswith("service flaky stopped (its app changed since it started: settings unread")
    # No service runs now: the broken file is the error again, on every surface.
    with pytest.raises(SettingsError, match="not valid TOML"):
        Env(env.app_dir)
    again = keepwarm("status", str(env.app_dir))
    assert again.returncode == 1 and again.stderr.startswith(f"error: {settings}: not valid TOML")
    assert "Traceback" not in again.stderr


def test_a_moved_app_folder_leaves_a_running_service_reachable_and_stoppable(
    tmp_path: Path, services: Services
) -> None:
    env = started(tmp_path, services)
    apps = env.app_dir.parent
    env.app_dir.rename(apps / "flaky-moved")
    gone = f"app: folder {env.app_dir} moved or removed since start"

    service = Service(Env("flaky", apps))
    assert service.env.app_dir == env.app_dir and service.env.service_dir == env.service_dir
    report = service.status()
    assert report.status in ("running", "idle") and gone in report.conditions

    status = keepwarm("status", "flaky", "--apps-path", str(apps))
    assert status.returncode == 0, status.stderr
    assert f"condition: {gone}" in status.stdout.splitlines()
    stopped = asyncio.run(AGI.serve(Env("flaky", apps), action="stop"))
    assert stopped["status"] == "stopped" and "moved or removed since start" in stopped["message"]
    with pytest.raises(AppError, match="app 'flaky' not found"):
        Env("flaky", apps)


def test_a_valid_edit_is_reported_and_not_applied_until_a_restart(tmp_path: Path, services: Services) -> None:
    env = started(tmp_path, services)
    settings = env.settings_path
    text = settings.read_text()
    settings.write_text(text.replace("heartbeat_timeout_sec = 2\n", "heartbeat_timeout_sec = 7\n"))

    report = Service(Env(env.app_dir)).status()
    changed = "app: settings changed since start: [cluster] heartbeat_timeout_sec: 2.0 -> 7.0"
    assert changed in report.conditions
    assert report.heartbeat_timeout_sec == 2  # the service runs with what it was started with
    settings.write_text(text)
    assert not [c for c in Service(Env(env.app_dir)).status().conditions if c.startswith("app: ")]
