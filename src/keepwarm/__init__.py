"""keepwarm keeps an application's workers warm.

Public names are imported lazily so that ``keepwarm --help`` and the local service path stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AGI": "keepwarm.agi",
    "HealthReport": "keepwarm.service.report",
    "GateResult": "keepwarm.service.gate",
    "ServiceAlreadyRunning": "keepwarm.errors",
    "ServiceStartError": "keepwarm.errors",
    "ServiceNotRunning": "keepwarm.errors",
    "ServiceCannotDeliver": "keepwarm.errors",
    "Env": "keepwarm.env",
    "AgiEnv": "keepwarm.env",
    "Service": "keepwarm.api",
    "TaskHandle": "keepwarm.queue.results",
    "TaskQueue": "keepwarm.queue.taskqueue",
    "Task": "keepwarm.queue.task",
    "TaskItem": "keepwarm.queue.task",
    "TaskRecord": "keepwarm.queue.task",
    "Partition": "keepwarm.app",
    "WorkPlan": "keepwarm.app",
    "install": "keepwarm.runmode.installer",
    "distribute": "keepwarm.runmode.plan",
    "run": "keepwarm.runmode.runner",
    "KeepwarmError": "keepwarm.errors",
    "SettingsError": "keepwarm.errors",
    "AppError": "keepwarm.errors",
    "InvalidTaskError": "keepwarm.errors",
    "QueueFull": "keepwarm.errors",
    "TaskFailed": "keepwarm.errors",
    "TaskNotFound": "keepwarm.errors",
    "ResultTimeout": "keepwarm.errors",
    "Fleet": "keepwarm.groups.fleet",
    "FleetStatus": "keepwarm.groups.fleet",
    "FleetError": "keepwarm.errors",
    "FleetAlreadyRunning": "keepwarm.errors",
    "FleetStartError": "keepwarm.errors",
    "ServiceSummary": "keepwarm.groups.fleet",
    "list_services": "keepwarm.groups.fleet",
    "start_workflow": "keepwarm.groups.workflow",
    "workflow_status": "keepwarm.groups.workflow",
    "stop_workflow": "keepwarm.groups.workflow",
    "WorkflowStatus": "keepwarm.groups.workflow",
    "WorkflowNotFound": "keepwarm.errors",
    "service_task": "keepwarm.inprocess",
    "function_task": "keepwarm.inprocess",
    "service_scope": "keepwarm.inprocess",
    "live_services": "keepwarm.inprocess",
    "ServiceHandle": "keepwarm.inprocess",
    "ServiceTask": "keepwarm.inprocess",
    "ServiceTaskStopped": "keepwarm.errors",
}

__all__ = [
    "AGI",
    "AgiEnv",
    "AppError",
    "Env",
    "Fleet",
    "FleetAlreadyRunning",
    "FleetError",
    "FleetStartError",
    "FleetStatus",
    "GateResult",
    "HealthReport",
    "InvalidTaskError",
    "KeepwarmError",
    "Partition",
    "QueueFull",
    "ResultTimeout",
    "Service",
    "ServiceAlreadyRunning",
    "ServiceCannotDeliver",
    "ServiceHandle",
    "ServiceNotRunning",
    "ServiceStartError",
    "ServiceSummary",
    "ServiceTask",
    "ServiceTaskStopped",
    "SettingsError",
    "Task",
    "TaskFailed",
    "TaskHandle",
    "TaskItem",
    "TaskNotFound",
    "TaskQueue",
    "TaskRecord",
    "WorkPlan",
    "WorkflowNotFound",
    "WorkflowStatus",
    "__version__",
    "distribute",
    "function_task",
    "install",
    "list_services",
    "live_services",
    "run",
    "service_scope",
    "service_task",
    "start_workflow",
    "stop_workflow",
    "workflow_status",
]

if TYPE_CHECKING:
    from keepwarm.agi import AGI as AGI
    from keepwarm.api import Service as Service
    from keepwarm.app import Partition as Partition
    from keepwarm.app import WorkPlan as WorkPlan
    from keepwarm.env import AgiEnv as AgiEnv
    from keepwarm.env import Env as Env
    from keepwarm.errors import (
        AppError as AppError,
    )
    from keepwarm.errors import FleetAlreadyRunning as FleetAlreadyRunning
    from keepwarm.errors import FleetError as FleetError
    from keepwarm.errors import FleetStartError as FleetStartError
    from keepwarm.errors import (
        InvalidTaskError as InvalidTaskError,
    )
    from keepwarm.errors import (
        KeepwarmError as KeepwarmError,
    )
    from keepwarm.errors import (
        QueueFull as QueueFull,
    )
    from keepwarm.errors import (
        ResultTimeout as ResultTimeout,
    )
    from keepwarm.errors import ServiceAlreadyRunning as ServiceAlreadyRunning
    from keepwarm.errors import ServiceCannotDeliver as ServiceCannotDeliver
    from keepwarm.errors import ServiceNotRunning as ServiceNotRunning
    from keepwarm.errors import ServiceStartError as ServiceStartError
    from keepwarm.errors import ServiceTaskStopped as ServiceTaskStopped
    from keepwarm.errors import (
        SettingsError as SettingsError,
    )
    from keepwarm.errors import (
        TaskFailed as TaskFailed,
    )
    from keepwarm.errors import (
        TaskNotFound as TaskNotFound,
    )
    from keepwarm.errors import WorkflowNotFound as WorkflowNotFound
    from keepwarm.groups.fleet import Fleet as Fleet
    from keepwarm.groups.fleet import FleetStatus as FleetStatus
    from keepwarm.groups.fleet import ServiceSummary as ServiceSummary
    from keepwarm.groups.fleet import list_services as list_services
    from keepwarm.groups.workflow import WorkflowStatus as WorkflowStatus
    from keepwarm.groups.workflow import start_workflow as start_workflow
    from keepwarm.groups.workflow import stop_workflow as stop_workflow
    from keepwarm.groups.workflow import workflow_status as workflow_status
    from keepwarm.inprocess import ServiceHandle as ServiceHandle
    from keepwarm.inprocess import ServiceTask as ServiceTask
    from keepwarm.inprocess import function_task as function_task
    from keepwarm.inprocess import live_services as live_services
    from keepwarm.inprocess import service_scope as service_scope
    from keepwarm.inprocess import service_task as service_task
    from keepwarm.queue.results import TaskHandle as TaskHandle
    from keepwarm.queue.task import Task as Task
    from keepwarm.queue.task import TaskItem as TaskItem
    from keepwarm.queue.task import TaskRecord as TaskRecord
    from keepwarm.queue.taskqueue import TaskQueue as TaskQueue
    from keepwarm.runmode.installer import install as install
    from keepwarm.runmode.plan import distribute as distribute
    from keepwarm.runmode.runner import run as run
    from keepwarm.service.gate import GateResult as GateResult
    from keepwarm.service.report import HealthReport as HealthReport


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keepwarm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
