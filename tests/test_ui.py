"""The ORCHESTRATE page, section by section, through Streamlit's AppTest against real apps and services.

AppTest runs ``page.py`` in this process as the browser would have it run: each ``click().run()`` is
one rerun of the script. Services it starts are real (a detached supervisor and loop processes); the
``started`` fixture stops every one of them. The snippets the page shows are run too, so they stay
scripts that do what the click did.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.health import pid_alive
from keepwarm.lifecycle import stop_service
from keepwarm.settings import load_settings
from keepwarm.state import read_supervisor_state
from keepwarm.ui import server, snippets

from .conftest import copy_app

BIN = Path(sys.executable).parent
PAGE = Path(server.PAGE)
AT_TIMEOUT_SEC = 90  # a START waits for the loops; the first run imports pandas and pydantic models


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the example app, the only app under the page's apps path."""
    folder = copy_app(tmp_path, "mycode_project")
    monkeypatch.setenv("KEEPWARM_APPS_PATH", str(folder.parent))
    return folder


@pytest.fixture
def started(app_dir: Path) -> Iterator[Env]:
    """The app's Env; whatever service the test started through the page is stopped afterwards."""
    env = Env(app_dir)
    yield env
    state = read_supervisor_state(env.service_dir / "supervisor.json")
    try:
        stop_service(env, timeout=5)
    finally:
        if state is not None and pid_alive(state.pid):
            os.kill(state.pid, signal.SIGKILL)


def open_page() -> AppTest:
    page = AppTest.from_file(str(PAGE), default_timeout=AT_TIMEOUT_SEC)
    page.run()
    assert not page.exception, page.exception
    return page


def click(page: AppTest, key: str) -> AppTest:
    page.button(key=key).click().run()
    assert not page.exception, page.exception
    return page


def messages(page: AppTest) -> list[str]:
    return [str(element.value) for element in [*page.success, *page.error]]


def codes(page: AppTest) -> list[str]:
    return [str(block.value) for block in page.code]


def keepwarm_line(line: str) -> list[str]:
    """A CLI line the page shows, as argv for this venv's console script."""
    argv = shlex.split(line)
    assert argv[0] == "keepwarm"
    return [str(BIN / "keepwarm"), *argv[1:]]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


# ---------------------------------------------------------------------- system settings


def test_system_settings_are_written_back_with_comments_kept(app_dir: Path, tmp_path: Path) -> None:
    settings = app_dir / "app_settings.toml"
    page = open_page()
    assert page.title[0].value == "ORCHESTRATE"
    mode = next(m for m in page.metric if m.label == "Calculated mode")
    assert mode.value == "0"

    page.toggle(key="settings.pool").set_value(True)
    page.toggle(key="settings.cython").set_value(True).run()
    assert next(m for m in page.metric if m.label == "Calculated mode").value == "3"
    page.number_input(key="settings.slots").set_value(3)
    page.text_area(key="settings.hosts").set_value("gpu-a = 2\n10.0.0.7 = 1  # the small one")
    page.text_input(key="settings.namespace").set_value("team-a")
    click(page, "settings.save")

    assert any("saved to" in m and "[cluster] slots" in m for m in messages(page)), messages(page)
    saved = load_settings(settings).cluster
    assert (saved.slots, saved.pool, saved.cython, saved.rapids) == (3, True, True, False)
    assert saved.hosts == {"gpu-a": 2, "10.0.0.7": 1}
    assert saved.namespace == "team-a"
    text = settings.read_text()
    assert "# module:Class, relative to this folder" in text  # comments kept
    assert "# The reference system's SLA defaults." in text

    # The Python the page shows does the same to another copy of the app, byte for byte.
    python, shell = codes(page)[:2]
    twin = copy_app(tmp_path / "twin", "mycode_project")
    replay = python.replace(str(settings), str(twin / "app_settings.toml"))
    assert run([sys.executable, "-W", "error", "-c", replay]).returncode == 0
    assert (twin / "app_settings.toml").read_text() == text
    # ... and so does its shell line.
    again = copy_app(tmp_path / "again", "mycode_project")
    argv = shlex.split(shell.replace(str(settings), str(again / "app_settings.toml")))
    assert argv[:2] == ["python", "-c"]
    assert run([sys.executable, *argv[1:]]).returncode == 0
    assert (again / "app_settings.toml").read_text() == text


