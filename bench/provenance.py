"""What a benchmark's figures measured: the machine and the project's commit (shared by bench/)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

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


def describe_machine(workdir: Path, packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """The CPUs, kernel, Python, keepwarm and ``packages`` versions, the commit, and ``workdir``'s
    filesystem and the load average when the run began."""
    from keepwarm._sys.watch import filesystem_type

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "keepwarm": version("keepwarm"),
        "source": source_version(),
        **{package: version(package) for package in packages},
        "workdir": str(workdir),
        "filesystem": filesystem_type(workdir),
        "load_average": os.getloadavg()[0],
    }
