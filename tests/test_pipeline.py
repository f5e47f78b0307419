"""Pipelines: snippets saved next to their app, run as steps in order (issue 15 §3.2, §3.3).

Real files and real child processes: every step is ``python <file>`` in the app folder; the saved AGI
snippets run keepwarm's façade for real on a copy of the bundled example app.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomlkit

from keepwarm._sys.procs import process_alive, signal_quietly
from keepwarm.env import Env
from keepwarm.errors import PipelineError, PipelineFileError, SnippetFileError, StepNotFound
from keepwarm.pipeline.runner import last_outcome, run_pipeline, step_log
from keepwarm.pipeline.snippet_file import args_digest, read_snippet, save_snippet, snippet_file_name
from keepwarm.pipeline.steps import (
    add_step,
    load_pipeline,
    move_step,
    pipeline_path,
    remove_step,
    save_as_step,
    stale,
)
from keepwarm.settings import update_settings
from keepwarm.ui import snippets

from .conftest import copy_app

KEEPWARM = str(Path(sys.executable).parent / "keepwarm")


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    return copy_app(tmp_path, "mycode_project")


def script(app_dir: Path, name: str, code: str) -> str:
    (app_dir / name).write_text(code)
    return name


def keepwarm(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KEEPWARM, *argv], capture_output=True, text=True, timeout=300, check=False)


# ---------------------------------------------------------------------- saved snippets


def test_a_saved_agi_run_snippet_runs_as_it_is_with_the_args_it_was_generated_from(app_dir: Path) -> None:
    update_settings(app_dir / "app_settings.toml", "args", {"items": 300, "partitions": 3})
    ref = snippets.AppRef.of(Env(app_dir))
    snippet = snippets.run(ref, "python")
    assert snippet.agi is not None and "AGI.run(env, mode=0, x=27, items=300, partitions=3)" in snippet.agi
    saved = save_snippet(
        app_dir, snippet_file_name("run", agi=True), snippet.agi, args=snippet.args, title="AGI.run"
    )
    assert saved.path == app_dir / "AGI_run.py"

    ran = subprocess.run(
        [sys.executable, "AGI_run.py"], cwd=app_dir, capture_output=True, text=True, timeout=300, check=False
    )

    assert ran.returncode == 0, ran.stderr
    line = next(line for line in ran.stdout.splitlines() if line.startswith("RUN: "))
    status, _seconds, rows, output_dir = line.removeprefix("RUN: ").split(" ")
    assert (status, rows) == ("done", "300")
    record = json.loads((Path(output_dir) / "run.json").read_text())
    assert record["args"]["items"] == 300 and record["mode"] == "python"


def test_a_saved_file_records_the_args_it_was_generated_from_in_its_header(app_dir: Path) -> None:
    args = {"x": 27, "items": 2000, "partitions": 8}
    saved = save_snippet(app_dir, "keepwarm_run.py", "print('hello')\n", args=args, title="keepwarm run")
    again = read_snippet(saved.path)
    assert again.args == args and again.digest == args_digest(args) == saved.digest
    assert args_digest({"partitions": 8, "items": 2000, "x": 27}) == saved.digest  # key order does not matter
    lines = saved.path.read_text().splitlines()
    assert lines[0].startswith("# keepwarm snippet: keepwarm run of") and lines[-1] == "print('hello')"
    assert read_snippet(app_dir / script(app_dir, "plain.py", "print(1)\n")).args is None


def test_snippet_file_names_follow_the_reference() -> None:
    names = {
        action: snippet_file_name(action, agi=True) for action in ("run", "start", "install", "distribute")
    }
    assert names == {
        "run": "AGI_run.py",
        "start": "AGI_serve.py",
        "install": "AGI_install.py",
        "distribute": "AGI_get_distrib.py",
    }
    assert snippet_file_name("export", agi=False) == "keepwarm_export.py"
    with pytest.raises(SnippetFileError, match="the AGI façade has no 'export' action"):
        snippet_file_name("export", agi=True)


def test_every_agi_snippet_is_valid_python_and_says_its_call() -> None:
    ref = snippets.AppRef("demo", "/apps", "/apps/demo/app_settings.toml", {"items": 10, "workers": 2})
    calls = {
        snippets.install(ref).agi: "await AGI.install(env)",
        snippets.distribute(
            ref, 2
        ).agi: 'AGI.get_distrib(env, workers={"127.0.0.1": 2}, **{"items": 10, "workers": 2})',
        snippets.run(ref, "pool+cython").agi: "AGI.run(env, mode=3, **{",
        snippets.benchmark(ref, ["python", "pool"]).agi: "AGI.run(env, mode=[0, 1], **{",
        snippets.start(ref, 2).agi: 'AGI.serve(env, action="start", workers=2)',
        snippets.status(ref).agi: 'AGI.serve(env, action="status")',
        snippets.health_gate(ref).agi: 'AGI.serve(env, action="health")',
        snippets.stop(ref).agi: 'AGI.serve(env, action="stop")',
        snippets.submit(ref, {"x": 1}).agi: 'AGI.submit(env, args={"x": 1})',
    }
    for code, call in calls.items():
        assert code is not None and call in code, (call, code)
        compile(code, "<agi snippet>", "exec")
        assert "AgiEnv(apps_path=APPS_PATH, app=APP, verbose=1)" in code and "asyncio.run(main())" in code
    assert snippets.export(ref, None).agi is None  # the façade has no export


# ---------------------------------------------------------------------- the pipeline file


def test_steps_are_added_moved_and_removed_in_the_pipeline_file(app_dir: Path) -> None:
    env = Env(app_dir)
    for name in ("a.py", "b.py", "c.py"):
        script(app_dir, name, "print(1)\n")
        add_step(env, name)
    assert [s.file for s in load_pipeline(env).steps] == ["a.py", "b.py", "c.py"]
    move_step(env, 3, -1)
    assert [s.file for s in load_pipeline(env).steps] == ["a.py", "c.py", "b.py"]
    move_step(env, 1, -1)  # already first: stays
    move_step(env, 1, 5)  # to the end, no further
    assert [s.file for s in load_pipeline(env).steps] == ["c.py", "b.py", "a.py"]
    remove_step(env, 2)
    assert [s.file for s in load_pipeline(env).steps] == ["c.py", "a.py"]
    assert (app_dir / "b.py").exists()
    text = pipeline_path(env).read_text()
    assert text.startswith("# keepwarm pipeline") and 'file = "c.py"' in text
    assert load_pipeline(env).steps[0].args == {"x": 27, "items": 2000, "partitions": 8}


def test_bad_input_gets_a_clear_error_and_leaves_the_file_as_it_was(app_dir: Path, tmp_path: Path) -> None:
    env = Env(app_dir)
    with pytest.raises(SnippetFileError, match=r"snippet file .*missing\.py does not exist"):
        add_step(env, "missing.py")
    outside = tmp_path / "elsewhere.py"
    outside.write_text("print(1)\n")
    with pytest.raises(SnippetFileError, match=r"is outside the app folder .*: copy it there"):
        add_step(env, outside)
    script(app_dir, "a.py", "print(1)\n")
    add_step(env, "a.py")
    with pytest.raises(SnippetFileError, match=r"a\.py is already step 1"):
        add_step(env, "a.py")
    with pytest.raises(StepNotFound, match="has no step 4: it has steps 1 to 1"):
        remove_step(env, 4)
    with pytest.raises(StepNotFound, match="has no step 2"):
        run_pipeline(env, 2)
    with pytest.raises(SnippetFileError, match="not a snippet file name"):
        save_snippet(app_dir, "../evil.py", "print(1)\n", args={}, title="x")

    broken = '[[steps]]\nfile = "a.py"\ncolour = "red"\n'
    pipeline_path(env).write_text(broken)
    with pytest.raises(PipelineFileError, match=r"colour: unknown key.*fix it"):
        load_pipeline(env)
    with pytest.raises(PipelineFileError):
        add_step(env, "a.py")
    assert pipeline_path(env).read_text() == broken
    with pytest.raises(PipelineFileError):
        save_as_step(env, "AGI_run.py", "print(1)\n", args={}, title="AGI.run")
    assert not (app_dir / "AGI_run.py").exists()  # refused before anything was written
    pipeline_path(env).write_text("[[steps]\n")
    with pytest.raises(PipelineFileError, match="is not valid TOML"):
        load_pipeline(env)


ADDER = """
import sys, time
from pathlib import Path
from keepwarm.env import Env
from keepwarm.pipeline.steps import add_step