def test_a_bad_setting_is_a_message_and_the_file_is_untouched(app_dir: Path) -> None:
    settings = app_dir / "app_settings.toml"
    before = settings.read_text()
    page = open_page()
    page.text_area(key="settings.hosts").set_value("gpu-a two")
    click(page, "settings.save")
    assert messages(page) == ["SSH hosts line 1: write host = number of loops (got 'gpu-a two')"]
    page.text_area(key="settings.hosts").set_value("")
    page.text_input(key="settings.namespace").set_value("../escape")
    click(page, "settings.save")
    assert "namespace" in messages(page)[0] and "SettingsError" in messages(page)[0]
    assert settings.read_text() == before


def test_dask_backend_counts_in_the_mode(app_dir: Path) -> None:
    page = open_page()
    page.radio(key="settings.backend").set_value("dask").run()
    mode = next(m for m in page.metric if m.label == "Calculated mode")
    assert int(mode.value) & 4
    page.text_input(key="settings.scheduler").set_value("tcp://127.0.0.1:8786")
    click(page, "settings.save")
    saved = load_settings(app_dir / "app_settings.toml").cluster
    assert (saved.backend, saved.scheduler) == ("dask", "tcp://127.0.0.1:8786")


# ---------------------------------------------------------------------- service mode


def test_service_and_sla_settings_are_persisted(app_dir: Path) -> None:
    page = open_page()
    values = {
        "service.heartbeat_timeout_sec": 5.0,
        "service.stop_timeout_sec": 7.0,
        "service.done_ttl_hours": 24.0,
        "service.failed_ttl_hours": 48.0,
        "service.heartbeat_ttl_hours": 2.0,
        "service.done_max_files": 500,
        "service.failed_max_files": 600,
        "service.heartbeat_max_files": 70,
        "service.max_unhealthy": 1,
        "service.max_restart_rate": 0.5,
        "service.max_pending_age_sec": 120.0,
    }
    for key, value in values.items():
        page.number_input(key=key).set_value(value)
    page.toggle(key="service.shutdown_on_stop").set_value(False)
    page.toggle(key="service.allow_idle").set_value(True)
    click(page, "service.save_settings")
    assert any("saved to" in m for m in messages(page)), messages(page)

    saved = load_settings(app_dir / "app_settings.toml").cluster
    for key, value in values.items():
        name = key.partition(".")[2]
        holder = saved.service_health if name in type(saved.service_health).model_fields else saved
        assert getattr(holder, name) == value, name
    assert saved.shutdown_on_stop is False and saved.service_health.allow_idle is True
    text = (app_dir / "app_settings.toml").read_text()
    assert text.index("max_pending_age_sec") > text.index("[cluster.service_health]")
    assert "# The reference system's SLA defaults." in text
    python = codes(page)[0]
    assert 'update_settings(settings, "cluster.service_health", {"allow_idle": True' in python


def test_start_submit_status_gate_snapshot_stop(started: Env) -> None:
    page = open_page()
    click(page, "service.start")
    assert any(m.startswith("started mycode_project: 2 loops ready") for m in messages(page)), messages(page)
    health = page.table[0].value
    assert list(health.columns[:6]) == [
        "worker",
        "healthy",
        "reason",
        "future_state",
        "heartbeat_state",
        "heartbeat_age_sec",
    ]
    assert list(health["worker"]) == ["loop-0", "loop-1"] and all(health["healthy"])
    python, shell = codes(page)[-2:]
    assert "report = service.start(slots=2)" in python
    assert shell == f"keepwarm start mycode_project --apps-path {started.app_dir.parent} --workers 2"

    page.text_area(key="service.args").set_value('{"x": 27}')
    click(page, "service.submit")
    assert any(m.startswith("task ") and " done in " in m for m in messages(page)), messages(page)
    assert page.json[0].value and json.loads(page.json[0].value)["collatz_steps"] == 111
    assert any("keepwarm submit mycode_project" in code and "--wait" in code for code in codes(page))

    click(page, "service.status")
    assert any(m.startswith("status running: 0 pending, 0 running, 1 done") for m in messages(page))
    status_line = codes(page)[-1]
    completed = run(keepwarm_line(status_line))  # the CLI line the page shows works as shown
    assert completed.returncode == 0 and "loop-0" in completed.stdout, completed.stderr

    click(page, "service.health")
    assert any(m.startswith("health gate passed (exit code 0)") for m in messages(page)), messages(page)
    assert run(keepwarm_line(codes(page)[-1])).returncode == 0

    click(page, "service.snapshot")
    snapshot = started.log_dir / "service_operator_snapshot.json"
    assert any(m == f"snapshot written to {snapshot}" for m in messages(page))
    assert json.loads(snapshot.read_text())["summary"]["healthy"] == 2

    done = next(m for m in page.metric if m.label == "Done")
    assert done.value == "1"

    click(page, "service.stop")
    assert "service mycode_project stopped" in messages(page)
    assert Service(started).status().status == "stopped"
    assert next(m for m in page.metric if m.label == "Status").value == "stopped"


