"""The benchmark scripts stay runnable: each one's --help imports everything the script needs.

The benchmarks themselves are too long for the test command (see docs/benchmarks.md); an import that
breaks with the code it measures is caught here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

SCRIPTS = sorted(path for path in (ROOT / "bench").glob("*.py") if path.name != "provenance.py")


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.name for path in SCRIPTS])
def test_a_bench_script_starts(script: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert "usage:" in completed.stdout
