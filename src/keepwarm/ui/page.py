"""ORCHESTRATE: the web page over keepwarm's core API (``keepwarm ui`` serves it).

Three pages share the sidebar, which chooses the app (kept in the URL's query): ORCHESTRATE,
PIPELINE and ANALYSIS. ORCHESTRATE's sections follow the app's lifecycle: System settings, Install,
Distribute, Run, Service mode, Data. Every button calls one core function and renders what it
returned with the equivalent Python and CLI command; the page holds no logic of its own. Widget keys
are ``<section>.<name>.<app token>`` (``state``: tests and the browser find widgets by them), and
each section sits in a keyed container (``section-<name>``).
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from keepwarm.env import Env, bundled_apps_path
from keepwarm.errors import KeepwarmError
from keepwarm.settings import SETTINGS_FILE
from keepwarm.ui import state
from keepwarm.ui.analysis_page import analysis_page
from keepwarm.ui.data_view import data_section
from keepwarm.ui.distribute_view import distribute_section
from keepwarm.ui.install_view import install_section
from keepwarm.ui.pipeline_page import pipeline_page
from keepwarm.ui.run_view import run_section
from keepwarm.ui.server import prefetch_heavy_modules
from keepwarm.ui.service_mode import service_mode
from keepwarm.ui.system_settings import system_settings

INTRO = (
    "Orchestrate walks through an app's lifecycle: its system settings, install, distribution, runs, "
    "the service mode that keeps its workers warm, and its data. Each action shows the Python and the "
    "CLI command that do the same, so what you click can be scripted; settings are written back to "
    "`app_settings.toml` with their comments kept."
)


def apps_under(apps_path: Path) -> list[str]:
    return sorted(path.parent.name for path in apps_path.glob(f"*/{SETTINGS_FILE}"))


def default_apps_path() -> str:
    """``?apps_path=`` of the URL, else ``$KEEPWARM_APPS_PATH``, else here, else the bundled examples."""
    chosen = st.query_params.get("apps_path") or os.environ.get("KEEPWARM_APPS_PATH") or "."
    if not apps_under(Path(chosen).expanduser()):
        return str(bundled_apps_path())  # nothing here: show keepwarm's example apps
    return chosen


def choose_app() -> Env | None:
    """The sidebar: where the apps are and which one the page shows (kept in the URL, so a reload or
    a bookmark shows the same app)."""
    st.sidebar.title("keepwarm")
    st.session_state.setdefault("apps_path", default_apps_path())
    apps_path = Path(st.sidebar.text_input("Apps path", key="apps_path")).expanduser()
    apps = apps_under(apps_path)
    if not apps:
        st.sidebar.warning(f"no app under {apps_path}: an app is a folder with an {SETTINGS_FILE}")
        return None
    wanted = st.session_state.get("app") or st.query_params.get("app")
    if wanted not in apps:
        if wanted:
            st.sidebar.info(f"no app {wanted!r} under {apps_path}: showing {apps[0]!r}")
        st.session_state["app"] = apps[0]
    else:
        st.session_state["app"] = wanted  # the URL's app, not the selectbox's first option
    app = str(st.sidebar.selectbox("App", apps, key="app"))
    st.query_params.update({"apps_path": str(apps_path), "app": app})
    try:
        env = Env(app, apps_path)
    except KeepwarmError as exc:
        st.error(str(exc))
        return None
    state.bind_app(apps_path, app)
    st.sidebar.caption(f"namespace `{env.namespace}`")
    st.sidebar.caption(f"share `{env.share_root}`")
    st.sidebar.caption(f"settings `{env.settings_path}`")
    st.sidebar.caption(f"logs `{env.log_dir}`")
    return env


def orchestrate(env: Env) -> None:
    st.title("ORCHESTRATE")
    st.caption(INTRO)
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


def main() -> None:
    st.set_page_config(page_title="keepwarm", layout="wide")
    env = choose_app()
    if env is None:
        return
    pages = [
        st.Page(lambda: orchestrate(env), title="ORCHESTRATE", url_path="orchestrate", default=True),
        st.Page(lambda: pipeline_page(env), title="PIPELINE", url_path="pipeline"),
        st.Page(lambda: analysis_page(env), title="ANALYSIS", url_path="analysis"),
    ]
    st.navigation(pages, position="top").run()
    prefetch_heavy_modules()  # drawn: now pandas and altair, in the background, for later views


if __name__ == "__main__":
    main()
