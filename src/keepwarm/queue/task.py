"""The task file (``agi.service.task.v1``), its terminal record, and what a worker receives."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from keepwarm._sys.entropy import random_hex

TASK_SCHEMA = "agi.service.task.v1"
TASK_SUFFIX = ".task.json"
PICKLE_SUFFIX = ".task.pkl"
TaskStatus = Literal["done", "failed", "cancelled"]  # the status a terminal record may carry


class TaskState(StrEnum):
    """Where a task is in its life. A cancelled task's record sits in ``failed/``."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True once the task has a terminal record (done, failed or cancelled)."""
        return self not in (TaskState.PENDING, TaskState.RUNNING)


TASK_STATES: tuple[str, ...] = tuple(state.value for state in TaskState)

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def is_safe_id(value: str) -> bool:
    """True for ids that can name a file: no separators, no ``..``, no leading dot, at most 128."""
    # fullmatch: "$" alone would let one trailing newline through ("abc\n").
    return bool(_SAFE_ID.fullmatch(value)) and ".." not in value


def _check_id(value: str | None, what: str) -> str | None:
    if value is not None and not is_safe_id(value):
        raise ValueError(
            f"unsafe {what} {value!r}: use 1-128 letters, digits, '_', '-', '.', "
            "starting with a letter or digit, without '..'"
        )
    return value


_second: list[Any] = [None, ""]  # the last whole second utc_now formatted, and its text


def utc_now() -> str:
    """Now, as ``iso_of`` formats it; the date and time of day are formatted once a second."""
    micros = time.time_ns() // 1000
    second, fraction = divmod(micros, 1_000_000)
    if _second[0] != second:
        _second[0], _second[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_second[1]}.{fraction:06d}Z"


def iso_of(epoch: float) -> str:
    """ISO-8601 UTC with microseconds and ``Z``: the one timestamp format of keepwarm's files."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def epoch_of(value: str | None) -> float | None:
    """Epoch seconds from an ISO-8601 timestamp (``Z`` or an offset; naive means UTC) or a number."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def new_task_id() -> str:
    """32 random hex digits (128 bits, as a uuid4's hex), drawn without a system call."""
    return random_hex(128)


class Task(BaseModel):
    """A task as it sits in ``pending/`` or ``running/``."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    schema_: Literal["agi.service.task.v1"] = Field(alias="schema")
    task_id: str
    task_name: str = "task"
    created_at: str = Field(default_factory=utc_now)
    args: dict[str, Any] = Field(default_factory=dict)
    plan: Any = None
    execution_id: str | None = None
    attempt: int = Field(default=1, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    timeout_sec: float | None = Field(default=None, gt=0)
    attempts: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("task_id")
    @classmethod
    def _task_id_is_safe(cls, value: str) -> str:
        _check_id(value, "task_id")
        return value

    @field_validator("execution_id")
    @classmethod
    def _execution_id_is_safe(cls, value: str | None) -> str | None:
        return _check_id(value, "execution_id")

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


class PartialTask(BaseModel):
    """One line of ``keepwarm submit --file TASKS.jsonl``: keepwarm fills in the rest."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    args: dict[str, Any]
    task_name: str = "task"
    execution_id: str | None = None
    max_attempts: int | None = Field(default=None, ge=1)
    timeout_sec: float | None = Field(default=None, gt=0)

    @field_validator("execution_id")
    @classmethod
    def _execution_id_is_safe(cls, value: str | None) -> str | None:
        return _check_id(value, "execution_id")


class TaskRecord(BaseModel):
    """A terminal file in ``done/`` or ``failed/``: the task plus its outcome."""

    model_config = ConfigDict(defer_build=True, extra="allow")

    task_id: str
    task_name: str = "task"
    status: TaskStatus
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    claim: dict[str, Any] | None = None
    finished_at: str | None = None
    runtime_sec: float | None = None
    attempt: int = 1
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    execution_id: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)

    @property
    def state(self) -> TaskState:
        """The record's status as a task state."""
        return TaskState(self.status)

    def to_json_dict(self) -> dict[str, Any]:
        """The terminal file's content (the task's own fields are kept as extras)."""
        return self.model_dump()


def terminal_record(task: Task, status: TaskStatus, **outcome: Any) -> TaskRecord:
    """The terminal record of ``task``: the task, its outcome (``terminal_fields``'s keywords), and
    the history of its attempts."""
    return TaskRecord.model_validate(terminal_fields(task.to_json_dict(), status, **outcome))


def terminal_fields(
    task: dict[str, Any],
    status: TaskStatus,
    *,
    result: Any = None,
    error: str | None = None,
    traceback: str | None = None,
    slot: str | None = None,
    incarnation: str | None = None,
    claimed_at: str | None = None,
    runtime_sec: float | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """A terminal file's content from a task file's (``Task.to_json_dict()``): ``terminal_record``
    without building a model, for a loop that encodes it straight away."""
    finished_at = utc_now()
    this_attempt = {"attempt": task["attempt"], "slot": slot, "outcome": status, "at": finished_at}
    record = task | {
        "status": status,
        "result": result,
        "error": error,
        "traceback": traceback,
        "claim": {"slot": slot, "incarnation": incarnation, "claimed_at": claimed_at},
        "finished_at": finished_at,
        "runtime_sec": runtime_sec,
        "attempts": [*task["attempts"], this_attempt],
    }
    if batch_size is not None:
        record["batch_size"] = batch_size  # the task ran in one work_batch() call with this many
    return record


@dataclass(frozen=True, slots=True)
class TaskItem:
    """What ``work(item)`` receives in service mode.

    ``args`` is an instance of the app's ``args_model`` when the app declares one, else the dict.
    """

    task_id: str
    task_name: str
    args: Any
    plan: Any
    attempt: int
    max_attempts: int
    execution_id: str | None
    created_at: str
    timeout_sec: float | None


def parse_json_object(text: str, where: str, example: str = '{"x": 3}') -> dict[str, Any]:
    """A JSON object from ``text``; ValueError naming ``where`` and showing the expected shape."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{where}: not valid JSON ({exc}); expected an object such as '{example}'") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object such as '{example}', got {type(value).__name__}")
    return value


def parse_task_lines(text: str, source: str) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a TASKS.jsonl text with their line numbers; blank lines are skipped."""
    return [
        (number, parse_json_object(line, f"{source} line {number}", example='{"args": {"x": 3}}'))
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
