"""The ANALYSIS page: a chart and the summary statistics of a run's output or export.csv.

Everything it shows comes from ``keepwarm.runmode.analysis``: the sources (``list_sources``), the
table (``load_source``, kept in the session while the source's stamp is unchanged, so a new export
is read again), the statistics (``summarize``) and the rows to draw (``chart_data``, which refuses a
chart that cannot be drawn, in words shown here). The page only maps those rows to Altair marks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from keepwarm.env import Env
from keepwarm.errors import DataError
from keepwarm.runmode.analysis import (
    CHART_KINDS,
    ChartData,
    Source,
    Summary,
    chart_data,
    list_sources,
    load_source,
    loaded_at,
    nothing_yet,
    suggest_axes,
    summarize,
)
from keepwarm.ui import snippets, state

INTRO = (
    "Look at results instead of reading a table: pick a run's output or the `export.csv` the Data "
    "section wrote, then the columns and the kind of chart. Summary statistics are below the chart."
)
MARKS = {"line": "line", "bar": "bar", "histogram": "bar"}


def analysis_page(env: Env) -> None:
    st.title("ANALYSIS")
    st.caption(INTRO)
    with st.container(key="section-analysis"):
        sources = list_sources(env)
        if not sources:
            st.info(f"Nothing to look at for {env.app_target} yet: {nothing_yet(env)}.")
            return
        source = pick_source(sources)
        try:
            loaded = source_table(env, source)
        except DataError as exc:
            st.error(f"{source.label}: {exc}")
            return
        table = loaded.table
        dated = "written" if source.kind == "export" else "run finished"
        st.caption(
            f"{len(table)} rows × {len(table.columns)} columns · `{source.path}` · "
            f"{dated} {source.when} · read {loaded.read_at}"
        )
        if not len(table.columns):
            st.warning(f"{source.label} has no column to plot")
            return
        chart_section(env, source, table)
        with st.container(key=state.key("analysis.stats")):
            summary_section(loaded.summary)


def pick_source(sources: list[Source]) -> Source:
    """The source picker: export.csv first when there is one, then the runs, newest first."""
    by_key = {source.key: source for source in sources}
    if state.get("analysis.source") not in by_key:
        state.drop("analysis.source")  # that source is gone (or none chosen yet): the first one
    chosen = st.selectbox(
        "Source", list(by_key), format_func=lambda key: by_key[key].label, key=state.key("analysis.source")
    )
    return by_key[str(chosen)]


@dataclass(frozen=True)
class Loaded:
    """A source as the page read it: its table and statistics, and when."""

    stamp: tuple[str, str]  # the source's key and stamp: another one is read again
    table: Any
    summary: Summary
    read_at: str


def source_table(env: Env, source: Source) -> Loaded:
    """The source's table, its statistics and when it was read: read again when the source changed."""
    kept = state.get("analysis.table")
    if isinstance(kept, Loaded) and kept.stamp == (source.key, source.stamp):
        return kept
    table = load_source(env, source)
    loaded = Loaded((source.key, source.stamp), table, summarize(table), loaded_at())
    return state.put("analysis.table", loaded)  # type: ignore[no-any-return]


def picker(label: str, name: str, options: list[Any], default: Any, **extra: Any) -> Any:
    """A selectbox whose kept choice is dropped when the options no longer hold it (another source)."""
    if state.key(name) not in st.session_state or state.get(name) not in options:
        state.put(name, default if default in options else options[0])
    return st.selectbox(label, options, key=state.key(name), **extra)


def chart_section(env: Env, source: Source, table: Any) -> None:
    columns = [str(column) for column in table.columns]
    x_default, y_default = suggest_axes(table)
    kind_col, x_col, y_col, color_col = st.columns(4)
    with kind_col:
        kind = picker("Chart", "analysis.kind", list(CHART_KINDS), "line")
    with x_col:
        x = picker("x", "analysis.x", columns, x_default)
    with y_col:
        y = picker(
            "y",
            "analysis.y",
            [None, *columns],
            y_default,
            format_func=lambda c: "(count rows)" if c is None else c,
            disabled=kind == "histogram",
            help="A histogram counts the rows in each bin of x; a bar chart shows the mean of y per x.",
        )
    with color_col:
        color = picker(
            "Colour",
            "analysis.color",
            [None, *columns],
            None,
            format_func=lambda c: "none" if c is None else c,
        )
    wanted_y = None if kind == "histogram" else y  # a histogram counts rows
    try:
        data = chart_data(table, str(kind), str(x), wanted_y, color)
    except DataError as exc:
        st.error(f"cannot draw this chart: {exc}")
        return
    with st.container(key=state.key("analysis.chart")):
        draw_chart(data)
        if data.note:
            st.caption(data.note)
    with st.expander("Python: the same source, statistics and chart rows"):
        ref = snippets.AppRef.of(env)
        st.code(snippets.analysis(ref, source.key, data.kind, str(x), wanted_y, color), language="python")


def _field(name: str) -> str:
    """A column name as a Vega-Lite field (dots and brackets would mean nested fields)."""
    return name.replace("\\", "\\\\").replace(".", "\\.").replace("[", "\\[").replace("]", "\\]")


def draw_chart(data: ChartData) -> None:
    import altair as alt

    x: dict[str, Any] = {"field": _field(data.x), "type": data.x_type, "title": data.x_title}
    if data.x2 is not None:
        x["bin"] = "binned"
    encoding: dict[str, Any] = {
        "x": alt.X(**x),
        "y": alt.Y(field=_field(data.y), type=data.y_type, title=data.y_title),
        "tooltip": [alt.Tooltip(field=_field(c)) for c in data.frame.columns],
    }
    if data.x2 is not None:
        encoding["x2"] = alt.X2(field=_field(data.x2))
    if data.color is not None:
        kind = data.color_type or "nominal"
        scale = alt.Scale(scheme="category10") if kind == "nominal" else alt.Undefined
        encoding["color"] = alt.Color(field=_field(data.color), type=kind, title=data.color, scale=scale)
    chart = alt.Chart(data.frame, height=380)
    if data.kind == "scatter":
        marked = chart.mark_point(filled=True, opacity=0.7)
    else:
        marked = getattr(chart, f"mark_{MARKS[data.kind]}")()
    st.altair_chart(marked.encode(**encoding), width="stretch")


def summary_section(summary: Summary) -> None:
    st.subheader("Summary statistics")
    st.caption(f"{summary.rows} rows; missing values are not counted")
    if summary.numeric:
        st.table(summary.numeric_table())
    if summary.other:
        st.caption("Other columns: how many values, how many distinct, the most frequent and how often")
        st.table(summary.other_table())
