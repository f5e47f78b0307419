"""The page's Service mode: its settings and SLA, START / SUBMIT / STATUS / HEALTH gate / EXPORT
snapshot / STOP, what each read (with when), and the live view (``live_view``) that refreshes itself.

Every button calls one method of :class:`keepwarm.Service`; status and health are read from the
service's files, so the page may start a service and another process stop it, or the reverse.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import streamlit as st

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.service.gate import GateResult
from keepwarm.service.report import HealthReport
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
from keepwarm.ui.live import clock
from keepwarm.ui.live_view import live_view, show_health_table
from keepwarm.ui.snippets import AppRef

RETENTION_FIELDS = (
    "done_ttl_hours",
    "failed_ttl_hours",
    "heartbeat_ttl_hours",
    "done_max_files",
    "failed_max_files",
    "heartbeat_max_files",
)
SUBMIT_WAIT_SEC = 30.0


@dataclass(frozen=True)
class ServiceView:
    """What a service button returned, for the page to draw; ``read_at`` (epoch seconds) is when the
    report was read: the page says so, since the live view below moves on and this does not."""

    report: HealthReport | None = None
    gate: GateResult | None = None
    document: Any = None
    read_at: float | None = None
    action: str = ""


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

    submit_box(env, service, ref)
    with st.container(key=state.key("service.panel")):
        show_outcome("service")
        outcome = recalled("service")
        if outcome is not None and isinstance(outcome.value, ServiceView):
            show_service_view(outcome.value)


def submit_box(env: Env, service: Service, ref: AppRef) -> None:
    """SUBMIT: the box starts with what a task of this app gets by default (the file's ``[args]``
    through its args model, defaults filled in), read once per app and session."""
    with st.container(border=True):
        st.markdown("**SUBMIT** a task")
        args_column, options_column = st.columns([3, 1])
        box = state.key("service.args")
        if box not in st.session_state:
            st.session_state[box] = json.dumps(default_task_args(env))
        args_text = args_column.text_area("Task args (a JSON object)", key=box, height=80)
        wait = options_column.toggle("Wait for the result", value=True, key=state.key("service.wait"))
        if options_column.button("SUBMIT", key=state.key("service.submit"), width="stretch"):
            remember("submit", submit_task(service, ref, args_text, SUBMIT_WAIT_SEC if wait else None))
        submitted = show_outcome("submit")
        if submitted is not None and submitted.value is not None:
            st.json(submitted.value)


def default_task_args(env: Env) -> dict[str, Any]:
    """The args a task of ``env``'s app gets by default (``file_args``: the app's model loaded for a
    moment, its modules dropped afterwards)."""
    from keepwarm.runmode.freshness import file_args

    return file_args(env)


def show_service_view(view: ServiceView) -> None:
    """What a button read, with when: a health table is a reading of that moment (the live view
    below is the current one), so it says when and which button read it, collapsed under that line."""
    if view.report is not None:
        when = f" as of {clock(view.read_at)}, read by {view.action}" if view.read_at is not None else ""
        report = view.report
        st.markdown(
            f"**{report.workers_healthy_count} of {len(report.worker_health)} loops healthy** "
            f"(status `{report.status}`){when}; the live view below is current"
        )
        if report.worker_health:
            with st.expander(f"Loops{when}", expanded=False):
                show_health_table(report, headline=False)
    if view.gate is not None:
        for reason in view.gate.reasons:
            st.warning(reason)
    if view.document is not None:
        st.caption("snapshot (JSON)")
        st.json(view.document, expanded=False)


def start_service(service: Service, ref: AppRef, workers: int) -> Outcome:
    snippet = snippets.start(ref, workers)

    def start() -> Outcome:
        began = time.perf_counter()
        report = service.start(slots=workers)
        took = time.perf_counter() - began
        message = f"started {ref.app}: {report.workers_healthy_count} loops ready in {took:.2f}s"
        return Outcome(True, message, snippet, ServiceView(report, read_at=time.time(), action="START"))

    return attempt(snippet, start)


def read_status(service: Service, ref: AppRef) -> Outcome:
    snippet = snippets.status(ref)

    def status() -> Outcome:
        report = service.status()
        queue = report.queue
        counts = f"{queue.pending} pending, {queue.running} running, {queue.done} done, {queue.failed} failed"
        view = ServiceView(report, read_at=time.time(), action="STATUS")
        return Outcome(True, f"status {report.status}: {counts}", snippet, view)

    return attempt(snippet, status)


def check_gate(service: Service, ref: AppRef) -> Outcome:
    snippet = snippets.health_gate(ref)

    def gate() -> Outcome:
        report, verdict = service.health()
        word = "passed" if verdict.passed else "failed"
        message = f"health gate {word} (exit code {verdict.code}), status {report.status}"
        view = ServiceView(report, verdict, read_at=time.time(), action="HEALTH gate")
        return Outcome(verdict.passed, message, snippet, view)

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
        view = ServiceView(service.status(), read_at=time.time(), action="STOP")
        return Outcome(True, str(outcome["message"]), snippet, view)

    return attempt(snippet, stop)


def submit_task(service: Service, ref: AppRef, args_text: str, wait: float | None) -> Outcome:
    try:
        args = json.loads(args_text)
    except json.JSONDecodeError as exc:
        return Outcome(False, f"task args: not JSON: {exc}", refused=True)
    if not isinstance(args, dict):
        return Outcome(False, 'task args: write a JSON object, e.g. {"x": 27}', refused=True)
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
