"""The chaos run: tasks flow through a real service while its processes are killed, frozen and restarted.

One run, on the local or the Dask backend:

1. a copy of the ``flaky`` app is started as a service with N loops; every task sleeps a little in
   ``work()`` and first appends ``<task_id> <pid>`` to one shared file (``record_to``), so each
   execution is on record, including those a kill interrupts;
2. a fifth of the tasks is submitted at once, the rest at a steady rate over most of the chaos window;
3. for ``seconds``, every ``kill_every`` seconds a random loop gets ``SIGKILL`` (on Dask: its worker
   process); early in the window another loop gets ``SIGSTOP`` and stays stopped until the supervisor
   kills it for its stale heartbeat; past the window's middle the supervisor itself gets ``SIGKILL``,
   a batch is submitted while it is dead, and ``Service.start()`` runs again;
4. then the run waits (with a deadline) for every task to have a terminal file and every loop to be
   healthy again, and checks the guarantees: see ``ChaosReport.problems``.

Every signal goes through a pidfd opened before the process is checked to be the one meant (a loop's
command line names its incarnation; a Dask worker is a child of the service's keeper process; the
supervisor's command line names its incarnation), so a reused pid is never signalled. The schedule is
timer-driven on purpose; every wait for an outcome has a deadline.

Used by ``tests/chaos`` (small sizes) and ``bench/chaos.py`` (the issue's full size). No pytest here.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import shutil
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from keepwarm.api import Service
from keepwarm.backends.cluster import read_keeper
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.queue.state import is_planned, read_supervisor_state
from keepwarm.queue.task import TASK_SUFFIX, epoch_of
from keepwarm.runtime.heartbeat import read_heartbeat
from keepwarm.service.report import HealthReport

ROOT = Path(__file__).resolve().parents[2]
FLAKY = ROOT / "examples" / "apps" / "flaky"
HEARTBEAT_INTERVAL = 0.2
SSH_NANNY = b"distributed.cli.dask_spec"  # in the command line of a nanny Dask's SSH cluster starts


@dataclass(frozen=True)
class ChaosPlan:
    """What to run and what to do to it. The defaults are issue 6's full size."""

    backend: str = "local"
    tasks: int = 5000
    loops: int = 4
    seconds: float = 10.0  # how long loops are killed
    kill_every: float = 0.2
    task_seconds: float | None = None  # work() sleeps this long; default: loops * seconds / tasks
    heartbeat_timeout_sec: float | None = None  # default: 2 s local, 4 s on Dask (slower to restart)
    backoff_sec: float = 0.2  # restart back-off, first step and cap: short, so that kills keep
    backoff_max_sec: float = 1.0  # finding live loops instead of slots waiting out a long back-off
    freeze: bool = True
    kill_supervisor: bool = True
    settle_timeout: float = 240.0  # after the chaos, for every task to finish and every loop to be back
    seed: int | None = None
    # how long before the supervisor's kill a loop's kill may go unrecorded (the supervisor died while it
    # handled the exit); default 0.5 s local, heartbeat timeout + 2 s on Dask
    unrecorded_margin_sec: float | None = None

    @property
    def work_seconds(self) -> float:
        if self.task_seconds is not None:
            return self.task_seconds
        return round(self.loops * self.seconds / self.tasks, 4)

    @property
    def heartbeat_timeout(self) -> float:
        if self.heartbeat_timeout_sec is not None:
            return self.heartbeat_timeout_sec
        return 4.0 if self.backend == "dask" else 2.0