app_dir, go, first, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
env = Env(app_dir)
deadline = time.monotonic() + 60
while not go.exists():  # every adder starts at the same moment
    if time.monotonic() > deadline:
        sys.exit("no go")
    time.sleep(0.001)
for number in range(first, first + count):
    add_step(env, f"step_{number}.py")
"""


def test_steps_added_by_several_processes_at_once_are_all_kept(app_dir: Path, tmp_path: Path) -> None:
    adders, each = 6, 8
    names = [script(app_dir, f"step_{n}.py", "print('hi')\n") for n in range(adders * each)]
    go = tmp_path / "go"
    children = [
        subprocess.Popen([sys.executable, "-c", ADDER, str(app_dir), str(go), str(i * each), str(each)])
        for i in range(adders)
    ]
    go.touch()
    assert [child.wait(timeout=120) for child in children] == [0] * adders

    kept = [step.file for step in load_pipeline(Env(app_dir)).steps]
    assert sorted(kept) == sorted(names)  # none lost, none twice
    for i in range(adders):  # each adder's steps in the order it added them
        mine = [name for name in kept if int(name[5:-3]) // each == i]
        assert mine == [f"step_{n}.py" for n in range(i * each, (i + 1) * each)]


# ---------------------------------------------------------------------- running


def test_steps_run_in_order_with_their_logs_and_stop_at_the_first_failure(app_dir: Path) -> None:
    env = Env(app_dir)
    trail = app_dir / "trail.txt"
    script(app_dir, "one.py", "open('trail.txt', 'a').write('one\\n'); print('one says hi')\n")
    script(
        app_dir,
        "two.py",
        "import sys\nopen('trail.txt', 'a').write('two\\n')\nprint('two starts')\n"
        "sys.stderr.write('two: the input is wrong\\n')\nsys.exit(3)\n",
    )
    script(app_dir, "three.py", "open('trail.txt', 'a').write('three\\n')\n")
    for name in ("one.py", "two.py", "three.py"):
        add_step(env, name)
    said: list[str] = []

    ran = run_pipeline(env, on_output=said.append)

    assert not ran.ok
    assert [(o.file, o.status, o.exit_code) for o in ran.steps] == [
        ("one.py", "ok", 0),
        ("two.py", "failed", 3),
        ("three.py", "not run", None),
    ]
    assert trail.read_text() == "one\ntwo\n"  # in order, and nothing after the failure
    assert ran.message.startswith("step 2 (two.py) failed with exit code 3 after ")
    assert "the run stopped there; not run: step 3" in ran.message
    steps = load_pipeline(env).steps
    assert step_log(env, steps[1]).read_text() == "two starts\ntwo: the input is wrong\n"
    assert "one says hi" in said and "two: the input is wrong" in said
    kept = last_outcome(env, steps[1])
    assert kept is not None and kept.status == "failed" and kept.exit_code == 3
    assert last_outcome(env, steps[2]) is None

    only = run_pipeline(env, 3)  # one step on its own
    assert only.ok and [o.file for o in only.steps] == ["three.py"] and only.message.startswith("1 step ok")
    assert trail.read_text() == "one\ntwo\nthree\n"


def test_a_step_whose_file_is_gone_fails_and_says_so(app_dir: Path) -> None:
    env = Env(app_dir)
    add_step(env, script(app_dir, "gone.py", "print(1)\n"))
    (app_dir / "gone.py").unlink()
    ran = run_pipeline(env)
    assert not ran.ok and ran.steps[0].exit_code == 127
    assert (
        "does not exist: save it again, or remove the step"
        in step_log(env, load_pipeline(env).steps[0]).read_text()
    )


def test_a_pipeline_without_steps_says_how_to_add_one(app_dir: Path) -> None:
    with pytest.raises(StepNotFound, match=r"has no steps .*keepwarm pipeline add"):
        run_pipeline(Env(app_dir))


# ---------------------------------------------------------------------- steps that hang, runs that stop

# A step that starts a process of its own (in its group) and then hangs; it says both pids once they run.
HANGS = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
with open("pids.tmp", "w") as pids:
    pids.write(f"{os.getpid()} {child.pid}")
os.replace("pids.tmp", "pids.txt")
print("hanging now", flush=True)
time.sleep(300)
"""


