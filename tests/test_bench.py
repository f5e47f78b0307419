"""The benchmark scripts stay runnable: each one's --help imports everything the script needs.

The benchmarks themselves are too long for the test command (see docs/benchmarks.md); an import that
breaks with the code it measures is caught here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

SCRIPTS = sorted(path for path in (ROOT / "bench").glob("*.py") if path.name != "provenance.py")


def run_bench(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``bench/<script> ARGS`` in this interpreter; it must exit 0 (its output says why not)."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.name for path in SCRIPTS])
def test_a_bench_script_starts(script: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert "usage:" in completed.stdout


def test_no_bench_script_stands_in_for_a_standard_module() -> None:
    """A script's folder is first on sys.path: bench/http.py was imported as the standard library's
    http by every other script (Dask's import of http.client failed)."""
    clashes = [path.name for path in (ROOT / "bench").glob("*.py") if path.stem in sys.stdlib_module_names]
    assert clashes == []


def test_the_http_bench_measures_floor_gateway_and_python_api_and_cleans_up(tmp_path: Path) -> None:
    """bench/http_front.py at tiny sizes: a real service, a real keepwarm http and floor server, every
    answer checked by the script; its table has each system at each client count, the targets'
    rows, and nothing is left in its work folder."""
    sizes = ["--clients", "1,3", "--requests", "100", "--warmup", "3"]
    completed = run_bench("http_front.py", "--dir", str(tmp_path), *sizes, timeout=240)
    rows = [line.split("|")[1:3] for line in completed.stdout.splitlines() if line.startswith("| ")]
    cases = {(system.strip(), clients.strip()) for system, clients in rows}
    for system in ("floor", "gateway", "python"):
        assert {(system, "1"), (system, "3")} <= cases, completed.stdout
    assert "gateway p50 − Python API p50, 1 client(s)" in completed.stdout
    assert "gateway tasks/s / Python API tasks/s, 3 clients" in completed.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_queue_bench_puts_filesystems_side_by_side_and_cleans_up(tmp_path: Path) -> None:
    """bench/queue_roundtrip.py --filesystems at tiny sizes, local disk only (an sshfs column starts an
    sshd and costs a minute): keepwarm and naive at 1 and 2 workers and their drains, every answer
    checked by the script, a table per measure, and nothing left in its work folder."""
    work, report = tmp_path / "work", tmp_path / "report.json"
    options = ["--filesystems", "disk", "--dir", str(work), "--json", str(report), "--quick"]
    sizes = ["--roundtrips", "100", "--tasks", "20"]
    completed = run_bench("queue_roundtrip.py", *options, *sizes)
    assert "Round trip p50, ms" in completed.stdout and "Drain, tasks/s" in completed.stdout
    disk = json.loads(report.read_text())["placements"]["disk"]
    assert {(row["system"], row["workers"], row["count"]) for row in disk["latency"]} == {
        ("keepwarm", 1, 100),
        ("keepwarm", 2, 100),
        ("naive", 1, 100),
        ("naive", 2, 100),
    }
    assert {(row["system"], row["tasks"]) for row in disk["drain"]} == {("keepwarm", 20), ("naive", 20)}
    assert list(work.iterdir()) == []


def test_the_warm_start_bench_forks_measures_and_leaves_nothing(tmp_path: Path) -> None:
    """bench/warm_start.py at a tiny size, preload on only (off spawns a cold interpreter per loop:
    both modes cost 7.5 s here, this one 2.6 s): the script itself checks every answer and exits 1
    when loops were spawned instead of forked or a process outlived the stop; every figure is there,
    and nothing is left in its work folder."""
    work, report = tmp_path / "work", tmp_path / "report.json"
    options = ["--dir", str(work), "--json", str(report), "--modes", "on"]
    sizes = ["--mb", "4", "--loops", "2", "--kills", "1"]
    completed = run_bench("warm_start.py", *options, *sizes)
    on = json.loads(report.read_text())["results"]["on"]
    assert on["forked"] is True and on["note"] == "" and on["leftover"] == []
    assert len(on["replaced_sec"]) == 1 and on["scale_up_sec"] > 0 and on["rolling_sec"] > 0
    assert set(on["service_pss_mb"]) == set(on["used_mb"]) == {"1", "2"}
    assert "scale 1 → 2: 2 loops ready" in completed.stdout
    assert list(work.iterdir()) == []
