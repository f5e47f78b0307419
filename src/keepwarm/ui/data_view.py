"""The page's Data section: LOAD DATA previews the latest run's output; EXPORT writes chosen columns.

Both call run mode's ``data`` module (``head``, ``export_columns``); the preview is kept in the session,
so it is still there after any other click.
"""

from __future__ import annotations

import streamlit as st

from keepwarm.env import Env
from keepwarm.runmode.data import export_columns, head
from keepwarm.ui import snippets, state
from keepwarm.ui.actions import Outcome, attempt, remember, show_outcome
from keepwarm.ui.snippets import AppRef

PREVIEW_ROWS = 200


def data_section(env: Env) -> None:
    st.header("Data")
    ref = AppRef.of(env)
    if st.button("LOAD DATA", key=state.key("data.load"), type="primary"):
        snippet = snippets.load_data(ref, PREVIEW_ROWS)

        def load() -> Outcome:
            report, table = head(env, rows=PREVIEW_ROWS)
            message = (
                f"run {report.run_id} ({report.mode}): {report.rows} rows, {len(table.columns)} columns; "
                f"the first {len(table)} shown"
            )
            return Outcome(True, message, snippet, table)

        remember("data", attempt(snippet, load))
        state.drop("data.columns")  # a new table: its own columns to choose from
    loaded = show_outcome("data")
    if loaded is None or not loaded.ok:
        return
    table = loaded.value
    st.dataframe(table, hide_index=True)

    st.subheader("Prepare data for export")
    columns = [str(column) for column in table.columns]
    every = st.toggle("Select all", value=True, key=state.key("data.select_all"))
    chosen = st.multiselect(
        "Columns",
        columns,
        default=columns,
        key=state.key("data.columns"),
        disabled=every,
        placeholder="choose columns",
    )
    wanted = None if every else [str(column) for column in chosen]
    target = env.export_dir / "export.csv"
    if st.button(f"EXPORT to {target}", key=state.key("data.export")):
        snippet = snippets.export(ref, wanted)

        def write() -> Outcome:
            report = export_columns(env, wanted)
            message = f"{report.rows} rows of {', '.join(report.columns)} written to {report.path}"
            return Outcome(True, message, snippet, report)

        remember("export", attempt(snippet, write))
    exported = show_outcome("export")
    if exported is not None and exported.ok:
        st.caption(
            "Look at it as a chart with its summary statistics on the **ANALYSIS** page (at the top): "
            "it opens export.csv first."
        )
