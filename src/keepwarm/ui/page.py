"""ORCHESTRATE: the web page over keepwarm's core API (``keepwarm ui`` serves it).

The sidebar chooses the app; the sections follow its lifecycle: System settings, Install,
Distribute, Run, Service mode, Data. Every button calls one core function and renders what it
returned with the equivalent Python and CLI command; the page holds no logic of its own. Widget keys
are ``<section>.<name>`` (tests and the browser find widgets by them), and each section sits in a
keyed container (``section-<name>``).
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from keepwarm.env import Env, bundled_apps_path
from keepwarm.errors import KeepwarmError
from keepwarm.settings import SETTINGS_FILE
from keepwarm.ui.data_view import data_section
from keepwarm.ui.run_mode import distribute_section, install_section, run_section
from keepwarm.ui.service_mode import service_mode
from keepwarm.ui.system_settings import system_settings

INTRO = (
    "Orchestrate walks through an app's lifecycle: its system settings, install, distribution, runs, "
    "the service mode that keeps its workers warm, and its data. Each action shows the Python and the "
    "CLI command that do the same, so what you click can be scripted; settings are written back to "
    "`app_settings.toml` with their comments kept."
)
# Widget and result keys that belong to one app: forgotten when another app is chosen.
APP_STATE_PREFIXES = ("settings.", "service.", "args.", "run.", "data.", "outcome.", "install.")


def forget_app_state() -> None:
    """A newly chosen app shows its own settings and results, not the previous app's."""
    for key in list(st.session_state):
        if isinstance(key, str) and key.startswith(APP_STATE_PREFIXES):
            del st.session_state[key]


def choose_app() -> Env | None:
    """The sidebar: where the apps are and which one the page shows."""
    st.sidebar.title("keepwarm")
    default = os.environ.get("KEEPWARM_APPS_PATH") or "."
    if not any(Path(default).glob(f"*/{SETTINGS_FILE}")):
        default = str(bundled_apps_path())  # nothing here: show keepwarm's example apps
    apps_path = Path(
        st.sidebar.text_input("Apps path", value=default, key="apps_path", on_change=forget_app_state)
    ).expanduser()
    apps = sorted(path.parent.name for path in apps_path.glob(f"*/{SETTINGS_FILE}"))
    if not apps:
        st.sidebar.warning(f"no app under {apps_path}: an app is a folder with an {SETTINGS_FILE}")
        return None
    app = st.sidebar.selectbox("App", apps, key="app", on_change=forget_app_state)
    try:
        env = Env(str(app), apps_path)
    except KeepwarmError as exc:
        st.error(str(exc))
        return None
    st.sidebar.caption(f"namespace `{env.namespace}`")
    st.sidebar.caption(f"share `{env.share_root}`")
    st.sidebar.caption(f"settings `{env.settings_path}`")
    st.sidebar.caption(f"logs `{env.log_dir}`")
    return env


def main() -> None:
    st.set_page_config(page_title="ORCHESTRATE · keepwarm", layout="wide")
    st.title("ORCHESTRATE")
    st.caption(INTRO)
    env = choose_app()
    if env is None:
        return
    sections = (
        ("settings", system_settings),
        ("install", install_section),
        ("distribute", distribute_section),
        ("run", run_section),
        ("service", service_mode),
        ("data", data_section),
    )
    for index, (name, draw) in enumerate(sections):
        if index:
            st.divider()
        with st.container(key=f"section-{name}"):
            draw(env)


if __name__ == "__main__":
    main()
