"""Every error keepwarm raises on purpose: each says what is wrong and what to do."""

from __future__ import annotations

import errno
from pathlib import Path


class KeepwarmError(Exception):
    """Base of keepwarm's user-facing errors; the CLI prints them without a traceback."""


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
