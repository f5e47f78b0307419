"""What the queue's answers to a caller are made of: a task's outcome, and a cancel's report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from keepwarm.queue.task import TaskRecord


@dataclass(frozen=True)
class TaskOutcome:
    """A task's outcome, read without raising for how it ended.

    ``record`` is its terminal record once it has finished, else None; ``state`` is where it is
    (pending, running, done, failed). ``gave_up`` says why a bounded wait ended without the record.
    """

    task_id: str
    state: str
    record: TaskRecord | None = None
    gave_up: str | None = None

    @classmethod
    def of(cls, record: TaskRecord) -> TaskOutcome:
        """The outcome of a finished task, from its terminal record."""
        return cls(record.task_id, "done" if record.status == "done" else "failed", record)

    @property
    def finished(self) -> bool:
        return self.record is not None

    def to_json_dict(self) -> dict[str, Any]:
        """The outcome as MCP's ``get_result`` answers it."""
        record = self.record
        if record is None:
            return {"task_id": self.task_id, "finished": False, "state": self.state}
        return {
            "task_id": self.task_id,
            "finished": True,
            "state": self.state,
            "status": record.status,
            "result": record.result,
            "error": record.error,
            "traceback": record.traceback,
            "runtime_sec": record.runtime_sec,
            "execution_id": record.execution_id,
        }


class Cancelled(list[str]):
    """The ids a cancel cancelled; ``not_cancelled`` maps every other id it was given to where that
    task is (its state, or ``not found``)."""

    def __init__(self, cancelled: Iterable[str] = (), not_cancelled: dict[str, str] | None = None) -> None:
        super().__init__(cancelled)
        self.not_cancelled = not_cancelled if not_cancelled is not None else {}
