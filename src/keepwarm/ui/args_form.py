"""The app's ``[args]`` as a form generated from its args model (a JSON box without one), saved
with the keys that changed."""

from __future__ import annotations

import json
from typing import Any, Literal, get_args, get_origin

import streamlit as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from keepwarm.api import Service
from keepwarm.app import load_args_model
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.runmode.appcode import borrowed_imports
from keepwarm.ui import state
from keepwarm.ui.actions import (
    Outcome,
    remember,
    show_outcome,
    write_settings,
)


def field_widget(name: str, info: FieldInfo, current: Any) -> Any:
    """One widget for one field of the args model, chosen by its type and bounded by its constraints."""
    annotation = info.annotation
    label = name
    key = state.key(f"args.{name}")
    help_text = info.description
    bounds = {
        attribute: getattr(item, attribute)
        for item in info.metadata
        for attribute in ("ge", "le", "gt", "lt")
        if getattr(item, attribute, None) is not None
    }
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if annotation is bool:
        return st.toggle(label, value=bool(current), key=key, help=help_text)
    if annotation is int and isinstance(current, int):
        low = low + 1 if "ge" not in bounds and low is not None else low  # gt n: n + 1 for integers
        high = high - 1 if "le" not in bounds and high is not None else high
        if (low is not None and current < low) or (high is not None and current > high):
            low = high = None  # a value out of bounds in the file: shown as is, refused on save with why
        return st.number_input(
            label, value=current, min_value=low, max_value=high, step=1, key=key, help=help_text
        )
    if annotation is float and isinstance(current, (int, float)):
        if (low is not None and current < low) or (high is not None and current > high):
            low = high = None
        return st.number_input(
            label,
            value=float(current),
            min_value=None if low is None else float(low),
            max_value=None if high is None else float(high),
            key=key,
            help=help_text,
        )
    if get_origin(annotation) is Literal:
        choices = list(get_args(annotation))
        return st.selectbox(
            label, choices, index=choices.index(current) if current in choices else 0, key=key, help=help_text
        )
    if annotation is str:
        return st.text_input(label, value=str(current), key=key, help=help_text)
    text = st.text_input(f"{label} (JSON)", value=json.dumps(current), key=key, help=help_text)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # the args model says what is wrong with it when it is saved


def args_form(env: Env) -> None:
    """``[args]`` as a form generated from the app's args model (a JSON box without one)."""
    st.subheader(f"{env.app_target} args")
    try:
        with borrowed_imports(env.app_dir):
            model = load_args_model(env)
    except KeepwarmError as exc:
        st.error(str(exc))
        return
    current = env.settings.args
    values: dict[str, Any] = {}
    if model is None:
        text = st.text_area("[args] (a JSON object)", value=json.dumps(current), key=state.key("args.json"))
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            values = {"__invalid__": str(exc)}
    else:
        columns = st.columns(3)
        for index, (name, info) in enumerate(model.model_fields.items()):
            default = info.get_default(call_default_factory=True)
            with columns[index % 3]:
                values[name] = field_widget(name, info, current.get(name, default))
    if st.button("SAVE ARGS", key=state.key("args.save")):
        remember("args", save_args(env, model, values))
    show_outcome("args")


def save_args(env: Env, model: type[BaseModel] | None, values: dict[str, Any]) -> Outcome:
    """Check the args as a task's args are checked, then write the keys that changed to ``[args]``."""
    if "__invalid__" in values:
        return Outcome(False, f"[args]: not JSON: {values['__invalid__']}")
    if not isinstance(values, dict):
        return Outcome(False, '[args]: write a JSON object, e.g. {"x": 27}')
    try:
        Service(env).check_args(values)
    except ValueError as exc:
        return Outcome(False, f"[args] of {env.settings_path}: {exc}")
    current = env.settings.args
    fields = model.model_fields if model is not None else {}
    defaults = {name: info.get_default(call_default_factory=True) for name, info in fields.items()}

    def differs(key: str, value: Any) -> bool:
        # A key the file does not name is written only when its value is not the model's default.
        if key in current:
            return bool(current[key] != value)
        return key not in defaults or defaults[key] != value

    update: dict[str, Any] = {key: value for key, value in values.items() if differs(key, value)}
    if model is None:
        update |= {key: None for key in current if key not in values}  # removed from the JSON
    return write_settings(env, [("args", update)])
