"""The page's Install section: INSTALL streams ``installer.install``'s output into *Install logs*;
a successful install (this session's, or the one ``install.json`` records) enables RUN."""

from __future__ import annotations

from typing import Any

import streamlit as st

from keepwarm.env import Env
from keepwarm.runmode.installer import InstallReport, install
from keepwarm.ui import snippets, state
from keepwarm.ui.actions import (
    Outcome,
    attempt,
    recalled,
    remember,
    show_log,
    show_outcome,
    stream,
)
from keepwarm.ui.snippet_view import show_snippet
from keepwarm.ui.snippets import AppRef

INSTALL_RECORD = "install.json"


def installed(env: Env) -> bool:
    """Installed in this session, or an install of this app recorded in its log folder."""
    outcome = recalled("install")
    if outcome is not None and outcome.ok and isinstance(outcome.value, InstallReport):
        return outcome.value.app == env.app_target
    return recorded_install(env) is not None


def recorded_install(env: Env) -> InstallReport | None:
    """The install ``install.json`` records in the app's log folder (None when there is none)."""
    try:
        return InstallReport.model_validate_json((env.log_dir / INSTALL_RECORD).read_bytes())
    except (OSError, ValueError):
        return None


def install_section(env: Env) -> None:
    st.header("Install")
    st.caption(
        "Provisions the app for run mode: its interpreter (its own virtual environment when isolated), "
        "its declared dependencies, an import check, and the Cython build or the Dask shipping it needs."
    )
    ref = AppRef.of(env)
    snippet = snippets.install(ref)
    with st.expander("Python, CLI and AGI", expanded=False):
        show_snippet(snippet)
    clicked = st.button("INSTALL", key=state.key("install.run"), type="primary")
    message_slot, log_slot = st.empty(), st.empty()  # this install's message and log replace the last one's
    if clicked:
        message_slot.info("installing: the log streams below")
        log: list[str] = []

        def provision(say: Any) -> InstallReport:
            def step(name: str, state: str, detail: str) -> None:
                say(f"step {name}: {state}{f' - {detail}' if detail else ''}")

            return install(env, on_step=step, on_output=say)

        def act() -> Outcome:
            report = stream(provision, "Install logs", log, log_slot)
            steps = ", ".join(f"{s.name} {s.status}" for s in report.steps)
            return Outcome(
                True, f"installed {report.app} in {report.seconds:.2f}s: {steps}", snippet, report, log
            )

        remember("install", attempt(snippet, act, log))  # RUN, drawn below, reads it
    with message_slot.container():
        outcome = show_outcome("install", with_snippet=False)
    show_log("Install logs", outcome, slot=log_slot)
    earlier = recorded_install(env) if outcome is None else None
    if earlier is not None:
        when = earlier.finished_at[:19].replace("T", " ")
        st.caption(f"installed earlier, at {when} UTC, for {earlier.python}: {env.log_dir / INSTALL_RECORD}")
