"""The page's Run section: RUN (``runner.run``, or ``benchmark.benchmark`` of several modes) with its
events streamed into *Run logs*, and the benchmark's ranking."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd  # type: ignore[import-untyped, unused-ignore]  # stubs are not a dependency
import streamlit as st

from keepwarm.env import Env
from keepwarm.runmode.benchmark import BENCHMARK_FILE, BenchmarkEntry, BenchmarkReport, benchmark
from keepwarm.runmode.modes import (
    BENCHMARK_BITS,
    RAPIDS,
    RunMode,
    available_benchmark_modes,
    settings_mode,
    unavailable_reason,
)
from keepwarm.runmode.runner import RunEvent, RunReport, run
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
    choices = mode_choices(env)
    mode_column, bench_column = st.columns(2)
    initial_from_settings(env, "run.mode")
    mode = str(mode_column.selectbox("Mode", choices, key=state.key("run.mode")))
    every = bench_column.toggle("Benchmark all modes", value=False, key=state.key("run.benchmark"))
    modes: list[str] | None = None
    if every:
        runnable, skipped = available_benchmark_modes()
        names = [m.name for m in runnable]
        picked = bench_column.multiselect(
            "Modes to benchmark", names, default=names, key=state.key("run.bench_modes")
        )
        modes = None if list(picked) == names else [str(name) for name in picked]
        for name, why in skipped.items():
            bench_column.caption(f"not here: {name}: {why}")
    reason = None if every else unavailable_reason(RunMode.parse(mode))
    if reason:
        st.warning(reason)
    snippet = snippets.benchmark(ref, modes) if every else snippets.run(ref, mode)
    with st.expander("Python and CLI", expanded=False):
        show_snippet(snippet)
    ready = installed(env)
    if not ready:
        st.caption("INSTALL first: a successful install enables RUN")
    if st.button("RUN", key=state.key("run.run"), type="primary", disabled=not ready):
        log: list[str] = []

        chosen: list[str | int | RunMode] | None = None if modes is None else list(modes)

        def act() -> Outcome:
            if every:
                ranking = stream(
                    lambda say: benchmark(env, chosen, on_event=lambda e: say(describe_event(e))),
                    "Run logs",
                    log,
                )
                fastest = ranking.ranked[0] if ranking.ranked else None
                best = f"; fastest: {fastest.mode} in {fastest.timing}" if fastest else ""
                message = f"benchmarked {len(ranking.entries)} modes{best} (written to {ranking.path})"
                return Outcome(True, message, snippet, ranking, log)
            report = stream(
                lambda say: run(env, mode, on_event=lambda e: say(describe_event(e))), "Run logs", log
            )
            message = (
                f"run {report.run_id} {report.status} in {report.seconds:.2f}s, mode {report.mode}: "
                f"{report.rows} rows in {report.output_dir}"
            )
            return Outcome(True, message, snippet, report, log)

        remember("run", attempt(snippet, act, log))
    outcome = show_outcome("run", with_snippet=False)
    show_log("Run logs", outcome)
    if outcome is not None and isinstance(outcome.value, RunReport):
        st.json(outcome.value.to_json_dict(), expanded=False)
    benchmark_results(env, outcome.value if outcome is not None else None)


def saved_benchmark(env: Env) -> BenchmarkReport | None:
    """``benchmark.json`` of the app's log folder, as the benchmark wrote it (None if there is none)."""
    path = env.log_dir / BENCHMARK_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        entries = {name: BenchmarkEntry.model_validate(entry) for name, entry in document.items()}
    except (OSError, ValueError, AttributeError):
        return None
    return BenchmarkReport(path=str(path), entries=entries, skipped={})


def benchmark_results(env: Env, latest: Any) -> None:
    ranking = latest if isinstance(latest, BenchmarkReport) else saved_benchmark(env)
    if ranking is None or not ranking.entries:
        return
    st.subheader("Benchmark results")
    rows = [entry.model_dump() for entry in ranking.ranked]
    table = pd.DataFrame.from_records(
        rows, columns=["order", "mode", "variant", "seconds", "delta", "timing", "rows", "digest"]
    )
    left, right = st.columns(2)
    with left:
        st.table(table, hide_index=True)
        st.caption(
            f"{ranking.path}; "
            + ("every mode produced the same table" if ranking.same_output else "the modes' outputs DIFFER")
        )
        for name, why in ranking.skipped.items():
            st.caption(f"skipped {name}: {why}")
    with right:
        st.bar_chart(table.set_index("mode")[["seconds"]], horizontal=True, height=240)
