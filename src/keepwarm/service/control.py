"""Control commands: ``control/<id>.cmd.json`` in, ``control/<id>.ack.json`` out.

A command names the supervisor incarnation it is meant for; a command left for an earlier
incarnation is acknowledged as stale and never obeyed.
"""

from __future__ import annotations

import os
import time
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.watch import IN_MOVED_TO, Watcher
from keepwarm.errors import ControlTimeout
from keepwarm.queue.layout import ACK_SUFFIX, COMMAND_SUFFIX
from keepwarm.queue.task import utc_now

CommandName = Literal["stop", "drain", "scale", "restart", "rolling-restart", "cancel"]


class AckOutcome(StrEnum):
    """How the supervisor answered a command."""

    DONE = "done"  # carried out before the acknowledgement
    ACCEPTED = "accepted"  # under way (a stop, a drain, a restart)
    STALE = "stale"  # meant for an earlier supervisor: not obeyed
    INVALID = "invalid"  # unreadable, unknown, or with bad arguments
    FAILED = "failed"  # the supervisor failed carrying it out


class _Args(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore", frozen=True)

    command: ClassVar[CommandName]


class StopArgs(_Args):
    """Stop the service; its loops get ``timeout`` seconds (default: ``stop_timeout_sec``)."""

    command: ClassVar[CommandName] = "stop"
    timeout: float | None = None
    shutdown: bool | None = None  # shut the Dask cluster down (None: ``shutdown_on_stop``)


class DrainArgs(_Args):
    """Serve until pending and running are empty, then stop."""

    command: ClassVar[CommandName] = "drain"


class ScaleArgs(_Args):
    """Run ``slots`` loops (pinned while autoscaling), or, with ``auto``, let autoscaling decide again."""

    command: ClassVar[CommandName] = "scale"
    slots: int | None = None
    auto: bool = False


class RestartArgs(_Args):
    """Restart one slot's loop."""

    command: ClassVar[CommandName] = "restart"
    slot: str


class RollingRestartArgs(_Args):
    """Restart every loop, one at a time."""

    command: ClassVar[CommandName] = "rolling-restart"


class CancelArgs(_Args):
    """Cancel tasks by id, or every task of a workflow execution."""

    command: ClassVar[CommandName] = "cancel"
    task_ids: list[str] = Field(default_factory=list)
    execution_id: str | None = None


CommandArgs = StopArgs | DrainArgs | ScaleArgs | RestartArgs | RollingRestartArgs | CancelArgs
ARGS_OF: dict[str, type[CommandArgs]] = {
    args.command: args
    for args in (StopArgs, DrainArgs, ScaleArgs, RestartArgs, RollingRestartArgs, CancelArgs)
}


class Command(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    schema_: Literal["keepwarm.control.v1"] = Field(default="keepwarm.control.v1", alias="schema")
    id: str
    command: CommandName
    args: dict[str, Any] = Field(default_factory=dict)
    supervisor_incarnation: str
    issued_at: str = Field(default_factory=utc_now)

    def arguments(self) -> CommandArgs:
        """The command's arguments, checked (pydantic's ValidationError, a ValueError, if bad)."""
        return ARGS_OF[self.command].model_validate(self.args)


class Ack(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")

    id: str
    command: str
    ok: bool
    outcome: AckOutcome
    message: str = ""
    result: dict[str, Any] = Field(default_factory=dict)
    at: str = Field(default_factory=utc_now)


def send_command(
    control_dir: Path, args: CommandArgs, supervisor_incarnation: str, timeout: float = 30.0
) -> Ack:
    """Write a command for the live supervisor and wait for its acknowledgement."""
    control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = args.command
    cmd = Command(
        id=uuid.uuid4().hex[:16],
        command=command,
        args=args.model_dump(exclude_none=True),
        supervisor_incarnation=supervisor_incarnation,
    )
    ack_path = control_dir / f"{cmd.id}{ACK_SUFFIX}"
    deadline = time.monotonic() + timeout
    with Watcher([control_dir], mask=IN_MOVED_TO) as watcher:
        write_atomic(control_dir / f"{cmd.id}{COMMAND_SUFFIX}", cmd.model_dump_json(by_alias=True).encode())
        while True:
            ack = read_ack(ack_path)
            if ack is not None:
                ack_path.unlink(missing_ok=True)
                return ack
            left = deadline - time.monotonic()
            if left <= 0:
                (control_dir / f"{cmd.id}{COMMAND_SUFFIX}").unlink(missing_ok=True)
                raise ControlTimeout(
                    f"the supervisor did not acknowledge '{command}' within {timeout}s; check its log "
                    "(keepwarm logs APP). If it is wedged, kill its pid (keepwarm status APP shows it) "
                    "and run keepwarm stop APP, which cleans up after a dead supervisor"
                )
            watcher.wait(min(left, 0.5))


def read_ack(path: Path) -> Ack | None:
    try:
        return Ack.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def pending_commands(control_dir: Path) -> list[tuple[Path, Command | None, str]]:
    """Commands waiting in ``control/``, oldest first: (path, command or None, problem)."""
    try:
        names = sorted(n for n in os.listdir(control_dir) if n.endswith(COMMAND_SUFFIX) and n[0] != ".")
    except FileNotFoundError:
        return []
    found: list[tuple[Path, Command | None, str]] = []
    for name in names:
        path = control_dir / name
        try:
            found.append((path, Command.model_validate_json(path.read_bytes()), ""))
        except (OSError, ValidationError) as exc:
            found.append((path, None, f"invalid command file: {exc}"))
    return found


def acknowledge(control_dir: Path, command_path: Path, ack: Ack) -> None:
    """Publish the acknowledgement, then remove the command it answers."""
    write_atomic(control_dir / f"{ack.id}{ACK_SUFFIX}", ack.model_dump_json().encode())
    command_path.unlink(missing_ok=True)
