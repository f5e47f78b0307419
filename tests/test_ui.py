"""The ORCHESTRATE page, section by section, through Streamlit's AppTest against real apps and services.

AppTest runs ``page.py`` in this process as the browser would have it run: each ``click().run()`` is
one rerun of the script. Services it starts are real (a detached supervisor and loop processes); the
``started`` fixture stops every one of them. The snippets the page shows are run too, so they stay
scripts that do what the click did.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.runmode.plan import load_plan
from keepwarm.service.liveness import pid_alive
from keepwarm.settings import load_settings
from keepwarm.ui import server, snippets, state

from .conftest import Services, copy_app, write_app

BIN = Path(sys.executable).parent
PAGE = Path(server.PAGE)
WORKER = """
class Worker:
    def start(self):
        pass

    def work(self, item):
        return 1

    def stop(self):
        pass
"""
AT_TIMEOUT_SEC = 90  # a START waits for the loops; the first run imports pandas and pydantic models


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the example app, the only app under the page's apps path."""
    folder = copy_app(tmp_path, "mycode_project")
    monkeypatch.setenv("KEEPWARM_APPS_PATH", str(folder.parent))
    return folder


@pytest.fixture
def started(app_dir: Path, services: Services) -> Env:
    """The app's Env; a service the test starts through the page is stopped afterwards (by pid)."""
    env = Env(app_dir)
    services.envs.append(env)
    return env


def open_page() -> AppTest:
    page = AppTest.from_file(str(PAGE), default_timeout=AT_TIMEOUT_SEC)
    page.run()
    assert not page.exception, page.exception
    return page


def k(page: AppTest, name: str) -> str:
    """The key of widget ``name`` for the app the page shows (``keepwarm.ui.state``)."""
    return f"{name}.{page.session_state[state.TOKEN_KEY]}"


def click(page: AppTest, name: str) -> AppTest:
    page.button(key=k(page, name)).click().run()
    assert not page.exception, page.exception
    return page


def messages(page: AppTest) -> list[str]:
    return [str(element.value) for element in [*page.success, *page.error]]


def codes(page: AppTest) -> list[str]:
    return [str(block.value) for block in page.code]


def code_with(page: AppTest, text: str) -> str:
    """The last code block on the page that contains ``text``."""
    found = [code for code in codes(page) if text in code]
    assert found, f"no code block with {text!r}: {codes(page)}"
    return found[-1]


def metric(page: AppTest, label: str) -> str:
    return str(next(m for m in page.metric if m.label == label).value)


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
    assert metric(page, "Calculated mode") == "0"

    page.toggle(key=k(page, "settings.pool")).set_value(True)
    page.toggle(key=k(page, "settings.cython")).set_value(True).run()
    assert metric(page, "Calculated mode") == "3"
    page.number_input(key=k(page, "settings.slots")).set_value(3)
    page.text_area(key=k(page, "settings.hosts")).set_value("gpu-a = 2\n10.0.0.7 = 1  # the small one")
    page.text_input(key=k(page, "settings.namespace")).set_value("team-a")
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
    python, shell = code_with(page, "\nupdate_settings("), code_with(page, "python -c")
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


def test_system_settings_take_in_a_change_on_disk_and_refuse_a_conflict_until_reloaded(
    app_dir: Path,
) -> None:
    settings = app_dir / "app_settings.toml"
    page = open_page()
    settings.write_text(settings.read_text().replace("slots = 2", "slots = 5"))  # from a shell
    page.toggle(key=k(page, "settings.pool")).set_value(True).run()
    assert page.number_input(key=k(page, "settings.slots")).value == 5
    assert any(i.value.startswith("app_settings.toml changed on disk at ") for i in page.info)
    click(page, "settings.save")
    assert messages(page)[-1].endswith("app_settings.toml: [cluster] pool"), messages(page)
    assert (load_settings(settings).cluster.slots, load_settings(settings).cluster.pool) == (5, True)

    settings.write_text(settings.read_text().replace("slots = 5", "slots = 6"))
    page.number_input(key=k(page, "settings.slots")).set_value(7)
    click(page, "settings.save")
    assert "[cluster] slots is 6 in the file (it was 5 when loaded; this save sets 7)" in messages(page)[-1]
    assert load_settings(settings).cluster.slots == 6
    click(page, "settings.reload")
    assert page.number_input(key=k(page, "settings.slots")).value == 6
    assert messages(page)[-1] == "reloaded from app_settings.toml: the form shows the file's values"


