"""Every error keepwarm raises on purpose: each says what is wrong and what to do."""

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


class SettingsError(KeepwarmError):
    """An ``app_settings.toml`` (or another config file) is malformed."""


class AppError(KeepwarmError):
    """An app cannot be found or its entry points cannot be loaded."""


class InvalidTaskError(KeepwarmError):
    """A task given to ``submit`` is malformed."""


class QueueFull(KeepwarmError):
    """``submit`` refused: the queue already holds ``max_pending`` tasks."""


class StorageError(KeepwarmError, OSError):
    """The share refused a write: full (ENOSPC, EDQUOT), read-only (EROFS), or failing (EIO)."""

    def __str__(self) -> str:
        return str(self.strerror)


class TaskNotFound(KeepwarmError):
    """No task with that id is in the queue."""


class ResultTimeout(KeepwarmError, TimeoutError):
    """A task's result did not arrive within the time asked for."""


class TaskFailed(KeepwarmError):
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
