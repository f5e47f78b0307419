"""The seed-compatible façade: the reference system's ``AGI.serve`` and ``AGI.submit``.

The reference documents' examples run with their imports changed (``from keepwarm import AGI,
AgiEnv``) and nothing else. Every call goes through :class:`keepwarm.Service`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keepwarm.api import Service
from keepwarm.atomic import write_atomic
from keepwarm.env import Env, ensure_private_dir
from keepwarm.errors import InvalidTaskError

SERVE_ACTIONS = ("start", "status", "health", "stop")


class AGI:
    """``AGI.serve(env, action=...)`` and ``AGI.submit(env, work_plan=...)``, as in the reference."""

    @staticmethod
    async def serve(
        env: Env,
        action: str = "status",
        *,
        health_output_path: str | Path | None = None,
        shutdown_on_stop: bool = True,
        workers: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run one service action and return the health snapshot as a dict (``status``,
        ``workers_running_count``, ``workers_unhealthy_count``, ... of ``agi.service.health.v1``).

        ``shutdown_on_stop`` concerns a Dask cluster keepwarm started; the local backend has none.
        """
        if action not in SERVE_ACTIONS:
            raise ValueError(f"unknown action {action!r}; valid actions: {', '.join(SERVE_ACTIONS)}")
        service = Service(env)
        if action == "start":
            report = await service.astart(slots=workers, timeout=timeout)
        elif action == "stop":
            outcome = await service.astop(timeout=timeout)
            report = await service.astatus()
            return report.to_json_dict() | {
                "message": outcome["message"],
                "shutdown_on_stop": shutdown_on_stop,
            }
        else:
            report = await service.astatus()
        document = report.to_json_dict()
        if action == "health":
            path = _output_path(env, health_output_path)
            ensure_private_dir(path.parent)
            write_atomic(path, report.model_dump_json(by_alias=True, indent=2).encode())
            document["health_output_path"] = str(path)
        return document

    @staticmethod
    async def submit(
        env: Env,
        work_plan: list[Any] | None = None,
        work_plan_metadata: list[Any] | None = None,
        *,
        task_name: str = "task",
        args: dict[str, Any] | None = None,
        execution_id: str | None = None,
    ) -> dict[str, Any]:
        """Queue one task per work-plan chunk (or one task without a plan); the reference's shape.

        ``work_plan[w][c]`` is chunk ``c`` of worker ``w``; ``work_plan_metadata`` has the same shape.
        Each task carries ``plan = {"worker": w, "chunk": c, "items": ..., "metadata": ...}``.
        Returns ``{"status": "queued", "task_ids": [...], "queued_files": [...]}``.
        """
        service = Service(env)
        tasks = []
        for worker, chunks in enumerate(work_plan or [None]):
            for chunk, items in enumerate(chunks if isinstance(chunks, list) else [chunks]):
                plan = None
                if work_plan is not None:
                    metadata = _metadata(work_plan_metadata, worker, chunk)
                    plan = {"worker": worker, "chunk": chunk, "items": items, "metadata": metadata}
                tasks.append(
                    service.queue.make_task(
                        args or {}, task_name=task_name, execution_id=execution_id, plan=plan
                    )
                )
        try:
            service.check_args(args or {})
        except ValueError as exc:
            raise InvalidTaskError(str(exc)) from None
        published = service.queue.publish(tasks)
        return {
            "status": "queued",
            "task_ids": [task.task_id for task, _ in published],
            "queued_files": [str(path) for _, path in published],
            "queue_dir": str(service.queue.root),
        }


def _metadata(metadata: list[Any] | None, worker: int, chunk: int) -> Any:
    try:
        entry = metadata[worker] if metadata is not None else None
        return entry[chunk] if isinstance(entry, list) else entry
    except IndexError:
        return None


def _output_path(env: Env, requested: str | Path | None) -> Path:
    if requested is None:
        return env.service_dir / "health.json"
    path = Path(requested).expanduser()
    return path if path.is_absolute() else env.share_root / env.namespace / path
