"""keepwarm's errors: one module defines them all, under a base per part, and nothing compares their names."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import keepwarm
from keepwarm import errors
from keepwarm.errors import KeepwarmError, Remedy

PACKAGE = Path(keepwarm.__file__).parent

# Exception classes allowed outside errors.py, and why.
DEFINED_ELSEWHERE = {
    ("cli/common.py", "UserError"),  # the CLI's own bad-argument signal, caught by the CLI itself
    ("http/answers.py", "HttpRefusal"),  # a request refused before any core call, answered by the server
}

PART_BASES = (
    errors.ConfigError,
    errors.QueueError,
    errors.ServiceError,
    errors.ClusterError,
    errors.RunModeError,
    errors.GroupError,
    errors.SurfaceError,
    errors.PipelineError,
)


def keepwarm_errors() -> dict[str, type[KeepwarmError]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, KeepwarmError) and value.__module__ == errors.__name__
    }


def package_modules() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "errors.py" or path.parent != PACKAGE
    ]


def base_names(node: ast.ClassDef) -> set[str]:
    return {base.attr if isinstance(base, ast.Attribute) else ast.unparse(base) for base in node.bases}


def test_every_exception_class_is_defined_in_errors_py() -> None:
    exception_bases = set(keepwarm_errors()) | {"Exception", "BaseException", "OSError", "TimeoutError"}
    elsewhere = {
        (module, node.name)
        for module, tree in package_modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and base_names(node) & exception_bases
    }
    assert elsewhere <= DEFINED_ELSEWHERE, sorted(elsewhere - DEFINED_ELSEWHERE)


def test_each_error_belongs_to_one_part_of_keepwarm() -> None:
    for name, cls in keepwarm_errors().items():
        if cls is KeepwarmError or cls in PART_BASES:
            continue
        parts = [base.__name__ for base in PART_BASES if issubclass(cls, base)]
        assert len(parts) == 1, f"{name} is under {parts or 'no part'}"


def test_no_code_raises_the_bare_base_class() -> None:
    bare = [
        f"{module}:{node.lineno}"
        for module, tree in package_modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Raise)
        and isinstance(node.exc, ast.Call)
        and isinstance(node.exc.func, ast.Name)
        and node.exc.func.id == "KeepwarmError"
    ]
    assert bare == []


def test_no_code_compares_an_error_class_name_as_a_string() -> None:
    names = set(keepwarm_errors())
    compared = [
        f"{module}:{node.lineno}"
        for module, tree in package_modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        and any(
            isinstance(operand, ast.Constant) and operand.value in names
            for operand in [node.left, *node.comparators]
        )
    ]
    assert compared == []


@pytest.mark.parametrize("name", [n for n in keepwarm.__all__ if n in keepwarm_errors()])
def test_public_errors_are_the_classes_of_errors_py(name: str) -> None:
    assert keepwarm._EXPORTS[name] == "keepwarm.errors"
    assert getattr(keepwarm, name) is getattr(errors, name)


def test_catching_an_error_loads_nothing_else_of_keepwarm() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from keepwarm import ServiceAlreadyRunning; "
            "print(sorted(m for m in sys.modules if m.startswith('keepwarm')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert loaded.strip() == "['keepwarm', 'keepwarm.errors']"


def test_the_errors_other_code_catches_as_builtin_ones_still_are() -> None:
    assert issubclass(errors.StorageError, OSError)
    assert issubclass(errors.ResultTimeout, TimeoutError)
    assert issubclass(errors.FleetAlreadyRunning, errors.FleetError)
    assert issubclass(errors.FleetStartError, errors.FleetError)
    assert issubclass(errors.AppNotInstalled, errors.AppError)


def test_a_remedy_ends_the_message_and_problem_leaves_it_out() -> None:
    remedy = Remedy(
        "stop it first", "keepwarm stop mycode_project", "stop_service", {"app": "mycode_project"}
    )
    error = errors.ServiceAlreadyRunning("service 'mycode_project' is running", remedy=remedy)
    assert str(error) == "service 'mycode_project' is running; stop it first: keepwarm stop mycode_project"
    assert error.problem == "service 'mycode_project' is running"
