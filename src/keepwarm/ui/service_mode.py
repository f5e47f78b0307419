"""The page's Service mode: its settings and SLA, START / SUBMIT / STATUS / HEALTH gate / EXPORT
snapshot / STOP, the worker-health table, and a live view that refreshes itself.

Every button calls one method of :class:`keepwarm.Service`; status and health are read from the
service's files, so the page may start a service and another process stop it, or the reverse.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import altair as alt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]  # stubs are not a dependency
import streamlit as st

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.service.gate import GateResult
from keepwarm.service.report import HealthReport, WorkerHealth
from keepwarm.settings import read_snapshot
from keepwarm.settings_form import FormBaseline, form_edits
from keepwarm.ui import snippets, state
from keepwarm.ui.actions import (
    Outcome,
    attempt,
    bind_form,
    field_widget,
    form_baseline,
    initial_from_settings,
    loaded,
    rebase_form,
    recalled,
    reload_button,
    remember,
    show_outcome,
    write_settings,
)
from keepwarm.ui.live import LiveHistory, Sample
from keepwarm.ui.snippets import AppRef

HEALTH_COLUMNS = ["worker", "healthy", "reason", "future_state", "heartbeat_state", "heartbeat_age_sec"]
DETAIL_COLUMNS = ["incarnation", "pid", "restarts", "task_id", "task_age_sec"]
ROW_COLOURS = {"healthy": "#d4edda", "unhealthy": "#f8d7da", "pending": "#fff3cd"}
RETENTION_FIELDS = (
    "done_ttl_hours",
    "failed_ttl_hours",
    "heartbeat_ttl_hours",
    "done_max_files",
    "failed_max_files",
    "heartbeat_max_files",
)
SUBMIT_WAIT_SEC = 30.0
REFRESH_CHOICES = [1, 2, 5, 10, 30]


@dataclass(frozen=True)
class ServiceView:
    """What a service button returned, for the page to draw."""

    report: HealthReport | None = None
    gate: GateResult | None = None
    document: Any = None


def service_mode(env: Env) -> None:
    st.header("Service mode (persistent workers)")
    st.caption(
        "A supervisor keeps long-lived worker loops warm and feeds them tasks from the queue; "
        "status and health are read from the service's files."
    )
    service_settings(env)
    service_actions(env)
    live_view(env)


# ---------------------------------------------------------------------- settings


SERVICE_FIELDS = {
    "heartbeat_timeout_sec": "cluster",
    "stop_timeout_sec": "cluster",
    "shutdown_on_stop": "cluster",
    **dict.fromkeys(RETENTION_FIELDS, "cluster"),
    "allow_idle": "cluster.service_health",
    "max_unhealthy": "cluster.service_health",
    "max_restart_rate": "cluster.service_health",
    "max_pending_age_sec": "cluster.service_health",
}


def service_settings_baseline(env: Env) -> FormBaseline:
    """The Service and SLA settings form of the file as it is now (floats as floats for their widgets)."""
    snapshot = read_snapshot(env.settings_path)
    cluster = snapshot.settings.cluster
    shown = {
        name: getattr(cluster if section == "cluster" else cluster.service_health, name)
        for name, section in SERVICE_FIELDS.items()
    }
    floats = [name for name, value in shown.items() if isinstance(value, float) or name.endswith("_sec")]
    shown |= {name: None if shown[name] is None else float(shown[name]) for name in floats}
    return form_baseline(snapshot, shown, SERVICE_FIELDS)


def service_settings(env: Env) -> None:
    cluster = env.settings.cluster
    sla = cluster.service_health
    with st.expander("Service and SLA settings", expanded=False):
        try:
            bind_form("service", service_settings_baseline(env))
        except KeepwarmError as exc:
            st.error(str(exc))
            return
        timing, retention, gate = st.columns(3)
        form: dict[str, Any] = {}
        with timing:
            st.caption("Loops: [cluster]")
            form["heartbeat_timeout_sec"] = field_widget(
                st.number_input,
                "Heartbeat timeout (s)",
                cluster,
                "heartbeat_timeout_sec",
                "service",
                step=1.0,
            )
            form["stop_timeout_sec"] = field_widget(
                st.number_input, "Stop timeout (s)", cluster, "stop_timeout_sec", "service", step=1.0
            )
            form["shutdown_on_stop"] = field_widget(
                st.toggle, "Shutdown on stop", cluster, "shutdown_on_stop", "service"
            )
        with retention:
            st.caption("Retention: [cluster]")
            for name in RETENTION_FIELDS:
                form[name] = field_widget(
                    st.number_input,
                    name.replace("_", " ").replace("ttl", "TTL"),
                    cluster,
                    name,
                    "service",
                    step=1 if name.endswith("_files") else 1.0,
                )
        with gate:
            st.caption("SLA gate: [cluster.service_health]")
            form["allow_idle"] = field_widget(st.toggle, "allow idle", sla, "allow_idle", "service")
            form["max_unhealthy"] = field_widget(
                st.number_input, "max unhealthy", sla, "max_unhealthy", "service", step=1
            )
            form["max_restart_rate"] = field_widget(
                st.number_input, "max restart rate", sla, "max_restart_rate", "service", step=0.05
            )
            form["max_pending_age_sec"] = field_widget(
                st.number_input,
                "max pending age (s)",
                sla,
                "max_pending_age_sec",
                "service",
                step=1.0,
                placeholder="not checked",
            )
        if st.button("SAVE SERVICE SETTINGS", key=state.key("service.save_settings")):
            baseline = loaded("service")
            edits = form_edits(baseline, form)
            updates = [
                (section, values, baseline.expected(values))
                for section in ("cluster", "cluster.service_health")
                for values in [{k: v for k, v in edits.items() if SERVICE_FIELDS[k] == section}]
            ]
            if remember("service_settings", write_settings(env, updates)).ok:
                rebase_form("service", service_settings_baseline(env))
        show_outcome("service_settings")
        reload_button("service_settings", "service")


# ---------------------------------------------------------------------- actions


def service_actions(env: Env) -> None:
    ref = AppRef.of(env)
    service = Service(env)
    workers_column, *buttons = st.columns([2, 1, 1, 1.3, 1.6, 1])
    initial_from_settings(env, "service.workers")
    workers = int(
        workers_column.number_input(
            "Workers to start", min_value=1, max_value=1024, step=1, key=state.key("service.workers")
        )
    )
    labels = {
        "start": "START",
        "status": "STATUS",
        "health": "HEALTH gate",
        "snapshot": "EXPORT snapshot",
        "stop": "STOP",
    }
    clicked = {
        key: column.button(label, key=state.key(f"service.{key}"), width="stretch")
        for column, (key, label) in zip(buttons, labels.items(), strict=True)
    }
    if clicked["start"]:
        remember("service", start_service(service, ref, workers))
    if clicked["status"]:
        remember("service", read_status(service, ref))
    if clicked["health"]:
        remember("service", check_gate(service, ref))
    if clicked["snapshot"]:
        remember("service", export_snapshot(service, ref))
    if clicked["stop"]:
        remember("service", stop_service(service, ref))

    with st.container(border=True):
        st.markdown("**SUBMIT** a task")
        args_column, options_column = st.columns([3, 1])
        args_text = args_column.text_area(
            "Task args (a JSON object)",
            value=json.dumps(env.settings.args),
            key=state.key("service.args"),
            height=80,
        )
        wait = options_column.toggle("Wait for the result", value=True, key=state.key("service.wait"))
        if options_column.button("SUBMIT", key=state.key("service.submit"), width="stretch"):
            remember("submit", submit_task(service, ref, args_text, SUBMIT_WAIT_SEC if wait else None))
        submitted = show_outcome("submit")
        if submitted is not None and submitted.value is not None:
            st.json(submitted.value)

    show_outcome("service")
    outcome = recalled("service")
    view = outcome.value if outcome is not None else None
    if isinstance(view, ServiceView):
        if view.report is not None:
            show_health_table(view.report)
        if view.gate is not None:
            for reason in view.gate.reasons:
                st.warning(reason)
        if view.document is not None:
            st.json(view.document, expanded=False)


def start_service(service: Service, ref: AppRef, workers: int) -> Outcome:
    snippet = snippets.start(ref, workers)

    def start() -> Outcome:
        began = time.perf_counter()
        report = service.start(slots=workers)
        took = time.perf_counter() - began
        message = f"started {ref.app}: {report.workers_healthy_count} loops ready in {took:.2f}s"
        return Outcome(True, message, snippet, ServiceView(report))

    return attempt(snippet, start)


def read_status(service: Service, ref: AppRef) -> Outcome:
    snippet = snippets.status(ref)

    def status() -> Outcome:
        report = service.status()
        queue = report.queue
        counts = f"{queue.pending} pending, {queue.running} running, {queue.done} done, {queue.failed} failed"
        return Outcome(True, f"status {report.status}: {counts}", snippet, ServiceView(report))

    return attempt(snippet, status)


def check_gate(service: Service, ref: AppRef) -> Outcome:
    snippet = snippets.health_gate(ref)

    def gate() -> Outcome:
        report, verdict = service.health()
        word = "passed" if verdict.passed else "failed"
        message = f"health gate {word} (exit code {verdict.code}), status {report.status}"
        return Outcome(verdict.passed, message, snippet, ServiceView(report, verdict))

    return attempt(snippet, gate)


def export_snapshot(service: Service, ref: AppRef) -> Outcome:
    snippet = snippets.snapshot(ref)

    def export() -> Outcome:
        path = service.snapshot()
        document = json.loads(path.read_text(encoding="utf-8"))
        return Outcome(True, f"snapshot written to {path}", snippet, ServiceView(document=document))

    return attempt(snippet, export)


def stop_service(service: Service, ref: AppRef) -> Outcome:
    snippet = snippets.stop(ref)

    def stop() -> Outcome:
        outcome = service.stop()
        return Outcome(True, str(outcome["message"]), snippet, ServiceView(service.status()))

    return attempt(snippet, stop)


def submit_task(service: Service, ref: AppRef, args_text: str, wait: float | None) -> Outcome:
    try:
        args = json.loads(args_text)
    except json.JSONDecodeError as exc:
        return Outcome(False, f"task args: not JSON: {exc}")
    if not isinstance(args, dict):
        return Outcome(False, 'task args: write a JSON object, e.g. {"x": 27}')
    snippet = snippets.submit(ref, args, wait)

    def submit() -> Outcome:
        handle = service.submit(args)
        if wait is None:
            return Outcome(True, f"task {handle.task_id} queued", snippet)
        record = handle.record(timeout=wait)
        value = record.result if record.status == "done" else {"error": record.error}
        message = f"task {handle.task_id} {record.status} in {1000 * (record.runtime_sec or 0):.1f} ms"
        return Outcome(record.status == "done", message, snippet, value)

    return attempt(snippet, submit)


# ---------------------------------------------------------------------- health table and live view


def health_frame(rows: list[WorkerHealth]) -> pd.DataFrame:
    """The worker-health table: the reference's six columns first, then the loop's details."""
    records = [row.model_dump(include=set(HEALTH_COLUMNS + DETAIL_COLUMNS)) for row in rows]
    return pd.DataFrame.from_records(records, columns=HEALTH_COLUMNS + DETAIL_COLUMNS)


def row_state(row: WorkerHealth) -> str:
    return "healthy" if row.healthy else ("pending" if row.pending else "unhealthy")


def show_health_table(report: HealthReport) -> None:
    """The loops' health, each row coloured: green healthy, red unhealthy, yellow starting."""
    if not report.worker_health:
        st.caption(f"no loops: the service is {report.status}")
        return
    colours = [ROW_COLOURS[row_state(row)] for row in report.worker_health]

    def paint(row: pd.Series) -> list[str]:
        return [f"background-color: {colours[int(str(row.name))]}"] * len(row)

    healthy = report.workers_healthy_count
    st.markdown(f"**{healthy} of {len(report.worker_health)} loops healthy** (status `{report.status}`)")
    styled = health_frame(report.worker_health).style.apply(paint, axis=1).format(precision=3, na_rep="")
    st.table(styled, border="horizontal", hide_index=True)


