"""ORCHESTRATE: the web page over keepwarm's core API (``keepwarm ui`` serves it).

Every button calls one core function (``Service``, ``update_settings``, and run mode's ``install``,
``distribute``, ``run``) and renders what it returned, with the equivalent Python and CLI command
(``snippets.py``). The page holds no logic of its own: what it computes it asks keepwarm for.
Widget keys are ``<section>.<name>``; tests and the browser find the widgets by them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped, unused-ignore]  # stubs are not a dependency
import streamlit as st

from keepwarm.api import Service
from keepwarm.env import Env, bundled_apps_path
from keepwarm.errors import KeepwarmError
from keepwarm.health import GateResult, HealthReport, WorkerHealth
from keepwarm.settings import SETTINGS_FILE, ClusterSettings, ServiceHealthSettings, update_settings
from keepwarm.ui import snippets
from keepwarm.ui.live import LiveHistory, Sample
from keepwarm.ui.snippets import AppRef, Snippet

INTRO = (
    "Orchestrate walks through an app's lifecycle: its system settings, install, distribution, runs, "
    "the service mode that keeps its workers warm, and its data. Each action shows the Python and the "
    "CLI command that do the same, so what you click can be scripted; settings are written back to "
    "`app_settings.toml` with their comments kept."
)
HEALTH_COLUMNS = ["worker", "healthy", "reason", "future_state", "heartbeat_state", "heartbeat_age_sec"]
DETAIL_COLUMNS = ["incarnation", "pid", "restarts", "task_id", "task_age_sec"]
ROW_COLOURS = {"healthy": "#d4edda", "unhealthy": "#f8d7da", "pending": "#fff3cd"}
STATUS_ALERTS = {
    "running": "success",
    "idle": "info",
    "degraded": "warning",
    "error": "error",
    "stopped": "info",
}
# The errors an action reports as a message rather than a traceback: keepwarm's own, bad values
# (pydantic's ValidationError is a ValueError) and the file system's.
ACTION_ERRORS = (KeepwarmError, ValueError, OSError)
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
class Outcome:
    """What a section's last action did: a message, what it returned, and its snippet."""

    ok: bool
    message: str
    snippet: Snippet | None = None
    report: HealthReport | None = None
    gate: GateResult | None = None
    value: Any = None
    details: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- small typed helpers


def remember(section: str, outcome: Outcome) -> None:
    st.session_state[f"outcome.{section}"] = outcome


def recalled(section: str) -> Outcome | None:
    outcome = st.session_state.get(f"outcome.{section}")
    return outcome if isinstance(outcome, Outcome) else None


def attempt(snippet: Snippet, action: Callable[[], Outcome]) -> Outcome:
    """Run an action; an error it raises on purpose becomes a failed outcome with its own words."""
    try:
        return action()
    except ACTION_ERRORS as exc:
        return Outcome(False, f"{type(exc).__name__}: {exc}", snippet)


def show_snippet(snippet: Snippet) -> None:
    """The action as Python and as a shell command; Streamlit's code blocks have a copy button."""
    st.caption("Python")
    st.code(snippet.python, language="python")
    st.caption("CLI")
    st.code(snippet.shell, language="bash", wrap_lines=True)


def show_outcome(section: str) -> Outcome | None:
    outcome = recalled(section)
    if outcome is None:
        return None
    (st.success if outcome.ok else st.error)(outcome.message)
    if outcome.snippet is not None:
        show_snippet(outcome.snippet)
    return outcome


def field_help(model: type[ClusterSettings] | type[ServiceHealthSettings], name: str) -> str:
    return model.model_fields[name].description or ""


