"""What the benchmarks in bench/ share: the machine and commit measured, their services, their work folder."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keepwarm

ROOT = Path(__file__).resolve().parents[1]
TMPFS_DIR = Path("/dev/shm")
APPS_PATH = ROOT / "examples" / "apps"
APP = "mycode_project"  # the bundled app the round-trip benchmarks drive
APP_CODE = APPS_PATH / APP


@dataclass(frozen=True)
class Ratio:
    """One line of a benchmark's verdict: a measured ratio or figure, and its target when it has one."""

    name: str
    value: float
    unit: str
    target: str | None = None
    passed: bool | None = None


def use_app_code() -> None:
    """Make the app's code importable here and in every child process (loops, workers, Dask)."""
    sys.path.insert(0, str(APP_CODE))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APP_CODE), os.environ.get("PYTHONPATH")]))


def compute(x: int) -> dict[str, Any]:
    """What the app's ``Worker.work`` returns for ``x``, from the app's own functions."""
    from mycode.worker import collatz_steps, prime_factors

    return {"x": x, "collatz_steps": collatz_steps(x), "prime_factors": prime_factors(x)}


def task_inputs(count: int, offset: int = 0) -> list[int]:
    """The app's inputs, ``x`` from 27 on (cycling every 5,000)."""
    return [27 + (offset + i) % 5000 for i in range(count)]


def source_version() -> str | None:
    """The project's commit, ``-dirty`` when files differ from it: what the numbers measured."""
    try:
        described = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return described.stdout.strip()


def describe_machine(workdir: Path, packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """The CPUs, kernel, Python, keepwarm and ``packages`` versions, the commit, and ``workdir``'s
    filesystem and the load average when the run began."""
    from keepwarm._sys.watch import filesystem_type

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "keepwarm": version("keepwarm"),
        "source": source_version(),
        **{package: version(package) for package in packages},
        "workdir": str(workdir),
        "filesystem": filesystem_type(workdir),
        "load_average": os.getloadavg()[0],
    }


class Services:
    """Every service this run started; each stopped by the API, its supervisor by pid if that fails."""

    def __init__(self, start_timeout: float, stop_timeout: float) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.envs: list[keepwarm.Env] = []

    def start(self, env: keepwarm.Env) -> keepwarm.Service:
        import keepwarm

        service = keepwarm.Service(env)
        self.envs.append(env)
        service.start(timeout=self.start_timeout)
        return service

    def stop(self, env: keepwarm.Env) -> None:
        import keepwarm
        from keepwarm.queue.state import read_supervisor_state

        state = read_supervisor_state(env.service_dir / "supervisor.json")
        try:
            keepwarm.Service(env).stop(timeout=self.stop_timeout)
        except Exception as exc:  # the supervisor is ended below; say why the API could not
            print(f"stopping {env.namespace}: {exc}", file=sys.stderr)
        finally:
            if state is not None:
                try:
                    os.kill(state.pid, 0)
                except ProcessLookupError:
                    pass
                else:
                    os.kill(state.pid, signal.SIGKILL)  # its loops follow (parent-death signal)
            if env in self.envs:
                self.envs.remove(env)

    def stop_all(self) -> None:
        for env in list(self.envs):
            self.stop(env)


def add_workdir_options(parser: argparse.ArgumentParser) -> None:
    """``--dir PATH`` or ``--tmpfs``: where :func:`temp_workdir` makes the run's temp dir."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--dir", type=Path, metavar="PATH", help="run in a fresh temp dir under PATH (default: .bench/)"
    )
    where.add_argument("--tmpfs", action="store_true", help=f"run in a fresh temp dir under {TMPFS_DIR}")


@contextmanager
def temp_workdir(options: argparse.Namespace, prefix: str) -> Iterator[Path]:
    """A fresh temp dir named ``prefix...`` under /dev/shm (``--tmpfs``), ``--dir`` or .bench/,
    removed afterwards."""
    with temp_dir_under(TMPFS_DIR if options.tmpfs else options.dir or ROOT / ".bench", prefix) as workdir:
        yield workdir


@contextmanager
def temp_dir_under(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh temp dir named ``prefix...`` under ``parent``, removed afterwards."""
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield workdir
    finally:
        remove_tree(workdir)


def remove_tree(workdir: Path, tries: int = 5) -> None:
    """Remove the temp dir; a file a stopping process moved in meanwhile gets another try."""
    for _ in range(tries):
        shutil.rmtree(workdir, ignore_errors=True)
        if not workdir.exists():
            return
        time.sleep(0.5)
    print(f"could not remove {workdir}: remove it by hand", file=sys.stderr)


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: a benchmark stopped either way stops its services and removes its temp dir."""
    raise KeyboardInterrupt(f"signal {signum}")


def wait_for(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.01) -> None:
    """Poll ``predicate`` until it is true; a ``TimeoutError`` naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


class BenchError(RuntimeError):
    """A benchmark that cannot go on: a process it started failed, or an answer was wrong."""


def run_main(run: Callable[[argparse.Namespace], int], options: argparse.Namespace) -> int:
    """A benchmark's ``run(options)``: Ctrl-C or SIGTERM (its services are stopped by then) exits
    130, a keepwarm error or a ``BenchError`` is one line on stderr and exit 1."""
    import keepwarm

    signal.signal(signal.SIGTERM, interrupt)
    try:
        return run(options)
    except KeyboardInterrupt:
        print("interrupted: services stopped, temp dir removed", file=sys.stderr)
        return 130
    except (keepwarm.KeepwarmError, BenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
