"""Every error keepwarm raises on purpose: each says what is wrong and what to do.

The bases say which part failed; each raised class says what happened::

    KeepwarmError
      ConfigError      the app and its settings: SettingsError (SettingsConflict), AppError
                       (AppNotInstalled)
      QueueError       tasks and results: InvalidTaskError, QueueFull, StorageError (an OSError),
                       TaskNotFound, ResultTimeout (a TimeoutError), TaskFailed, ServiceCannotDeliver
      ServiceError     a service and its supervisor: ServiceAlreadyRunning, ServiceStartError,
                       ServiceNotRunning, ServiceStarting, QueueNotPrivate, CommandRefused,
                       ControlTimeout, ServiceStopTimeout, HealthReportNotWritten, ServiceTaskStopped
      ClusterError     the Dask cluster
      RunModeError     run mode: ModeError, PlanError, RunError, PoolProcessDied, CythonBuildError,
                       InstallError, DataError
      GroupError       fleets and workflow runs: FleetError (FleetAlreadyRunning, FleetStartError),
                       WorkflowNotFound
      SurfaceError     the page, the MCP and HTTP servers: PageNotServing, ServerOptionError
                       (McpOptionError), PortUnavailable
      PipelineError    a pipeline and its snippet files: PipelineFileError, StepNotFound, SnippetFileError

This module imports nothing of keepwarm, so catching an error never loads the code that raises it.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Remedy:
    """The step that resolves an error, as data, so that each surface names it its own way: the
    message ends with the CLI ``command``; an MCP agent is told the ``tool`` to call and its
    ``arguments`` (no ``tool``: the same tool again, with these ``arguments``; neither: no tool does it)."""

    advice: str  # "stop it first"
    command: str  # "keepwarm stop mycode_project"
    tool: str | None = None  # "stop_service"
    arguments: dict[str, Any] = field(default_factory=dict)


class KeepwarmError(Exception):
    """Base of keepwarm's user-facing errors; the CLI prints them without a traceback.

    With a ``remedy``, the message is the problem followed by ``; <advice>: <command>``.
    """

    remedy: Remedy | None = None

    def __init__(self, *args: object, remedy: Remedy | None = None) -> None:
        if remedy is not None and args:
            args = (f"{args[0]}; {remedy.advice}: {remedy.command}", *args[1:])
        super().__init__(*args)
        self.remedy = remedy

    @property
    def problem(self) -> str:
        """The message without the remedy's command."""
        if self.remedy is None:
            return str(self)
        return str(self).removesuffix(f"; {self.remedy.advice}: {self.remedy.command}")


# ------------------------------------------------------------------ the app and its settings


class ConfigError(KeepwarmError):
    """The app, or its settings, cannot be used as they are."""


class SettingsError(ConfigError):
    """An ``app_settings.toml`` (or another config file) is malformed."""


class SettingsConflict(SettingsError):
    """A save was refused: a key it changes also changed in the file since the values were loaded.

    ``conflicts`` holds one ``(section, key, loaded, in_file, saving)`` per such key; nothing was written.
    """

    def __init__(self, message: str, conflicts: list[tuple[str, str, Any, Any, Any]]) -> None:
        super().__init__(message)
        self.conflicts = conflicts


class AppError(ConfigError):
    """An app cannot be found or its entry points cannot be loaded."""


class AppNotFound(AppError):
    """No app of that name is where keepwarm looks for apps."""


class AppNotInstalled(AppError):
    """An isolated app's virtual environment does not exist yet: ``keepwarm install`` makes it."""


# ------------------------------------------------------------------ the queue: tasks and results


class QueueError(KeepwarmError):
    """A task could not be queued, found, or waited for."""


class InvalidTaskError(QueueError):
    """A task given to ``submit`` is malformed."""


class InvalidArgs(InvalidTaskError, ValueError):
    """A task's args refused by the app's ``args_model``; ``fields`` holds the model's errors, one
    ``{"loc", "msg", "type"}`` per field (an HTTP client shows them beside its inputs)."""

    def __init__(self, message: str, fields: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.fields = fields


class QueueFull(QueueError):
    """``submit`` refused: the queue already holds ``max_pending`` tasks."""


STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.EACCES})
"""The errors of a share that refuses writes for a while: a writer keeps its work and retries."""


class StorageError(QueueError, OSError):
    """The share refused a write: full (ENOSPC, EDQUOT), read-only (EROFS), or failing (EIO)."""

    def __str__(self) -> str:
        return str(self.strerror)


class TaskNotFound(QueueError):
    """No task with that id is in the queue."""


class ResultTimeout(QueueError, TimeoutError):
    """A task's result did not arrive within the time asked for."""


class TaskFailed(QueueError):
    """The task ended as ``failed`` or ``cancelled``; carries the remote error and traceback."""

    def __init__(self, task_id: str, status: str, error: str | None, remote_traceback: str | None) -> None:
        self.task_id = task_id
        self.status = status
        self.error = error
        self.remote_traceback = remote_traceback
        message = f"task {task_id} {status}: {error or 'no error recorded'}"
        if remote_traceback:
            message += f"\n\nremote traceback:\n{remote_traceback.rstrip()}"
        super().__init__(message)


