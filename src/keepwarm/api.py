"""keepwarm's core API: what every surface (CLI, web page, MCP, façade) calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from keepwarm.env import Env
from keepwarm.queue import QueueCounts, TaskQueue
from keepwarm.results import TaskHandle, value_of, wait_for_records
from keepwarm.task import Task


class Service:
    """One app's service: its queue and, once started, its supervisor and loops."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.queue = TaskQueue.for_env(env)

    def __repr__(self) -> str:
        return f"Service({self.env.app_target!r}, namespace={self.env.namespace!r})"

    def submit(
        self,
        args: dict[str, Any] | None = None,
        *,
        task_name: str = "task",
        execution_id: str | None = None,
        max_attempts: int | None = None,
        timeout_sec: float | None = None,
        plan: Any = None,
    ) -> TaskHandle:
        """Queue one task; the handle's ``result(timeout)`` waits for what ``work()`` returned."""
        task = self.queue.make_task(
            args,
            task_name=task_name,
            execution_id=execution_id,
            max_attempts=max_attempts,
            timeout_sec=timeout_sec,
            plan=plan,
        )
        self.queue.submit([task])
        return TaskHandle(self.queue, task.task_id)

    def submit_many(self, tasks: Iterable[dict[str, Any]]) -> list[TaskHandle]:
        """Queue many tasks given as partial task objects (``{"args": ..., "task_name": ...}``)."""
        submitted = self.queue.submit_partials(enumerate(tasks, start=1))
        return [TaskHandle(self.queue, task.task_id) for task in submitted]

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        return value_of(wait_for_records(self.queue, [task_id], timeout)[task_id])

    def handle(self, task_id: str) -> TaskHandle:
        self.queue.locate(task_id)
        return TaskHandle(self.queue, task_id)

    def tasks(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self.queue.list_tasks(state, limit)

    def cancel(self, task_ids: Iterable[str] = (), execution_id: str | None = None) -> list[str]:
        """Cancel pending tasks by id or execution id; returns the ids cancelled."""
        return self.queue.cancel(task_ids, execution_id)

    def counts(self) -> QueueCounts:
        return self.queue.counts()

    async def asubmit(self, args: dict[str, Any] | None = None, **options: Any) -> TaskHandle:
        return await asyncio.to_thread(self.submit, args, **options)

    async def aresult(self, task_id: str, timeout: float | None = None) -> Any:
        return await asyncio.to_thread(self.result, task_id, timeout)


__all__ = ["Service", "Task"]
