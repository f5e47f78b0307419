"""The Service section's live view and worker-health table: a fragment that re-reads the service's
status every few seconds (queue counts, loops, charts of the samples, recent tasks), and says as of
when. pandas and altair are imported where a table or chart is drawn, not with the page.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Literal, NamedTuple

import streamlit as st

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.queue.listing import TaskRow
from keepwarm.service.report import AutoscaleHealth, HealthReport, WorkerHealth
from keepwarm.ui import state
from keepwarm.ui.live import LiveHistory, Sample, clock

if TYPE_CHECKING:  # imported where used: the page's first load does without them
    import altair as alt
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]  # stubs are not a dependency

HEALTH_COLUMNS = ["worker", "healthy", "reason", "future_state", "heartbeat_state", "heartbeat_age_sec"]
DETAIL_COLUMNS = ["incarnation", "pid", "restarts", "task_id", "task_age_sec"]
ROW_COLOURS = {"healthy": "#d4edda", "unhealthy": "#f8d7da", "pending": "#fff3cd"}
TASK_COLUMNS = ["task_id", "task_name", "state", "at", "runtime_sec", "error", "owner"]
REFRESH_CHOICES = [1, 2, 5, 10, 30]


class SeriesAxis(NamedTuple):
    """How the fleet chart draws one series: its y axis's side and offset (pixels), its colour, and
    whether its values are whole numbers (ticks 0, 1, 2…, never 0.5)."""

    orient: Literal["left", "right"]
    offset: int
    colour: str
    whole: bool


# Loops on the right, inside: its one-digit labels leave room for tasks/s's axis beyond it.
FLEET_SERIES = {
    "loops": SeriesAxis("right", 0, "#1f77b4", whole=True),
    "pending": SeriesAxis("left", 0, "#ff7f0e", whole=True),
    "tasks/s": SeriesAxis("right", 44, "#2ca02c", whole=False),
}


def health_frame(rows: list[WorkerHealth]) -> pd.DataFrame:
    """The worker-health table: the reference's six columns first, then the loop's details."""
    import pandas as pd

    records = [row.model_dump(include=set(HEALTH_COLUMNS + DETAIL_COLUMNS)) for row in rows]
    return pd.DataFrame.from_records(records, columns=HEALTH_COLUMNS + DETAIL_COLUMNS)


def row_state(row: WorkerHealth) -> str:
    return "healthy" if row.healthy else ("pending" if row.pending else "unhealthy")


def show_health_table(report: HealthReport, *, headline: bool = True) -> None:
    """The loops' health, each row coloured: green healthy, red unhealthy, yellow starting."""
    if not report.worker_health:
        st.caption(f"no loops: the service is {report.status}")
        return
    colours = [ROW_COLOURS[row_state(row)] for row in report.worker_health]

    def paint(row: pd.Series) -> list[str]:
        return [f"background-color: {colours[int(str(row.name))]}"] * len(row)

    if headline:
        healthy = report.workers_healthy_count
        st.markdown(f"**{healthy} of {len(report.worker_health)} loops healthy** (status `{report.status}`)")
    styled = health_frame(report.worker_health).style.apply(paint, axis=1).format(precision=3, na_rep="")
    st.table(styled, border="horizontal", hide_index=True)


def line_chart(frame: pd.DataFrame) -> alt.Chart:
    """One line per column over time, with plain numbers on the axis (an all-zero series too)."""
    import altair as alt

    long = frame.rename_axis("time").reset_index().melt("time", var_name="series", value_name="value")
    chart: alt.Chart = (
        alt.Chart(long, height=170)
        .mark_line()
        .encode(
            x=alt.X("time:T", title=None, axis=alt.Axis(format="%H:%M:%S")),
            y=alt.Y("value:Q", title=None, axis=alt.Axis(format="~g")),
            color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom")),
        )
    )
    return chart


def live_view(env: Env) -> None:
    st.subheader("Live view")
    toggle_column, every_column = st.columns(2)
    live = toggle_column.toggle("Auto-refresh", value=True, key=state.key("service.live"))
    every = every_column.select_slider(
        "every (s)", options=REFRESH_CHOICES, value=2, key=state.key("service.refresh_sec")
    )
    with st.container(key=state.key("service.live_panel")):
        st.fragment(run_every=float(every) if live else None)(live_panel)(env)


