"""A worker that crashes, hangs, raises or holds the GIL when a task asks it to."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["ok", "sleep", "raise", "crash", "exit", "hang", "gil", "nonjson", "big"] = "ok"
    seconds: float = Field(default=0.0, ge=0)
    exit_code: int = 3
    size: int = Field(default=0, ge=0)
    value: Any = None
    record_to: str | None = Field(default=None, description="append the task id to this file")
    fail_start: bool = False
    only_attempt: int | None = Field(default=None, ge=1, description="misbehave on this attempt only")


class Worker:
    def __init__(self, args: Args) -> None:
        self.settings = args

    def start(self) -> None:
        if self.settings.fail_start:
            raise RuntimeError("flaky: start() failed on purpose (fail_start = true)")

    def work(self, item: Any) -> Any:
        args: Args = item.args
        if args.record_to:
            fd = os.open(args.record_to, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(fd, f"{item.task_id} {os.getpid()}\n".encode())
            os.close(fd)
        action = args.action if args.only_attempt in (None, item.attempt) else "ok"
        if action == "sleep":
            time.sleep(args.seconds)
        elif action == "raise":
            raise ValueError(f"flaky: raised on purpose for task {item.task_id}")
        elif action == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "exit":
            os._exit(args.exit_code)
        elif action == "hang":
            time.sleep(args.seconds or 3600)
        elif action == "gil":
            # libc sleep through PyDLL keeps the GIL: the heartbeat thread cannot run.
            ctypes.PyDLL(None).sleep(int(args.seconds or 1))
        elif action == "nonjson":
            return {"not json": {1, 2, 3}}
        elif action == "big":
            return "x" * args.size
        return {"ok": True, "pid": os.getpid(), "value": args.value, "attempt": item.attempt}

    def stop(self) -> None:
        pass
