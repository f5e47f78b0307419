"""Every error keepwarm raises on purpose: each says what is wrong and what to do."""

from __future__ import annotations


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
