"""Run mode: execute the saved work plan once, in the chosen mode, and keep what it produced.

``run(env, mode)`` takes the saved work plan (building it when there is none, or when it was built
from other ``[args]`` or another number of workers), and works every partition on its plan worker:

- ``python``: in this process, one plan worker after the other;
- ``pool``: one process of keepwarm's own per plan worker, all in parallel (``pool.py``: each starts
  cold, and never from the caller's script);
- ``dask``: one task per partition on the Dask backend's cluster (``keepwarm.backends.cluster``), each plan
  worker pinned to one Dask worker, the app's code shipped to the workers with ``UploadDirectory``;
- ``cython`` on any of these: the same, with the app's worker module compiled (``cython_build.py``).

Each partition's output lands in ``<share_dir>/<namespace>/data/<app_target>/<run_id>/`` beside the
run's record (``run.json``) and the plan it executed; the run log, streamed live through ``on_event``,
is ``<log_dir>/run-<run_id>.log``. An app with ``[cluster] isolated = true`` runs in its own virtual
environment (made by ``keepwarm install``): the whole run happens in that interpreter.

The run's steps are ``steps.py``, its executors ``executors.py`` and ``pool.py``, what it records
``record.py``, and the child process that contains it ``contained.py`` (started as
``python -m keepwarm.runmode.runner``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from keepwarm.env import Env, app_python, venv_dir
from keepwarm.runmode.contained import child_main, run_in_child
from keepwarm.runmode.modes import RunMode, require_available, settings_mode
from keepwarm.runmode.record import EventCallback, RunEvent, RunReport
from keepwarm.runmode.steps import RunJob

__all__ = ["EventCallback", "RunEvent", "RunReport", "run"]  # the types of run()'s signature, from record.py


def run(
    env: Env,
    mode: str | int | RunMode | None = None,
    *,
    workers: int | None = None,
    args: dict[str, Any] | None = None,
    scheduler: str | None = None,
    on_event: EventCallback | None = None,
    contained: bool = False,
) -> RunReport:
    """Run the app's work plan once in ``mode`` (default: what ``[cluster]`` asks for) and return
    the run's report; raises ``RunError`` (or ``ModeError`` before anything starts).

    ``contained``: the whole run, whatever its mode, happens in a child process of keepwarm's own, so
    that no app code runs in the caller (the manager building the plan, the partitions of python and
    cython, a pool's or a cluster's client): an app that ends its interpreter (``os._exit``, a crash)
    fails the run, recorded as such, instead of ending the caller (the CLI and the web page do this).
    A run on a Dask cluster that keepwarm starts here always runs in such a process, so that the
    cluster's worker processes start from keepwarm, never from the caller's script.
    """
    chosen = RunMode.parse(mode) if mode is not None else settings_mode(env.settings.cluster)
    require_available(chosen)
    job = RunJob(env, chosen, workers, args, scheduler, on_event)
    if env.settings.cluster.isolated and not _in_app_venv(env):
        job.log.emit("info", f"isolated app: running in its virtual environment ({app_python(env)})")
        return run_in_child(job, app_python(env))
    cluster = env.settings.cluster
    local_cluster = chosen.dask and not (scheduler or cluster.scheduler or cluster.hosts)
    if local_cluster or contained:
        return run_in_child(job, Path(sys.executable))
    return job.execute()


def _in_app_venv(env: Env) -> bool:
    return Path(sys.prefix).resolve() == venv_dir(env).resolve()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(child_main())