def line_chart(frame: pd.DataFrame) -> alt.Chart:
    """One line per column over time, with plain numbers on the axis (an all-zero series too)."""
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
    st.fragment(run_every=float(every) if live else None)(live_panel)(env)


def live_panel(env: Env) -> None:
    """Re-run alone every few seconds: status, queue counts, heartbeat ages and throughput."""
    service = Service(env)
    report = service.status()
    histories: dict[str, LiveHistory] = st.session_state.setdefault("live.histories", {})
    history = histories.setdefault(str(env.service_dir), LiveHistory())
    history.add(Sample.of(report, time.time()))

    queue = report.queue
    columns = st.columns(6)
    columns[0].metric("Status", report.status)
    columns[1].metric("Pending", queue.pending)
    columns[2].metric("Running", queue.running)
    columns[3].metric("Done", queue.done)
    columns[4].metric("Failed", queue.failed)
    rate = history.recent_throughput()
    columns[5].metric("Tasks/s (last 10 s)", "—" if rate is None else f"{rate:.1f}")
    show_health_table(report)

    samples = list(history.samples)
    if len(samples) >= 2:
        times = pd.to_datetime([s.at for s in samples], unit="s")
        series = history.throughput()
        charts = {
            "Queue": pd.DataFrame(
                {"pending": [s.pending for s in samples], "running": [s.running for s in samples]},
                index=times,
            ),
            "Heartbeat age (s)": pd.DataFrame([s.heartbeat_ages for s in samples], index=times),
            "Throughput (tasks/s)": pd.DataFrame(
                {"tasks/s": [rate for _, rate in series]},
                index=pd.to_datetime([at for at, _ in series], unit="s"),
            ),
        }
        for column, (title, frame) in zip(st.columns(3), charts.items(), strict=True):
            with column:
                st.caption(title)
                if not frame.empty:
                    st.altair_chart(line_chart(frame), width="stretch")
    recent = [row.to_json_dict() for row in service.tasks(limit=5)]
    if recent:
        st.caption("Recent tasks")
        st.table(pd.DataFrame.from_records(recent), hide_index=True)
