"""Writing an app as docs/apps.md teaches it: the simplest worker, and an app's own environment.

Real services (supervisor and loop processes), real ``keepwarm install`` into a real virtual
environment (its dependency a wheel built here, installed offline by pip).
"""

from __future__ import annotations

import sys
from pathlib import Path
from textwrap import dedent

import pytest

import keepwarm
from keepwarm.env import Env, venv_dir
from keepwarm.errors import AppError

from .conftest import Services, write_app
from .test_cli import assert_clean_failure, keepwarm_cli
from .test_run_mode import build_wheel
from .test_run_mode import write_app as write_run_app

ONLY_WORK = dedent(
    """
    import os
    import sys


    class Worker:
        def work(self, item):
            return {"echo": item.args["value"], "python": sys.executable, "pid": os.getpid()}
    """
)


def test_a_worker_with_only_work_is_a_complete_service_app(tmp_path: Path, services: Services) -> None:
    env = Env(write_app(tmp_path, "bare", ONLY_WORK, "[cluster]\nslots = 1\n"))

    service = services.start(env)

    assert service.submit({"value": 7}).result(timeout=30)["echo"] == 7
    service.stop()
    assert service.status().status == "stopped"  # a stop without stop() is a clean stop


def test_a_worker_with_only_work_is_a_complete_run_mode_app(tmp_path: Path) -> None:
    worker = dedent(
        """
        class Worker:
            def work(self, item):
                first, last = item.data
                return [{"n": n} for n in range(first, last + 1)]
        """
    )
    env = Env(write_run_app(tmp_path / "apps", "bare_run", worker))

    report = keepwarm.run(env, "python")

    assert report.rows == 1000


def test_a_start_that_is_not_a_method_is_refused_by_name(tmp_path: Path) -> None:
    env = Env(
        write_app(
            tmp_path, "odd", "class Worker:\n    start = 'soon'\n\n    def work(self, item):\n        pass\n"
        )
    )

    with pytest.raises(AppError, match=r"start is not a method; define start\(self\), or leave it out"):
        keepwarm.app.load_app(env)


DEPENDENT = dedent(
    """
    import sys

    import kw_app_only_dep


    class Worker:
        def work(self, item):
            return {"magic": kw_app_only_dep.MAGIC, "python": sys.executable}
    """
)


def isolated_app(tmp_path: Path) -> Env:
    """A service-only app (no manager) with ``isolated = true`` and a dependency of its own."""
    folder = write_app(tmp_path, "lonely_service", DEPENDENT, "[cluster]\nslots = 1\nisolated = true\n")
    wheel = build_wheel(folder, "kw_app_only_dep", "MAGIC = 42\n")
    (folder / "requirements.txt").write_text(f"./{wheel.name}\n")
    return Env(folder)


def test_an_isolated_apps_service_loops_run_in_the_venv_install_made(
    tmp_path: Path, services: Services
) -> None:
    env = isolated_app(tmp_path)
    with pytest.raises(ImportError):
        __import__("kw_app_only_dep")  # not in keepwarm's own environment

    installed = keepwarm.install(env)  # a service-only app installs: no manager needed
    service = services.start(env)
    result = service.submit({}).result(timeout=30)

    assert installed.python == str(venv_dir(env) / "bin" / "python") != sys.executable
    assert result == {"magic": 42, "python": installed.python}


def test_an_isolated_app_not_yet_installed_is_refused_at_start_with_the_command_to_run(
    tmp_path: Path,
) -> None:
    env = isolated_app(tmp_path)

    result = keepwarm_cli("start", "lonely_service", "--apps-path", str(env.app_dir.parent))

    message = assert_clean_failure(result)
    assert "virtual environment" in message and "keepwarm install lonely_service" in message
    assert keepwarm.Service(env).status().status != "running"


def test_a_service_only_app_installs_and_run_mode_names_the_missing_manager(tmp_path: Path) -> None:
    apps = write_run_app(tmp_path / "apps", "served", ONLY_WORK, manager=False).parent

    installed = keepwarm_cli("install", "served", "--apps-path", str(apps))
    run = keepwarm_cli("run", "served", "--apps-path", str(apps))

    assert installed.returncode == 0, installed.stderr
    assert "manager none (service mode only)" in installed.stderr + installed.stdout
    message = assert_clean_failure(run)
    assert "[app] manager is not set" in message and 'manager = "<package>.manager:Manager"' in message


def test_two_apps_with_one_package_name_each_get_their_own_args_model(tmp_path: Path) -> None:
    """The page's process loads one app's args model, then another's that ships a package of the same
    name: each gets its own, whatever was imported before (``borrowed_imports``)."""
    from keepwarm.app import load_args_model
    from keepwarm.runmode.appcode import borrowed_imports

    folders = []
    for app, bound in (("first", 10), ("second", 20)):
        folder = write_app(tmp_path, app, "class Worker:\n    def work(self, item):\n        return item\n")
        package = folder / "shared_pkg"
        package.mkdir()
        (package / "__init__.py").write_text(
            "from pydantic import BaseModel, Field\n\n"
            f"class Args(BaseModel):\n    x: int = Field({bound}, le={bound})\n"
        )
        settings = folder / "app_settings.toml"
        settings.write_text(
            settings.read_text().replace("[app]\n", '[app]\nargs_model = "shared_pkg:Args"\n')
        )
        folders.append(folder)
    first, second = (Env(folder) for folder in folders)
    load_args_model(first)  # imported for good, as a check of args outside borrowed_imports does
    try:
        with borrowed_imports(second.app_dir):
            model = load_args_model(second)
            assert model is not None and model().x == 20
        assert sys.modules["shared_pkg"].Args().x == 10  # the first app's package is back
    finally:
        for name in [m for m in sys.modules if m.partition(".")[0] == "shared_pkg"]:
            del sys.modules[name]
        sys.path[:] = [p for p in sys.path if not p.startswith(str(tmp_path))]
