"""What a run leaves behind: its id, its live log of events, the plan it ran and its report.

A run's folder is ``<share_dir>/<namespace>/data/<app_target>/<run_id>/``: the partitions' output,
the plan the run executed (``work_plan.json``) and the run's record (``run.json``, a ``RunReport``).
Its log is ``<log_dir>/run-<run_id>.log``; each line written there is also a ``RunEvent`` given to the
caller's ``on_event`` as it happens.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm.queue.task import utc_now
from keepwarm.runmode.batch import PartitionOutcome
from keepwarm.runmode.modes import RunMode
from keepwarm.runmode.plan import SavedPlan, plan_from_json
from keepwarm.runmode.timings import BenchmarkEntry, timing

RUN_SCHEMA = "keepwarm.runmode.v1"
RUN_RECORD = "run.json"
RUN_PLAN = "work_plan.json"

EventKind = Literal["info", "warning", "partition", "app"]


@dataclass(frozen=True)
class RunEvent:
    """One line of a run's live log. ``kind``: ``info``, ``warning``, ``partition`` (one finished:
    ``done`` of ``total``), ``app`` (the app's own output)."""

    kind: EventKind
    message: str
    done: int = 0
    total: int = 0
    outcome: PartitionOutcome | None = None  # with kind ``partition``: the partition that finished

    def to_json_dict(self) -> dict[str, Any]:
        """The event as a JSON document (how a run's child process reports it)."""
        outcome = self.outcome.model_dump(mode="json") if self.outcome is not None else None
        return {**self.__dict__, "outcome": outcome}

    @classmethod
    def from_json_dict(cls, document: dict[str, Any]) -> RunEvent:
        """The event ``to_json_dict`` made."""
        document = dict(document)
        outcome = document.pop("outcome", None)
        return cls(**document, outcome=PartitionOutcome.model_validate(outcome) if outcome else None)


EventCallback = Callable[[RunEvent], None]


class RunReport(BaseModel):
    """A finished (or failed) run, as saved in ``<output_dir>/run.json``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str = Field(default=RUN_SCHEMA, alias="schema")
    run_id: str
    app: str
    status: Literal["done", "failed"]
    mode: str
    mode_bits: int
    executor: str
    workers: list[str]
    host: str
    python: str
    started_at: str
    finished_at: str
    seconds: float
    rows: int
    columns: list[str]
    output_dir: str
    log_path: str
    plan_path: str
    moves: int
    code_dir: str
    args: dict[str, Any] | None = None  # of the plan it ran (None before the plan was made)
    error: str | None = None
    partitions: list[PartitionOutcome]

    @property
    def nodes(self) -> int:
        """How many plan workers the run had."""
        return len(self.workers)

    def timing_entry(self, digest: str | None = None) -> BenchmarkEntry:
        """This run's entry of ``benchmark.json``."""
        return BenchmarkEntry(
            variant=self.mode_bits,
            nodes=self.nodes,
            node=self.host,
            mode=self.mode,
            timing=timing(self.seconds),
            seconds=self.seconds,
            date=self.finished_at,
            args=self.args,
            run_id=self.run_id,
            rows=self.rows,
            digest=digest,
        )

    def to_json_dict(self) -> dict[str, Any]:
        """The report as ``run.json`` holds it."""
        return self.model_dump(mode="json", by_alias=True)

    def tracebacks(self) -> list[str]:
        """The tracebacks of the partitions that failed, each headed by the partition and its worker."""
        return [
            f"{p.name} on {p.worker} (pid {p.pid}) failed:\n{p.traceback.rstrip()}"
            for p in self.partitions
            if p.status == "failed" and p.traceback
        ]


@dataclass(frozen=True)
class RunFacts:
    """What a run's report says of the run itself, whatever became of it."""

    run_id: str
    app: str
    mode: RunMode
    output_dir: Path
    log_path: Path
    plan_path: Path


def build_report(
    facts: RunFacts,
    plan: SavedPlan | None,
    outcomes: list[PartitionOutcome],
    *,
    code_dir: Path,
    started_at: str,
    seconds: float,
    error: str | None,
) -> RunReport:
    """The report of a run that worked ``outcomes`` (in any order) of ``plan`` (None: the run ended
    before it had one) and ended with ``error`` (None: done)."""
    outcomes = sorted(outcomes, key=lambda o: o.index)
    columns: list[str] = []
    for outcome in outcomes:
        columns += [c for c in outcome.columns if c not in columns]
    return RunReport(
        run_id=facts.run_id,
        app=facts.app,
        status="failed" if error else "done",
        mode=facts.mode.name,
        mode_bits=facts.mode.bits,
        executor=facts.mode.executor,
        workers=list(plan.workers) if plan else [],
        host=socket.gethostname(),
        python=sys.executable,
        started_at=started_at,
        finished_at=utc_now(),
        seconds=round(seconds, 6),
        rows=sum(o.rows or 0 for o in outcomes),
        columns=columns,
        output_dir=str(facts.output_dir),
        log_path=str(facts.log_path),
        plan_path=str(facts.plan_path),
        moves=len(plan.moves) if plan else 0,
        code_dir=str(code_dir),
        args=plan.args if plan else None,
        error=error,
        partitions=outcomes,
    )


def save_report(output_dir: Path, report: RunReport) -> None:
    """Write the run's record, ``<output_dir>/run.json``."""
    write_atomic(output_dir / RUN_RECORD, report.model_dump_json(by_alias=True, indent=2).encode())


def save_run_plan(output_dir: Path, plan: SavedPlan) -> None:
    """Keep the plan a run executes in its folder."""
    write_atomic(output_dir / RUN_PLAN, json.dumps(plan.to_json_dict(), indent=2).encode())


def plan_of_run(output_dir: Path) -> SavedPlan | None:
    """The plan a run saved in its folder (None before it got that far)."""
    try:
        return plan_from_json(json.loads((output_dir / RUN_PLAN).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def new_run_id() -> str:
    """UTC time, then a random suffix: ``20261122T114927746501Z-40d3``."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(2)}"


class RunLog:
    """A run's live log and progress: each event is appended to the log file (while it is open) and
    given to ``on_event``, counting the partitions done of ``total``."""

    def __init__(self, path: Path, on_event: EventCallback | None) -> None:
        self.path, self.on_event = path, on_event
        self.outcomes: list[PartitionOutcome] = []
        self.total = 0
        self._file: IO[str] | None = None

    @contextlib.contextmanager
    def opened(self) -> Iterator[None]:
        """The log file open for appending (a run in a child process appends to it too)."""
        ensure_private_dir(self.path.parent)
        with open(self.path, "a", encoding="utf-8") as log:
            self._file = log
            try:
                yield
            finally:
                self._file = None

    def emit(self, kind: EventKind, message: str, outcome: PartitionOutcome | None = None) -> None:
        """Log one event of this process's run and pass it on."""
        event = RunEvent(kind, message, len(self.outcomes), self.total, outcome)
        prefix = {"warning": "WARNING ", "app": "| "}.get(kind, "")
        self.write(f"{utc_now()} {prefix}{message}\n")
        if self.on_event is not None:
            self.on_event(event)

    def forward(self, event: RunEvent) -> None:
        """Count and pass on an event of the run's child process (which wrote it in the log itself)."""
        self.total = event.total or self.total
        if event.outcome is not None:
            self.outcomes.append(event.outcome)
        if self.on_event is not None:
            self.on_event(event)

    def write(self, text: str) -> None:
        """Append ``text`` (a traceback) to the log, when it is open."""
        if self._file is not None:
            self._file.write(text)
            self._file.flush()