def test_an_apps_own_args_form_that_fails_is_a_message_and_the_generated_form_stays(
    app_dir: Path,
) -> None:
    (app_dir / "app_args_form.py").write_text(
        "def render(args, model, key):\n    raise RuntimeError('oops')\n"
    )
    page = open_page()
    assert any("app_args_form.py: render() failed: RuntimeError('oops')" in e.value for e in page.error)
    page.toggle(key=k(page, "args.use_custom")).set_value(False).run()
    page.number_input(key=k(page, "args.partitions")).set_value(3)
    click(page, "args.save")
    assert load_settings(app_dir / "app_settings.toml").args["partitions"] == 3


def test_a_bad_setting_is_a_message_and_the_file_is_untouched(app_dir: Path) -> None:
    settings = app_dir / "app_settings.toml"
    before = settings.read_text()
    page = open_page()
    page.text_area(key=k(page, "settings.hosts")).set_value("gpu-a two")
    click(page, "settings.save")
    assert messages(page) == ["SSH hosts line 1: write host = number of loops (got 'gpu-a two')"]
    page.text_area(key=k(page, "settings.hosts")).set_value("")
    page.text_input(key=k(page, "settings.namespace")).set_value("../escape")
    click(page, "settings.save")
    assert "namespace" in messages(page)[0] and "SettingsError" in messages(page)[0]
    assert not any("update_settings" in code for code in codes(page))  # no snippet for a refused save
    assert settings.read_text() == before


def test_dask_backend_counts_in_the_mode(app_dir: Path) -> None:
    page = open_page()
    page.radio(key=k(page, "settings.backend")).set_value("dask").run()
    assert int(metric(page, "Calculated mode")) & 4
    page.text_input(key=k(page, "settings.scheduler")).set_value("tcp://127.0.0.1:8786")
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
        page.number_input(key=k(page, key)).set_value(value)
    page.toggle(key=k(page, "service.shutdown_on_stop")).set_value(False)
    page.toggle(key=k(page, "service.allow_idle")).set_value(True)
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
    python = code_with(page, "\nupdate_settings(")
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
    python, shell = code_with(page, "service.start("), code_with(page, "keepwarm start")
    assert "report = service.start(slots=2)" in python
    assert shell == f"keepwarm start mycode_project --apps-path {started.app_dir.parent} --workers 2"

    page.text_area(key=k(page, "service.args")).set_value('{"x": 27}')
    click(page, "service.submit")
    assert any(m.startswith("task ") and " done in " in m for m in messages(page)), messages(page)
    assert page.json[0].value and json.loads(page.json[0].value)["collatz_steps"] == 111
    assert any("keepwarm submit mycode_project" in code and "--wait" in code for code in codes(page))
    page.text_area(key=k(page, "service.args")).set_value('{"x": "five"}')
    click(page, "service.submit")
    assert any(m.startswith("InvalidArgs: invalid args: x:") for m in messages(page)), messages(page)

    click(page, "service.status")
    assert any(m.startswith("status running: 0 pending, 0 running, 1 done") for m in messages(page))
    status_line = code_with(page, "keepwarm status")
    completed = run(keepwarm_line(status_line))  # the CLI line the page shows works as shown
    assert completed.returncode == 0 and "loop-0" in completed.stdout, completed.stderr

    click(page, "service.health")
    assert any(m.startswith("health gate passed (exit code 0)") for m in messages(page)), messages(page)
    assert run(keepwarm_line(code_with(page, "keepwarm health"))).returncode == 0

    click(page, "service.snapshot")
    snapshot = started.log_dir / "service_operator_snapshot.json"
    assert any(m == f"snapshot written to {snapshot}" for m in messages(page))
    assert json.loads(snapshot.read_text())["summary"]["healthy"] == 2

    assert metric(page, "Done") == "1"

    click(page, "service.stop")
    assert "service mycode_project stopped" in messages(page)
    assert Service(started).status().status == "stopped"
    assert metric(page, "Status") == "stopped"


def test_bad_task_args_and_a_stopped_service_are_messages(started: Env) -> None:
    page = open_page()
    page.text_area(key=k(page, "service.args")).set_value("{x: 27")
    click(page, "service.submit")
    assert messages(page)[0].startswith("task args: not JSON")
    page.text_area(key=k(page, "service.args")).set_value('{"x": 27}')
    click(page, "service.submit")  # the rule of every submit: refused when no service is running
    assert messages(page)[0].startswith(
        "ServiceNotRunning: service 'mycode_project' is not running; queue the tasks for its next start"
    ), messages(page)
    assert Service(started).counts().pending == 0  # refused before anything was queued
    click(page, "service.stop")  # stopping a stopped service says so, and is no error
    assert page.success[-1].value.startswith("service mycode_project is"), messages(page)


