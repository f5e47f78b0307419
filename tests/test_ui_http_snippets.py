"""The page's HTTP snippets: a ``curl`` of ``keepwarm http`` for each action that server offers, and
none for the others; each curl is run, with the real ``curl`` binary, against a real ``keepwarm
http`` server in front of a real service of the bundled example app.

One service and one server for the module; each test keeps to its own tasks.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.ui import server, snippets, state
from keepwarm.ui.snippet_view import HTTP_CAPTION
from keepwarm.web import HTTP_TOKEN_VARIABLE, HTTP_URL_VARIABLE

from .conftest import Services, copy_app, wait_until
from .httpserver import KEEPWARM, HttpServer

APP = "mycode_project"
BIG_PRIME = 999_999_999_999_989  # factoring it keeps a loop busy for seconds: a task still running
TOKEN = "snippet-test-token-0123456789"
CURL_TIMEOUT_SEC = 60
HTTP_ACTIONS = ("submit", "result", "cancel", "status", "health")

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


class Example:
    """The module's copy of the example app, its running service, and what a shell running a
    snippet gets as its environment (no KEEPWARM_* of the test run leaks in)."""

    def __init__(self, root: Path) -> None:
        self.apps = copy_app(root, APP).parent
        self.share = root / "share"
        self.variables = {
            "KEEPWARM_SHARE": str(self.share),
            "KEEPWARM_LOG_DIR": str(root / "logs"),
            "KEEPWARM_EXPORT": str(root / "export"),
        }
        self.environment = {k: v for k, v in os.environ.items() if not k.startswith("KEEPWARM_")}
        self.environment |= self.variables

    def service(self) -> Service:
        return Service(Env(APP, self.apps, share_dir=self.share))

    def ref(self) -> snippets.AppRef:
        return snippets.AppRef.of(self.service().env)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    chosen = Example(tmp_path_factory.mktemp("ui_http"))
    services = Services()
    services.envs.append(chosen.service().env)
    chosen.service().start()
    try:
        yield chosen
    finally:
        services.stop_all()


@pytest.fixture(scope="module")
def http(example: Example) -> Iterator[HttpServer]:
    started = HttpServer("--apps-path", str(example.apps), env=example.environment)
    yield started
    started.stop()


@pytest.fixture
def advertised(http: HttpServer, monkeypatch: pytest.MonkeyPatch) -> HttpServer:
    """The snippets built in the test address the module's server."""
    monkeypatch.setenv(HTTP_URL_VARIABLE, http.url)
    monkeypatch.delenv(HTTP_TOKEN_VARIABLE, raising=False)
    return http


def run_curl(snippet: str, environment: dict[str, str]) -> tuple[int, Any]:
    """The snippet's lines run by a shell, as pasted in a terminal: curl's exit code and the JSON
    it printed."""
    assert snippet.splitlines()[1].startswith("curl "), snippet
    completed = subprocess.run(
        ["bash", "-c", snippet],
        env=environment,
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT_SEC,
        check=False,
    )
    assert completed.stdout, completed.stderr
    return completed.returncode, json.loads(completed.stdout)


# ---------------------------------------------------------------------- which actions have one


def every_snippet(ref: snippets.AppRef) -> dict[str, snippets.Snippet]:
    return {
        "settings": snippets.save_settings(ref, [("cluster", {"slots": 3})]),
        "start": snippets.start(ref, 2),
        "status": snippets.status(ref),
        "health": snippets.health_gate(ref),
        "snapshot": snippets.snapshot(ref),
        "stop": snippets.stop(ref, 5),
        "submit": snippets.submit(ref, {"x": 27}),
        "result": snippets.result(ref, "t-1", 5),
        "cancel": snippets.cancel(ref, "t-1"),
        "install": snippets.install(ref),
        "distribute": snippets.distribute(ref, 2),
        "move": snippets.move_partition(ref, "p0", "w1"),
        "run": snippets.run(ref, "pool"),
        "benchmark": snippets.benchmark(ref),
        "data": snippets.load_data(ref, 5),
        "export": snippets.export(ref, None),
    }


