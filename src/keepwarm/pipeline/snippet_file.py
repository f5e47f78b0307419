"""A snippet saved as a file next to its app: the code, and a header line naming the ``[args]`` it was
generated from, so that a pipeline can tell when the file has gone stale.

The header is a comment, so the file runs as it is (``python AGI_run.py``)::

    # keepwarm snippet: AGI.run of mycode_project, saved 2026-12-03T01:30:00Z; run it: python AGI_run.py
    # keepwarm-args: {"args": {"items": 2000, "partitions": 8, "x": 27}, "digest": "3f0c9a1b2d4e5f60"}
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keepwarm._sys.atomic import write_atomic
from keepwarm.errors import SnippetFileError

ARGS_MARK = "# keepwarm-args: "
HEADER_LINES = 10  # the header is looked for in the file's first lines only
SAFE_FILE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\.py")
AGI_FILES = {
    "install": "AGI_install.py",
    "distribute": "AGI_get_distrib.py",
    "run": "AGI_run.py",
    "benchmark": "AGI_run.py",
    "start": "AGI_serve.py",
    "status": "AGI_serve.py",
    "health": "AGI_serve.py",
    "stop": "AGI_serve.py",
    "submit": "AGI_submit.py",
}


def args_digest(args: dict[str, Any]) -> str:
    """Sixteen hex digits naming an ``[args]`` table (its keys sorted: the order does not matter)."""
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def snippet_file_name(action: str, *, agi: bool) -> str:
    """The file a snippet of ``action`` is saved as: ``AGI_run.py`` (the reference's names, for the AGI
    snippets) or ``keepwarm_<action>.py`` (keepwarm's Python)."""
    if agi:
        if action not in AGI_FILES:
            raise SnippetFileError(f"the AGI façade has no {action!r} action; save its Python instead")
        return AGI_FILES[action]
    return f"keepwarm_{action}.py"


def snippet_title(action: str, *, agi: bool) -> str:
    """What a saved snippet does, for its header and the pipeline: ``AGI.run``, ``keepwarm install``."""
    if not agi:
        return f"keepwarm {action}"
    name = AGI_FILES.get(action, "").removesuffix(".py").replace("_", ".", 1)
    return f"{name}(action={action!r})" if name == "AGI.serve" else name


@dataclass(frozen=True)
class SavedSnippet:
    """A snippet file, and the ``[args]`` it says it was generated from (None: it has no header)."""

    path: Path
    args: dict[str, Any] | None

    @property
    def digest(self) -> str | None:
        return None if self.args is None else args_digest(self.args)


def save_snippet(app_dir: Path, name: str, code: str, *, args: dict[str, Any], title: str) -> SavedSnippet:
    """Write ``code`` as ``<app_dir>/<name>`` (replacing a file of that name, in one step), under a
    header that names ``title`` and records ``args``, the app's ``[args]`` the code was generated from.
    """
    if not SAFE_FILE_NAME.fullmatch(name):
        raise SnippetFileError(
            f"{name!r} is not a snippet file name: use letters, digits, '_', '.', '-' and end in .py"
        )
    if not app_dir.is_dir():
        raise SnippetFileError(f"the app folder {app_dir} does not exist: cannot save {name} there")
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    header = (
        f"# keepwarm snippet: {title} of {app_dir.name}, saved {when}; run it: python {name}\n"
        f"{ARGS_MARK}{json.dumps({'args': args, 'digest': args_digest(args)}, default=str)}\n"
    )
    path = app_dir / name
    try:
        write_atomic(path, (header + code.lstrip("\n")).encode())
    except OSError as exc:
        raise SnippetFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    return SavedSnippet(path, dict(args))


def read_snippet(path: Path) -> SavedSnippet:
    """The snippet file at ``path`` and the ``[args]`` its header records (None without a header)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            head = [file.readline() for _ in range(HEADER_LINES)]
    except FileNotFoundError:
        raise SnippetFileError(f"snippet file {path} does not exist") from None
    except OSError as exc:
        raise SnippetFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    for line in head:
        if line.startswith(ARGS_MARK):
            try:
                recorded = json.loads(line.removeprefix(ARGS_MARK))
            except ValueError:
                break
            if isinstance(recorded, dict) and isinstance(recorded.get("args"), dict):
                return SavedSnippet(path, recorded["args"])
            break
    return SavedSnippet(path, None)
