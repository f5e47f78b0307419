"""What every fuzz test shares: its hypothesis settings, strict JSON comparison, the in-process CLI.

Every fuzz test is deterministic (``derandomize``: the same examples on every run, no example
database) and bounded, so the whole folder runs in well under a minute and a half on a loaded
2-core machine.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import settings


def fuzz_settings(max_examples: int, **extra: Any) -> settings:
    """Deterministic, deadline-free, bounded: what every fuzz test runs with."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        **extra,
    )


def canonical(value: Any) -> str:
    """A strict comparison key: 1 and 1.0, 0.0 and -0.0, key order of equal dicts all told apart."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True, allow_nan=False)


def strict_json(text: str) -> Any:
    """Parse JSON as the standard says: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def is_finite_json(value: Any) -> bool:
    """True when ``value`` holds no float keepwarm could not write back as JSON."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(is_finite_json(v) for v in value)
    if isinstance(value, dict):
        return all(is_finite_json(v) for v in value.values())
    return True


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> CliResult:
    """``keepwarm ARGV`` in this process (the console script's own ``main``), its exit code and output.

    An exception other than SystemExit escapes to the test: in the console script it would have been
    a traceback.
    """
    from keepwarm import cli

    capsys.readouterr()
    try:
        cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    else:
        code = 0
    finally:
        # keepwarm.cli turns the cyclic collector off for a command's imports and freezes what is left
        # at exit, as suits a one-command process; this process runs many, so it gets it back.
        gc.unfreeze()
        gc.enable()
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


def assert_clean_failure(result: CliResult) -> str:
    """Exit 1 with one "error: ..." line first on stderr and no traceback; returns that line."""
    assert result.code == 1, result
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), result
    assert sum(line.startswith("error:") for line in lines) == 1, result
    return lines[0]