def test_only_the_actions_keepwarm_http_offers_have_a_curl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HTTP_URL_VARIABLE, "http://127.0.0.1:9911/")
    monkeypatch.delenv(HTTP_TOKEN_VARIABLE, raising=False)
    ref = snippets.AppRef(APP, "/apps", f"/apps/{APP}/app_settings.toml")
    built = every_snippet(ref)
    assert sorted(name for name, snippet in built.items() if snippet.http is not None) == sorted(HTTP_ACTIONS)
    for name in HTTP_ACTIONS:
        comment, line = str(built[name].http).splitlines()
        assert comment.startswith("# ") and "http://127.0.0.1:9911/v1/apps/mycode_project" in comment
        assert line.startswith("curl ") and "Authorization" not in line  # loopback: no token asked
        compile(built[name].python, "<snippet>", "exec")
    assert (
        str(built["submit"].http).splitlines()[0]
        == "# POST http://127.0.0.1:9911/v1/apps/mycode_project/tasks"
    )
    assert str(built["cancel"].http).startswith(
        "# DELETE http://127.0.0.1:9911/v1/apps/mycode_project/tasks/t-1\n"
    )
    assert "tasks/t-1?wait=5'" in str(built["result"].http)


def test_a_curl_beyond_loopback_sends_the_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HTTP_URL_VARIABLE, "http://keepwarm.example:8787")
    monkeypatch.delenv(HTTP_TOKEN_VARIABLE, raising=False)
    ref = snippets.AppRef(APP, "/apps", f"/apps/{APP}/app_settings.toml")
    line = str(snippets.status(ref).http).splitlines()[1]
    assert line.endswith(' -H "Authorization: Bearer $KEEPWARM_HTTP_TOKEN"')  # the shell expands it
    assert TOKEN not in line


def test_health_thresholds_go_to_python_cli_and_http_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HTTP_URL_VARIABLE, "http://127.0.0.1:8787")
    ref = snippets.AppRef(APP, "/apps", f"/apps/{APP}/app_settings.toml")
    snippet = snippets.health_gate(ref, {"allow_idle": False, "max_restart_rate": 0.5})
    assert "service.health(allow_idle=False, max_restart_rate=0.5)" in snippet.python
    assert snippet.shell.endswith("--gate --no-allow-idle --max-restart-rate 0.5")
    assert "/health?allow_idle=false&max_restart_rate=0.5'" in str(snippet.http)
    with pytest.raises(ValueError, match="no threshold max_loops"):
        snippets.health_gate(ref, {"max_loops": 1})


# ---------------------------------------------------------------------- each curl, run


@needs_curl
def test_the_submit_curl_queues_a_task_and_with_wait_answers_its_outcome(
    example: Example, advertised: HttpServer
) -> None:
    queued_status, queued = run_curl(str(snippets.submit(example.ref(), {"x": 12}).http), example.environment)
    assert queued_status == 0
    assert queued["app"] == APP and queued["url"] == f"/v1/apps/{APP}/tasks/{queued['task_id']}"
    assert example.service().result(queued["task_id"], timeout=30) == {
        "x": 12,
        "collatz_steps": 9,
        "prime_factors": [2, 2, 3],
    }

    waited_status, outcome = run_curl(
        str(snippets.submit(example.ref(), {"x": 27}, wait_timeout=30).http), example.environment
    )
    assert waited_status == 0
    assert outcome["finished"] is True and outcome["status"] == "done", outcome
    assert outcome["result"]["collatz_steps"] == 111


@needs_curl
def test_a_refused_submit_curl_fails_with_the_servers_message(
    example: Example, advertised: HttpServer
) -> None:
    status, refusal = run_curl(str(snippets.submit(example.ref(), {"x": 0}).http), example.environment)
    assert status == 22  # curl --fail-with-body: a script sees the refusal
    assert refusal["kind"] == "InvalidArgs", refusal
    assert [field["loc"] for field in refusal["fields"]] == [["x"]]


