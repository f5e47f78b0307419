"""keepwarm's child processes: the one liveness probe, the command line, and the report lines."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

from keepwarm._sys.child import (
    child_command,
    child_parser,
    flag,
    last_report,
    parse_report,
    report,
    reports_in,
)
from keepwarm._sys.procs import process_alive
from keepwarm.env import Env

EXAMPLE_APPS = Path(__file__).resolve().parents[1] / "examples" / "apps"


def test_a_running_process_is_alive_and_a_reaped_one_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_alive(os.getpid())
        assert process_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid)
    assert not process_alive(None) and not process_alive(0) and not process_alive(-1)


def test_a_zombie_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: a zombie
    try:
        assert not process_alive(child.pid)
    finally:
        child.wait()


def test_a_marker_tells_a_reused_pid_from_the_process_that_carries_it() -> None:
    marker = "keepwarm-marker-5f3a"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        # Until its exec completes, a new process has an empty command line, which counts as running
        # (as for a process that is exiting): compare markers once the command line is there.
        command = Path(f"/proc/{child.pid}/cmdline")
        deadline = time.monotonic() + 10
        while not command.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process_alive(child.pid, marker)
        assert not process_alive(child.pid, "another-incarnation")
    finally:
        child.kill()
        child.wait()


def test_a_child_command_carries_the_env_and_its_parser_reads_it_back(tmp_path: Path) -> None:
    mycode_env = Env("mycode_project", EXAMPLE_APPS, share_dir=tmp_path, namespace="child_test")
    command = child_command(
        "keepwarm.runtime.loop", "--slot", "loop-3", *flag("--max-tasks", None), env=mycode_env
    )
    assert command[:3] == [sys.executable, "-m", "keepwarm.runtime.loop"]
    assert "--max-tasks" not in command
    parser = child_parser("keepwarm.runtime.loop")
    parser.add_argument("--slot")
    options = parser.parse_args(command[3:])
    again = Env.of_child(options)
    assert (again.app_dir, again.share_root, again.namespace) == (
        mycode_env.app_dir,
        mycode_env.share_root,
        mycode_env.namespace,
    )
    assert options.slot == "loop-3"
    assert (
        child_command("keepwarm.backends.cluster", python=Path("/venv/bin/python"))[0] == "/venv/bin/python"
    )


def test_reports_are_read_back_and_other_lines_are_passed_over() -> None:
    out = io.StringIO()
    print("an app's own line", file=out)
    report("ready", stream=out, address="tcp://127.0.0.1:8786", pid=42)
    print('{"json": "but not a report"}', file=out)
    report("failed", stream=out, error="no")
    found = reports_in(out.getvalue())
    assert [(r.kind, r.fields) for r in found] == [
        ("ready", {"address": "tcp://127.0.0.1:8786", "pid": 42}),
        ("failed", {"error": "no"}),
    ]
    assert last_report(out.getvalue(), "ready") == found[0]
    assert last_report(out.getvalue()) == found[1]
    assert parse_report("not json {") is None and parse_report('{"keepwarm": 3}') is None
