"""The seed-compatible façade: the reference system's ``AGI.serve`` and ``AGI.submit`` (service
mode), ``AGI.install``, ``AGI.get_distrib`` and ``AGI.run`` (run mode).

The reference documents' examples run with their imports changed (``from keepwarm import AGI,
AgiEnv``) and nothing else. Service calls go through :class:`keepwarm.Service`; run-mode calls go
through ``keepwarm.install``, ``keepwarm.distribute`` and ``keepwarm.run``, in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keepwarm.api import Service
from keepwarm.env import Env

if TYPE_CHECKING:
    from keepwarm.runmode.runner import RunEvent

SERVE_ACTIONS = ("start", "status", "health", "stop")
run_log = logging.getLogger("keepwarm.run")


class AGI:
    """``AGI.serve``, ``AGI.submit``, ``AGI.install``, ``AGI.get_distrib``, ``AGI.run``, as in the
    reference. Mode bits, as there: 1 pool, 2 cython, 4 dask, 8 rapids."""

    PYTHON_MODE = 0
    POOL_MODE = 1
    CYTHON_MODE = 2
    DASK_MODE = 4
    RAPIDS_MODE = 8

    @staticmethod
    async def install(
        env: Env,
        modes_enabled: int | None = None,
        *,
        scheduler: str | None = None,
        workers: dict[str, int] | int | None = None,
        verbose: int | None = None,
    ) -> dict[str, Any]:
        """Provision the app for run mode (``keepwarm.install``); returns the install report as a dict.

        ``modes_enabled`` bits choose the optional steps: 2 compiles the worker with Cython, 4 ships
        the code to the Dask cluster (``scheduler`` to join one, else a local one of ``workers``).
        """
        from keepwarm.runmode.installer import install

        cython = bool(modes_enabled & AGI.CYTHON_MODE) if modes_enabled is not None else None
        dask = bool(modes_enabled & AGI.DASK_MODE) if modes_enabled is not None else None
        report = await asyncio.to_thread(
            install,
            env,
            cython=cython,
            dask=dask,
            scheduler=_scheduler_address(scheduler),
            workers=_worker_count(workers),
            on_output=run_log.info,
        )
        return report.model_dump(mode="json")

    @staticmethod
    async def get_distrib(
        env: Env,
        *,
        scheduler: str | None = None,
        workers: dict[str, int] | int | None = None,
        verbose: int | None = None,
        **args: Any,
    ) -> dict[str, Any]:
        """Build and save the work plan (``keepwarm.distribute``) with ``args`` over ``[args]``; returns
        it as a dict: ``workers`` (per worker, partitions with weights), ``partition_key``,
        ``weights_key``, ``unit``, ``loads``, ``imbalance``."""
        from keepwarm.runmode.plan import distribute

        plan = await asyncio.to_thread(distribute, env, workers=_worker_count(workers), args=args or None)
        return plan.to_json_dict()

    @staticmethod
    async def run(
        env: Env,
        scheduler: str | None = None,
        workers: dict[str, int] | int | None = None,
        verbose: int = 0,
        mode: int | str | list[int | str] | None = None,
        rapids_enabled: bool = False,
        **args: Any,
    ) -> dict[str, Any]:
        """Run the app once in ``mode`` (``keepwarm.run``) and return the run's report as a dict.

        As in the reference, ``mode=None`` or a list of modes benchmarks them instead and returns
        the benchmark (``{"<mode>": {variant, nodes, node, mode, timing, seconds, order, delta}}``,
        also written to ``benchmark.json``). ``args`` go over ``[args]`` for this run.
        """
        count = _worker_count(workers)
        address = _scheduler_address(scheduler)
        rapids = AGI.RAPIDS_MODE if rapids_enabled else 0
        if mode is None or isinstance(mode, list):
            from keepwarm.runmode.benchmark import benchmark
            from keepwarm.runmode.modes import RunMode

            modes: list[str | int | RunMode] | None = None
            if mode is not None:
                modes = [RunMode(RunMode.parse(m).bits | rapids) for m in mode]
            report = await asyncio.to_thread(
                benchmark,
                env,
                modes,
                workers=count,
                args=args or None,
                scheduler=address,
                on_event=_log_event,
            )
            return {name: entry.model_dump(mode="json") for name, entry in report.entries.items()}
        from keepwarm.runmode.modes import RunMode
        from keepwarm.runmode.runner import run

        chosen = RunMode.parse(mode)
        result = await asyncio.to_thread(
            run,
            env,
            RunMode(chosen.bits | rapids),
            workers=count,
            args=args or None,
            scheduler=address,
            on_event=_log_event,
        )
        return result.to_json_dict()

    @staticmethod
    async def serve(
        env: Env,
        action: str = "status",
        *,
        health_output_path: str | Path | None = None,
        shutdown_on_stop: bool | None = None,
        workers: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run one service action and return the health snapshot as a dict (``status``,
        ``workers_running_count``, ``workers_unhealthy_count``, ... of ``agi.service.health.v1``).

        ``shutdown_on_stop`` (default ``[cluster] shutdown_on_stop``) is ``keepwarm stop
        --shutdown/--no-shutdown``: whether ``stop`` also shuts down a Dask cluster keepwarm started.
        """
        if action not in SERVE_ACTIONS:
            raise ValueError(f"unknown action {action!r}; valid actions: {', '.join(SERVE_ACTIONS)}")
        service = Service(env)
        if action == "start":
            report = await service.astart(slots=workers, timeout=timeout)
        elif action == "stop":
            outcome = await service.astop(timeout=timeout, shutdown=shutdown_on_stop)
            report = await service.astatus()
            return report.to_json_dict() | {
                "message": outcome["message"],
                "shutdown_on_stop": shutdown_on_stop,
            }
        elif action == "health":
            path = _output_path(env, health_output_path)
            report, _ = await service.ahealth(output=path)
            return report.to_json_dict() | {"health_output_path": str(path)}
        else:
            report = await service.astatus()
        return report.to_json_dict()

    @staticmethod
    async def submit(
        env: Env,
        work_plan: list[Any] | None = None,
        work_plan_metadata: list[Any] | None = None,
        *,
        task_name: str = "task",
        args: dict[str, Any] | None = None,
        execution_id: str | None = None,
        queue_only: bool = False,
    ) -> dict[str, Any]:
        """Queue one task per work-plan chunk (or one task without a plan); the reference's shape.

        ``work_plan[w][c]`` is chunk ``c`` of worker ``w``; ``work_plan_metadata`` has the same shape.
        Each task carries ``plan = {"worker": w, "chunk": c, "items": ..., "metadata": ...}``.
        Returns ``{"status": "queued", "task_ids": [...], "queued_files": [...]}``.

        Refused (ServiceNotRunning) when no service of the app is running, unless ``queue_only=True``
        (the tasks then wait for its next start): the rule of :meth:`keepwarm.Service.submit`.
        """
        plans: list[dict[str, Any] | None] = [None]
        if work_plan is not None:
            plans = [
                {
                    "worker": worker,
                    "chunk": chunk,
                    "items": items,
                    "metadata": _metadata(work_plan_metadata, worker, chunk),
                }
                for worker, chunks in enumerate(work_plan or [None])
                for chunk, items in enumerate(chunks if isinstance(chunks, list) else [chunks])
            ]
        published = Service(env).submit_planned(
            plans, args, task_name=task_name, execution_id=execution_id, queue_only=queue_only
        )
        return {
            "status": "queued",
            "task_ids": [task.task_id for task, _ in published],
            "queued_files": [str(path) for _, path in published],
            "queue_dir": str(env.queue_dir),
        }


