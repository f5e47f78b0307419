"""``keepwarm install APP``: provision an app for run mode, step by step, and say which step failed.

Steps, in order:

1. ``environment``: the interpreter that will run the app: this one, or with ``[cluster] isolated =
   true`` a virtual environment of the app's own, ``<share_dir>/<namespace>/venv/<app_target>/``,
   layered over keepwarm's environment (keepwarm and its dependencies are visible underneath, what
   the app installs comes first);
2. ``dependencies``: ``pip install`` of what the app declares: ``requirements.txt`` in the app folder,
   and/or ``[project] dependencies`` of the app folder's ``pyproject.toml``;
3. ``check``: in that interpreter, the entry points import, ``[args]`` validates, the manager (if
   the app has one: a service-only app does not) has ``build_distribution``;
4. ``cython`` (with ``cython=True`` or ``[cluster] cython = true``): the worker module is compiled;
5. ``dask`` (with ``dask=True``, or when ``[cluster]`` names a scheduler, hosts or the dask backend):
   the app's code is shipped to the Dask workers (``UploadDirectory``) and each one imports it.

pip's output streams through ``on_output`` and is kept in ``<log_dir>/install.log``.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import time
import tomllib
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict

from keepwarm._sys.child import child_command, child_parser, last_report, report
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm.env import Env, venv_dir, venv_python
from keepwarm.errors import AppError, CythonBuildError, InstallError, KeepwarmError
from keepwarm.queue.task import utc_now

REQUIREMENTS_FILE = "requirements.txt"
PYPROJECT_FILE = "pyproject.toml"
LAYER_FILE = "_keepwarm_base.pth"
STEPS = ("environment", "dependencies", "check", "cython", "dask")
PIP_TIMEOUT_SEC = 1800
CHILD_MODULE = "keepwarm.runmode.installer"  # the check, run in the app's interpreter
APP_CHECKED, CHECK_FAILED = "app-checked", "check-failed"  # what it reports

StepState = Literal["start", "done", "skipped", "failed"]
StepCallback = Callable[[str, StepState, str], None]
OutputCallback = Callable[[str], None]


class InstallStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    status: Literal["done", "skipped", "failed"]
    detail: str
    seconds: float


class InstallReport(BaseModel):
    """What ``install`` did; also saved as ``<log_dir>/install.json``."""

    model_config = ConfigDict(extra="forbid")

    app: str
    python: str
    isolated: bool
    venv: str | None
    requirements: list[str]
    entry_points: dict[str, Any]
    shipped: str | None
    log_path: str
    finished_at: str
    seconds: float
    steps: list[InstallStep]


def declared_requirements(env: Env) -> tuple[list[str], list[str]]:
    """(pip arguments, human description) of the app's declared dependencies."""
    arguments, sources = [], []
    requirements = env.app_dir / REQUIREMENTS_FILE
    if requirements.is_file():
        lines = [line.split("#")[0].strip() for line in requirements.read_text(encoding="utf-8").splitlines()]
        if any(lines):
            arguments += ["-r", str(requirements)]
            sources.append(f"{requirements} ({sum(1 for line in lines if line)} lines)")
    pyproject = env.app_dir / PYPROJECT_FILE
    if pyproject.is_file():
        try:
            dependencies = (
                tomllib.loads(pyproject.read_text(encoding="utf-8"))
                .get("project", {})
                .get("dependencies", [])
            )
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise InstallError(
                env.app_target, "dependencies", f"{pyproject}: cannot be read: {exc}"
            ) from None
        if dependencies:
            arguments += [str(d) for d in dependencies]
            sources.append(f"{pyproject} [project] dependencies ({len(dependencies)})")
    return arguments, sources


class _Installer:
    def __init__(
        self, env: Env, on_step: StepCallback | None, on_output: OutputCallback | None, log: IO[str]
    ) -> None:
        self.env, self.on_step, self.on_output, self.log = env, on_step, on_output, log
        self.steps: list[InstallStep] = []
        self._began = 0.0

    def start(self, name: str, detail: str = "") -> None:
        self._began = time.perf_counter()
        self.log.write(f"{utc_now()} step {name}: {detail}\n")
        if self.on_step:
            self.on_step(name, "start", detail)

    def end(self, name: str, status: Literal["done", "skipped", "failed"], detail: str) -> None:
        seconds = round(time.perf_counter() - self._began, 3)
        self.steps.append(InstallStep(name=name, status=status, detail=detail, seconds=seconds))
        self.log.write(f"{utc_now()} step {name} {status}: {detail}\n")
        self.log.flush()
        if self.on_step:
            self.on_step(name, status, detail)

    def output(self, line: str) -> None:
        self.log.write(line + "\n")
        if self.on_output:
            self.on_output(line)

    def fail(self, name: str, reason: str) -> InstallError:
        self.end(name, "failed", reason)
        return InstallError(self.env.app_target, name, reason)