def live_panel(env: Env) -> None:
    """Re-run alone every few seconds: status, queue counts, autoscaling, loops, heartbeat ages and
    throughput."""
    service = Service(env)
    report = service.status()
    now = time.time()
    histories: dict[str, LiveHistory] = st.session_state.setdefault("live.histories", {})
    history = histories.setdefault(str(env.service_dir), LiveHistory())
    history.add(Sample.of(report, now))

    queue = report.queue
    columns = st.columns(6)
    columns[0].metric("Status", report.status)
    columns[1].metric("Pending", queue.pending)
    columns[2].metric("Running", queue.running)
    columns[3].metric("Done", queue.done)
    columns[4].metric("Failed", queue.failed)
    rate = history.recent_throughput()
    columns[5].metric("Tasks/s (last 10 s)", "—" if rate is None else f"{rate:.1f}")
    st.caption(f"as of {clock(now)}")
    show_autoscale(report.autoscale)
    show_health_table(report)
    live_charts(history)
    recent = service.tasks(limit=5)
    if recent:
        st.caption("Recent tasks")
        st.table(tasks_frame(recent), hide_index=True)


def show_autoscale(scaling: AutoscaleHealth) -> None:
    """While the service autoscales: its one-line summary and its last decision (when, from, to, why)."""
    summary = scaling.summary()
    if summary is None:
        return
    with st.container(key=state.key("service.autoscale")):
        st.markdown(f"**{summary}**")
        last = scaling.last_decision
        if last is not None:
            at = clock(datetime.fromisoformat(last.at).timestamp())
            st.caption(f"last decision at {at}: {last.from_loops} → {last.to_loops} loops ({last.why})")


def live_charts(history: LiveHistory) -> None:
    """Loops, pending tasks and throughput on one chart, and each loop's heartbeat age, over the samples
    (from the second one on)."""
    samples = list(history.samples)
    if len(samples) < 2:
        return
    if not history.eventful:
        st.caption(
            "Charts of the loops, the queue, heartbeats and throughput appear once a loop is up or the "
            "queue moves."
        )
        return
    import pandas as pd

    fleet, heartbeats = st.columns([2, 1])
    with fleet:
        st.caption("Loops, pending tasks and throughput")
        st.altair_chart(fleet_chart(history.fleet_series()), width="stretch")
    with heartbeats:
        st.caption("Heartbeat age (s)")
        times = pd.to_datetime([s.at for s in samples], unit="s")
        ages = pd.DataFrame([s.heartbeat_ages for s in samples], index=times)
        if not ages.empty:
            st.altair_chart(line_chart(ages), width="stretch")


def fleet_chart(rows: list[tuple[float, str, float]]) -> alt.LayerChart:
    """``(at, series, value)`` rows drawn as one line per series, each on a y axis of its own (pending
    left, loops and tasks/s right): a backlog in the hundreds does not flatten a few loops."""
    import altair as alt
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=["time", "series", "value"])
    frame["time"] = pd.to_datetime(frame["time"], unit="s")
    colour = alt.Color(
        "series:N",
        title=None,
        scale=alt.Scale(domain=list(FLEET_SERIES), range=[style.colour for style in FLEET_SERIES.values()]),
        legend=alt.Legend(orient="bottom"),
    )
    layers = []
    for name, style in FLEET_SERIES.items():
        line = alt.Chart(frame).mark_line(interpolate="step-after" if name == "loops" else "linear")
        axis = alt.Axis(
            orient=style.orient,
            offset=style.offset,
            titleColor=style.colour,
            format="d" if style.whole else "~g",  # 0, 2.5, 40: never 0.000000
            tickMinStep=1 if style.whole else alt.Undefined,
        )
        layers.append(
            line.transform_filter(alt.datum.series == name).encode(
                x=alt.X("time:T", title=None, axis=alt.Axis(format="%H:%M:%S")),
                y=alt.Y("value:Q", title=name, axis=axis),
                color=colour,
            )
        )
    chart: alt.LayerChart = alt.layer(*layers, height=220).resolve_scale(y="independent")
    return chart


def tasks_frame(rows: list[TaskRow]) -> pd.DataFrame:
    """Recent tasks, one column per field, ``at`` one datetime column (UTC) whatever the state."""
    import pandas as pd

    frame = pd.DataFrame.from_records(
        [
            {
                "task_id": row.task_id,
                "task_name": row.task_name,
                "state": row.state.value,
                "at": row.at,
                "runtime_sec": row.runtime_sec,
                "error": row.error,
                "owner": row.owner,
            }
            for row in rows
        ],
        columns=TASK_COLUMNS,
    )
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return frame