def test_bad_task_args_are_messages(started: Env) -> None:
    page = open_page()
    page.text_area(key="service.args").set_value("{x: 27")
    click(page, "service.submit")
    assert messages(page)[0].startswith("task args: not JSON")
    page.text_area(key="service.args").set_value('{"x": "five"}')
    click(page, "service.submit")
    assert messages(page)[0].startswith("InvalidTaskError: invalid args: x:"), messages(page)
    assert Service(started).counts().pending == 0  # refused before anything was queued
    click(page, "service.stop")  # stopping a stopped service says so, and is no error
    assert page.success[-1].value.startswith("service mycode_project is"), messages(page)


def test_the_health_gate_fails_on_a_stopped_service_with_its_reasons(started: Env) -> None:
    page = open_page()
    click(page, "service.health")
    assert messages(page)[0] == "health gate failed (exit code 3), status stopped"
    assert [w.value for w in page.warning] == ["status is stopped"]
    completed = run(keepwarm_line(codes(page)[-1]))
    assert completed.returncode == 3  # the CLI line exits with the gate's code


def test_the_live_view_counts_and_charts_over_refreshes(started: Env) -> None:
    page = open_page()
    click(page, "service.start")
    service = Service(started)
    handles = service.submit_many({"args": {"x": n}} for n in range(1, 41))
    for handle in handles:
        handle.result(timeout=30)
    page.run()  # a refresh, as the fragment's timer does in the browser
    assert next(m for m in page.metric if m.label == "Done").value == "40"
    rate = next(m for m in page.metric if m.label == "Throughput (tasks/s, 10 s)").value
    assert float(rate) > 0
    recent = page.table[-1].value
    assert set(recent["state"]) == {"done"} and len(recent) == 5
    click(page, "service.stop")


# ---------------------------------------------------------------------- snippets and the verb


def test_every_snippet_is_valid_python() -> None:
    ref = snippets.AppRef("mycode_project", "/apps", "/apps/mycode_project/app_settings.toml")
    all_of_them = [
        snippets.save_settings(ref, [("cluster", {"slots": 3, "scheduler": None, "hosts": {"a.b": 2}})]),
        snippets.start(ref, 2),
        snippets.start(ref),
        snippets.status(ref),
        snippets.health_gate(ref),
        snippets.snapshot(ref),
        snippets.stop(ref, 5),
        snippets.submit(ref, {"x": 27, "label": 'it\'s "quoted"', "flag": True, "none": None}),
        snippets.submit(ref, {"x": 1}, wait_timeout=30),
    ]
    for snippet in all_of_them:
        compile(snippet.python, "<snippet>", "exec")
        assert shlex.split(snippet.shell)[0] in ("keepwarm", "python")
    submit = all_of_them[7]
    assert json.loads(shlex.split(submit.shell)[-1]) == {
        "x": 27,
        "label": 'it\'s "quoted"',
        "flag": True,
        "none": None,
    }


def test_keepwarm_ui_serves_on_loopback_and_stops_on_sigterm(app_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "ui.log"
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            [str(BIN / "keepwarm"), "ui", "--apps-path", str(app_dir.parent)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        ) as process,
    ):
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()  # printed once the page answers
            assert url.startswith("http://127.0.0.1:"), log.read_text()
            assert server.is_serving(url)
            children = run(["pgrep", "-P", str(process.pid)]).stdout.split()
            assert len(children) == 1, children
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    assert code == 0, log.read_text()
    deadline = time.monotonic() + 10
    while pid_alive(int(children[0])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(int(children[0])), "the server outlived keepwarm ui"
    assert not server.is_serving(url)
