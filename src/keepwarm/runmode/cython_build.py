"""Mode cython: a copy of the app whose worker module is compiled to a C extension with Cython.

The copy is the staged app (see ``staging.py``) with ``<package>/<worker module>.py`` replaced by
``<worker module><EXT_SUFFIX>``, built once per content of the app, Cython version and interpreter, and
reused. Python imports the extension in place of the source, so every executor (this process, the
pool, Dask workers) runs the compiled worker by loading the copy instead of the app folder.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

from keepwarm.backends.staging import app_digest, building, copy_app, staged_copy
from keepwarm.env import Env
from keepwarm.errors import CythonBuildError
from keepwarm.runmode.modes import c_compiler, cython_problem

BUILD_TIMEOUT_SEC = 600


def worker_module(env: Env) -> str:
    """The module of the app's worker class (``[app] worker`` before its ``:``)."""
    return env.settings.app.worker.partition(":")[0]


def module_source(app_dir: Path, module: str) -> Path:
    """The ``.py`` file of ``module`` in the app folder (flat or ``src/`` layout)."""
    relative = Path(*module.split("."))
    for root in (app_dir / "src", app_dir):
        for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
            if candidate.is_file():
                return candidate
    raise CythonBuildError(
        f"{app_dir}: the worker module {module!r} has no source file ({relative}.py) to compile"
    )


def compiled_copy(env: Env, on_output: Callable[[str], None] | None = None) -> Path:
    """The app folder to load in mode cython: built now, or reused from an earlier build."""
    problem = cython_problem()
    if problem:
        raise CythonBuildError(f"mode cython needs Cython and a C compiler: {problem}")
    compiler = c_compiler() or "cc"
    digest = app_digest(
        env.app_dir, importlib.metadata.version("Cython"), sys.version, compiler, worker_module(env)
    )
    folder, complete = staged_copy(env, "cython", digest)
    if complete:
        return folder
    say = on_output or (lambda line: None)
    with building(folder) as temp:
        copy_app(env.app_dir, temp)
        module = worker_module(env)
        source = module_source(temp, module)
        c_file = source.with_suffix(".c")
        extension = source.with_name(source.stem + str(sysconfig.get_config_var("EXT_SUFFIX")))
        if source.name == "__init__.py":
            extension = source.with_name("__init__" + str(sysconfig.get_config_var("EXT_SUFFIX")))
        say(f"cython: compiling {module} ({source.relative_to(temp)})")
        _tool(
            [sys.executable, "-m", "cython", "-3", "--module-name", module, str(source), "-o", str(c_file)],
            f"Cython could not translate {env.app_dir / source.relative_to(temp)}",
        )
        include = sysconfig.get_paths()["include"]
        flags = ["-shared", "-fPIC", "-O2", "-fwrapv", "-fno-strict-aliasing", "-DNDEBUG"]
        _tool(
            [compiler, *flags, f"-I{include}", str(c_file), "-o", str(extension)],
            f"the C compiler ({compiler}) failed on the Cython output of {module}",
        )
        source.unlink()
        c_file.unlink()
        say(f"cython: built {extension.name}")
    return folder


def _tool(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SEC, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CythonBuildError(f"{what}: {exc}") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()
        raise CythonBuildError(f"{what} (exit {done.returncode}):\n" + "\n".join(output[-15:]))
