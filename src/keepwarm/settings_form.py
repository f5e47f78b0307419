"""A form over ``app_settings.toml``: what it loaded, what the user edited, what changed on disk since.

A page shows settings in widgets and saves them later, while a shell or a script may change the file
meanwhile. :class:`FormBaseline` is what a form loaded: each field as the form shows it, as the file
writes it, and the file's digest. :func:`refresh_form` keeps the user's edits and shows the file's
current values for every other field; :func:`form_edits` is what the user changed, saved with
``update_sections``' compare-and-set (``expected``: the file's values when they were loaded), so a
save writes only those keys and refuses when one of them also changed in the file.

An app may ship its own args form, ``app_args_form.py`` (:func:`load_args_form`); its values are
checked as the generated form's are (:func:`check_form_args`).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ValidationError

from keepwarm.errors import AppError, SettingsError
from keepwarm.settings import SETTINGS_FILE, describe_error

ARGS_FORM_FILE = "app_args_form.py"
ArgsForm = Callable[[dict[str, Any], "type[BaseModel] | None", Callable[[str], str]], dict[str, Any]]

# pydantic's range errors, as the bound they name: "x = 500 is out of range: at most 100".
_RANGES = {
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
}


@dataclass(frozen=True)
class FormBaseline:
    """What a form loaded: each field as shown (``shown``), as the file writes it (``raw``, None when
    the file leaves it out), the file's digest and mtime, and when the form last took in a change
    made elsewhere (``changed_at``, the file's mtime then)."""

    shown: dict[str, Any]
    raw: dict[str, Any]
    digest: str
    mtime: float
    changed_at: float | None = None

    @property
    def notice(self) -> str | None:
        """What the page says once it took in a change made on disk."""
        if self.changed_at is None:
            return None
        at = time.strftime("%H:%M:%S", time.localtime(self.changed_at))
        return f"{SETTINGS_FILE} changed on disk at {at}; the form shows its values"

    def expected(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``update_settings``' ``expected`` for saving ``fields``: their values in the file when loaded."""
        return {name: self.raw.get(name) for name in fields}


def refresh_form(
    before: FormBaseline | None, form: dict[str, Any], now: FormBaseline
) -> tuple[dict[str, Any], FormBaseline]:
    """The values the form's widgets show now, and the baseline to keep.

    ``form`` holds the widgets' current values (a field missing there was not drawn: not edited). A
    field the user edited keeps its value and the baseline it was edited from, so that saving it
    is checked against the file's value then; every other field shows the file's value in ``now``.
    """
    if before is None:
        return dict(now.shown), now
    shown, raw, values = {}, {}, {}
    for name, value in now.shown.items():
        edited = name in form and form[name] != before.shown.get(name) and form[name] != value
        values[name] = form[name] if edited else value
        shown[name] = before.shown.get(name) if edited else value
        raw[name] = before.raw.get(name) if edited else now.raw.get(name)
    changed_at = now.mtime if now.digest != before.digest else before.changed_at
    return values, replace(now, shown=shown, raw=raw, changed_at=changed_at)


def form_edits(baseline: FormBaseline, form: dict[str, Any]) -> dict[str, Any]:
    """The fields whose value in the form is not the one the form loaded."""
    return {
        name: value
        for name, value in form.items()
        if name in baseline.shown and baseline.shown[name] != value
    }


def table_changes(loaded: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What turns table ``loaded`` into ``new``: changed and added keys, and None for removed ones."""
    changes = {key: value for key, value in new.items() if loaded.get(key) != value}
    return changes | {key: None for key in loaded if key not in new}


def describe_form_problem(error: Any) -> str:
    """One pydantic error of a form's value; a value out of the model's range says the bound."""
    if error["type"] in _RANGES:
        bound, words = _RANGES[error["type"]]
        name = ".".join(str(part) for part in error["loc"])
        limit = (error.get("ctx") or {}).get(bound)
        return f"{name} = {json.dumps(error.get('input'), default=str)} is out of range: {words} {limit}"
    return describe_error(error)


def check_form_args(model: type[BaseModel] | None, values: dict[str, Any], where: Path) -> None:
    """Refuse (SettingsError) args the app's ``args_model`` rejects, each problem in its own words."""
    if model is None:
        return
    try:
        model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(describe_form_problem(error) for error in exc.errors())
        raise SettingsError(f"[args] of {where}: invalid args: {problems}; nothing was saved") from None


_loaded_forms: dict[Path, tuple[int, ModuleType]] = {}


def load_args_form(app_dir: Path) -> ArgsForm | None:
    """The app's own args form: ``render`` of ``app_args_form.py`` in ``app_dir`` (None without one).

    The module is imported again when the file changes. AppError says what is wrong with it.
    """
    path = app_dir / ARGS_FORM_FILE
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    cached = _loaded_forms.get(path)
    if cached is None or cached[0] != stamp:
        cached = (stamp, _import_form(path))
        _loaded_forms[path] = cached
    render = getattr(cached[1], "render", None)
    if not callable(render):
        raise AppError(
            f"{path}: defines no render(args, model, key) function; the page calls it to draw the "
            "app's own args form (see docs/ui.md, an app's own args form)"
        )
    return render  # type: ignore[no-any-return]


def _import_form(path: Path) -> ModuleType:
    name = f"_keepwarm_args_form_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a pydantic model or a dataclass in it finds its module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise AppError(f"{path}: importing the app's args form failed: {exc!r}") from None
    return module
