"""Starting one member of a fleet from a starter child process, whose environment carries the
member's ``env``; the child answers its parent with one JSON line (``StarterAnswer``).

``python -m keepwarm.groups.starter --app ... --share-dir ... --namespace ...`` is the child.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from keepwarm.env import Env
from keepwarm.errors import KeepwarmError, Remedy, ServiceAlreadyRunning, ServiceStartError
from keepwarm.groups.namespace import ServiceSummary, summarize
from keepwarm.service import lifecycle

if TYPE_CHECKING:
    from keepwarm.groups.fleet import Member

# Seconds a member's starter process gets beyond the member's own start timeout (its imports, the fork).
_STARTER_MARGIN_SEC = 30.0


class StarterAnswer(BaseModel):
    """The starter's last line on stdout: how the start went (``kind``), and the error if it failed."""

    ok: bool
    kind: Literal["started", "already_running", "failed"]
    error: str | None = None
    remedy: dict[str, Any] | None = None


def start_member(
    member: Member, *, workers: int | None = None, timeout: float | None = None
) -> ServiceSummary:
    """Start one member of a fleet as ``up`` does, and return its row once every loop is ready.

    The member's ``workers``, ``backend``, ``timeout`` and ``env`` apply; ``workers`` and
    ``timeout`` given here override the file's. The service starts from a starter process whose
    environment carries the member's ``env``: the supervisor and its loops inherit the environment
    of the process that starts them, and the variables must not be set in this process, where other
    threads may be starting other members. Raises ServiceAlreadyRunning, or ServiceStartError with
    the loops' own errors.
    """
    env = member.env
    wait = timeout if timeout is not None else member.spec.timeout
    deadline = (wait if wait is not None else env.settings.cluster.start_timeout_sec) + _STARTER_MARGIN_SEC
    starter = subprocess.Popen(
        _starter_command(member, workers, wait),
        env={**os.environ, **member.spec.env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = starter.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        starter.kill()
        starter.communicate()
        raise ServiceStartError(
            f"no answer from the starter of service {env.app_target!r} within {deadline:.0f}s"
        ) from None
    answer = _last_answer(out)
    if answer is None:
        raise ServiceStartError(
            f"the starter of service {env.app_target!r} exited {starter.returncode}: {err.strip()[-2000:]}"
        )
    if not answer.ok:
        remedy = Remedy(**answer.remedy) if answer.remedy else None
        refusal = ServiceAlreadyRunning if answer.kind == "already_running" else ServiceStartError
        raise refusal(str(answer.error), remedy=remedy)
    return summarize(member.service, member.name, enabled=member.spec.enabled)


def _starter_command(member: Member, workers: int | None, wait: float | None) -> list[str]:
    slots = workers if workers is not None else member.spec.workers
    command = [sys.executable, "-m", "keepwarm.groups.starter", *member.env.child_args()]
    if slots is not None:
        command += ["--slots", str(slots)]
    if member.spec.backend is not None:
        command += ["--backend", member.spec.backend]
    if wait is not None:
        command += ["--timeout", str(wait)]
    return command


def _last_answer(out: str) -> StarterAnswer | None:
    """The starter's answer: its last stdout line that is one (an app may print lines of its own)."""
    for line in reversed(out.splitlines()):
        try:
            return StarterAnswer.model_validate_json(line)
        except ValidationError:
            continue
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m keepwarm.groups.starter``: start one service and print one JSON line saying how it went."""
    parser = argparse.ArgumentParser(prog="python -m keepwarm.groups.starter", description=main.__doc__)
    parser.add_argument("--app", required=True)
    parser.add_argument("--share-dir", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--slots", type=int)
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--backend", choices=("local", "dask"))
    options = parser.parse_args(argv)
    try:
        env = Env(options.app, share_dir=options.share_dir, namespace=options.namespace)
        # ``backend`` is passed only when the fleet names one: the keyword comes with the Dask backend.
        start: Callable[..., str] = lifecycle.start_service
        chosen = {"backend": options.backend} if options.backend else {}
        start(env, slots=options.slots, timeout=options.timeout, **chosen)
    except KeepwarmError as exc:
        kind: Literal["already_running", "failed"] = (
            "already_running" if isinstance(exc, ServiceAlreadyRunning) else "failed"
        )
        remedy = asdict(exc.remedy) if exc.remedy else None
        _answer(StarterAnswer(ok=False, kind=kind, error=exc.problem, remedy=remedy))
        return 1
    except Exception as exc:  # reported to the fleet as this member's error, not lost in a traceback
        _answer(StarterAnswer(ok=False, kind="failed", error=repr(exc)))
        return 1
    _answer(StarterAnswer(ok=True, kind="started"))
    return 0


def _answer(answer: StarterAnswer) -> None:
    print(answer.model_dump_json(exclude_none=True), flush=True)


if __name__ == "__main__":
    sys.exit(main())
