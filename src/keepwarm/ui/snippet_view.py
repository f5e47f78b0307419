"""An action's snippet on the page: tabs Python, CLI, HTTP (a ``curl`` of ``keepwarm http``, where
it offers the action) and AGI (the reference's façade, where it offers the action), each ready to
copy; the Python and the AGI script can be saved as a file next to the app (``keepwarm_<action>.py``,
``AGI_run.py``, ...) that runs as it is, and added to the app's PIPELINE.
Saving is ``keepwarm.pipeline``'s: the file records the ``[args]`` it was generated from."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.pipeline.snippet_file import save_snippet, snippet_file_name, snippet_title
from keepwarm.pipeline.steps import save_as_step
from keepwarm.ui import state
from keepwarm.ui.snippets import Snippet
from keepwarm.web import HTTP_TOKEN_VARIABLE, HTTP_URL_VARIABLE

# Variables in code spans: Streamlit reads $...$ in markdown as math.
HTTP_CAPTION = (
    f"Needs `keepwarm http` running at this URL (`${HTTP_URL_VARIABLE}` sets another) and, beyond "
    f"loopback, its bearer token in `${HTTP_TOKEN_VARIABLE}`."
)


def show_snippet(snippet: Snippet, where: str = "") -> None:
    """The snippet's tabs; ``where`` tells apart two places that show the same action's snippet."""
    names = ["Python", "CLI"]
    names += (["HTTP"] if snippet.http is not None else []) + (["AGI"] if snippet.agi is not None else [])
    tabs = dict(zip(names, st.tabs(names), strict=True))
    with tabs["Python"]:
        st.code(snippet.python, language="python")
        save_buttons(snippet, snippet.python, agi=False, where=where)
    with tabs["CLI"]:
        st.code(snippet.shell, language="bash", wrap_lines=True)
    if snippet.http is not None:
        with tabs["HTTP"]:
            st.caption(HTTP_CAPTION)
            st.code(snippet.http, language="bash", wrap_lines=True)
    if snippet.agi is not None:
        with tabs["AGI"]:
            st.code(snippet.agi, language="python")
            save_buttons(snippet, snippet.agi, agi=True, where=where)


def save_buttons(snippet: Snippet, code: str, *, agi: bool, where: str) -> None:
    """SAVE AS FILE, and SAVE AND ADD TO PIPELINE: the file next to the app, and the step."""
    if not snippet.action or not snippet.app_dir:
        return
    try:
        name = snippet_file_name(snippet.action, agi=agi)
    except KeepwarmError:
        return
    title = snippet_title(snippet.action, agi=agi)
    base = f"snippet.{snippet.action}{f'.{where}' if where else ''}.{'agi' if agi else 'python'}"
    save_column, step_column = st.columns(2)
    try:
        if save_column.button(f"Save as {name}", key=state.key(f"{base}.save")):
            saved = save_snippet(Path(snippet.app_dir), name, code, args=snippet.args, title=title)
            st.success(f"saved {saved.path}: run it with python {name}")
        if step_column.button("Save and add to PIPELINE", key=state.key(f"{base}.step")):
            saved, number = save_as_step(Env(snippet.app_dir), name, code, args=snippet.args, title=title)
            st.success(f"saved {saved.path} as step {number} of the PIPELINE")
    except (KeepwarmError, OSError) as exc:
        st.error(f"{type(exc).__name__}: {exc}")
