"""What a benchmark's figures measured: the project's commit (shared by the scripts in bench/)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def source_version() -> str | None:
    """The project's commit, ``-dirty`` when files differ from it: what the numbers measured."""
    try:
        described = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return described.stdout.strip()