def changed(current: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The values that differ from the model's (``None`` removes a key that is set)."""
    return {key: value for key, value in values.items() if getattr(current, key) != value}


def forget_app_widgets() -> None:
    """A newly chosen app shows its own settings: drop the widgets' values of the previous one."""
    for key in list(st.session_state):
        if isinstance(key, str) and key.partition(".")[0] in {"settings", "service", "args", "data", "run"}:
            del st.session_state[key]


def parse_hosts(text: str) -> dict[str, int]:
    """``host = loops`` lines (the text form of ``[cluster.hosts]``); ValueError names a bad line."""
    hosts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        host, sep, count = entry.partition("=")
        host = host.strip().strip("\"'")
        if not sep or not host or not count.strip().isdigit():
            raise ValueError(f"SSH hosts line {number}: write host = number of loops (got {line.strip()!r})")
        hosts[host] = int(count)
    return hosts


def hosts_text(hosts: dict[str, int]) -> str:
    return "\n".join(f"{host} = {count}" for host, count in hosts.items())


def run_mode_bits(*, pool: bool, cython: bool, dask: bool, rapids: bool) -> int:
    """The reference's run-mode number: 1 pool, 2 cython, 4 dask, 8 rapids."""
    return int(pool) * 1 + int(cython) * 2 + int(dask) * 4 + int(rapids) * 8


def mode_words(mode: int) -> str:
    names = [name for bit, name in ((1, "pool"), (2, "cython"), (4, "dask"), (8, "rapids")) if mode & bit]
    return " + ".join(names) if names else "plain Python, in process"


# ---------------------------------------------------------------------- tables and charts


def health_frame(rows: list[WorkerHealth]) -> pd.DataFrame:
    """The worker-health table: the reference's six columns first, then the loop's details."""
    records = [row.model_dump(include=set(HEALTH_COLUMNS + DETAIL_COLUMNS)) for row in rows]
    return pd.DataFrame.from_records(records, columns=HEALTH_COLUMNS + DETAIL_COLUMNS)


def row_state(row: WorkerHealth) -> str:
    return "healthy" if row.healthy else ("pending" if row.pending else "unhealthy")


def show_health_table(report: HealthReport) -> None:
    """The loops' health, each row coloured: green healthy, red unhealthy, yellow starting."""
    if not report.worker_health:
        st.caption("no loops: the service is stopped")
        return
    frame = health_frame(report.worker_health)
    colours = [ROW_COLOURS[row_state(row)] for row in report.worker_health]

    def paint(row: pd.Series) -> list[str]:
        return [f"background-color: {colours[int(str(row.name))]}"] * len(row)

    healthy = report.workers_healthy_count
    st.markdown(f"**{healthy} of {len(report.worker_health)} loops healthy** (status `{report.status}`)")
    st.table(
        frame.style.apply(paint, axis=1).format(precision=3, na_rep=""), border="horizontal", hide_index=True
    )


def show_report_summary(report: HealthReport) -> None:
    alert = getattr(st, STATUS_ALERTS[report.status])
    conditions = f" — {', '.join(report.conditions)}" if report.conditions else ""
    alert(f"status **{report.status}**{conditions}")


# ---------------------------------------------------------------------- the page


def choose_app() -> Env | None:
    """The sidebar: where the apps are and which one the page shows."""
    st.sidebar.title("keepwarm")
    default = os.environ.get("KEEPWARM_APPS_PATH") or "."
    if not any(Path(default).glob(f"*/{SETTINGS_FILE}")):
        default = str(bundled_apps_path())  # nothing here: show keepwarm's example apps
    apps_path = Path(st.sidebar.text_input("Apps path", value=default, key="apps_path")).expanduser()
    apps = sorted(path.parent.name for path in apps_path.glob(f"*/{SETTINGS_FILE}"))
    if not apps:
        st.sidebar.warning(f"no app under {apps_path}: an app is a folder with an {SETTINGS_FILE}")
        return None
    app = st.sidebar.selectbox("App", apps, key="app", on_change=forget_app_widgets)
    try:
        env = Env(str(app), apps_path)
    except KeepwarmError as exc:
        st.error(str(exc))
        return None
    st.sidebar.caption(f"namespace `{env.namespace}`")
    st.sidebar.caption(f"share `{env.share_root}`")
    st.sidebar.caption(f"settings `{env.settings_path}`")
    return env


def system_settings(env: Env) -> None:
    st.header("System settings")
    cluster = env.settings.cluster
    left, right = st.columns(2)
    with left:
        backends = ["local", "dask"]
        backend = st.radio(
            "Backend",
            backends,
            index=backends.index(cluster.backend),
            horizontal=True,
            key="settings.backend",
            help=field_help(ClusterSettings, "backend"),
        )
        scheduler = st.text_input(
            "Dask scheduler address",
            value=cluster.scheduler or "",
            key="settings.scheduler",
            placeholder="tcp://host:8786 (empty: a local cluster)",
            help=field_help(ClusterSettings, "scheduler"),
        )
        slots = st.number_input(
            "Workers (loops)",
            min_value=1,
            max_value=1024,
            value=cluster.slots,
            step=1,
            key="settings.slots",
            help=field_help(ClusterSettings, "slots"),
        )
        hosts = st.text_area(
            "SSH hosts (host = loops, one per line)",
            value=hosts_text(cluster.hosts),
            key="settings.hosts",
            height=80,
            help=field_help(ClusterSettings, "hosts"),
        )
    with right:
        pool = st.toggle(
            "pool", value=cluster.pool, key="settings.pool", help=field_help(ClusterSettings, "pool")
        )
        cython = st.toggle(
            "cython", value=cluster.cython, key="settings.cython", help=field_help(ClusterSettings, "cython")
        )
        rapids = st.toggle(
            "rapids", value=cluster.rapids, key="settings.rapids", help=field_help(ClusterSettings, "rapids")
        )
        mode = run_mode_bits(pool=pool, cython=cython, dask=backend == "dask", rapids=rapids)
        st.metric("Calculated mode", mode, help="1 pool, 2 cython, 4 dask, 8 rapids: the sum of what is on")
        st.caption(f"mode {mode}: {mode_words(mode)}")
        namespace = st.text_input(
            "Namespace",
            value=cluster.namespace or "",
            key="settings.namespace",
            placeholder=f"default: {env.namespace}",
            help=field_help(ClusterSettings, "namespace"),
        )
        share_dir = st.text_input(
            "Share dir",
            value=cluster.share_dir or "",
            key="settings.share_dir",
            placeholder=str(env.share_root),
            help=field_help(ClusterSettings, "share_dir"),
        )
    if st.button("SAVE SETTINGS", key="settings.save", type="primary"):
        values = {
            "backend": backend,
            "scheduler": scheduler,
            "slots": int(slots),
            "pool": pool,
            "cython": cython,
            "rapids": rapids,
            "namespace": namespace,
            "share_dir": share_dir,
        }
        remember("settings", save_system_settings(env, values, hosts))
    show_outcome("settings")


def save_system_settings(env: Env, values: dict[str, Any], hosts: str) -> Outcome:
    """``[cluster]``'s system keys; an empty text field removes its key (the default applies)."""
    try:
        parsed = parse_hosts(hosts)
    except ValueError as exc:
        return Outcome(False, str(exc))
    cleaned = {
        key: (value.strip() or None) if isinstance(value, str) else value for key, value in values.items()
    }
    cleaned["hosts"] = parsed
    return write_settings(env, AppRef.of(env), [("cluster", changed(env.settings.cluster, cleaned))])


def write_settings(env: Env, ref: AppRef, updates: list[tuple[str, dict[str, Any]]]) -> Outcome:
    """``update_settings`` for each section that changed; the file keeps its comments."""
    updates = [(section, values) for section, values in updates if values]
    if not updates:
        return Outcome(True, f"nothing to save: {SETTINGS_FILE} already says so")
    snippet = snippets.save_settings(ref, updates)

    def save() -> Outcome:
        for section, values in updates:
            update_settings(env.settings_path, section, values)
        env.reload_settings()
        keys = ", ".join(f"[{section}] {key}" for section, values in updates for key in values)
        return Outcome(True, f"saved to {env.settings_path}: {keys}", snippet)

    return attempt(snippet, save)


def service_mode(env: Env) -> None:
    st.header("Service mode (persistent workers)")
    st.caption(
        "A supervisor keeps long-lived worker loops warm and feeds them tasks from the queue; "
        "status and health are read from the service's files."
    )
    service_settings(env)
    service_actions(env)
    live_view(env)


def service_settings(env: Env) -> None:
    cluster = env.settings.cluster
    sla = cluster.service_health
    with st.expander("Service and SLA settings", expanded=False):
        timing, retention, gate = st.columns(3)
        with timing:
            st.caption("Loops")
            heartbeat = st.number_input(
                "Heartbeat timeout (s)",
                min_value=0.1,
                value=float(cluster.heartbeat_timeout_sec),
                key="service.heartbeat_timeout_sec",
                help=field_help(ClusterSettings, "heartbeat_timeout_sec"),
            )
            stop_timeout = st.number_input(
                "Stop timeout (s)",
                min_value=0.1,
                value=float(cluster.stop_timeout_sec),
                key="service.stop_timeout_sec",
                help=field_help(ClusterSettings, "stop_timeout_sec"),
            )
            shutdown = st.toggle(
                "Shutdown on stop",
                value=cluster.shutdown_on_stop,
                key="service.shutdown_on_stop",
                help=field_help(ClusterSettings, "shutdown_on_stop"),
            )
        with retention:
            st.caption("Retention")
            kept: dict[str, Any] = {}
            for name in RETENTION_FIELDS:
                current = getattr(cluster, name)
                is_count = name.endswith("_files")
                kept[name] = st.number_input(
                    name.replace("_", " ").replace("ttl", "TTL"),
                    min_value=1 if is_count else 0.01,
                    value=current if is_count else float(current),
                    step=1 if is_count else 1.0,
                    key=f"service.{name}",
                    help=field_help(ClusterSettings, name),
                )
        with gate:
            st.caption("SLA gate: [cluster.service_health]")
            allow_idle = st.toggle(
                "allow idle",
                value=sla.allow_idle,
                key="service.allow_idle",
                help=field_help(ServiceHealthSettings, "allow_idle"),
            )
            max_unhealthy = st.number_input(
                "max unhealthy",
                min_value=0,
                value=sla.max_unhealthy,
                step=1,
                key="service.max_unhealthy",
                help=field_help(ServiceHealthSettings, "max_unhealthy"),
            )
            max_restart_rate = st.number_input(
                "max restart rate",
                min_value=0.0,
                value=float(sla.max_restart_rate),
                step=0.05,
                key="service.max_restart_rate",
                help=field_help(ServiceHealthSettings, "max_restart_rate"),
            )
            max_pending_age = st.number_input(
                "max pending age (s)",
                min_value=0.1,
                value=sla.max_pending_age_sec,
                key="service.max_pending_age_sec",
                placeholder="not checked",
                help=field_help(ServiceHealthSettings, "max_pending_age_sec"),
            )
        if st.button("SAVE SERVICE SETTINGS", key="service.save_settings"):
            cluster_values = {
                "heartbeat_timeout_sec": float(heartbeat),
                "stop_timeout_sec": float(stop_timeout),
                "shutdown_on_stop": shutdown,
                **kept,
            }
            sla_values = {
                "allow_idle": allow_idle,
                "max_unhealthy": int(max_unhealthy),
                "max_restart_rate": float(max_restart_rate),
                "max_pending_age_sec": None if max_pending_age is None else float(max_pending_age),
            }
            updates = [
                ("cluster", changed(cluster, cluster_values)),
                ("cluster.service_health", changed(sla, sla_values)),
            ]
            remember("service_settings", write_settings(env, AppRef.of(env), updates))
        show_outcome("service_settings")


def service_actions(env: Env) -> None:
    ref = AppRef.of(env)
    service = Service(env)
    workers_column, *buttons = st.columns([2, 1, 1, 1, 1, 1])
    workers = int(
        workers_column.number_input(
            "Workers to start",
            min_value=1,
            max_value=1024,
            value=env.settings.cluster.slots,
            step=1,
            key="service.workers",
        )
    )
    labels = ("START", "STATUS", "HEALTH gate", "EXPORT snapshot", "STOP")
    keys = ("start", "status", "health", "snapshot", "stop")
    clicked = {
        key: column.button(label, key=f"service.{key}", width="stretch")
        for column, label, key in zip(buttons, labels, keys, strict=True)
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
            key="service.args",
            height=80,
        )
        wait = options_column.toggle("Wait for the result", value=True, key="service.wait")
        if options_column.button("SUBMIT", key="service.submit", width="stretch"):
            remember("submit", submit_task(service, ref, args_text, SUBMIT_WAIT_SEC if wait else None))
        submitted = show_outcome("submit")
        if submitted is not None and submitted.value is not None:
            st.json(submitted.value)

    outcome = show_outcome("service")
    if outcome is not None:
        if outcome.report is not None:
            show_health_table(outcome.report)
        if outcome.gate is not None:
            for reason in outcome.gate.reasons:
                st.warning(reason)
        if outcome.value is not None:
            st.json(outcome.value, expanded=False)


def start_service(service: Service, ref: AppRef, workers: int) -> Outcome:
    snippet = snippets.start(ref, workers)

    def start() -> Outcome:
        began = time.perf_counter()
        report = service.start(slots=workers)
        took = time.perf_counter() - began
        message = f"started {ref.app}: {report.workers_healthy_count} loops ready in {took:.2f}s"
        return Outcome(True, message, snippet, report=report)

    return attempt(snippet, start)


def read_status(service: Service, ref: AppRef) -> Outcome:
    snippet = snippets.status(ref)

    def status() -> Outcome:
        report = service.status()
        queue = report.queue
        counts = f"{queue.pending} pending, {queue.running} running, {queue.done} done, {queue.failed} failed"
        return Outcome(True, f"status {report.status}: {counts}", snippet, report=report)

    return attempt(snippet, status)


def check_gate(service: Service, ref: AppRef) -> Outcome:
    snippet = snippets.health_gate(ref)

    def gate() -> Outcome:
        report, verdict = service.health()
        word = "passed" if verdict.passed else "failed"
        message = f"health gate {word} (exit code {verdict.code}), status {report.status}"
        return Outcome(verdict.passed, message, snippet, report=report, gate=verdict)

    return attempt(snippet, gate)


def export_snapshot(service: Service, ref: AppRef) -> Outcome:
    snippet = snippets.snapshot(ref)

    def export() -> Outcome:
        path = service.snapshot()
        value = json.loads(path.read_text(encoding="utf-8"))
        return Outcome(True, f"snapshot written to {path}", snippet, value=value)

    return attempt(snippet, export)


def stop_service(service: Service, ref: AppRef) -> Outcome:
    snippet = snippets.stop(ref)

    def stop() -> Outcome:
        outcome = service.stop()
        return Outcome(True, str(outcome["message"]), snippet, report=service.status())

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
            return Outcome(
                True, f"task {handle.task_id} queued", snippet, details={"task_id": handle.task_id}
            )
        record = handle.record(timeout=wait)
        value = record.result if record.status == "done" else {"error": record.error}
        message = f"task {handle.task_id} {record.status} in {1000 * (record.runtime_sec or 0):.1f} ms"
        return Outcome(
            record.status == "done", message, snippet, value=value, details={"task_id": handle.task_id}
        )

    return attempt(snippet, submit)


def live_view(env: Env) -> None:
    st.subheader("Live view")
    toggle_column, every_column = st.columns([1, 1])
    live = toggle_column.toggle("Auto-refresh", value=True, key="service.live")
    every = every_column.select_slider(
        "every (s)", options=[1, 2, 5, 10, 30], value=2, key="service.refresh_sec"
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
    columns[5].metric("Throughput (tasks/s, 10 s)", "—" if rate is None else f"{rate:.1f}")
    show_health_table(report)

    samples = list(history.samples)
    if len(samples) >= 2:
        times = pd.to_datetime([s.at for s in samples], unit="s")
        charts = st.columns(3)
        with charts[0]:
            st.caption("Queue")
            queue_frame = pd.DataFrame(
                {"pending": [s.pending for s in samples], "running": [s.running for s in samples]},
                index=times,
            )
            st.line_chart(queue_frame, height=180)
        with charts[1]:
            st.caption("Heartbeat age (s)")
            ages = pd.DataFrame([s.heartbeat_ages for s in samples], index=times)
            if not ages.empty:
                st.line_chart(ages, height=180)
        with charts[2]:
            st.caption("Throughput (tasks/s)")
            series = history.throughput()
            throughput = pd.DataFrame(
                {"tasks/s": [rate for _, rate in series]},
                index=pd.to_datetime([at for at, _ in series], unit="s"),
            )
            st.line_chart(throughput, height=180)
    recent = service.tasks(limit=5)
    if recent:
        st.caption("Recent tasks")
        st.table(pd.DataFrame.from_records(recent), hide_index=True)


def run_mode_pending() -> None:
    st.info("Run mode (install, distribute, run, data) is not in this build of keepwarm yet.")


def main() -> None:
    st.set_page_config(page_title="ORCHESTRATE · keepwarm", layout="wide")
    st.title("ORCHESTRATE")
    st.caption(INTRO)
    env = choose_app()
    if env is None:
        return
    # Each section in a keyed container: the browser test screenshots them one by one.
    with st.container(key="section-settings"):
        system_settings(env)
    st.divider()
    with st.container(key="section-run-mode"):
        run_mode_pending()
    st.divider()
    with st.container(key="section-service"):
        service_mode(env)


if __name__ == "__main__":
    main()
