"""One share for the whole conformance session, one MCP server on it, and the app every scenario uses.

The suite's scenarios keep apart by namespace (each scenario, and where it mutates, each surface, has
its own), so they can share one share directory and one MCP server without seeing each other.
"""

from __future__ import annotations

import os
import shutil
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepwarm.env import Env
from keepwarm.queue.state import read_supervisor_state
from keepwarm.service.lifecycle import stop_service
from keepwarm.service.liveness import pid_alive

from ..conftest import ROOT
from .surfaces import AgiSurface, CliSurface, HttpSurface, McpSurface, PythonSurface

APP = "conform"
AUTO_APP = "conform_auto"
WORKER = '''
"""The conformance app: start() fails while a marker file exists; work() does what args.action says."""
import time
from pathlib import Path

BROKEN = Path(__file__).resolve().parent.parent / "broken"


class Worker:
    def start(self):
        if BROKEN.exists():
            raise RuntimeError("conform: start() failed on purpose (the marker file 'broken' exists)")

    def work(self, item):
        action = item.args.get("action", "echo")
        if action == "sleep":
            time.sleep(item.args["seconds"])
        elif action == "raise":
            raise ValueError(f"conform: raised on purpose for task {item.task_id}")
        return {"echo": item.args.get("value"), "task_name": item.task_name}

    def stop(self):
        pass
'''


class World:
    """Where the conformance scenarios run: the apps, the share, and the four surfaces."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.apps = root / "apps"
        self.share = root / "share"
        self.env_vars = {
            "KEEPWARM_SHARE": str(self.share),
            "KEEPWARM_LOG_DIR": str(root / "logs"),
            "KEEPWARM_EXPORT": str(root / "export"),
        }
        self.started: list[Env] = []

    def write_app(self) -> Path:
        folder = self.apps / APP
        package = folder / "conform_code"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "worker.py").write_text(WORKER)
        (folder / "app_settings.toml").write_text(
            textwrap.dedent(
                """
                [app]
                worker = "conform_code.worker:Worker"

                [cluster]
                slots = 1
                heartbeat_interval_sec = 0.2
                heartbeat_timeout_sec = 3
                restart_backoff_sec = 0.2
                """
            )
        )
        return folder

    def write_autoscaled_app(self) -> str:
        """A copy of the app with autoscaling on (1 to 3 loops; it never shrinks within a scenario)."""
        folder = self.apps / AUTO_APP
        if not folder.exists():
            shutil.copytree(self.apps / APP, folder)
            settings = folder / "app_settings.toml"
            settings.write_text(
                settings.read_text() + "\n[cluster.autoscale]\nenabled = true\nmin_loops = 1\nmax_loops = 3\n"
                "scale_down_delay_sec = 3600\n"
            )
        return AUTO_APP

    @property
    def broken_marker(self) -> Path:
        return self.apps / APP / "broken"

    def env(self, namespace: str) -> Env:
        return Env(APP, self.apps, namespace=namespace)

    def stop_everything(self) -> None:
        """Every service any scenario started, stopped (and its supervisor killed by pid if stop failed)."""
        for folder in sorted(self.share.glob("*/service/*")):
            env = Env(folder.name, self.apps, namespace=folder.parent.parent.name)
            state = read_supervisor_state(folder / "supervisor.json")
            try:
                stop_service(env, timeout=5)
            except Exception:
                pass
            finally:
                if state is not None and pid_alive(state.pid):
                    os.kill(state.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    chosen = World(tmp_path_factory.mktemp("conformance"))
    chosen.write_app()
    saved = {name: os.environ.get(name) for name in chosen.env_vars}
    os.environ.update(chosen.env_vars)
    try:
        yield chosen
    finally:
        chosen.stop_everything()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(chosen.root, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_dirs(world: World, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Overrides the suite-wide fixture: every conformance test works on the session's share."""
    for name, value in world.env_vars.items():
        monkeypatch.setenv(name, value)
    for name in ("KEEPWARM_NAMESPACE", "KEEPWARM_APPS_PATH", "KEEPWARM_WATCH"):
        monkeypatch.delenv(name, raising=False)
    return world.share


@pytest.fixture(scope="session")
def mcp_surface(world: World) -> Iterator[McpSurface]:
    surface = McpSurface(world.apps, ROOT)
    yield surface
    surface.close()


@pytest.fixture(scope="session")
def http_surface(world: World) -> Iterator[HttpSurface]:
    surface = HttpSurface(world.apps)
    yield surface
    surface.close()


@pytest.fixture(scope="session")
def surfaces(world: World, mcp_surface: McpSurface, http_surface: HttpSurface) -> dict[str, object]:
    return {
        "python": PythonSurface(world.apps),
        "cli": CliSurface(world.apps),
        "mcp": mcp_surface,
        "agi": AgiSurface(world.apps),
        "http": http_surface,
    }
