"""Claims of the docs/ pages that need a setup no page should show its readers.

Most claims are checked where they are made: tests/test_docs.py runs every page's ``python`` blocks
and ``console`` examples. The ones here need a machine slowed down on purpose, so they live in a
test; each names the page and the claim it checks.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import keepwarm
from keepwarm.env import Env, venv_dir
from keepwarm.errors import ServiceStartError
from keepwarm.service.report import HealthReport

from .conftest import Services, write_app

START_TIMEOUT_SEC = 4.0

# The app's interpreter, stuck before it runs any Python the first time it is started (a machine
# too busy to start an interpreter), normal afterwards. The venv's own interpreter stays under
# another name beside it, so the venv is still the one that runs.
STUCK_ONCE = """#!/bin/sh
here="$(dirname "$0")"
if [ ! -e "$here/stuck-once" ]; then
    : > "$here/stuck-once"
    exec "$here/python-real" -c "import time; time.sleep(60)" "$@"
fi
exec "$here/python-real" "$@"
"""


def stuck_once_app(tmp_path: Path) -> Env:
    settings = (
        "[cluster]\nslots = 1\nisolated = true\nheartbeat_interval_sec = 0.2\n"
        f"heartbeat_timeout_sec = 1\nstart_timeout_sec = {START_TIMEOUT_SEC}\n"
    )
    env = Env(
        write_app(tmp_path, "stuck", "class Worker:\n    def work(self, item):\n        return 1\n", settings)
    )
    keepwarm.install(env)
    python = venv_dir(env) / "bin" / "python"
    (python.parent / "python-real").symlink_to(python.readlink())
    python.unlink()
    python.write_text(STUCK_ONCE)
    python.chmod(0o755)
    return env


def row_of(report: HealthReport) -> tuple[str | None, int]:
    row = report.worker_health[0] if report.worker_health else None
    return (row.reason, row.restarts) if row else (None, 0)


def test_service_mode_md_a_new_loop_gets_start_timeout_sec_for_its_first_heartbeat(
    tmp_path: Path, services: Services
) -> None:
    """service-mode.md, the worker health table and restart reasons: a slot with no heartbeat of its
    incarnation is reported ``missing-heartbeat`` once one ``heartbeat_timeout_sec`` has passed, but
    the supervisor restarts it only after ``start_timeout_sec`` (when that is the longer); during a
    start, that restart fails the start, naming the reason."""
    env = stuck_once_app(tmp_path)
    seen: list[tuple[str | None, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            seen.append(row_of(keepwarm.Service(env).status()))

    watcher = threading.Thread(target=watch)
    watcher.start()
    began = time.monotonic()
    try:
        with pytest.raises(ServiceStartError, match=r"loop loop-0 exited \(missing-heartbeat\)"):
            services.start(env, timeout=60)
        waited = time.monotonic() - began
    finally:
        done.set()
        watcher.join()

    assert ("missing-heartbeat", 0) in seen  # reported while the supervisor still waited
    assert waited >= START_TIMEOUT_SEC  # restarted after start_timeout_sec, not heartbeat_timeout_sec (1 s)
    assert services.start(env).status().workers_healthy == ["loop-0"]  # an interpreter that starts
