"""The page's System settings: backend, scheduler, workers and hosts, run-mode toggles, namespace, share.

Written back to ``[cluster]`` of ``app_settings.toml`` with ``update_settings`` (comments kept); only
the keys that changed are written, and an emptied text field removes its key (its default applies).
The calculated mode is run mode's own reading of these settings (``modes.settings_mode``).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from keepwarm.env import Env
from keepwarm.runmode.modes import settings_mode
from keepwarm.settings import ClusterSettings
from keepwarm.ui import state
from keepwarm.ui.actions import (
    Outcome,
    changed,
    defaults_from_settings,
    field_help,
    field_widget,
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


def system_settings(env: Env) -> None:
    st.header("System settings")
    cluster = env.settings.cluster
    left, right = st.columns(2)
    with left:
        backend = st.radio(
            "Backend",
            BACKENDS,
            index=BACKENDS.index(cluster.backend),
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
            value=cluster.scheduler or "",
            placeholder="tcp://host:8786 (empty: a local cluster)",
        )
        slots = field_widget(
            st.number_input,
            "Workers (loops)",
            cluster,
            "slots",
            "settings",
            min_value=1,
            max_value=1024,
            step=1,
        )
        hosts = field_widget(
            st.text_area,
            "SSH hosts (host = loops, one per line)",
            cluster,
            "hosts",
            "settings",
            value=hosts_text(cluster.hosts),
            height=80,
        )
    with right:
        toggles = {
            name: field_widget(st.toggle, name, cluster, name, "settings")
            for name in ("pool", "cython", "rapids")
        }
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
            value=cluster.namespace or "",
            placeholder=f"default: {env.namespace}",
        )
        share_dir = field_widget(
            st.text_input,
            "Share dir",
            cluster,
            "share_dir",
            "settings",
            value=cluster.share_dir or "",
            placeholder=str(env.share_root),
        )
    if st.button("SAVE SETTINGS", key=state.key("settings.save"), type="primary"):
        values = {
            "backend": backend,
            "scheduler": scheduler,
            "slots": int(slots),
            **toggles,
            "namespace": namespace,
            "share_dir": share_dir,
        }
        if remember("settings", save_system_settings(env, values, hosts)).ok:
            st.session_state.update(
                {state.key(k): v for k, v in defaults_from_settings(env).items()}
            )  # drawn below: they follow the settings
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
    # An emptied hosts box removes [cluster.hosts] rather than leaving an empty table behind.
    cleaned["hosts"] = parsed or (None if env.settings.cluster.hosts else {})
    return write_settings(env, [("cluster", changed(env.settings.cluster, cleaned))])