def hanging_step(app_dir: Path, *, timeout_sec: float | None = None) -> Env:
    env = Env(app_dir)
    add_step(env, script(app_dir, "hangs.py", HANGS))
    add_step(env, script(app_dir, "after.py", "open('after.txt', 'w').write('ran')\n"))
    if timeout_sec is not None:
        document = tomlkit.parse(pipeline_path(env).read_text())
        document["steps"][0]["timeout_sec"] = timeout_sec  # as a user writes it in pipeline.toml
        pipeline_path(env).write_text(tomlkit.dumps(document))
    return env


def step_pids(app_dir: Path, within: float = 60) -> tuple[int, int]:
    """The hanging step's pid and its own child's, once it has written them."""
    deadline = time.monotonic() + within
    while not (app_dir / "pids.txt").exists():
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.02)
    step, child = (app_dir / "pids.txt").read_text().split()
    return int(step), int(child)


def gone(pid: int, within: float = 30) -> bool:
    """Whether ``pid`` has ended (a zombie counts as ended) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids a test expects to be gone: killed by pid at the end, whatever the test found."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        signal_quietly(pid, signal.SIGKILL)


def test_a_step_past_its_timeout_is_killed_with_its_children_and_the_run_stops_there(
    app_dir: Path, leftovers: list[int]
) -> None:
    env = hanging_step(app_dir, timeout_sec=1)
    assert load_pipeline(env).steps[0].timeout_sec == 1

    ran = run_pipeline(env)

    leftovers.extend(step_pids(app_dir))
    hung, after = ran.steps
    assert (hung.status, after.status) == ("timed out", "not run") and not ran.ok
    assert hung.timeout_sec == 1 and hung.seconds is not None and hung.seconds < 300
    assert hung.describe().startswith("timed out after 1 s (killed)")
    assert "step 1 (hangs.py) timed out after 1 s and was killed; the run stopped there" in ran.message
    assert "hanging now" in step_log(env, load_pipeline(env).steps[0]).read_text()
    assert last_outcome(env, load_pipeline(env).steps[0]) == hung
    assert all(gone(pid) for pid in leftovers)  # the step and the process it started
    assert not (app_dir / "after.txt").exists()


def test_the_run_timeout_applies_to_every_step_and_the_tighter_limit_wins(app_dir: Path) -> None:
    env = Env(app_dir)
    add_step(env, script(app_dir, "quick.py", "print('quick')\n"))
    ran = run_pipeline(env, timeout=120)
    assert ran.ok and ran.steps[0].timeout_sec == 120  # a step that ends in time: as without a limit
    document = tomlkit.parse(pipeline_path(env).read_text())
    document["steps"][0]["timeout_sec"] = 30
    pipeline_path(env).write_text(tomlkit.dumps(document))
    assert run_pipeline(env, timeout=120).steps[0].timeout_sec == 30
    assert run_pipeline(env).steps[0].timeout_sec == 30
    # renewing the step from the page keeps its timeout
    save_as_step(env, "quick.py", "print('quick again')\n", args={}, title="x")
    assert load_pipeline(env).steps[0].timeout_sec == 30
    with pytest.raises(PipelineError, match="more than 0 seconds"):
        run_pipeline(env, timeout=0)
    pipeline_path(env).write_text('[[steps]]\nfile = "quick.py"\ntimeout_sec = -5\n')
    with pytest.raises(PipelineFileError, match=r"timeout_sec.*fix it"):
        load_pipeline(env)


def test_the_cli_kills_a_step_past_timeout_and_refuses_a_bad_one(app_dir: Path, leftovers: list[int]) -> None:
    hanging_step(app_dir, timeout_sec=30)
    shown = json.loads(keepwarm("pipeline", "show", str(app_dir), "--json").stdout)
    assert [s["timeout_sec"] for s in shown["steps"]] == [30, None]
    assert "30 s" in keepwarm("pipeline", "show", str(app_dir)).stdout

    ran = keepwarm("pipeline", "run", str(app_dir), "--timeout", "1")

    leftovers.extend(step_pids(app_dir))
    assert ran.returncode == 1
    assert "step 1 (hangs.py) timed out after 1 s and was killed" in ran.stdout + ran.stderr
    assert all(gone(pid) for pid in leftovers)
    refused = keepwarm("pipeline", "run", str(app_dir), "--timeout", "0")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "Invalid value for '--timeout': 0.0 is not in the range x>0" in refused.stderr


def test_a_step_does_not_outlive_a_cli_run_stopped_by_sigterm(app_dir: Path, leftovers: list[int]) -> None:
    hanging_step(app_dir)
    runner = subprocess.Popen(
        [KEEPWARM, "pipeline", "run", str(app_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    leftovers.extend(step_pids(app_dir))

    runner.terminate()

    _, stderr = runner.communicate(timeout=60)
    assert all(gone(pid) for pid in leftovers)
    assert runner.returncode == 128 + signal.SIGTERM, stderr
    assert not (app_dir / "after.txt").exists()


# The page's server runs a pipeline in a thread of its own; here the process exits while it runs.
SERVER_EXITS = """
import sys, threading, time
from pathlib import Path
from keepwarm.env import Env
from keepwarm.pipeline.runner import run_pipeline

