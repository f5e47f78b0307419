"""``run --benchmark``: the same work plan in every available mode, timed, ranked, and compared.

Each mode is a complete cold run (cluster start, process spawns, the app's ``start()``), as the
reference system's benchmark measures it; a Cython build is made once before the timed runs, so mode
cython measures running compiled code, not compiling it, and an untimed run in this process comes
first, so that python and cython (which run in this process) do not differ by who imported the app's
libraries first. ``<log_dir>/benchmark.json`` has the
reference's shape, one entry per mode: ``{"<mode>": {variant, nodes, node, mode, timing, seconds,
order, delta}}`` (``variant`` is the mode's bits, ``order`` 1 the fastest, ``delta`` the seconds
behind it), plus ``run_id``, ``rows`` and ``digest``, the digest of the output table, equal in every
mode.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from pydantic import BaseModel, ConfigDict

from keepwarm.atomic import write_atomic
from keepwarm.env import Env, ensure_private_dir
from keepwarm.modes import RunMode, available_benchmark_modes, unavailable_reason
from keepwarm.plan import distribute, load_plan
from keepwarm.runner import EventCallback, RunEvent, RunReport, run

BENCHMARK_FILE = "benchmark.json"


class BenchmarkEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: int
    nodes: int
    node: str
    mode: str
    timing: str
    seconds: float
    order: int = 0
    delta: float = 0.0
    run_id: str
    rows: int
    digest: str | None


class BenchmarkReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    entries: dict[str, BenchmarkEntry]
    skipped: dict[str, str]

    @property
    def ranked(self) -> list[BenchmarkEntry]:
        return sorted(self.entries.values(), key=lambda entry: entry.order)

    @property
    def same_output(self) -> bool:
        return len({entry.digest for entry in self.entries.values()}) <= 1


def timing(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.3f} s" if minutes else f"{rest:.3f} s"


def benchmark(
    env: Env,
    modes: list[str | int | RunMode] | None = None,
    *,
    workers: int | None = None,
    args: dict[str, Any] | None = None,
    scheduler: str | None = None,
    on_event: EventCallback | None = None,
) -> BenchmarkReport:
    """Run every available mode (or ``modes``), write ``benchmark.json`` and return the ranking."""
    say = on_event or (lambda event: None)
    if modes is None:
        chosen, skipped = available_benchmark_modes()
    else:
        chosen, skipped = [], {}
        for mode in map(RunMode.parse, modes):
            reason = unavailable_reason(mode)
            if reason:
                skipped[mode.name] = reason
            else:
                chosen.append(mode)
    for name, reason in skipped.items():
        say(RunEvent("warning", f"benchmark: skipping {name}: {reason}"))
    saved = load_plan(env)
    if saved is None or args is not None or (workers is not None and workers != len(saved.workers)):
        distribute(env, workers=workers, args=args)
    if any(mode.cython for mode in chosen):
        from keepwarm.cython_build import compiled_copy

        say(RunEvent("info", "benchmark: building the Cython copy before the timed runs"))
        compiled_copy(env, on_output=lambda line: say(RunEvent("info", line)))
    if any(mode.executor == "python" for mode in chosen):
        # Modes python and cython run in this process: the first one would also pay for importing
        # the app's libraries (pandas, ...), which the second finds loaded. One untimed run first.
        say(
            RunEvent("info", "benchmark: an untimed run in this process first, to import the app's libraries")
        )
        run(env, "python", args=args, scheduler=scheduler)
    reports: dict[str, RunReport] = {}
    for mode in chosen:
        say(RunEvent("info", f"benchmark: mode {mode.name} ({len(reports) + 1} of {len(chosen)})"))
        reports[mode.name] = run(env, mode, args=args, scheduler=scheduler, on_event=on_event)
    entries = {name: _entry(env, report) for name, report in reports.items()}
    fastest = min((entry.seconds for entry in entries.values()), default=0.0)
    for order, entry in enumerate(sorted(entries.values(), key=lambda e: e.seconds), start=1):
        entry.order = order
        entry.delta = round(entry.seconds - fastest, 6)
    path = ensure_private_dir(env.log_dir) / BENCHMARK_FILE
    document = {name: entry.model_dump(mode="json") for name, entry in entries.items()}
    write_atomic(path, (json.dumps(document, indent=2) + "\n").encode())
    return BenchmarkReport(path=str(path), entries=entries, skipped=skipped)


def _entry(env: Env, report: RunReport) -> BenchmarkEntry:
    digest = None
    if report.rows:
        from keepwarm.data import read_table, table_digest

        digest = table_digest(read_table(env, report.run_id))
    return BenchmarkEntry(
        variant=report.mode_bits,
        nodes=report.nodes,
        node=socket.gethostname(),
        mode=report.mode,
        timing=timing(report.seconds),
        seconds=report.seconds,
        run_id=report.run_id,
        rows=report.rows,
        digest=digest,
    )
