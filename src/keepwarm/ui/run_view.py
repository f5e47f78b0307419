"""The page's Run section: RUN (``runner.run``, or ``benchmark.benchmark`` of several modes) with its
events streamed into *Run logs*, and the benchmark's ranking, dated and checked against ``[args]``.

Every run happens in a child process of keepwarm's own (``run(contained=True)``; the benchmark
contains each mode's run and its plan): app code never runs in the page's server, so an app that ends
its interpreter fails its run, and the page says how, with the log kept open, and stays up.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from keepwarm.env import Env
from keepwarm.errors import RunFailed
from keepwarm.runmode.benchmark import BenchmarkReport, benchmark
from keepwarm.runmode.freshness import freshness
from keepwarm.runmode.modes import (
    BENCHMARK_BITS,
    RAPIDS,
    RunMode,
    available_benchmark_modes,
    settings_mode,
    unavailable_reason,
)
from keepwarm.runmode.runner import RunEvent, RunReport, run
from keepwarm.runmode.timings import saved_timings
from keepwarm.ui import snippets, state
from keepwarm.ui.actions import (
    Outcome,
    attempt,
    initial_from_settings,
    remember,
    show_log,
    show_outcome,
    stream,
)
from keepwarm.ui.install_view import installed
from keepwarm.ui.snippet_view import show_snippet
from keepwarm.ui.snippets import AppRef

RUN_LOGS = "Run logs"
TABLE_COLUMNS = ["order", "mode", "variant", "nodes", "node", "seconds", "delta", "timing", "rows", "date"]


def mode_choices(env: Env) -> list[str]:
    """The modes the benchmark knows (with rapids when a GPU is there), and the settings' own mode."""
    bits = list(BENCHMARK_BITS)
    if unavailable_reason(RunMode(RAPIDS)) is None:
        bits += [b | RAPIDS for b in BENCHMARK_BITS]
    names = [RunMode(b).name for b in bits]
    configured = settings_mode(env.settings.cluster).name
    return names if configured in names else [configured, *names]


def describe_event(event: RunEvent) -> str:
    if event.kind == "partition":
        return f"[{event.done}/{event.total}] {event.message}"
    return {"warning": "WARNING ", "app": "| "}.get(event.kind, "") + event.message


def run_section(env: Env) -> None:
    st.header("Run")
    ref = AppRef.of(env)
    mode_column, bench_column = st.columns(2)
    initial_from_settings(env, "run.mode")
    mode = str(mode_column.selectbox("Mode", mode_choices(env), key=state.key("run.mode")))
    every = bench_column.toggle("Benchmark all modes", value=False, key=state.key("run.benchmark"))
    modes: list[str] | None = None
    if every:
        runnable, skipped = available_benchmark_modes()
        names = [m.name for m in runnable]
        # the whole width: the chosen modes' chips wrap inside the box instead of spilling out of a column
        picked = st.multiselect("Modes to benchmark", names, default=names, key=state.key("run.bench_modes"))
        modes = None if list(picked) == names else [str(name) for name in picked]
        if skipped:
            st.caption("not here: " + "; ".join(f"{name}: {why}" for name, why in skipped.items()))
    reason = None if every else unavailable_reason(RunMode.parse(mode))
    if reason:
        st.warning(reason)
    snippet = snippets.benchmark(ref, modes) if every else snippets.run(ref, mode)
    with st.expander("Python, CLI and AGI", expanded=False):
        show_snippet(snippet)
    ready = installed(env)
    if not ready:
        st.caption("INSTALL first: a successful install enables RUN")
    clicked = st.button("RUN", key=state.key("run.run"), type="primary", disabled=not ready)
    message_slot, log_slot = st.empty(), st.empty()  # this run's message and log replace the last one's
    if clicked:
        doing = f"mode {mode}"
        if every:
            doing = "a benchmark of " + (", ".join(modes) if modes is not None else "every mode")
        message_slot.info(f"running {doing} in a process of its own; its log streams below")
        log: list[str] = []
        chosen: list[str | int | RunMode] | None = None if modes is None else list(modes)

        def act() -> Outcome:
            try:
                if every:
                    return benchmarked(env, chosen, snippet, log, log_slot)
                return ran(env, mode, snippet, log, log_slot)
            except RunFailed as failed:  # the failed partitions' tracebacks, under their events
                log.extend(line for text in failed.report.tracebacks() for line in text.splitlines())
                raise

        remember("run", attempt(snippet, act, log))
    with message_slot.container():
        outcome = show_outcome("run", with_snippet=False)
    show_log(RUN_LOGS, outcome, slot=log_slot)
    if outcome is not None and isinstance(outcome.value, RunReport):
        with st.expander("run report (JSON)", expanded=False):
            st.json(outcome.value.to_json_dict(), expanded=True)
    benchmark_results(env, outcome.value if outcome is not None else None)