def test_the_health_gate_fails_on_a_stopped_service_with_its_reasons(started: Env) -> None:
    page = open_page()
    click(page, "service.health")
    assert messages(page)[0] == "health gate failed (exit code 3), status stopped"
    assert [w.value for w in page.warning] == ["status is stopped"]
    completed = run(keepwarm_line(code_with(page, "keepwarm health")))
    assert completed.returncode == 3  # the CLI line exits with the gate's code


def test_the_live_view_counts_and_charts_over_refreshes(started: Env) -> None:
    page = open_page()
    click(page, "service.start")
    service = Service(started)
    handles = service.submit_many({"args": {"x": n}} for n in range(1, 41))
    for handle in handles:
        handle.result(timeout=30)
    page.run()  # a refresh, as the fragment's timer does in the browser
    assert metric(page, "Done") == "40"
    assert float(metric(page, "Tasks/s (last 10 s)")) > 0
    recent = page.table[-1].value
    assert set(recent["state"]) == {"done"} and len(recent) == 5
    click(page, "service.stop")


# ---------------------------------------------------------------------- run mode


def install_and_run(page: AppTest, mode: str = "python") -> None:
    click(page, "install.run")
    page.selectbox(key=k(page, "run.mode")).set_value(mode)
    click(page, "run.run")


def test_install_streams_its_log_and_enables_run(app_dir: Path) -> None:
    page = open_page()
    assert page.button(key=k(page, "run.run")).disabled
    click(page, "install.run")
    assert any(m.startswith("installed mycode_project in ") for m in messages(page)), messages(page)
    log = code_with(page, "step check")
    assert "step environment: start" in log and "step check: done" in log
    assert [e.label for e in page.expander].count("Install logs") == 1  # the live panel gave way
    assert not page.button(key=k(page, "run.run")).disabled  # a successful install enables RUN
    completed = run(keepwarm_line(code_with(page, "keepwarm install")))
    assert completed.returncode == 0, completed.stderr
    assert "keepwarm.install(env, on_output=print)" in code_with(page, "keepwarm.install(")


def test_a_failed_install_says_which_step_and_keeps_its_log(app_dir: Path, tmp_path: Path) -> None:
    write_app(tmp_path, "broken", "import no_such_module_anywhere\n" + WORKER)
    page = open_page()
    page.selectbox(key="app").set_value("broken").run()
    click(page, "install.run")
    assert page.error[0].value.startswith("InstallError: install broken: step 'check' failed:"), messages(
        page
    )
    assert "no_such_module_anywhere" in page.error[0].value
    log = code_with(page, "step check: failed")  # the streamed log is kept, open, after the failure
    assert "step environment: done" in log
    assert page.button(key=k(page, "run.run")).disabled


def test_the_args_form_follows_the_args_model_and_saves_to_args(app_dir: Path) -> None:
    settings = app_dir / "app_settings.toml"
    page = open_page()
    x = page.number_input(key=k(page, "args.x"))
    # The model's default; its bounds are told, not enforced by the widget (SAVE ARGS says why).
    assert (x.value, x.min, x.max) == (27, None, None)
    assert x.help == "the number a task studies (at least 1, at most 1000000000000000)"
    assert page.number_input(key=k(page, "args.items")).help == "run mode: numbers to process (at least 1)"
    page.number_input(key=k(page, "args.partitions")).set_value(4)
    click(page, "args.save")
    assert any(m.endswith("[args] partitions") for m in messages(page)), messages(page)
    assert load_settings(settings).args == {"x": 27, "items": 2000, "partitions": 4}
    assert "partitions = 4  # run mode: how many partitions to split them into" in settings.read_text()


def test_args_the_model_refuses_are_shown_and_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = copy_app(tmp_path, "mycode_project", **{"x = 27 ": "x = 0  "})
    monkeypatch.setenv("KEEPWARM_APPS_PATH", str(app.parent))
    page = open_page()
    assert page.number_input(key=k(page, "args.x")).value == 0  # shown as the file has it, not hidden
    click(page, "args.save")
    assert messages(page)[-1] == (
        f"[args] of {app / 'app_settings.toml'}: invalid args: x = 0 is out of range: at least 1; "
        "nothing was saved"
    )
    assert "x = 0" in (app / "app_settings.toml").read_text()