class ServiceCannotDeliver(QueueError):
    """A wait gave up: the service stopped, or every loop keeps failing to start. The tasks stay queued."""


# ------------------------------------------------------------------ the service and its supervisor


class ServiceError(KeepwarmError):
    """A service could not be started, stopped, or commanded."""


class ServiceAlreadyRunning(ServiceError):
    """``start`` found the service's lock held by a live supervisor."""


class ServiceStartError(ServiceError):
    """The service did not become ready: the loops' own errors, or the supervisor's log."""


class ServiceNotRunning(ServiceError):
    """A command needs a live supervisor and there is none."""


class ServiceStarting(ServiceError):
    """``stop`` came while the service is still starting: nothing to stop yet, try again."""


class QueueNotPrivate(ServiceError):
    """``start`` refused: other users can write the service's queue, and what they queue would run."""


class CommandRefused(ServiceError):
    """The supervisor refused a control command; the message gives its reason."""


class ControlTimeout(ServiceError):
    """The supervisor did not acknowledge a command in time."""


class ServiceStopTimeout(ServiceError):
    """The supervisor acknowledged ``stop`` but did not exit in time."""


class HealthReportNotWritten(ServiceError):
    """The health report could not be written where it was asked for."""


class TemplateError(ServiceError):
    """The preload template cannot fork loops (its preload failed, it died, or it does not answer):
    the local backend spawns them cold instead."""


class ServiceTaskStopped(ServiceError):
    """The service was stopped (or its start cancelled): its instance serves no more calls."""


class ClusterError(KeepwarmError):
    """The Dask cluster cannot be reached, started, or used."""


# ------------------------------------------------------------------ run mode


class RunModeError(KeepwarmError):
    """Run mode could not plan, build, install, run, or read a run."""


class ModeError(RunModeError):
    """A mode that does not exist, or cannot run on this machine (the message says why)."""


class PlanError(RunModeError):
    """The work plan cannot be built, read or changed as asked."""


class RunError(RunModeError):
    """A run failed: the message names the partition, its worker and the error; the log has more."""


class RunFailed(RunError):
    """A run that failed after it started: its message, and its ``report`` (the run's
    ``keepwarm.runmode.record.RunReport``, as ``run.json`` keeps it)."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


class PoolProcessDied(RunModeError):
    """A plan worker's pool process exited before it finished its partitions and its ``stop()``."""


class CythonBuildError(RunModeError):
    """The worker module could not be compiled; the message holds the tool's own error."""


class InstallError(RunModeError):
    """A step of ``install`` failed; the message names the step, the cause and the fix."""

    def __init__(self, app: str, step: str, reason: str) -> None:
        self.step = step
        super().__init__(f"install {app}: step '{step}' failed: {reason}")


class DataError(RunModeError):
    """There is no output to read, or the columns asked for are not in it."""


# ------------------------------------------------------------------ fleets and workflow runs


class GroupError(KeepwarmError):
    """A fleet, or a workflow run, could not be found or acted on."""


class FleetError(GroupError):
    """A fleet could not be brought up or down; says which member and why."""


class FleetAlreadyRunning(FleetError):
    """``up`` found members of the fleet already running."""


class FleetStartError(FleetError):
    """A member of the fleet did not start; the members ``up`` had started were stopped again."""


class WorkflowNotFound(GroupError):
    """No workflow run with that execution id in the namespace."""


# ------------------------------------------------------------------ the page and the MCP server


class SurfaceError(KeepwarmError):
    """The page or the MCP server cannot serve as asked."""


class PageNotServing(SurfaceError):
    """The page's server exited, or did not answer, before serving."""


class ServerOptionError(SurfaceError):
    """A server's options contradict each other, or its bearer token is too short."""


class McpOptionError(ServerOptionError):
    """The MCP server's options contradict each other."""


class PortUnavailable(SurfaceError):
    """The port asked for cannot be listened on."""


# ------------------------------------------------------------------ pipelines and saved snippets


class PipelineError(KeepwarmError):
    """A pipeline, one of its steps, or a saved snippet file cannot be used as asked."""


class PipelineFileError(PipelineError):
    """``pipeline.toml`` is malformed or cannot be read; the file is left as it is."""


class StepNotFound(PipelineError):
    """No step of that number (or of that file) in the pipeline."""


class SnippetFileError(PipelineError):
    """A snippet file to add, run or save is missing, outside the app folder, or cannot be written."""


def storage_error(exc: OSError, where: Path, consequence: str) -> StorageError:
    """What a refused write means for the user, and what to do about it."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        problem, fix = "is full", "free space on it (or raise the quota)"
    elif exc.errno == errno.EROFS:
        problem, fix = "is read-only", "make it writable again"
    else:
        problem, fix = f"refused a write ({exc.strerror})", "check the share's mount and permissions"
    return StorageError(
        exc.errno or 0, f"the share holding {where} {problem}: {consequence}. {fix.capitalize()}, then retry"
    )
