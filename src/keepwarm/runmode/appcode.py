"""The app's code in this process: which module names the app folder provides, putting its folder
first on ``sys.path`` (``use_app_code``) or only for a while (``borrowed_imports``), and an exception
the app raised told at the app's own line."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

from keepwarm.backends.staging import SKIPPED_DIRS

_MODULE_SUFFIXES = (".py", ".so", ".pyd")


def describe_app_exception(exc: BaseException, app_dir: Path) -> str:
    """``Type: message at file:line`` for an exception the app's code raised, at the innermost line
    of the app's own code (not of a library it called); a pydantic error as its fields' problems."""
    from pydantic import ValidationError

    from keepwarm.settings import describe_error

    if isinstance(exc, ValidationError):
        message = f"{exc.title}: " + "; ".join(describe_error(error) for error in exc.errors())
    else:
        message = str(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    root = str(app_dir.resolve()) + os.sep
    own = [frame for frame in frames if str(Path(frame.filename).resolve()).startswith(root)]
    shown = own or frames
    where = f" at {shown[-1].filename}:{shown[-1].lineno}" if shown else ""
    return f"{type(exc).__name__}: {message}{where}"


def app_roots(app_dir: Path) -> list[Path]:
    """The folders the app's modules are imported from: ``src/`` (when there is one), then the app folder."""
    return [folder for folder in (app_dir / "src", app_dir) if folder.is_dir()]


def app_top_names(app_dir: Path) -> set[str]:
    """The top-level module names the app folder provides (its packages and modules)."""
    names = set()
    for root in app_roots(app_dir):
        for entry in root.iterdir():
            stem = entry.name.split(".")[0]
            if not stem.isidentifier() or entry.name in SKIPPED_DIRS:
                continue
            if entry.is_dir() and any(p.suffix in _MODULE_SUFFIXES for p in entry.iterdir()):
                names.add(entry.name)
            elif entry.is_file() and entry.suffix in _MODULE_SUFFIXES:
                names.add(stem)
    return names


def use_app_code(app_dir: Path) -> None:
    """Make ``import <package>`` find the code in ``app_dir``: its folders go first on ``sys.path``
    and modules of the same names imported from elsewhere (another copy of the app, an earlier
    build) are forgotten, so a compiled copy is never shadowed by an already-imported source."""
    roots = [str(folder.resolve()) for folder in app_roots(app_dir)]
    names = app_top_names(app_dir)
    for module_name in [m for m in sys.modules.copy() if m.partition(".")[0] in names]:
        module_file = getattr(sys.modules[module_name], "__file__", None) or ""
        if not any(module_file.startswith(root + os.sep) for root in roots):
            del sys.modules[module_name]
    sys.path[:] = roots + [p for p in sys.path if p not in roots]
    importlib.invalidate_caches()


@contextlib.contextmanager
def borrowed_imports(app_dir: Path) -> Iterator[None]:
    """Load the app in this process for a while: its modules are imported from ``app_dir`` even when
    modules of the same names (another app's package) were imported before, and afterwards
    ``sys.path`` and those modules are as they were."""
    names = app_top_names(app_dir)
    saved_path = list(sys.path)
    # A copy taken in one C call (another thread may be importing: the page's background imports). Not
    # list(items()): its tuples can start a garbage collection mid-way, whose finalizers let it run.
    saved = {m: module for m, module in sys.modules.copy().items() if m.partition(".")[0] in names}
    for module_name in saved:  # another app's package of the same name must not answer the imports
        del sys.modules[module_name]
    try:
        yield
    finally:
        for module_name in [m for m in sys.modules.copy() if m.partition(".")[0] in names]:
            sys.modules.pop(module_name, None)
        sys.modules.update(saved)
        sys.path[:] = saved_path
        importlib.invalidate_caches()