def chaos_app(folder: Path, plan: ChaosPlan, source: Path = FLAKY, cluster: str = "") -> Env:
    """A private copy of the ``flaky`` app (or of the app at ``source``, whose package has its folder's
    name) configured for the plan, with ``cluster``'s extra ``[cluster]`` lines; its Env."""
    package = source.name
    target = folder / package
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "app_settings.toml").write_text(
        "[app]\n"
        f'worker = "{package}.worker:Worker"\n'
        f'args_model = "{package}.worker:Args"\n\n'
        "[args]\n\n"
        "[cluster]\n"
        f'backend = "{plan.backend}"\n'
        f"slots = {plan.loops}\n"
        f"{cluster}"
        f"heartbeat_interval_sec = {HEARTBEAT_INTERVAL}\n"
        f"heartbeat_timeout_sec = {plan.heartbeat_timeout}\n"
        "start_timeout_sec = 120\n"
        "stop_timeout_sec = 5\n"
        f"restart_backoff_sec = {plan.backoff_sec}\n"
        f"restart_backoff_max_sec = {plan.backoff_max_sec}\n"
        "done_max_files = 1000000\n"  # retention must not remove a result the run still counts
    )
    return Env(target)


# ---------------------------------------------------------------------- signals by pidfd


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _running(pid: int) -> bool:
    """Not a zombie, not exiting (a process being killed is neither stopped nor frozen again)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X", b"x")


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rpartition(b")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def children_of(parent: int) -> list[int]:
    """The pids whose parent is ``parent`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and parent_of(int(entry)) == parent:
            found.append(int(entry))
    return found


def open_verified(pid: int | None, is_it: Callable[[int], bool]) -> int | None:
    """A pidfd for ``pid`` if the process it names passes ``is_it``; None otherwise.

    The pidfd is opened first and the check made after, so the fd can only name the checked process
    or one that has exited since (a signal to it then fails harmlessly): never a reused pid.
    """
    if pid is None or pid <= 0:
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if not is_it(pid):
        os.close(fd)
        return None
    return fd


def send(fd: int, signum: int) -> bool:
    try:
        signal.pidfd_send_signal(fd, signum)
    except ProcessLookupError:
        return False
    return True


def exited(fd: int, timeout: float = 0.0) -> bool:
    """Whether the process of a pidfd has exited (waiting up to ``timeout``)."""
    readable, _, _ = select.select([fd], [], [], timeout)
    return bool(readable)


# ---------------------------------------------------------------------- the record of a run


@dataclass
class Kill:
    at: float  # seconds into the chaos
    slot: str
    incarnation: str
    pid: int
    supervisor: str  # the incarnation of the supervisor whose loop table named the loop
    state: str = "?"  # what the loop's heartbeat said: starting, ready, processing (none: not yet written)
    wall: float = 0.0  # epoch seconds of the kill
    replaced_at: float | None = None  # seconds into the chaos when the slot's next loop was ready


@dataclass
class Freeze:
    slot: str
    incarnation: str
    pid: int
    fd: int
    stopped_at: float
    ended_at: float | None = None
    replaced: bool = False  # killed by keepwarm (not let go by us at the deadline)

    @property
    def stopped_for(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.stopped_at


@dataclass
class ChaosReport:
    plan: ChaosPlan
    submitted: list[str] = field(default_factory=list)
    started_sec: float = 0.0
    kills: list[Kill] = field(default_factory=list)
    kill_misses: int = 0  # ticks that found no live loop to kill (all restarting)
    freeze: Freeze | None = None
    supervisor_killed_at: float | None = None
    supervisor_down_sec: float | None = None  # SIGKILL until the new start returned
    restart_sec: float | None = None  # the new start alone
    submitted_while_down: int = 0
    start_errors: list[str] = field(default_factory=list)
    chaos_sec: float = 0.0
    elapsed_sec: float = 0.0  # first submit to the last terminal file
    done: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # task_id -> error
    in_both: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)  # task_id -> final attempt
    executions: Counter[str] = field(default_factory=Counter)
    restart_events: list[dict[str, object]] = field(default_factory=list)
    duplicate_events: int = 0
    requeued_events: int = 0
    healthy_at_end: bool = False
    health: HealthReport | None = None

    # -------------------------------------------------------------- derived figures

    @property
    def lost(self) -> list[str]:
        return sorted(set(self.submitted) - self.done - set(self.failed))

    @property
    def duplicate_executions(self) -> int:
        """Executions beyond the first, per task: the price of at-least-once."""
        return sum(count - 1 for count in self.executions.values() if count > 1)

    @property
    def tasks_run_twice(self) -> int:
        return sum(1 for count in self.executions.values() if count > 1)

    @property
    def never_executed(self) -> list[str]:
        return sorted(task for task in self.done if self.executions[task] == 0)

    @property
    def executed_beyond_attempts(self) -> list[str]:
        """Tasks that ran more often than their attempts say: a re-execution nobody accounted for."""
        return sorted(t for t, n in self.executions.items() if t in self.attempts and n > self.attempts[t])

    @property
    def restarts_by_reason(self) -> Counter[str]:
        return Counter(str(event["reason"]) for event in self.restart_events)

    def named(self, kill: Kill) -> str | None:
        """The restart reason keepwarm recorded for a killed loop, if any."""
        event = self._restart_of(kill)
        return None if event is None else str(event["reason"])

    def _restart_of(self, kill: Kill) -> dict[str, object] | None:
        for event in self.restart_events:
            if event.get("incarnation") == kill.incarnation:
                return event
        return None

    @property
    def seen_after(self) -> list[float]:
        """For each named kill, seconds from the kill to the restart event the supervisor wrote."""
        delays = []
        for kill in self.kills:
            event = self._restart_of(kill)
            if event is not None:
                delays.append((epoch_of(str(event["timestamp"])) or kill.wall) - kill.wall)
        return sorted(delays)

    @property
    def replaced_in(self) -> list[float]:
        """Seconds from a kill to the slot's next loop being ready (its heartbeat, an incarnation never
        signalled, saying ready or processing; as often as the run polls): the time one replacement
        takes. Left out: a kill whose next loop was killed too before it was ready (a chain), and one
        whose replacement waited for the killed supervisor's successor (its downtime is its own row)."""
        return sorted(
            (kill.replaced_at or kill.at) - kill.at
            for kill in self.kills
            if self._replacement_kind(kill) == "one"  # (so replaced_at is set)
        )

    def _replacement_kind(self, kill: Kill) -> str:
        """one, chain, supervisor (see replaced_in), or never (the slot did not serve again)."""
        if kill.replaced_at is None:
            return "never"
        if any(other.slot == kill.slot and kill.at < other.at < kill.replaced_at for other in self.kills):
            return "chain"
        killed = self.supervisor_killed_at
        if (
            killed is not None
            and kill.at < killed + (self.supervisor_down_sec or 0)
            and kill.replaced_at > killed
        ):
            return "supervisor"
        return "one"

    @property
    def slots_back(self) -> int:
        """Kills whose slot served again (by the end of the run), whatever the kind."""
        return sum(1 for kill in self.kills if kill.replaced_at is not None)

    @property
    def unnamed_kills(self) -> list[Kill]:
        """Kills of a loop whose supervisor lived on, that no restart event names.

        A loop killed moments before its own supervisor was killed may go unrecorded (the supervisor
        died first); it is left out: its tasks are requeued by the next supervisor instead.
        """
        margin = self.plan.unrecorded_margin_sec
        if margin is None:
            margin = 0.5 if self.plan.backend == "local" else self.plan.heartbeat_timeout + 2
        first = self.kills[0].supervisor if self.kills else None
        unnamed = []
        for kill in self.kills:
            died_with_supervisor = (
                self.supervisor_killed_at is not None
                and kill.supervisor == first
                and kill.at > self.supervisor_killed_at - margin
            )
            if self.named(kill) is None and not died_with_supervisor:
                unnamed.append(kill)
        return unnamed

    def _before_supervisor(self, kill: Kill) -> str:
        if self.supervisor_killed_at is None:
            return "no supervisor kill"
        return f"{self.supervisor_killed_at - kill.at:.2f} s before the supervisor's kill"

    def problems(self) -> list[str]:
        """Every guarantee the run broke, in words (empty: none)."""
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} tasks have no terminal file (lost): {self.lost[:5]}")
        if self.in_both:
            found.append(f"{len(self.in_both)} tasks have a terminal file in both done/ and failed/")
        if self.failed:
            errors = Counter(error.partition(":")[0] for error in self.failed.values())
            found.append(f"{len(self.failed)} tasks failed: {dict(errors)}")
        if self.never_executed:
            found.append(
                f"{len(self.never_executed)} tasks are done but never ran: {self.never_executed[:5]}"
            )
        if self.executed_beyond_attempts:
            found.append(
                f"{len(self.executed_beyond_attempts)} tasks ran more often than their attempt count: "
                f"{self.executed_beyond_attempts[:5]}"
            )
        if self.plan.freeze:
            if self.freeze is None:
                found.append("no loop could be frozen")
            elif not self.freeze.replaced:
                found.append(f"the frozen loop {self.freeze.slot} was not killed by the supervisor")
            elif (self.freeze.stopped_for or 0) < self.plan.heartbeat_timeout - HEARTBEAT_INTERVAL:
                # The heartbeat is stale a timeout after its last write, up to an interval before the stop.
                found.append(
                    f"the frozen loop was killed after {self.freeze.stopped_for:.2f}s, before its timeout"
                )
            elif not str(self.named_freeze()).startswith("stale-heartbeat("):
                found.append(
                    f"the frozen loop's restart is named {self.named_freeze()!r}, not stale-heartbeat"
                )
        if self.plan.kill_supervisor and self.restart_sec is None:
            found.append("the supervisor was not killed and started again")
        found += [f"start after the supervisor was killed failed: {error}" for error in self.start_errors]
        if self.unnamed_kills:
            found.append(
                f"{len(self.unnamed_kills)} killed loops have no restart in events.jsonl: "
                f"{[(k.slot, k.incarnation, self._before_supervisor(k)) for k in self.unnamed_kills[:5]]}"
            )
        if not self.healthy_at_end:
            found.append("the service did not come back to every loop healthy")
        if self.health is not None and Counter(self.health.restart_reasons) != self.restarts_by_reason:
            found.append(
                f"health names restarts {dict(self.health.restart_reasons)}, but events.jsonl records "
                f"{dict(self.restarts_by_reason)}"
            )
        return found

    def named_freeze(self) -> str | None:
        if self.freeze is None:
            return None
        return self.named(Kill(0.0, self.freeze.slot, self.freeze.incarnation, self.freeze.pid, ""))

    def rows(self) -> list[tuple[str, str]]:
        """The run's figures, as (measure, value) rows."""
        plan = self.plan
        unplanned = {r: n for r, n in self.restarts_by_reason.items() if not is_planned(r)}
        health = dict(self.health.restart_reasons) if self.health is not None else {}
        freeze = "-"
        if self.freeze is not None:
            freeze = (
                f"{self.freeze.slot}: stopped {self.freeze.stopped_for or 0:.1f}s, "
                f"{self.named_freeze() or 'not named'}"
            )
        return [
            ("backend, loops", f"{plan.backend}, {plan.loops}"),
            (
                "tasks submitted",
                f"{len(self.submitted):,} ({self.submitted_while_down} while the supervisor was dead)",
            ),
            ("work() per task", f"{plan.work_seconds * 1000:g} ms"),
            ("chaos", f"{self.chaos_sec:.1f} s, a kill every {plan.kill_every:g} s"),
            (
                "loops killed (SIGKILL)",
                f"{len(self.kills)} ({self.kill_misses} ticks found no live loop to kill)",
            ),
            ("killed loops' heartbeat said", _fmt(Counter(kill.state for kill in self.kills))),
            ("loop frozen (SIGSTOP)", freeze),
            ("supervisor killed, then start", self._supervisor_row()),
            ("done", f"{len(self.done):,}"),
            ("failed", f"{len(self.failed):,}"),
            ("lost", f"{len(self.lost):,}"),
            ("terminal in both done/ and failed/", f"{len(self.in_both):,}"),
            (
                "duplicate executions (at-least-once)",
                f"{self.duplicate_executions:,} ({self.tasks_run_twice:,} tasks ran more than once)",
            ),
            ("executions beyond the attempt count", f"{len(self.executed_beyond_attempts):,}"),
            ("'duplicate' events (second terminal file refused)", f"{self.duplicate_events:,}"),
            ("'requeued' events", f"{self.requeued_events:,}"),
            ("restarts in events.jsonl, by reason", _fmt(self.restarts_by_reason)),
            ("restarts named by health", _fmt(Counter(health))),
            ("unplanned restarts", f"{sum(unplanned.values())}"),
            ("killed loops not named by a restart", f"{len(self.unnamed_kills)}"),
            ("kill to its restart on record (median, max)", self._seen_after_row()),
            ("kill to the slot's next loop ready (median, max)", self._replaced_in_row()),
            ("every loop healthy at the end", "yes" if self.healthy_at_end else "NO"),
            ("elapsed (first submit to last result)", f"{self.elapsed_sec:.1f} s"),
        ]

    def _seen_after_row(self) -> str:
        delays = self.seen_after
        if not delays:
            return "-"
        return f"{statistics.median(delays):.2f} s, {delays[-1]:.2f} s"

    def _replaced_in_row(self) -> str:
        delays = self.replaced_in
        kinds = Counter(self._replacement_kind(kill) for kill in self.kills)
        notes = [f"{len(delays)} kills"]
        for kind, note in (
            ("chain", "whose next loop was killed too before it was ready"),
            ("supervisor", "replaced after the supervisor's restart"),
            ("never", "whose slot never served again"),
        ):
            if kinds[kind]:
                notes.append(f"{kinds[kind]} more {note}")
        figures = f"{statistics.median(delays):.2f} s, {delays[-1]:.2f} s" if delays else "-"
        return f"{figures} ({'; '.join(notes)})"

    def _supervisor_row(self) -> str:
        if self.restart_sec is None or self.supervisor_down_sec is None:
            return "-"
        return f"down {self.supervisor_down_sec:.2f} s (start took {self.restart_sec:.2f} s)"

    def table(self) -> str:
        rows = self.rows()
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        problems = self.problems()
        lines.append("problems: " + ("none" if not problems else ""))
        lines += [f"  - {problem}" for problem in problems]
        return "\n".join(lines)


def _fmt(counter: Counter[str]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in counter.most_common()) or "none"


# ---------------------------------------------------------------------- the run


class ChaosRun:
    """One chaos run against the service of ``env`` (started here; stopping it is the caller's job).

    ``client``: the same app and share as another host sees it (e.g. the folder an sshfs mount serves),
    through which tasks are submitted and terminal files, records and events counted; default ``env``.
    """

    def __init__(
        self,
        env: Env,
        plan: ChaosPlan,
        say: Callable[[str], None] = lambda _: None,
        client: Env | None = None,
    ) -> None:
        self.env = env
        self.plan = plan
        self.say = say
        self.service = Service(env)
        self.client = self.service if client is None else Service(client)
        self.rng = random.Random(plan.seed)
        self.executions_log = env.app_dir.parent / "executions.log"
        self.report = ChaosReport(plan)
        self.t0 = 0.0
        self.signalled: set[int] = set()  # pids this run has killed or frozen
        self.signalled_incarnations: set[str] = set()  # and their incarnations
        self._first_submit = 0.0

    # -------------------------------------------------------------- processes

    def _loop_table(self) -> tuple[str, list[tuple[str, str, int]]]:
        state = read_supervisor_state(self.env.service_dir / "supervisor.json")
        if state is None:
            return "", []
        rows = [(r.slot, r.incarnation, r.pid) for r in state.loops if r.pid is not None]
        return state.incarnation, rows

    def _is_loop(self, incarnation: str) -> Callable[[int], bool]:
        if self.plan.backend == "dask":
            keeper = read_keeper(self.env.service_dir / "cluster.json")
            if keeper is None and self.env.settings.cluster.hosts:
                # Dask's SSH cluster has no keeper: a worker is the child of a nanny its SSH session ran.
                return lambda pid: SSH_NANNY in _cmdline(parent_of(pid) or 0) and _running(pid)
            return lambda pid: keeper is not None and parent_of(pid) == keeper[1] and _running(pid)
        return lambda pid: incarnation.encode() in _cmdline(pid) and _running(pid)

    def _serving(self, slot: str, incarnation: str) -> bool:
        beat = read_heartbeat(self.service.queue.heartbeats / f"{slot}.json")
        return beat is not None and beat.incarnation == incarnation and beat.state in ("ready", "processing")

    def _pick_loop(self, exclude: set[int], serving: bool = False) -> tuple[str, int, Kill] | None:
        """A random live loop of the current table, as (slot, pidfd, its record); None if none is.

        A process this run has already signalled is never picked again: the table names it until the
        supervisor has seen it die, and a killed process may take a moment to be gone.
        ``serving``: only a loop whose heartbeat says it is ready or processing (not one still starting).
        """
        supervisor, rows = self._loop_table()
        exclude = exclude | self.signalled
        rows = [row for row in rows if row[2] not in exclude and (not serving or self._serving(*row[:2]))]
        self.rng.shuffle(rows)
        for slot, incarnation, pid in rows:
            fd = open_verified(pid, self._is_loop(incarnation))
            if fd is not None:
                kill = Kill(time.monotonic() - self.t0, slot, incarnation, pid, supervisor, wall=time.time())
                return slot, fd, kill
        return None

    def _kill_a_loop(self) -> None:
        frozen = (
            {self.report.freeze.pid} if self.report.freeze and self.report.freeze.ended_at is None else set()
        )
        picked = self._pick_loop(frozen)
        if picked is None:
            self.report.kill_misses += 1
            return
        slot, fd, kill = picked
        beat = read_heartbeat(self.service.queue.heartbeats / f"{slot}.json")
        kill.state = beat.state if beat is not None and beat.incarnation == kill.incarnation else "none"
        self.signalled.add(kill.pid)
        self.signalled_incarnations.add(kill.incarnation)
        try:
            if send(fd, signal.SIGKILL):
                self.report.kills.append(kill)
            else:
                self.report.kill_misses += 1
        finally:
            os.close(fd)

    def _freeze_a_loop(self) -> None:
        # A loop that has heartbeated: one frozen before its first heartbeat is a missing heartbeat,
        # allowed start_timeout_sec (a slow start() looks the same), not a stale one.
        picked = self._pick_loop(set(), serving=True)
        if picked is None:
            return
        slot, fd, kill = picked
        self.signalled.add(kill.pid)
        self.signalled_incarnations.add(kill.incarnation)
        if not send(fd, signal.SIGSTOP):
            os.close(fd)
            return
        self.report.freeze = Freeze(slot, kill.incarnation, kill.pid, fd, time.monotonic())
        self.say(f"froze {slot} (pid {kill.pid})")

    def _check_freeze(self, let_go_after: float) -> None:
        freeze = self.report.freeze
        if freeze is None or freeze.ended_at is not None:
            return
        if exited(freeze.fd):
            freeze.ended_at, freeze.replaced = time.monotonic(), True
            os.close(freeze.fd)
            self.say(f"the supervisor killed frozen {freeze.slot} after {freeze.stopped_for:.1f}s")
        elif time.monotonic() - freeze.stopped_at > let_go_after:
            self._release_freeze()

    def _release_freeze(self) -> None:
        freeze = self.report.freeze
        if freeze is not None and freeze.ended_at is None:
            send(freeze.fd, signal.SIGCONT)
            freeze.ended_at = time.monotonic()
            os.close(freeze.fd)

    def _kill_supervisor_and_start(self) -> None:
        state = read_supervisor_state(self.env.service_dir / "supervisor.json")
        assert state is not None, "no supervisor.json"
        mark = state.incarnation.encode()
        fd = open_verified(
            state.pid, lambda pid: mark in _cmdline(pid) and b"keepwarm.service.supervisor" in _cmdline(pid)
        )
        assert fd is not None, f"supervisor pid {state.pid} is not running"
        killed = time.monotonic()
        try:
            send(fd, signal.SIGKILL)
            assert exited(fd, 30), f"the supervisor (pid {state.pid}) did not die"
        finally:
            os.close(fd)
        self.report.supervisor_killed_at = killed - self.t0
        self.say(f"killed the supervisor (pid {state.pid})")
        before = len(self.report.submitted)
        self._submit_upto(before + max(1, self.plan.tasks // 20))
        self.report.submitted_while_down = len(self.report.submitted) - before
        for attempt in range(2):
            began = time.monotonic()
            try:
                self.service.start()
            except KeepwarmError as exc:
                self.report.start_errors.append(str(exc).splitlines()[0])
                if attempt == 1:
                    raise
                continue
            self.report.restart_sec = time.monotonic() - began
            self.report.supervisor_down_sec = time.monotonic() - killed
            break
        self.say(f"started again in {self.report.restart_sec:.2f}s")

    def _note_replacements(self) -> None:
        """Stamp each kill whose slot's heartbeat now names a loop this run never signalled, ready or
        processing: the slot serves again. (A loop killed before its first heartbeat leaves an older,
        killed incarnation's in place, which does not count.)"""
        waiting = [kill for kill in self.report.kills if kill.replaced_at is None]
        beats = {
            slot: read_heartbeat(self.service.queue.heartbeats / f"{slot}.json")
            for slot in {kill.slot for kill in waiting}
        }
        now = time.monotonic() - self.t0
        for kill in waiting:
            beat = beats[kill.slot]
            if (
                beat is not None
                and beat.incarnation not in self.signalled_incarnations
                and beat.state in ("ready", "processing")
            ):
                kill.replaced_at = now

    # -------------------------------------------------------------- tasks

    def _submit_upto(self, count: int) -> None:
        count = min(count, self.plan.tasks)
        missing = count - len(self.report.submitted)
        if missing <= 0:
            return
        args = {"action": "sleep", "seconds": self.plan.work_seconds, "record_to": str(self.executions_log)}
        handles = self.client.submit_many(({"args": args} for _ in range(missing)), queue_only=True)
        self.report.submitted += [handle.task_id for handle in handles]

    def _terminal(self) -> tuple[set[str], set[str]]:
        def ids(folder: Path) -> set[str]:
            return {
                n[: -len(TASK_SUFFIX)] for n in os.listdir(folder) if n.endswith(TASK_SUFFIX) and n[0] != "."
            }

        return ids(self.client.queue.done), ids(self.client.queue.failed)

    # -------------------------------------------------------------- the schedule

    def run(self) -> ChaosReport:
        plan, report = self.plan, self.report
        began = time.monotonic()
        self.service.start()
        report.started_sec = time.monotonic() - began
        self.say(f"started {plan.loops} loops on {plan.backend} in {report.started_sec:.1f}s")
        try:
            self._chaos()
        finally:
            self._release_freeze()
        self._submit_upto(plan.tasks)
        self._settle()
        return report

    def _chaos(self) -> None:
        plan, report = self.plan, self.report
        upfront = plan.tasks // 5
        self._first_submit = time.monotonic()
        self._submit_upto(upfront)
        self.t0 = time.monotonic()
        next_kill = self.t0 + plan.kill_every
        freeze_at = self.t0 + min(1.0, plan.seconds * 0.1)
        let_go_after = plan.heartbeat_timeout * 3 + 15
        supervisor_done = not plan.kill_supervisor
        freeze_given_up = not plan.freeze
        paused = 0.0
        while True:
            now = time.monotonic()
            spent = now - self.t0 - paused
            # A twentieth of the tasks is kept back for the supervisor's downtime.
            paced = plan.tasks - (0 if supervisor_done else plan.tasks // 20)
            self._submit_upto(upfront + int((paced - upfront) * min(1.0, spent / (0.8 * plan.seconds))))
            if not freeze_given_up and report.freeze is None and now >= freeze_at:
                self._freeze_a_loop()
                freeze_given_up = report.freeze is None and spent > plan.seconds + let_go_after
            self._check_freeze(let_go_after)
            freeze_over = freeze_given_up or (
                report.freeze is not None and report.freeze.ended_at is not None
            )
            if not supervisor_done and spent >= plan.seconds * 0.6 and freeze_over:
                down_from = time.monotonic()
                self._kill_supervisor_and_start()
                paused += time.monotonic() - down_from  # the kill window does not count the downtime
                supervisor_done = True
                next_kill = time.monotonic() + plan.kill_every
                continue
            if spent < plan.seconds and now >= next_kill:
                self._kill_a_loop()
                next_kill = max(next_kill + plan.kill_every, now)
            if spent >= plan.seconds and supervisor_done and freeze_over:
                break
            self._note_replacements()
            time.sleep(max(0.0, min(next_kill - time.monotonic(), 0.05)))
        report.chaos_sec = time.monotonic() - self.t0
        self.say(f"chaos over after {report.chaos_sec:.1f}s: {len(report.kills)} loops killed")

    def _settle(self) -> None:
        """Wait (with a deadline) for every task's terminal file and every loop's health; then count."""
        report = self.report
        wanted = set(report.submitted)
        deadline = time.monotonic() + self.plan.settle_timeout
        while True:
            done, failed = self._terminal()
            if wanted <= done | failed or time.monotonic() > deadline:
                break
            self._note_replacements()
            time.sleep(0.05)
        report.elapsed_sec = time.monotonic() - self._first_submit
        self.say(f"{len((done | failed) & wanted):,} of {len(wanted):,} tasks finished")

        def healthy() -> bool:
            status = self.service.status()
            return status.workers_healthy_count == self.plan.loops and status.workers_unhealthy_count == 0

        while not (report_healthy := healthy()) and time.monotonic() < deadline + 60:
            self._note_replacements()
            time.sleep(0.1)
        report.healthy_at_end = report_healthy
        self._note_replacements()
        self._count()

    def _count(self) -> None:
        report, queue = self.report, self.client.queue
        done, failed = self._terminal()
        wanted = set(report.submitted)
        report.done = done & wanted
        report.in_both = done & failed
        for task_id in sorted((done | failed) & wanted):
            record = queue.read_record(task_id)
            if record is None:
                continue
            report.attempts[task_id] = record.attempt
            if record.status != "done":
                report.failed[task_id] = record.error or record.status
        with contextlib.suppress(FileNotFoundError):
            report.executions = count_executions(self.executions_log.read_text(), wanted)
        events = []
        for path in (queue.events.path.with_name(queue.events.path.name + ".1"), queue.events.path):
            with contextlib.suppress(FileNotFoundError):
                events += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        report.restart_events = [e for e in events if e.get("event") == "restart"]
        report.duplicate_events = sum(1 for e in events if e.get("event") == "duplicate")
        report.requeued_events = sum(1 for e in events if e.get("event") == "requeued")
        report.health, _ = self.service.health()


def count_executions(text: str, task_ids: set[str]) -> Counter[str]:
    """Executions per task from ``record_to`` lines (``<task_id> <pid>``).

    A loop killed while it appends its line can leave part of it (Linux checks for a fatal signal
    between pages of a write, so a line that crosses a page boundary can be cut), glued to the next
    line: every known task id found in such a line counts as one execution.
    """
    executions: Counter[str] = Counter()
    for line in text.splitlines():
        task_id, _, pid = line.partition(" ")
        if task_id in task_ids and pid.isdigit():
            executions[task_id] += 1
            continue
        for start in range(len(line) - 31):
            if line[start : start + 32] in task_ids:
                executions[line[start : start + 32]] += 1
    return executions


def run_chaos(
    env: Env, plan: ChaosPlan, say: Callable[[str], None] = lambda _: None, client: Env | None = None
) -> ChaosReport:
    """Start the service of ``env`` and run the plan against it (tasks submitted and counted through
    ``client``, default ``env``); the caller stops the service."""
    return ChaosRun(env, plan, say, client).run()


def kill_keeper_and_workers(env: Env) -> None:
    """After a Dask run: SIGKILL the keeper a killed supervisor may have left, and its worker processes."""
    kept = read_keeper(env.service_dir / "cluster.json")
    if kept is None:
        return
    keeper = kept[1]
    fds = [open_verified(pid, lambda p: parent_of(p) == keeper) for pid in children_of(keeper)]
    keeper_fd = open_verified(keeper, lambda p: b"keepwarm.backends.cluster" in _cmdline(p))
    for fd in [keeper_fd, *fds]:
        if fd is not None:
            send(fd, signal.SIGKILL)
            os.close(fd)
