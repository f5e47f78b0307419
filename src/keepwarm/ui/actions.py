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
from keepwarm.errors import KeepwarmError, SettingsConflict
from keepwarm.runmode.modes import settings_mode
from keepwarm.settings import SETTINGS_FILE, SectionUpdate, SettingsSnapshot, section_values, update_sections
from keepwarm.settings_form import FormBaseline, refresh_form
from keepwarm.ui import snippets, state
from keepwarm.ui.snippet_view import show_snippet
from keepwarm.ui.snippets import AppRef, Snippet

T = TypeVar("T")

# The errors an action reports as a message rather than a traceback: keepwarm's own, bad values
# (pydantic's ValidationError is a ValueError) and the file system's.
ACTION_ERRORS = (KeepwarmError, ValueError, OSError)
LOG_LINES_SHOWN = 400


@dataclass(frozen=True)
class Outcome:
    """What a section's last action did: a message, what it returned, and its snippet.

    ``refused``: the action raised instead of doing its work (bad input, a stopped service, ...); the
    page then shows the error alone, never a snippet offering to do the same again. A check that ran
    and said no (a failed health gate) is not refused: its snippet repeats the check.
    """

    ok: bool
    message: str
    snippet: Snippet | None = None
    value: Any = None
    log: list[str] = field(default_factory=list)
    refused: bool = False


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
        return Outcome(False, f"{type(exc).__name__}: {exc}", snippet, log=list(log or []), refused=True)


def stream(action: Callable[[Callable[[str], None]], T], title: str, log: list[str], slot: Any = None) -> T:
    """Run ``action(say)`` in a thread, showing each line it says under ``title`` as it comes.

    The core functions call their progress callbacks from wherever they run (a pool's result thread,
    a subprocess reader); only this, the script's thread, draws. Lines are appended to ``log``.
    ``slot`` (an ``st.empty()``) is where the live log is drawn: pass the one :func:`show_log` draws
    the kept log into, so that a new action's log replaces the previous one's in place, never beside
    it; without one, the live panel has a slot of its own, removed at the end. Re-raises what the
    action raised.
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
    own_slot = slot is None
    slot = st.empty() if own_slot else slot
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
    if own_slot:
        slot.empty()
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]


def show_outcome(section: str, *, with_snippet: bool = True) -> Outcome | None:
    outcome = recalled(section)
    if outcome is None:
        return None
    (st.success if outcome.ok else st.error)(outcome.message)
    if with_snippet and outcome.snippet is not None and not outcome.refused:
        show_snippet(outcome.snippet, where=f"outcome-{section}")
    return outcome


def show_log(title: str, outcome: Outcome | None, slot: Any = None) -> None:
    """The log an action streamed, kept after it finished: collapsed after a success, open after a
    failure (its last lines say why). ``slot``: the ``st.empty()`` :func:`stream` drew into."""
    if outcome is None or not outcome.log:
        if slot is not None:
            slot.empty()
        return
    where = slot.container() if slot is not None else st.container()
    with where.expander(title, expanded=not outcome.ok):
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
    """``widget(label, ...)`` for one settings field of ``section``: the key ``<page>.<name>`` and the
    field's description as help. Its value is the session's, seeded by :func:`bind_form`."""
    return widget(label, key=state.key(f"{page}.{name}"), help=field_help(type(section), name), **options)


def form_baseline(
    snapshot: SettingsSnapshot, shown: dict[str, Any], sections: dict[str, str]
) -> FormBaseline:
    """What a form shows of ``snapshot`` (``shown``), each field's section naming where the file writes it."""
    raw = {name: section_values(snapshot.table, section).get(name) for name, section in sections.items()}
    return FormBaseline(shown, raw, snapshot.digest, snapshot.mtime)


def bind_form(form: str, now: FormBaseline) -> dict[str, Any]:
    """Give the widgets ``<form>.<field>`` their values before they are drawn: the user's edits, and
    the file's current values for the rest (``refresh_form``); says so when the file changed on disk."""
    before = state.get(f"loaded.{form}")
    keys = {name: state.key(f"{form}.{name}") for name in now.shown}
    current = {name: st.session_state[key] for name, key in keys.items() if key in st.session_state}
    values, baseline = refresh_form(before if isinstance(before, FormBaseline) else None, current, now)
    for name, value in values.items():
        if keys[name] not in st.session_state or st.session_state[keys[name]] != value:
            st.session_state[keys[name]] = value
    state.put(f"loaded.{form}", baseline)
    if baseline.notice:
        st.info(baseline.notice)
    return values


def loaded(form: str) -> FormBaseline:
    """The baseline :func:`bind_form` kept for ``form`` in this rerun."""
    baseline = state.get(f"loaded.{form}")
    assert isinstance(baseline, FormBaseline), f"bind_form({form!r}) first"
    return baseline


def rebase_form(form: str, now: FormBaseline) -> None:
    """After a save: the form's baseline is the file as saved (the widgets already show it)."""
    state.put(f"loaded.{form}", now)


def reload_button(section: str, form: str) -> None:
    """RELOAD under a save refused for a conflict: drops the form's edits, shows the file again."""
    outcome = recalled(section)
    if outcome is None or not isinstance(outcome.value, SettingsConflict):
        return

    def reload() -> None:
        state.drop(f"loaded.{form}")
        remember(section, Outcome(True, f"reloaded from {SETTINGS_FILE}: the form shows the file's values"))

    st.button("RELOAD", key=state.key(f"{form}.reload"), on_click=reload, help="drop the form's edits")


def write_settings(env: Env, updates: list[SectionUpdate]) -> Outcome:
    """``update_sections`` of the sections that changed, all at once, checked against ``expected``
    (a key changed on disk since it was loaded refuses the save: the outcome's value is the
    SettingsConflict). The file keeps its comments."""
    updates = [(section, values, expected) for section, values, expected in updates if values]
    if not updates:
        return Outcome(True, f"nothing to save: {SETTINGS_FILE} already says so")
    snippet = snippets.save_settings(AppRef.of(env), [(section, values) for section, values, _ in updates])
    try:
        update_sections(env.settings_path, updates)
    except SettingsConflict as conflict:
        return Outcome(False, f"SettingsConflict: {conflict}", value=conflict)
    except ACTION_ERRORS as exc:  # refused: no snippet, since running it would be refused too
        return Outcome(False, f"{type(exc).__name__}: {exc}")
    env.reload_settings()
    keys = ", ".join(f"[{section}] {key}" for section, values, _ in updates for key in values)
    return Outcome(True, f"saved to {env.settings_path}: {keys}", snippet)
