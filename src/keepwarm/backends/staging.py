"""Copies of an app's code: staged under the share, named by their content, shipped to Dask workers.

A staged copy lives in ``<share_dir>/<namespace>/build/<app_target>/<kind>/<app_target>-<digest>/``:
the digest of its files names it, so two versions of an app never share a folder, and a copy is
built once and reused. Dask workers get a copy through Dask's own code shipping
(``UploadDirectory``): each nanny unpacks it into its local directory, which is the parent folder of
its worker's, and the worker loads the app from there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keepwarm._sys.dirs import ensure_private_dir
from keepwarm.env import Env

if TYPE_CHECKING:
    from distributed import Client

    from keepwarm.backends.cluster import ClusterHandle

# Never copied: version control, caches, virtual environments, tests and docs (Dask skips the last two too).
SKIPPED_DIRS = frozenset(
    {".git", ".github", ".hg", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", "venv"}
    | {"tests", "docs", "build", "dist"}
)
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".tmp")
COMPLETE_MARKER = ".keepwarm-complete"


def app_files(app_dir: Path) -> list[Path]:
    """The app's files that a copy holds, relative to ``app_dir``, in a stable order."""
    found = []
    for root, dirs, files in os.walk(app_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if not name.endswith(SKIPPED_SUFFIXES):
                found.append(Path(root, name).relative_to(app_dir))
    return found


def app_digest(app_dir: Path, *extra: str) -> str:
    """A short digest of the app's files (names and bytes) and of ``extra`` strings."""
    digest = hashlib.sha256()
    for part in extra:
        digest.update(part.encode() + b"\0")
    for relative in app_files(app_dir):
        digest.update(str(relative).encode() + b"\0")
        digest.update(hashlib.sha256((app_dir / relative).read_bytes()).digest())
    return digest.hexdigest()[:12]


def build_root(env: Env) -> Path:
    return env.share_root / env.namespace / "build" / env.app_target


def staged_copy(env: Env, kind: str, digest: str | None = None) -> tuple[Path, bool]:
    """The folder of a copy of ``kind`` for the app's current files, and whether it is complete."""
    digest = digest or app_digest(env.app_dir)
    folder = build_root(env) / kind / f"{env.app_target}-{digest}"
    return folder, (folder / COMPLETE_MARKER).is_file()


def copy_app(app_dir: Path, target: Path) -> None:
    """Copy the app's files to ``target`` (which must not exist)."""
    for relative in app_files(app_dir):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(app_dir / relative, destination)


@contextlib.contextmanager
def building(folder: Path) -> Iterator[Path]:
    """A temp folder beside ``folder``, renamed to it once the body succeeds (the winner of a race
    keeps its copy, the loser's is removed); a failed build leaves nothing behind."""
    ensure_private_dir(folder.parent)
    temp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(mode=0o700)
    try:
        yield temp
        (temp / COMPLETE_MARKER).write_text("")
        try:
            os.rename(temp, folder)
        except OSError:
            if not (folder / COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def stage_app(env: Env) -> Path:
    """A content-named copy of the app's code (reused when it exists), the unit Dask ships."""
    folder, complete = staged_copy(env, "staged")
    if not complete:
        with building(folder) as temp:
            copy_app(env.app_dir, temp)
    return folder


# ---------------------------------------------------------------- Dask: the cluster of a run, code shipping


def open_run_cluster(env: Env, *, workers: int | None = None, scheduler: str | None = None) -> ClusterHandle:
    """``keepwarm.backends.cluster.open_cluster``, minus one warning it cannot help.

    A scheduler always serves HTTP (health, metrics), on port 8787 unless told otherwise; when another
    cluster on the machine holds that port, Dask warns and takes a free one, and the failed bind
    leaves a socket to be collected. Both are expected on a machine that runs several clusters, so
    they are silenced here, for the start only (``warnings.catch_warnings``: Dask starts the
    scheduler on its loop thread while this thread waits, within the block).
    """
    from keepwarm.backends.cluster import open_cluster

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"unclosed <socket", category=ResourceWarning)
        return open_cluster(env, workers=workers, scheduler=scheduler)


def upload_plugin_name(folder: Path) -> str:
    """The name Dask's ``UploadDirectory`` gives its plugin for ``folder``."""
    return "upload-directory-" + folder.name


def ship_to_dask(client: Client, folder: Path) -> str:
    """Make ``folder`` (a staged copy) available to every worker of ``client``'s cluster, now and
    after a restart, with Dask's ``UploadDirectory``; returns the name workers find it under.

    Registering the same plugin twice makes the scheduler warn, so a copy already shipped (same
    content, same name) is not registered again.
    """
    from distributed.diagnostics.plugin import UploadDirectory

    name = upload_plugin_name(folder)
    if not client.run_on_scheduler(_has_plugin, name=name):
        client.register_plugin(UploadDirectory(str(folder), update_path=True))
    return folder.name


def _has_plugin(dask_scheduler: Any, name: str) -> bool:
    return name in dask_scheduler.plugins


def shipped_folder(name: str, dask_worker: Any = None) -> Path | None:
    """On a Dask worker: the unpacked copy named ``name`` (None elsewhere, or when it is missing).

    The nanny unpacks shipped folders into its local directory, the parent of its worker's.
    ``dask_worker`` is the worker when known (``client.run`` passes it), else the running task's.
    """
    if dask_worker is None:
        if "distributed" not in sys.modules:
            return None
        from distributed import get_worker

        try:
            dask_worker = get_worker()
        except ValueError:
            return None
    folder = Path(dask_worker.local_directory).parent / name
    return folder if folder.is_dir() else None


def check_import(module: str, shipped: str, dask_worker: Any = None) -> str:
    """On a Dask worker (through ``client.run``): import the app's worker module from its shipped
    copy in a fresh interpreter, so the worker's own imports stay as they were; returns its file."""
    import subprocess

    folder = shipped_folder(shipped, dask_worker)
    if folder is None:
        raise RuntimeError(f"the shipped copy {shipped!r} is not in this worker's local directory")
    code = (
        "import importlib, sys\n"
        f"sys.path[:0] = [p for p in ({str(folder / 'src')!r}, {str(folder)!r})]\n"
        f"print(importlib.import_module({module!r}).__file__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "import failed")
    return done.stdout.strip()