def _worker_count(workers: dict[str, int] | int | None) -> int | None:
    """The reference's ``workers = {"host": n, ...}`` as a number of workers (or None: the default)."""
    if workers is None:
        return None
    count = sum(workers.values()) if isinstance(workers, dict) else int(workers)
    if count < 1:
        raise ValueError(f"workers={workers!r} gives no worker; give at least one")
    return count


def _scheduler_address(scheduler: str | None) -> str | None:
    """A scheduler to join when it names a port (``host:8786``); a bare host (the reference's
    ``"127.0.0.1"``) means a local cluster, which keepwarm starts for the run."""
    if not scheduler:
        return None
    return scheduler if ":" in scheduler.removeprefix("tcp://") else None


def _log_event(event: RunEvent) -> None:
    (run_log.warning if event.kind == "warning" else run_log.info)("%s", event.message)


def _metadata(metadata: list[Any] | None, worker: int, chunk: int) -> Any:
    try:
        entry = metadata[worker] if metadata is not None else None
        return entry[chunk] if isinstance(entry, list) else entry
    except IndexError:
        return None


def _output_path(env: Env, requested: str | Path | None) -> Path:
    if requested is None:
        return env.layout.health
    path = Path(requested).expanduser()
    return path if path.is_absolute() else env.share_root / env.namespace / path
