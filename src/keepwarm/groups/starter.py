"""Starting one member of a fleet from a starter child process, whose environment carries the
member's ``env``; the child reports how the start went in keepwarm's child line protocol
(``keepwarm._sys.child``): ``started``, ``already_running`` or ``failed`` (with ``error`` and ``remedy``).

``python -m keepwarm.groups.starter --app ... --share-dir ... --namespace ...`` is the child.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from keepwarm._sys.child import child_command, child_parser, flag, last_report, report
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError, Remedy, ServiceAlreadyRunning, ServiceStartError
from keepwarm.groups.namespace import ServiceSummary, summarize
from keepwarm.service import lifecycle

if TYPE_CHECKING:
    from keepwarm.groups.fleet import Member

STARTER_MODULE = "keepwarm.groups.starter"
# Seconds a member's starter process gets beyond the member's own start timeout (its imports, the fork).
_STARTER_MARGIN_SEC = 30.0
# What the starter reports: the member started; it was running already; it did not start.
STARTED, ALREADY_RUNNING, FAILED = "started", "already_running", "failed"


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
    answer = last_report(out, STARTED, ALREADY_RUNNING, FAILED)
    if answer is None:
        raise ServiceStartError(
            f"the starter of service {env.app_target!r} exited {starter.returncode}: {err.strip()[-2000:]}"
        )
    if answer.kind != STARTED:
        remedy = Remedy(**answer.fields["remedy"]) if answer.fields.get("remedy") else None
        refusal = ServiceAlreadyRunning if answer.kind == ALREADY_RUNNING else ServiceStartError
        raise refusal(str(answer.fields.get("error")), remedy=remedy)
    return summarize(member.service, member.name, enabled=member.spec.enabled)


def _starter_command(member: Member, workers: int | None, wait: float | None) -> list[str]:
    slots = workers if workers is not None else member.spec.workers
    options = [*flag("--slots", slots), *flag("--backend", member.spec.backend), *flag("--timeout", wait)]
    return child_command(STARTER_MODULE, *options, env=member.env)


def main(argv: list[str] | None = None) -> int:
    """``python -m keepwarm.groups.starter``: start one service and report how it went."""
    parser = child_parser(STARTER_MODULE, main.__doc__)
    parser.add_argument("--slots", type=int)
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--backend", choices=("local", "dask"))
    options = parser.parse_args(argv)
    try:
        env = Env.of_child(options)
        # ``backend`` is passed only when the fleet names one: the keyword comes with the Dask backend.
        start: Callable[..., str] = lifecycle.start_service
        chosen = {"backend": options.backend} if options.backend else {}
        start(env, slots=options.slots, timeout=options.timeout, **chosen)
    except KeepwarmError as exc:
        kind = ALREADY_RUNNING if isinstance(exc, ServiceAlreadyRunning) else FAILED
        report(kind, error=exc.problem, remedy=asdict(exc.remedy) if exc.remedy else None)
        return 1
    except Exception as exc:  # reported to the fleet as this member's error, not lost in a traceback
        report(FAILED, error=repr(exc))
        return 1
    report(STARTED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
