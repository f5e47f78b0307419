"""``run --benchmark``: the same work plan in every available mode, timed, ranked, and compared.

Each mode is a complete cold run (cluster start, process spawns, the app's ``start()``), as the
reference system's benchmark measures it: modes python and cython too run in a fresh process of
keepwarm's own (``run(contained=True)``), so that none of them finds the app's libraries already
imported by another, and an app that ends its interpreter fails its mode instead of the benchmark's
caller; the plan, when it must be built, is built in such a process too (``distribute_in_child``).
A Cython build is made once before the timed runs, so mode cython measures running compiled
code, not compiling it. The timings go to ``<log_dir>/benchmark.json`` (``timings.py``): the entries
of the modes run replace theirs, the other modes' entries of the same work plan are kept, each dated,
and every entry carries the digest of its output table, which must be equal in every mode.
"""

from __future__ import annotations

from typing import Any

from keepwarm.env import Env
from keepwarm.errors import ModeError
from keepwarm.runmode.contained import distribute_in_child
from keepwarm.runmode.modes import RunMode, available_benchmark_modes, unavailable_reason
from keepwarm.runmode.plan import load_plan
from keepwarm.runmode.record import EventCallback, RunEvent, RunReport
from keepwarm.runmode.runner import run
from keepwarm.runmode.timings import BENCHMARK_FILE, BenchmarkEntry, BenchmarkReport, record_timings

# benchmark.json's names, where the benchmark's callers have always found them
__all__ = ["BENCHMARK_FILE", "BenchmarkEntry", "BenchmarkReport", "benchmark"]


def benchmark(
    env: Env,
    modes: list[str | int | RunMode] | None = None,
    *,
    workers: int | None = None,
    args: dict[str, Any] | None = None,
    scheduler: str | None = None,
    on_event: EventCallback | None = None,
) -> BenchmarkReport:
    """Run every available mode (or ``modes``), record them in ``benchmark.json`` and return it,
    ranked; raises ``ModeError`` when none of the modes can run here."""
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
    if not chosen:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        raise ModeError(f"no mode to benchmark can run here ({reasons}); benchmark.json is unchanged")
    for name, reason in skipped.items():
        say(RunEvent("warning", f"benchmark: skipping {name}: {reason}"))
    saved = load_plan(env)
    if saved is None or args is not None or (workers is not None and workers != len(saved.workers)):
        distribute_in_child(env, workers=workers, args=args)
    if any(mode.cython for mode in chosen):
        from keepwarm.runmode.cython_build import compiled_copy

        say(RunEvent("info", "benchmark: building the Cython copy before the timed runs"))
        compiled_copy(env, on_output=lambda line: say(RunEvent("info", line)))
    reports: list[RunReport] = []
    for mode in chosen:
        say(RunEvent("info", f"benchmark: mode {mode.name} ({len(reports) + 1} of {len(chosen)})"))
        reports.append(run(env, mode, args=args, scheduler=scheduler, on_event=on_event, contained=True))
    recorded = record_timings(env, [report.timing_entry(_digest(env, report)) for report in reports])
    return recorded.model_copy(update={"skipped": skipped})


def _digest(env: Env, report: RunReport) -> str | None:
    if not report.rows:
        return None
    from keepwarm.runmode.data import read_table, table_digest

    return table_digest(read_table(env, report.run_id))
