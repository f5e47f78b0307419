"""What the page remembers, per app: widget keys and action outcomes scoped to the chosen app.

Every widget and every remembered result of the page is keyed ``<name>.<token>``, where the token
names the app and its apps path (:func:`app_token`). Two apps never share a widget, so a widget of
one app can never show, or save, another app's values; coming back to an app draws its widgets anew
from its files. Tests compute the same token to find a widget (``.st-key-<name>-<token>``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import streamlit as st

TOKEN_KEY = "app.token"


def app_token(apps_path: str | Path, app: str) -> str:
    """Eight hex digits naming ``app`` under ``apps_path`` (the resolved path: one token per folder)."""
    where = str(Path(apps_path).expanduser().resolve())
    return hashlib.sha256(f"{where}\0{app}".encode()).hexdigest()[:8]


def bind_app(apps_path: str | Path, app: str) -> str:
    """Make ``app`` the one this rerun's keys belong to; its token."""
    token = app_token(apps_path, app)
    st.session_state[TOKEN_KEY] = token
    return token


def key(name: str) -> str:
    """The key of ``name`` for the chosen app: ``<name>.<token>``."""
    token = st.session_state.get(TOKEN_KEY)
    if not token:
        raise RuntimeError("no app chosen yet: bind_app first")
    return f"{name}.{token}"


def get(name: str, default: Any = None) -> Any:
    """The chosen app's value of ``name`` in the session."""
    return st.session_state.get(key(name), default)


def put(name: str, value: Any) -> Any:
    st.session_state[key(name)] = value
    return value


def drop(name: str) -> None:
    st.session_state.pop(key(name), None)
