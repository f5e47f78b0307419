"""What a ``keepwarm http`` server holds between requests: its scope, whether it writes, and how many
requests wait (their result channels are ``queue.aresults``'s, one per service and event loop)."""

from __future__ import annotations

from dataclasses import dataclass

from keepwarm.api import Service
from keepwarm.groups.scope import Scope
from keepwarm.http.answers import HttpRefusal
from keepwarm.queue.aresults import async_results
from keepwarm.queue.task import TaskRecord
from keepwarm.settings import is_safe_name


@dataclass
class Gateway:
    scope: Scope
    read_only: bool = False
    waiting: int = 0  # requests waiting for a task to finish, now

    def service(self, app: str) -> Service:
        """The app's service; only a plain name (no path) is taken from a request."""
        if not is_safe_name(app):
            raise HttpRefusal(
                404,
                f"app {app!r} not found: an app is named by its folder's name (see GET /v1/apps)",
                "AppNotFound",
            )
        return self.scope.service(app)

    def require_writable(self) -> None:
        if self.read_only:
            raise HttpRefusal(
                403,
                "this server is read-only (keepwarm http --read-only): it serves GET requests only; "
                "submit and cancel through a server started without --read-only",
                "ReadOnly",
            )

    async def record(self, service: Service, task_id: str, timeout: float) -> TaskRecord | None:
        """The task's terminal record once it is published, or None after ``timeout`` seconds; the
        wait is an event on the service's result channel, not a thread."""
        self.waiting += 1
        try:
            return await async_results(service.queue).record(task_id, timeout)
        finally:
            self.waiting -= 1