@needs_curl
def test_the_result_curl_waits_for_the_outcome(example: Example, advertised: HttpServer) -> None:
    handle = example.service().submit({"x": 97})
    snippet = snippets.result(example.ref(), handle.task_id, 30)
    status, outcome = run_curl(str(snippet.http), example.environment)
    assert status == 0
    assert outcome["task_id"] == handle.task_id and outcome["finished"] is True, outcome
    assert outcome["result"]["prime_factors"] == [97]
    argv = shlex.split(snippet.shell)  # the CLI tab beside it answers the same
    completed = subprocess.run(
        [KEEPWARM, *argv[1:]],
        env=example.environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0 and json.loads(completed.stdout) == outcome["result"], completed.stderr


@needs_curl
def test_the_cancel_curl_cancels_a_running_task(example: Example, advertised: HttpServer) -> None:
    service = example.service()
    handle = service.submit({"x": BIG_PRIME})
    wait_until(lambda: service.queue.locate(handle.task_id).state == "running", 30, "the task running")
    status, answer = run_curl(str(snippets.cancel(example.ref(), handle.task_id).http), example.environment)
    assert status == 0
    assert answer == {"cancelled": [handle.task_id], "not_cancelled": {}}
    assert service.record(handle.task_id, timeout=30).status == "cancelled"


@needs_curl
def test_the_status_curl_answers_the_health_report(example: Example, advertised: HttpServer) -> None:
    status, report = run_curl(str(snippets.status(example.ref()).http), example.environment)
    assert status == 0
    assert report["target"] == APP and report["status"] == example.service().status().status, report
    assert len(report["worker_health"]) == 2  # the app's two slots


@needs_curl
def test_the_health_curl_applies_its_thresholds(example: Example, advertised: HttpServer) -> None:
    lenient = snippets.health_gate(example.ref(), {"allow_idle": True, "max_restart_rate": 1000.0})
    status, passed = run_curl(str(lenient.http), example.environment)
    assert status == 0 and passed["gate"]["passed"] is True, passed
    assert passed["gate"]["thresholds"]["max_restart_rate"] == 1000.0  # not the file's 0.25

    strict = snippets.health_gate(example.ref(), {"allow_idle": False, "max_pending_age_sec": 0.0})
    strict_status, verdict = run_curl(str(strict.http), example.environment)
    assert verdict["gate"]["thresholds"]["allow_idle"] is False, verdict
    assert strict_status == (0 if verdict["gate"]["passed"] else 22)  # 503 when the gate fails


@needs_curl
def test_a_curl_to_a_server_with_a_token_sends_it(example: Example, monkeypatch: pytest.MonkeyPatch) -> None:
    environment = example.environment | {HTTP_TOKEN_VARIABLE: TOKEN}
    guarded = HttpServer("--apps-path", str(example.apps), env=environment)
    try:
        monkeypatch.setenv(HTTP_URL_VARIABLE, guarded.url)
        monkeypatch.setenv(HTTP_TOKEN_VARIABLE, TOKEN)
        snippet = str(snippets.status(example.ref()).http)
        assert TOKEN not in snippet  # the token stays in the environment, never on the page
        status, report = run_curl(snippet, environment)
        assert status == 0 and report["target"] == APP, report
        refused_status, refusal = run_curl(snippet, example.environment)  # no token in this shell
        assert refused_status == 22 and "error" in refusal, refusal
    finally:
        guarded.stop()


# ---------------------------------------------------------------------- on the page


@needs_curl
def test_the_page_shows_an_http_tab_for_submit_whose_curl_works(
    example: Example, advertised: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in example.variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KEEPWARM_APPS_PATH", str(example.apps))
    page = AppTest.from_file(str(Path(server.PAGE)), default_timeout=90)
    page.run()
    assert not page.exception, page.exception
    token = page.session_state[state.TOKEN_KEY]
    page.text_area(key=f"service.args.{token}").set_value('{"x": 28}')
    page.button(key=f"service.submit.{token}").click().run()
    assert not page.exception, page.exception
    assert [tab.label for tab in page.tabs][-4:] == ["Python", "CLI", "HTTP", "AGI"]
    http_tab = next(tab for tab in page.tabs if tab.label == "HTTP")
    assert [caption.value for caption in http_tab.caption] == [HTTP_CAPTION]
    (shown,) = [str(block.value) for block in http_tab.code]
    assert shown.startswith(f"# POST {advertised.url}/v1/apps/{APP}/tasks?wait=30\ncurl ")
    status, outcome = run_curl(shown, example.environment)
    assert status == 0 and outcome["status"] == "done", outcome
    assert outcome["result"]["prime_factors"] == [2, 2, 7]
    status_tabs = [tab.label for tab in page.tabs]
    assert status_tabs.count("HTTP") == 1  # only the submit's snippet is on the page so far
