"""The Service section in the browser: the SUBMIT box per app, refused actions without snippets, one
typed time column in the live view's recent tasks, and readings that say when they were read.

Each test opens the page on app copies of its own; a service a test starts is stopped at the end by
its supervisor's pid (the ``services`` fixture).
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from selenium.webdriver.common.by import By

from keepwarm.api import Service
from keepwarm.env import Env

from ..conftest import Services
from .conftest import app_copy
from .kit import Page, Screenshots

DATETIME_CELL = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # how the page draws a datetime column


def panel_text(page: Page) -> str:
    """The text under the service buttons: the last button's outcome and what it read."""
    return str(page.find("service.panel").text)


def live_text(page: Page) -> str:
    return str(page.find("service.live_panel").text)


def submit_box(page: Page) -> dict[str, object]:
    text = page.find("service.args", "textarea").get_attribute("value")
    document = json.loads(str(text))
    assert isinstance(document, dict)
    return document


def column_cells(page: Page, table_css: str, column: str) -> list[str]:
    """The cells of ``column`` in the last table matched by ``table_css``."""
    table = page.driver.find_elements(By.CSS_SELECTOR, table_css)[-1]
    header = [cell.text.strip() for cell in table.find_elements(By.CSS_SELECTOR, "thead th")]
    index = header.index(column)
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    return [row.find_elements(By.CSS_SELECTOR, "th, td")[index].text.strip() for row in rows]


def healthy_pid(env: Env, worker: str) -> int | None:
    """The pid of ``worker``'s loop while it is healthy (None otherwise)."""
    row = next(row for row in Service(env).status().worker_health if row.worker == worker)
    return row.pid if row.healthy else None


def kill_loop(env: Env, worker: str) -> int:
    """SIGKILL ``worker``'s loop, by the pid the service's status gives; that pid."""
    pid = healthy_pid(env, worker)
    assert pid is not None, f"{worker} is not healthy"
    os.kill(pid, signal.SIGKILL)
    return pid


def test_the_submit_box_shows_each_apps_default_args_and_a_refused_submit_shows_no_snippet(
    page: Page, shots: Screenshots, tmp_path: Path
) -> None:
    mycode = app_copy(tmp_path, "mycode_project", folder="mycode_submit")
    model_server = app_copy(tmp_path, "model_server", folder="model_submit")
    page.open(mycode)
    page.wait_for_text("SUBMIT")
    assert submit_box(page) == {"x": 27, "items": 2000, "partitions": 8}

    page.choose_app(model_server.name)
    page.bind(model_server)
    page.wait_for("model_server's SUBMIT box", lambda d: "load_seconds" in str(submit_box(page)))
    # What a task gets by default: the file's [args] through the app's model, defaults filled in.
    assert submit_box(page) == {"load_seconds": 2.0, "features": 64, "inputs": []}

    page.click("service.submit", then="ServiceNotRunning")
    section = page.section_text("service")
    assert "is not running" in section
    assert "unknown key" not in section and "Extra inputs" not in section
    assert "keepwarm submit" not in section and "service.submit(" not in section  # no snippet of it
    shots.take("orchestrate-submit-refused", section="section-service")


def test_recent_tasks_have_one_datetime_column_and_the_server_logs_no_traceback(
    page: Page, shots: Screenshots, tmp_path: Path, services: Services, server_log: Path
) -> None:
    logged_before = server_log.stat().st_size
    app_dir = app_copy(tmp_path, "mycode_project", folder="mycode_recent")
    env = Env(app_dir)
    service = services.start(env, slots=2)
    for handle in [service.submit({"x": n}) for n in (3, 5, 7)]:
        handle.result(timeout=60)
    service.stop()
    service.submit({"x": 9}, queue_only=True)  # pending beside done: both kinds of row at once
    service.submit({"x": 11}, queue_only=True)

    page.open(app_dir)
    page.wait_for("the recent tasks", lambda d: "Recent tasks" in live_text(page))
    table = page.css("service.live_panel", "table")

    def five_rows(driver: object) -> tuple[list[str], list[str]] | None:
        # Read in one go inside the wait: the live panel redraws itself, making cells read later stale.
        states, times = column_cells(page, table, "state"), column_cells(page, table, "at")
        return (states, times) if len(times) == 5 else None

    states, times = page.wait_for("five rows", five_rows)
    assert sorted(states) == ["done", "done", "done", "pending", "pending"], states
    assert all(DATETIME_CELL.match(cell) for cell in times), times  # one datetime column, every state
    shots.take("orchestrate-recent-tasks", section="section-service")

    page.click("service.snapshot", then="snapshot written to")
    assert "snapshot (JSON)" in panel_text(page)  # the JSON under it says what it is

    logged = server_log.read_text(errors="replace")[logged_before:]
    assert "ArrowInvalid" not in logged and "Conversion failed" not in logged, logged[-3000:]
    assert "Traceback" not in logged, logged[-3000:]


def test_the_start_panel_says_when_it_read_the_loops_and_the_live_view_shows_a_killed_one(
    page: Page, shots: Screenshots, tmp_path: Path, services: Services
) -> None:
    app_dir = app_copy(tmp_path, "mycode_project", folder="mycode_killed")
    settings = app_dir / "app_settings.toml"
    # A loop killed twice stays down for a minute (the first crash restarts at once, the second
    # waits the back-off): time to look.
    settings.write_text(
        settings.read_text().replace(
            "heartbeat_timeout_sec = 10", "heartbeat_timeout_sec = 10\nrestart_backoff_sec = 60"
        )
    )
    env = Env(app_dir)
    services.envs.append(env)
    page.open(app_dir)
    page.click("service.start", then="2 loops ready")
    page.wait_for("the live view's healthy loops", lambda d: "2 of 2 loops healthy" in live_text(page))
    assert re.search(r"as of \d\d:\d\d:\d\d, read by START", panel_text(page)), panel_text(page)

    first = kill_loop(env, "loop-0")
    page.wait_for("loop-0's restart", lambda d: healthy_pid(env, "loop-0") not in (None, first))
    kill_loop(env, "loop-0")
    page.wait_for("the live view to see the killed loop", lambda d: "1 of 2 loops healthy" in live_text(page))
    assert re.search(r"as of \d\d:\d\d:\d\d", live_text(page))
    panel = panel_text(page)
    # The START panel still tells what START read, but says when, and defers to the live view.
    for line in panel.splitlines():
        if "2 of 2 loops healthy" in line:
            assert re.search(r"as of \d\d:\d\d:\d\d, read by START", line), panel
            assert "the live view below is current" in line, panel
    shots.take("orchestrate-start-superseded", section="section-service")
