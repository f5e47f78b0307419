"""Shared fixtures: an isolated share and log dir per test, real loop processes, condition waits."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keepwarm._sys.logfiles import log_tail
from keepwarm._sys.watch import IN_MOVED_TO, Watcher
from keepwarm.api import Service
from keepwarm.backends.cluster import read_keeper
from keepwarm.backends.local import LoopProcess, spawn_loop
from keepwarm.env import Env
from keepwarm.queue.state import SupervisorState, read_supervisor_state
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.runtime.heartbeat import read_heartbeat
from keepwarm.service.lifecycle import stop_service
from keepwarm.service.liveness import pid_alive

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_APPS = ROOT / "examples" / "apps"


# The files that take longest, longest first (measured with --durations=0): pytest -n 2 --dist loadfile
# hands whole files to the workers in collection order, so the long ones start first and no worker is
# left finishing a long file alone at the end. The rest keep their order after them.
LONGEST_FILES = (
    "browser/test_run_page.py",
    "test_docs.py",
    "test_run_mode.py",
    "browser/test_settings_page.py",
    "test_service.py",
    "test_dask.py",
    "browser/test_operator.py",
    "browser/test_service_page.py",
    "test_autoscale.py",
    "conformance/test_conformance.py",
    "multihost/test_ssh_cluster.py",
    "chaos/test_chaos.py",
    "browser/test_pipeline_page.py",
    "test_cli.py",
    "multihost/test_clock_skew.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (``LONGEST_FILES``); within a file, the tests keep their order."""
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}

    def key(item: pytest.Item) -> int:
        relative = Path(str(item.path)).relative_to(Path(__file__).parent).as_posix()
        return rank.get(relative, len(rank))

    items.sort(key=key)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own share, log dir and export dir; nothing touches the real home."""
    share = tmp_path / "share"
    monkeypatch.setenv("KEEPWARM_SHARE", str(share))
    monkeypatch.setenv("KEEPWARM_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("KEEPWARM_EXPORT", str(tmp_path / "export"))
    for name in ("KEEPWARM_NAMESPACE", "KEEPWARM_APPS_PATH", "KEEPWARM_WATCH"):
        monkeypatch.delenv(name, raising=False)
    return share


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail the test with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def copy_app(tmp_path: Path, name: str, settings_extra: str = "", **replace: str) -> Path:
    """A private copy of a bundled app, with text appended to or replaced in its settings."""
    target = tmp_path / "apps" / name
    shutil.copytree(EXAMPLE_APPS / name, target)
    settings = target / "app_settings.toml"
    text = settings.read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    settings.write_text(text + settings_extra)
    return target


def write_app(tmp_path: Path, name: str, worker_code: str, settings: str = "") -> Path:
    """A new app folder with ``worker.py`` (class Worker) and the given extra settings."""
    folder = tmp_path / "apps" / name
    package = folder / f"{name}_code"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "worker.py").write_text(worker_code)
    (folder / "app_settings.toml").write_text(f'[app]\nworker = "{name}_code.worker:Worker"\n\n{settings}')
    return folder


class LoopStartError(Exception):
    """A loop started by a test did not become ready: its own error, or its log's last lines."""


def wait_ready(env: Env, loops: list[LoopProcess], timeout: float) -> dict[str, float]:
    """Block until every loop's heartbeat says ``ready``; returns each slot's start time (seconds).

    Raises LoopStartError with the loop's own error if one exits or reports a failed start.
    """
    queue = TaskQueue.for_env(env).ensure()
    deadline = time.monotonic() + timeout
    waiting = {loop.slot: loop for loop in loops}
    started: dict[str, float] = {}
    with Watcher([queue.heartbeats], mask=IN_MOVED_TO) as watcher:
        while waiting:
            for slot, loop in list(waiting.items()):
                beat = read_heartbeat(queue.layout.heartbeat(slot))
                if beat is not None and beat.incarnation == loop.incarnation:
                    if beat.state in ("ready", "processing"):
                        started[slot] = beat.start_sec or 0.0
                        del waiting[slot]
                        continue
                    if beat.error:
                        raise LoopStartError(f"loop {slot} of {env.app_target} failed: {beat.error}")
                if loop.process.poll() is not None:
                    raise LoopStartError(
                        f"loop {slot} of {env.app_target} exited with code {loop.process.returncode} "
                        f"before it was ready; its log ({loop.log_path}) ends with:\n"
                        f"{log_tail(loop.log_path)}"
                    )
            left = deadline - time.monotonic()
            if waiting and left <= 0:
                names = ", ".join(sorted(waiting))
                raise LoopStartError(
                    f"loops {names} of {env.app_target} not ready after {timeout}s; "
                    f"see their logs in {env.log_dir}"
                )
            if waiting:
                watcher.wait(min(left, 0.1))
    return started


def stop_loops(loops: list[LoopProcess], timeout: float) -> None:
    """SIGTERM every loop (each finishes its current task), then SIGKILL what is left at ``timeout``."""
    for loop in loops:
        if loop.process.poll() is None:
            loop.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for loop in loops:
        try:
            loop.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            loop.process.kill()
            loop.process.wait()


class Loops:
    """Starts real loop processes and stops them (by pid) at the end of the test."""

    def __init__(self) -> None:
        self.started: list[LoopProcess] = []

    def start(self, env: Env, count: int = 1, first: int = 0, **options: int) -> list[LoopProcess]:
        loops = [spawn_loop(env, f"loop-{first + index}", **options) for index in range(count)]
        self.started += loops
        wait_ready(env, loops, timeout=60)
        return loops

    def stop(self, timeout: float = 30) -> None:
        stop_loops(self.started, timeout)


@pytest.fixture
def loops() -> Iterator[Loops]:
    manager = Loops()
    yield manager
    manager.stop()


@pytest.fixture
def mycode_env() -> Env:
    return Env("mycode_project", EXAMPLE_APPS)


@pytest.fixture
def flaky_env() -> Env:
    return Env("flaky", EXAMPLE_APPS)


def queue_of(env: Env) -> TaskQueue:
    return TaskQueue.for_env(env).ensure()


class Services:
    """Stops, at the end of the test, every service the test started (by its supervisor's pid)."""

    def __init__(self) -> None:
        self.envs: list[Env] = []

    def start(self, env: Env, **options: object) -> Service:
        service = Service(env)
        self.envs.append(env)
        service.start(**options)  # type: ignore[arg-type]
        return service

    def stop_all(self) -> None:
        for env in self.envs:
            state = read_supervisor_state(env.service_dir / "supervisor.json")
            try:
                stop_service(env, timeout=5)
            finally:
                if state is not None and pid_alive(state.pid):
                    os.kill(state.pid, signal.SIGKILL)


@pytest.fixture
def services() -> Iterator[Services]:
    manager = Services()
    yield manager
    manager.stop_all()
    for env in manager.envs:  # a Dask cluster a killed supervisor left: its keeper, by pid
        kept = read_keeper(env.service_dir / "cluster.json")
        if kept is not None:
            os.kill(kept[1], signal.SIGKILL)


def supervisor_state(env: Env) -> SupervisorState:
    state = read_supervisor_state(env.service_dir / "supervisor.json")
    assert state is not None
    return state