def install(
    env: Env,
    *,
    cython: bool | None = None,
    dask: bool | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    on_step: StepCallback | None = None,
    on_output: OutputCallback | None = None,
) -> InstallReport:
    """Provision ``env``'s app for run mode (see the module's docstring); raises ``InstallError``
    naming the failed step. ``scheduler`` and ``workers`` choose the Dask cluster of step ``dask``."""
    settings = env.settings.cluster
    cython = settings.cython if cython is None else cython
    if dask is None:
        dask = settings.backend == "dask" or bool(settings.scheduler) or bool(settings.hosts)
    ensure_private_dir(env.log_dir)
    log_path = env.log_dir / "install.log"
    began = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"{utc_now()} install {env.app_target} from {env.app_dir}\n")
        steps = _Installer(env, on_step, on_output, log)
        python = _environment(steps)
        requirements = _dependencies(steps, python)
        entry_points = _check(steps, python)
        _cython(steps, enabled=cython)
        shipped = _dask(
            steps,
            enabled=dask,
            module=str(entry_points.get("worker_module", "")),
            scheduler=scheduler,
            workers=workers,
        )
    report = InstallReport(
        app=env.app_target,
        python=str(python),
        isolated=settings.isolated,
        venv=str(venv_dir(env)) if settings.isolated else None,
        requirements=requirements,
        entry_points=entry_points,
        shipped=shipped,
        log_path=str(log_path),
        finished_at=utc_now(),
        seconds=round(time.perf_counter() - began, 3),
        steps=steps.steps,
    )
    from keepwarm._sys.atomic import write_atomic

    write_atomic(env.log_dir / "install.json", report.model_dump_json(indent=2).encode())
    return report


def _environment(steps: _Installer) -> Path:
    env = steps.env
    if not env.settings.cluster.isolated:
        steps.start("environment", "the current interpreter")
        steps.end("environment", "done", f"the current interpreter: {sys.executable}")
        return Path(sys.executable)
    folder = venv_dir(env)
    python = venv_python(folder)
    steps.start("environment", f"the app's virtual environment {folder}")
    if not python.is_file():
        ensure_private_dir(folder.parent)
        done = subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise steps.fail("environment", f"python -m venv {folder} failed: {done.stderr.strip()}")
        created = "created"
    else:
        created = "reused"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=False,
    )
    if site.returncode != 0:
        raise steps.fail("environment", f"{python} does not run: {site.stderr.strip()}; delete {folder}")
    base = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    layer = "".join(f"import site; site.addsitedir({path!r})\n" for path in base)
    Path(site.stdout.strip(), LAYER_FILE).write_text(layer, encoding="utf-8")
    steps.end("environment", "done", f"{created} {folder}, layered over {', '.join(base)}")
    return python


def _dependencies(steps: _Installer, python: Path) -> list[str]:
    env = steps.env
    steps.start("dependencies")
    arguments, sources = declared_requirements(env)
    if not arguments:
        steps.end(
            "dependencies",
            "skipped",
            f"none declared (no {REQUIREMENTS_FILE} or [project] dependencies in {env.app_dir})",
        )
        return []
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *arguments]
    steps.output("$ " + " ".join(command))
    lines: list[str] = []
    try:
        with subprocess.Popen(
            command,
            cwd=env.app_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                steps.output(lines[-1])
            code = process.wait(timeout=PIP_TIMEOUT_SEC)
    except OSError as exc:
        raise steps.fail("dependencies", f"cannot run pip: {exc}") from None
    if code != 0:
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-3:]
        raise steps.fail(
            "dependencies",
            f"pip exited {code}: {' '.join(errors).strip()}; fix {' and '.join(sources)} "
            f"and run keepwarm install {env.app_target} again",
        )
    steps.end("dependencies", "done", "installed " + " and ".join(sources))
    return arguments


