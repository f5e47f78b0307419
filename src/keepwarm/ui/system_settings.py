"""The page's System settings: backend, scheduler, workers and hosts, run-mode toggles, namespace, share.

Written back to ``[cluster]`` of ``app_settings.toml`` with ``update_sections`` (comments kept); only
the keys the user changed are written, each checked against the file's value when the form loaded it
(``keepwarm.settings_form``), and an emptied text field removes its key (its default applies).
The calculated mode is run mode's own reading of these settings (``modes.settings_mode``).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.runmode.modes import RAPIDS, RunMode, settings_mode, unavailable_reason
from keepwarm.settings import ClusterSettings, read_snapshot
from keepwarm.settings_form import FormBaseline, form_edits
from keepwarm.ui import state
from keepwarm.ui.actions import (
    Outcome,
    bind_form,
    defaults_from_settings,
    field_help,
    field_widget,
    form_baseline,
    loaded,
    rebase_form,
    reload_button,
    remember,
    show_outcome,
    write_settings,
)

BACKENDS = ["local", "dask"]


def parse_hosts(text: str) -> dict[str, int]:
    """``host = loops`` lines, the text form of ``[cluster.hosts]``; ValueError names a bad line."""
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


FIELDS = ("backend", "scheduler", "slots", "hosts", "pool", "cython", "rapids", "namespace", "share_dir")
TEXT_FIELDS = ("scheduler", "namespace", "share_dir")


def settings_baseline(env: Env) -> FormBaseline:
    """The System settings form of the file as it is now: each field as its widget shows it."""
    snapshot = read_snapshot(env.settings_path)
    cluster = snapshot.settings.cluster
    shown: dict[str, Any] = {name: getattr(cluster, name) for name in FIELDS}
    shown |= {name: getattr(cluster, name) or "" for name in TEXT_FIELDS}
    shown["hosts"] = hosts_text(cluster.hosts)
    return form_baseline(snapshot, shown, dict.fromkeys(FIELDS, "cluster"))


def rapids_warning() -> str | None:
    """What switching rapids on means on this machine, when it has no GPU (or no cuDF)."""
    reason = unavailable_reason(RunMode(RAPIDS))
    if reason is None:
        return None
    return (
        f"rapids is on, but this machine cannot run it: {reason}. A run in the settings' mode is "
        "refused here (RUN names the reason): pick another mode in Run, or switch rapids off; the "
        "setting itself can be saved for a machine that has a GPU."
    )


def system_settings(env: Env) -> None:
    st.header("System settings")
    try:
        now = settings_baseline(env)
    except KeepwarmError as exc:
        st.error(str(exc))
        return
    bind_form("settings", now)
    cluster = env.settings.cluster
    left, right = st.columns(2)
    with left:
        backend = st.radio(
            "Backend",
            BACKENDS,
            horizontal=True,
            key=state.key("settings.backend"),
            help=field_help(ClusterSettings, "backend"),
        )
        scheduler = field_widget(
            st.text_input,
            "Dask scheduler address",
            cluster,
            "scheduler",
            "settings",
            placeholder="tcp://host:8786 (empty: a local cluster)",
        )
        slots = field_widget(
            st.number_input, "Workers (loops), 1 to 1024", cluster, "slots", "settings", step=1
        )
        hosts = field_widget(
            st.text_area, "SSH hosts (host = loops, one per line)", cluster, "hosts", "settings", height=80
        )
    with right:
        toggles = {
            name: field_widget(st.toggle, name, cluster, name, "settings")
            for name in ("pool", "cython", "rapids")
        }
        if toggles["rapids"] and (warning := rapids_warning()):
            st.warning(warning)
        try:
            host_table = parse_hosts(hosts)
        except ValueError:
            host_table = {}
        chosen = {"backend": backend, "scheduler": scheduler.strip() or None, "hosts": host_table, **toggles}
        mode = settings_mode(cluster.model_copy(update=chosen))
        st.metric(
            "Calculated mode", mode.bits, help="1 pool, 2 cython, 4 dask, 8 rapids: the sum of what is on"
        )
        note = (
            " (pool is implied: a Dask run gives each plan worker its own process)"
            if (toggles["pool"] and mode.dask)
            else ""
        )
        st.caption(f"mode {mode.bits}: {mode.name}{note}")
        namespace = field_widget(
            st.text_input,
            "Namespace",
            cluster,
            "namespace",
            "settings",
            placeholder=f"default: {env.namespace}",
        )
        share_dir = field_widget(
            st.text_input, "Share dir", cluster, "share_dir", "settings", placeholder=str(env.share_root)
        )
    if st.button("SAVE SETTINGS", key=state.key("settings.save"), type="primary"):
        form = {
            "backend": backend,
            "scheduler": scheduler,
            "slots": slots,
            "hosts": hosts,
            **toggles,
            "namespace": namespace,
            "share_dir": share_dir,
        }
        if remember("settings", save_system_settings(env, loaded("settings"), form)).ok:
            rebase_form("settings", settings_baseline(env))
            st.session_state.update(
                {state.key(k): v for k, v in defaults_from_settings(env).items()}
            )  # drawn below: they follow the settings
    show_outcome("settings")
    reload_button("settings", "settings")


def save_system_settings(env: Env, baseline: FormBaseline, form: dict[str, Any]) -> Outcome:
    """The fields the user changed since ``baseline`` to ``[cluster]``; an emptied text field removes
    its key (the default applies), an emptied hosts box removes ``[cluster.hosts]``."""
    edits = form_edits(baseline, form)
    values: dict[str, Any] = {}
    for name, value in edits.items():
        if name == "hosts":
            try:
                values["hosts"] = parse_hosts(value) or None
            except ValueError as exc:
                return Outcome(False, str(exc))
        elif name in TEXT_FIELDS:
            values[name] = value.strip() or None
        elif name == "slots":
            values[name] = int(value)
        else:
            values[name] = value
    return write_settings(env, [("cluster", values, baseline.expected(values))])
