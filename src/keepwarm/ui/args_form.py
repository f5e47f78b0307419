"""The app's ``[args]``: a form generated from its args model (a JSON box without one), or the app's
own form (``app_args_form.py``), saved with the keys the user changed.

Each form keeps what it loaded (``keepwarm.settings_form``): a change made to the file elsewhere is
shown in the fields the user did not edit, and SAVE ARGS writes only the edited keys, refused when
one of them also changed in the file. The widgets carry no bounds: a value out of the model's range
is what the user typed, and SAVE ARGS says why it is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

import streamlit as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from keepwarm.app import load_args_model
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.runmode.appcode import borrowed_imports
from keepwarm.settings import SettingsSnapshot, read_snapshot
from keepwarm.settings_form import (
    ARGS_FORM_FILE,
    ArgsForm,
    FormBaseline,
    check_form_args,
    form_edits,
    load_args_form,
    table_changes,
)
from keepwarm.ui import state
from keepwarm.ui.actions import (
    Outcome,
    bind_form,
    form_baseline,
    loaded,
    rebase_form,
    reload_button,
    remember,
    show_outcome,
    write_settings,
)

GENERATED, CUSTOM = "args", "args.custom"  # forms: widget keys <form>.<field>, JSON box args.json


def bounds_of(info: FieldInfo) -> str:
    """The model's range of a field, in words, for its help text."""
    words = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
    found = [
        f"{words[attribute]} {getattr(item, attribute)}"
        for item in info.metadata
        for attribute in words
        if getattr(item, attribute, None) is not None
    ]
    return ", ".join(found)


def widget_kind(info: FieldInfo, current: Any) -> str:
    """Which widget edits a field: by its type, and by the value the file holds."""
    annotation = info.annotation
    if annotation is bool:
        return "toggle"
    if annotation is int and isinstance(current, int) and not isinstance(current, bool):
        return "int"
    if annotation is float and isinstance(current, (int, float)) and not isinstance(current, bool):
        return "float"
    if get_origin(annotation) is Literal:
        return "choice"
    if annotation is str:
        return "text"
    return "json"


def shown_value(kind: str, current: Any) -> Any:
    """The value a field's widget holds for ``current``."""
    converters: dict[str, Callable[[Any], Any]] = {
        "toggle": bool,
        "float": float,
        "text": str,
        "json": json.dumps,
    }
    return converters.get(kind, lambda value: value)(current)


def field_widget(name: str, info: FieldInfo, kind: str) -> Any:
    """One widget for one field of the args model; its value is the session's (``bind_form``)."""
    key = state.key(f"args.{name}")
    bounds = bounds_of(info)
    help_text = " ".join(filter(None, [info.description, f"({bounds})" if bounds else ""])) or None
    if kind == "toggle":
        return st.toggle(name, key=key, help=help_text)
    if kind in ("int", "float"):  # no min/max: a value out of range is kept, and refused on save
        return st.number_input(name, step=1 if kind == "int" else None, key=key, help=help_text)
    if kind == "choice":
        return st.selectbox(name, list(get_args(info.annotation)), key=key, help=help_text)
    if kind == "text":
        return st.text_input(name, key=key, help=help_text)
    text = st.text_input(f"{name} (JSON)", key=key, help=help_text)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # the args model says what is wrong with it when it is saved


def model_args(model: type[BaseModel], args: dict[str, Any]) -> dict[str, Any]:
    """Each field's value: the file's, else the model's default."""
    return {
        name: args[name] if name in args else info.get_default(call_default_factory=True)
        for name, info in model.model_fields.items()
    }


def args_baseline(snapshot: SettingsSnapshot, model: type[BaseModel] | None, form: str) -> FormBaseline:
    """What form ``form`` shows of the file's ``[args]`` now."""
    args = snapshot.settings.args
    if model is None and form == GENERATED:  # the JSON box, one field: the table as JSON
        baseline = form_baseline(snapshot, {"json": json.dumps(args)}, {})
        return FormBaseline(baseline.shown, {"json": dict(args)}, baseline.digest, baseline.mtime)
    values = model_args(model, args) if model is not None else dict(args)
    if form == GENERATED and model is not None:
        fields = model.model_fields
        values = {
            name: shown_value(widget_kind(fields[name], value), value) for name, value in values.items()
        }
    return form_baseline(snapshot, values, dict.fromkeys(values, "args"))