def _check(steps: _Installer, python: Path) -> dict[str, Any]:
    env = steps.env
    steps.start("check", "entry points, [args], manager")
    command = child_command(CHILD_MODULE, env=env, python=python)
    done = subprocess.run(command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    answer = last_report(done.stdout, APP_CHECKED, CHECK_FAILED)
    if answer is None:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise steps.fail("check", f"the check in {python} exited {done.returncode}: {tail}")
    if answer.kind == CHECK_FAILED:
        raise steps.fail("check", str(answer.fields["error"]))
    result: dict[str, Any] = answer.fields["check"]
    manager = result["manager"] or "none (service mode only)"
    steps.end("check", "done", f"worker {result['worker']}, manager {manager}")
    return result


def _cython(steps: _Installer, *, enabled: bool) -> None:
    steps.start("cython")
    if not enabled:
        steps.end("cython", "skipped", "not asked for ([cluster] cython = false)")
        return
    from keepwarm.runmode.cython_build import compiled_copy

    try:
        folder = compiled_copy(steps.env, on_output=steps.output)
    except CythonBuildError as exc:
        raise steps.fail("cython", str(exc)) from None
    steps.end("cython", "done", f"compiled copy: {folder}")


def _dask(
    steps: _Installer, *, enabled: bool, module: str, scheduler: str | None, workers: int | None
) -> str | None:
    env = steps.env
    steps.start("dask")
    if not enabled:
        steps.end(
            "dask",
            "skipped",
            "no Dask cluster configured; each `run --mode dask` ships the code to the cluster it opens",
        )
        return None
    from keepwarm.backends.staging import check_import, open_run_cluster, ship_to_dask, stage_app

    try:
        folder = stage_app(env)
        handle = open_run_cluster(env, workers=workers, scheduler=scheduler)
    except KeepwarmError as exc:
        raise steps.fail("dask", str(exc)) from None
    try:
        shipped = ship_to_dask(handle.client, folder)
        files = handle.client.run(check_import, module, shipped)
    except Exception as exc:
        raise steps.fail(
            "dask", f"shipping {folder.name} to {handle.address}: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        handle.close(shutdown=True)
    steps.end("dask", "done", f"{folder.name} shipped to {len(files)} workers at {handle.address}")
    return shipped


# ---------------------------------------------------------------- the check, run in the app's interpreter


def check_app(env: Env) -> dict[str, Any]:
    """Import the app's entry points, validate ``[args]`` and find the manager's build_distribution."""
    from keepwarm.app import load_app
    from keepwarm.runmode.plan import run_args

    try:
        app = load_app(env)
    except AppError as exc:
        raise AppError(_explained(env, exc)) from None
    manager = app.manager_class  # a service-only app has none
    _, args = run_args(app, None)
    worker_module = env.settings.app.worker.partition(":")[0]
    return {
        "worker": env.settings.app.worker,
        "worker_module": worker_module,
        "worker_file": getattr(sys.modules.get(worker_module), "__file__", None),
        "manager": env.settings.app.manager,
        "manager_class": f"{manager.__module__}.{manager.__qualname__}" if manager else None,
        "args_model": env.settings.app.args_model,
        "args": args,
        "python": sys.executable,
    }


def _explained(env: Env, exc: AppError) -> str:
    """The loader's message, plus where in the app's code the import failed and how to fix it."""
    message = str(exc)
    cause = exc.__cause__
    if cause is None:
        return message + f"; fix {env.settings_path}"
    frames = [
        frame
        for frame in traceback.extract_tb(cause.__traceback__)
        if Path(frame.filename).resolve().is_relative_to(env.app_dir)
    ]
    if frames:
        message += f" (at {frames[-1].filename}:{frames[-1].lineno})"
    if isinstance(cause, ModuleNotFoundError) and cause.name:
        return (
            message + f"; if {cause.name!r} is a dependency, list it in {env.app_dir / REQUIREMENTS_FILE} "
            f"and run: keepwarm install {env.app_target}"
        )
    return message + "; fix that file and run keepwarm install again"


def main(argv: list[str] | None = None) -> int:
    """``python -m keepwarm.runmode.installer``: ``check_app`` in the app's interpreter, its result (or
    why it failed) reported on stdout."""
    options = child_parser(CHILD_MODULE, "check the app in this interpreter").parse_args(argv)
    try:
        result = check_app(Env.of_child(options))
    except KeepwarmError as exc:
        report(CHECK_FAILED, error=str(exc))
        return 1
    report(APP_CHECKED, check=result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