def ran(env: Env, mode: str, snippet: snippets.Snippet, log: list[str], slot: Any) -> Outcome:
    """RUN of one mode, in a child process, its events streamed into ``slot``."""
    report = stream(
        lambda say: run(env, mode, on_event=lambda e: say(describe_event(e)), contained=True),
        RUN_LOGS,
        log,
        slot,
    )
    message = (
        f"run {report.run_id} {report.status} in {report.seconds:.2f}s, mode {report.mode}: "
        f"{report.rows} rows in {report.output_dir}"
    )
    return Outcome(True, message, snippet, report, log)


def benchmarked(
    env: Env, modes: list[str | int | RunMode] | None, snippet: snippets.Snippet, log: list[str], slot: Any
) -> Outcome:
    """RUN of the benchmark: each mode's run (and the plan) in a child process, streamed into ``slot``."""
    ranking = stream(
        lambda say: benchmark(env, modes, on_event=lambda e: say(describe_event(e))), RUN_LOGS, log, slot
    )
    fastest = ranking.ranked[0] if ranking.ranked else None
    best = f"; fastest: {fastest.mode} in {fastest.timing}" if fastest else ""
    message = f"benchmarked {len(ranking.entries)} modes{best} (written to {ranking.path})"
    return Outcome(True, message, snippet, ranking, log)


def benchmark_results(env: Env, latest: Any) -> None:
    """The ranking of ``benchmark.json`` (or of the benchmark just run): when it was measured, with
    which args (out of date when ``[args]`` changed since), a table and a chart in the ranking's order."""
    ranking = latest if isinstance(latest, BenchmarkReport) else saved_timings(env)
    if ranking is None or not ranking.entries:
        return
    ranked = ranking.ranked
    with st.container(key=state.key("run.bench_results")):
        st.subheader("Benchmark results")
        dates = [entry.date for entry in ranked if entry.date]
        fresh = freshness(env, max(dates) if dates else None, ranked[0].args)
        same = "every mode produced the same table" if ranking.same_output else "the modes' outputs DIFFER"
        st.caption(f"timings {fresh.computed()}; {same}; {ranking.path}")
        stale = fresh.out_of_date()
        if stale:
            st.warning(f"{stale}: RUN the benchmark again to compare the modes on the current [args]")
        for name, why in ranking.skipped.items():
            st.caption(f"skipped {name}: {why}")
        timings_table(ranked)
        timings_chart(ranked)


def timings_table(ranked: list[Any]) -> None:
    """One row per mode, fastest first; no cell wraps (a timing reads ``1 min 2.345 s`` on one line)."""
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]  # stubs are not a dependency

    rows = [entry.model_dump() for entry in ranked]
    for row in rows:
        row["date"] = (row["date"] or "")[:19].replace("T", " ")
    table = pd.DataFrame.from_records(rows, columns=TABLE_COLUMNS)
    styled = (
        table.style.hide(axis="index")
        .format({"seconds": "{:.3f}", "delta": "{:.3f}"})
        .set_properties(**{"white-space": "nowrap"})
    )
    st.table(styled)


def timings_chart(ranked: list[Any]) -> None:
    """Seconds per mode as bars, in the ranking's order (the fastest on top)."""
    import altair as alt
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    data = pd.DataFrame(
        [{"mode": e.mode, "seconds": e.seconds, "timing": e.timing, "order": e.order} for e in ranked]
    )
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("seconds:Q", title="seconds"),
            y=alt.Y("mode:N", sort=[e.mode for e in ranked], title=None),
            tooltip=["order", "mode", "timing"],
        )
        .properties(height=60 + 34 * len(ranked))
    )
    with st.container(key=state.key("run.bench_chart")):
        st.altair_chart(chart, width="stretch")
