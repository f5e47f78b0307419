"""The package's shape, checked: docs/architecture.md names every module there is and no other, and no
module grows past the size a reader takes in. (The layers themselves are checked by `lint-imports`,
configured in pyproject.toml, which scripts/test.sh runs.)"""

from __future__ import annotations

import ast
import re

from .conftest import ROOT

PACKAGE = ROOT / "src" / "keepwarm"
MAP = ROOT / "docs" / "architecture.md"
MAX_LINES = 450


def modules() -> set[str]:
    """Every module of the package as a path under src/keepwarm/; a package's ``__init__.py`` counts
    only when it holds more than its docstring."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__init__.py":
            body = ast.parse(path.read_text(encoding="utf-8")).body
            if all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body):
                continue
        found.add(path.relative_to(PACKAGE).as_posix())
    return found


def test_the_map_names_every_module_and_no_other() -> None:
    """A module is named in the first column of one of the page's tables."""
    named = set(re.findall(r"^\| `([\w/]+\.py)` \|", MAP.read_text(encoding="utf-8"), re.M))
    missing = sorted(modules() - named)
    stale = sorted(named - modules())
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"
    assert not stale, f"docs/architecture.md names modules that do not exist: {', '.join(stale)}"


def test_no_module_is_longer_than_a_reader_takes_in() -> None:
    long = {
        name: lines
        for name in sorted(modules())
        if (lines := len((PACKAGE / name).read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
