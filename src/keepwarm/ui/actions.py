"""What every section of the page shares: an action's outcome, its snippet, its streamed log.

A button calls one core function through :func:`attempt` (or :func:`stream` when the function
reports progress); the :class:`Outcome` is kept in the session under the section's name, so a rerun
(any other click) still shows it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import streamlit as st

from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.runmode.modes import settings_mode
from keepwarm.settings import SETTINGS_FILE, update_settings
from keepwarm.ui import snippets, state
from keepwarm.ui.snippets import AppRef, Snippet

T = TypeVar("T")

# The errors an action reports as a message rather than a traceback: keepwarm's own, bad values
# (pydantic's ValidationError is a ValueError) and the file system's.
ACTION_ERRORS = (KeepwarmError, ValueError, OSError)
LOG_LINES_SHOWN = 400


@dataclass(frozen=True)
class Outcome:
    """What a section's last action did: a message, what it returned, and its snippet."""

    ok: bool
    message: str
    snippet: Snippet | None = None
    value: Any = None
    log: list[str] = field(default_factory=list)


def remember(section: str, outcome: Outcome) -> Outcome:
    return state.put(f"outcome.{section}", outcome)  # type: ignore[no-any-return]


def recalled(section: str) -> Outcome | None:
    outcome = state.get(f"outcome.{section}")
    return outcome if isinstance(outcome, Outcome) else None


def attempt(snippet: Snippet | None, action: Callable[[], Outcome], log: list[str] | None = None) -> Outcome:
    """Run an action; an error it raises on purpose becomes a failed outcome in its own words.

    ``log`` is the list the action streams into (see :func:`stream`): a failed outcome keeps it.
    """
    try:
        return action()
    except ACTION_ERRORS as exc:
        return Outcome(False, f"{type(exc).__name__}: {exc}", snippet, log=list(log or []))


def stream(action: Callable[[Callable[[str], None]], T], title: str, log: list[str]) -> T:
    """Run ``action(say)`` in a thread, showing each line it says under ``title`` as it comes.

    The core functions call their progress callbacks from wherever they run (a pool's result thread,
    a subprocess reader); only this, the script's thread, draws. Lines are appended to ``log``; the
    live panel is removed at the end (:func:`show_log` draws the kept log). Re-raises what the action
    raised.
    """
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["value"] = action(lines.put)
        except BaseException as exc:  # handed over to the script's thread below
            result["error"] = exc

    thread = threading.Thread(target=work, name="keepwarm-ui-action", daemon=True)
    thread.start()
    slot = st.empty()
    shown = slot.container().expander(title, expanded=True).empty()
    while True:
        finished = not thread.is_alive()
        fresh = []
        while not lines.empty():
            fresh.append(lines.get())
        if fresh:
            log += fresh
            shown.code("\n".join(log[-LOG_LINES_SHOWN:]), language="text")
        if finished:
            break
        thread.join(0.1)
    slot.empty()
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]


def show_snippet(snippet: Snippet) -> None:
    """The action as Python and as a shell command; Streamlit's code blocks have a copy button."""
    st.caption("Python")
    st.code(snippet.python, language="python")
    st.caption("CLI")
    st.code(snippet.shell, language="bash", wrap_lines=True)


def show_outcome(section: str, *, with_snippet: bool = True) -> Outcome | None:
    outcome = recalled(section)
    if outcome is None:
        return None
    (st.success if outcome.ok else st.error)(outcome.message)
    if with_snippet and outcome.snippet is not None:
        show_snippet(outcome.snippet)
    return outcome


def show_log(title: str, outcome: Outcome | None) -> None:
    """The log an action streamed, kept after it finished (collapsed once there is a result)."""
    if outcome is not None and outcome.log:
        with st.expander(title, expanded=not outcome.ok):
            st.code("\n".join(outcome.log[-LOG_LINES_SHOWN:]), language="text")


def defaults_from_settings(env: Env) -> dict[str, Any]:
    """Widgets further down whose initial value is a setting (SAVE SETTINGS gives them the new one)."""
    cluster = env.settings.cluster
    return {
        "run.mode": settings_mode(cluster).name,
        "run.workers": cluster.slots,
        "service.workers": cluster.slots,
    }


def initial_from_settings(env: Env, key: str) -> None:
    """Set such a widget's value through session state, once: the browser then shows later changes."""
    st.session_state.setdefault(state.key(key), defaults_from_settings(env)[key])


def field_help(model: Any, name: str) -> str:
    """A settings field's description, as the widget's help text."""
    return str(model.model_fields[name].description or "")


def field_widget(
    widget: Callable[..., T], label: str, section: Any, name: str, page: str, **options: Any
) -> T:
    """``widget(label, ...)`` for one settings field of ``section``: its current value (unless
    ``value`` is given), the key ``<page>.<name>`` and the field's description as help."""
    options.setdefault("value", getattr(section, name))
    return widget(label, key=state.key(f"{page}.{name}"), help=field_help(type(section), name), **options)


def changed(current: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The values that differ from the model's (``None`` removes a key that is set)."""
    return {key: value for key, value in values.items() if getattr(current, key, None) != value}


def write_settings(env: Env, updates: list[tuple[str, dict[str, Any]]]) -> Outcome:
    """``update_settings`` for each section that changed; the file keeps its comments."""
    updates = [(section, values) for section, values in updates if values]
    if not updates:
        return Outcome(True, f"nothing to save: {SETTINGS_FILE} already says so")
    snippet = snippets.save_settings(AppRef.of(env), updates)

    def save() -> Outcome:
        for section, values in updates:
            update_settings(env.settings_path, section, values)
        env.reload_settings()
        keys = ", ".join(f"[{section}] {key}" for section, values in updates for key in values)
        return Outcome(True, f"saved to {env.settings_path}: {keys}", snippet)

    return attempt(snippet, save)