def test_an_app_without_args_model_edits_args_as_json(app_dir: Path, tmp_path: Path) -> None:
    plain = write_app(tmp_path, "plain", WORKER, settings="[args]\nlimit = 3  # kept\n")
    page = open_page()
    page.selectbox(key="app").set_value("plain").run()
    page.text_area(key=k(page, "args.json")).set_value('{"limit": 5, "label": "b"}')
    click(page, "args.save")
    assert load_settings(plain / "app_settings.toml").args == {"limit": 5, "label": "b"}
    assert "limit = 5  # kept" in (plain / "app_settings.toml").read_text()
    page.text_area(key=k(page, "args.json")).set_value("{oops")
    click(page, "args.save")
    assert messages(page)[-1].startswith("[args]: not JSON")


def test_check_distribute_draws_the_plan_and_a_moved_partition_is_saved(app_dir: Path) -> None:
    page = open_page()
    click(page, "run.distribute")
    assert "work plan of 8 partitions over 2 workers, imbalance 1.00" in messages(page)
    assert (metric(page, "Partitions"), metric(page, "Imbalance")) == ("8", "1.00")
    (graph,) = page.get("graphviz_chart")
    assert '"worker-0" -> "worker-0/p0"' in graph.proto.spec and "numbers=250" in graph.proto.spec

    page.selectbox(key=k(page, "run.move_partition")).set_value("p1")
    page.selectbox(key=k(page, "run.move_to")).set_value("worker-0")
    click(page, "run.move")
    assert any(m.startswith("p1 moved from worker-1 to worker-0 and the plan saved") for m in messages(page))
    assert load_plan(Env(app_dir)).worker_of("p1") == "worker-0"  # type: ignore[union-attr]
    assert metric(page, "Imbalance") == "1.25"
    move = code_with(page, "keepwarm distribute mycode_project")
    assert move.endswith("--move p1 --to worker-0")
    completed = run(keepwarm_line(move))  # the same move again: the CLI agrees it is done
    assert completed.returncode == 0, completed.stderr


def test_run_streams_its_log_and_the_benchmark_ranks_the_modes(app_dir: Path) -> None:
    page = open_page()
    install_and_run(page)
    assert any(m.startswith("run ") and "mode python: 2000 rows" in m for m in messages(page)), messages(page)
    assert "[8/8]" in code_with(page, "[8/8]")
    assert code_with(page, "keepwarm run").endswith("--mode python")

    page.toggle(key=k(page, "run.benchmark")).set_value(True).run()
    page.multiselect(key=k(page, "run.bench_modes")).set_value(["python", "pool"]).run()
    assert code_with(page, "keepwarm run").endswith("--benchmark --mode python,pool")
    click(page, "run.run")
    assert any(m.startswith("benchmarked 2 modes; fastest: ") for m in messages(page)), messages(page)
    ranking = page.table[0].value
    assert set(ranking["mode"]) == {"python", "pool"} and list(ranking["order"]) == [1, 2]
    saved = json.loads((Env(app_dir).log_dir / "benchmark.json").read_text())
    assert set(saved) == {"python", "pool"}
    assert page.get("vega_lite_chart"), "the modes' bar chart"


def test_load_data_previews_and_exports_the_chosen_columns(app_dir: Path, tmp_path: Path) -> None:
    page = open_page()
    install_and_run(page)
    click(page, "data.load")
    preview = page.dataframe[0].value
    assert len(preview) == 200 and {"x", "collatz_steps"} <= set(preview.columns)
    export = tmp_path / "export" / "mycode_project" / "export.csv"

    page.toggle(key=k(page, "data.select_all")).set_value(False).run()
    page.multiselect(key=k(page, "data.columns")).set_value(["x", "collatz_steps"]).run()
    click(page, "data.export")
    assert messages(page)[-1] == f"2000 rows of x, collatz_steps written to {export}"
    lines = export.read_text().splitlines()
    assert lines[0] == "x,collatz_steps" and len(lines) == 2001
    assert code_with(page, "keepwarm export").endswith("--columns x,collatz_steps")
    assert any("on the **ANALYSIS** page" in caption.value for caption in page.caption)

    page.toggle(key=k(page, "data.select_all")).set_value(True).run()
    click(page, "data.export")
    assert export.read_text().splitlines()[0] == ",".join(map(str, preview.columns))
    assert run(keepwarm_line(code_with(page, "keepwarm export"))).returncode == 0


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