def args_form(env: Env) -> None:
    """``[args]`` as a form generated from the app's args model (a JSON box without one), or as the
    app's own form, with a toggle between them when the app ships ``app_args_form.py``."""
    st.subheader(f"{env.app_target} args")
    try:
        with borrowed_imports(env.app_dir):
            model = load_args_model(env)
            custom = load_args_form(env.app_dir)
        snapshot = read_snapshot(env.settings_path)
    except KeepwarmError as exc:
        st.error(str(exc))
        return
    use_custom = custom is not None and st.toggle(
        "custom form",
        value=True,
        key=state.key("args.use_custom"),
        help=f"on: the app's own form ({ARGS_FORM_FILE}); off: the form generated from its args model",
    )
    if custom is not None and use_custom:
        form_name = CUSTOM
        values, form = custom_form(env, custom, model, snapshot)
    elif model is None:
        form_name = GENERATED
        bind_form(GENERATED, args_baseline(snapshot, None, GENERATED))
        text = st.text_area("[args] (a JSON object)", key=state.key("args.json"))
        form = {"json": text}
        values = parse_json_args(text)
    else:
        form_name = GENERATED
        bind_form(GENERATED, args_baseline(snapshot, model, GENERATED))
        columns = st.columns(3)
        form, values = {}, {}
        current = model_args(model, snapshot.settings.args)
        for index, (name, info) in enumerate(model.model_fields.items()):
            kind = widget_kind(info, current[name])
            with columns[index % 3]:
                values[name] = field_widget(name, info, kind)
            form[name] = st.session_state[state.key(f"args.{name}")]
    if st.button("SAVE ARGS", key=state.key("args.save")):
        outcome = save_args(env, model, values, loaded(form_name), form)
        if remember("args", outcome).ok:
            rebase_form(form_name, args_baseline(read_snapshot(env.settings_path), model, form_name))
    show_outcome("args")
    reload_button("args", form_name)


def custom_form(
    env: Env, render: ArgsForm, model: type[BaseModel] | None, snapshot: SettingsSnapshot
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The app's own form: ``render(args, model, key)``; the args it returns, and the form's values."""
    shown = bind_form(CUSTOM, args_baseline(snapshot, model, CUSTOM))
    try:
        with borrowed_imports(env.app_dir):
            returned = render(dict(shown), model, lambda name: state.key(f"{CUSTOM}.{name}"))
    except Exception as exc:  # the app's code: its error is shown, the page goes on
        st.error(f"{ARGS_FORM_FILE}: render() failed: {exc!r}")
        return {"__invalid__": f"{ARGS_FORM_FILE} failed: {exc!r}"}, {}
    if not isinstance(returned, dict):
        problem = f"{ARGS_FORM_FILE}: render() must return a dict of args, not {type(returned).__name__}"
        return {"__invalid__": problem}, {}
    values = {**shown, **returned}
    return values, values


def parse_json_args(text: str) -> dict[str, Any]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        return {"__invalid__": f"not JSON: {exc}"}
    return values if isinstance(values, dict) else {"__invalid__": 'write a JSON object, e.g. {"x": 27}'}


def save_args(
    env: Env,
    model: type[BaseModel] | None,
    values: dict[str, Any],
    baseline: FormBaseline,
    form: dict[str, Any],
) -> Outcome:
    """Check the args as a task's args are checked, then write the keys the user changed to
    ``[args]``, each checked against the file's value when the form loaded it."""
    if "__invalid__" in values:
        return Outcome(False, f"[args]: {values['__invalid__']}")
    try:
        check_form_args(model, values, env.settings_path)
    except KeepwarmError as exc:
        return Outcome(False, str(exc))
    edits = form_edits(baseline, form)
    if "json" in baseline.raw:  # the JSON box: the keys that differ from the table it loaded
        loaded_args = baseline.raw["json"] if edits else values
        update = table_changes(loaded_args, values)
        expected = {key: loaded_args.get(key) for key in update}
    else:
        update = {name: values[name] for name in edits}
        expected = baseline.expected(update)
    return write_settings(env, [("args", update, expected)])