app_dir = Path(sys.argv[1])
threading.Thread(target=run_pipeline, args=(Env(app_dir),), daemon=True).start()
deadline = time.monotonic() + 60
while not (app_dir / "pids.txt").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
print("exiting with the step running", flush=True)
"""


def test_a_step_does_not_outlive_the_process_that_runs_it_in_a_thread(
    app_dir: Path, leftovers: list[int]
) -> None:
    hanging_step(app_dir)

    server = subprocess.run(
        [sys.executable, "-c", SERVER_EXITS, str(app_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    leftovers.extend(step_pids(app_dir))
    assert server.returncode == 0 and "exiting with the step running" in server.stdout, server.stderr
    assert all(gone(pid) for pid in leftovers)


def test_a_killed_runner_takes_the_step_but_not_what_the_step_started(
    app_dir: Path, leftovers: list[int]
) -> None:
    hanging_step(app_dir)
    runner = subprocess.Popen(
        [KEEPWARM, "pipeline", "run", str(app_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    step, started = step_pids(app_dir)
    leftovers.extend((step, started))

    runner.kill()  # SIGKILL: nothing runs in the runner any more

    runner.wait(timeout=60)
    assert gone(step)  # Linux's parent-death signal
    assert process_alive(started)  # as docs/pipeline.md says: left running (killed by the fixture)


# ---------------------------------------------------------------------- staleness


def test_a_step_is_stale_when_its_args_changed_and_says_which(app_dir: Path) -> None:
    env = Env(app_dir)
    ref = snippets.AppRef.of(env)
    snippet = snippets.run(ref, "python")
    assert snippet.agi is not None
    save_as_step(env, "AGI_run.py", snippet.agi, args=snippet.args, title="AGI.run")
    step = load_pipeline(env).steps[0]
    assert not stale(env, step).stale

    update_settings(app_dir / "app_settings.toml", "args", {"items": 500, "seed": 3})

    staleness = stale(env, step)
    assert staleness.stale and set(staleness.changed) == {"items", "seed"}
    assert staleness.describe() == "items 2000 → 500, seed (unset) → 3"

    fresh = snippets.run(snippets.AppRef.of(Env(app_dir)), "python")  # generated again: no longer stale
    assert fresh.agi is not None
    _, number = save_as_step(env, "AGI_run.py", fresh.agi, args=fresh.args, title="AGI.run")
    assert number == 1 and len(load_pipeline(env).steps) == 1
    assert not stale(env, load_pipeline(env).steps[0]).stale


def test_an_added_file_without_header_is_stale_from_the_args_when_it_was_added(app_dir: Path) -> None:
    env = Env(app_dir)
    add_step(env, script(app_dir, "lab_snippet.py", "print(1)\n"))
    update_settings(app_dir / "app_settings.toml", "args", {"x": 28})
    assert stale(env, load_pipeline(env).steps[0]).describe() == "x 27 → 28"


# ---------------------------------------------------------------------- the CLI


def test_the_cli_runs_shows_and_fails_like_the_core(app_dir: Path) -> None:
    where = ["--apps-path", str(app_dir.parent)]
    app = app_dir.name
    script(app_dir, "ok.py", "print('fine')\n")
    script(app_dir, "bad.py", "raise SystemExit('bad: no such input')\n")
    assert keepwarm("pipeline", "add", app, "ok.py", *where).returncode == 0
    added = keepwarm("pipeline", "add", app, "bad.py", *where, "--json")
    assert [s["file"] for s in json.loads(added.stdout)["steps"]] == ["ok.py", "bad.py"]

    first = keepwarm("pipeline", "run", app, *where, "--step", "1")
    assert first.returncode == 0, first.stderr
    assert "1 step ok in" in first.stderr and "fine" in first.stderr

    failed = keepwarm("pipeline", "run", app, *where, "--json")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    document = json.loads(failed.stdout)
    assert [s["status"] for s in document["steps"]] == ["ok", "failed"] and document["ok"] is False
    assert document["error"].startswith("step 2 (bad.py) failed with exit code 1")

    missing = keepwarm("pipeline", "run", app, *where, "--step", "9", "--json")
    assert missing.returncode == 1 and json.loads(missing.stdout)["kind"] == "StepNotFound"
    assert "error: " in missing.stderr and "Traceback" not in missing.stderr

    update_settings(app_dir / "app_settings.toml", "args", {"items": 10})
    shown = json.loads(keepwarm("pipeline", "show", app, *where, "--json").stdout)
    assert [(s["file"], s["stale"], s["last_run"]["status"]) for s in shown["steps"]] == [
        ("ok.py", "items 2000 → 10", "ok"),
        ("bad.py", "items 2000 → 10", "failed"),
    ]
    text = keepwarm("pipeline", "show", app, *where)
    assert text.returncode == 0 and "bad.py" in text.stdout and "failed" in text.stdout
