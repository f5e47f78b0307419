"""In-process services: an async factory started once whose instance serves many calls until stopped.

``@service_task`` turns an async factory into a service: each call returns a ``ServiceHandle`` at
once while the factory runs as a task of the caller's event loop, so whatever it starts (servers,
background tasks, pools) keeps running between calls. ``@function_task`` is the stateless
counterpart: every call runs the function afresh, with retries built on tenacity.
"""

from __future__ import annotations

from keepwarm.errors import ServiceTaskStopped
from keepwarm.inprocess.factory import ServiceTask, service_scope, service_task
from keepwarm.inprocess.handle import ServiceHandle, ServiceStatus, live_services
from keepwarm.inprocess.retrying import function_task

__all__ = [
    "ServiceHandle",
    "ServiceStatus",
    "ServiceTask",
    "ServiceTaskStopped",
    "function_task",
    "live_services",
    "service_scope",
    "service_task",
]
