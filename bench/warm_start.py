"""Warm start: loops forked from a preloaded template against loops spawned cold, side by side in one run.

The bundled ``warm_model`` app: ``preload()`` imports numpy and pandas and builds a read-only table of
``--mb`` megabytes (500 by default), ``start()`` is cheap. Each mode runs on a fresh service of its own
(its own copy of the app, its own namespace), with ``[cluster] preload`` written into the copy:

off  ``preload = false``: every loop is a new interpreter that imports and builds the table itself
on   ``preload = true``: a template process runs ``preload()`` once, and each loop is forked from it

Per mode, in this order: the service started with 1 loop, and memory measured; ``scale 1 → N``
(``--loops``, 4) until N loops are ready (each slot's heartbeat names the supervisor's incarnation of it,
ready); memory measured with N loops; ``kill -9`` of a loop of ``--kills`` different slots (a first
restart each: later ones back off on purpose), each until its slot's next loop is ready; a rolling
restart (``Service.restart(rolling=True)``) until every slot's incarnation changed and is ready.
Memory: the loops' PSS summed (``/proc/<pid>/smaps_rollup``; a page shared by k processes counts
1/k in each), the PSS of every process of the service (supervisor, template, loops), and the machine's
used memory (MemTotal − MemAvailable) less what it was just before the service started. Each mode's
loops answer tasks: every answer must agree, and say whether the loop was forked (the table was built
by another process) or not; a mode whose loops were not what it asked for is marked so, and the run
exits 1, as it does when a process of a service outlives its stop.

Usage::

    .venv/bin/python bench/warm_start.py                       # 500 MB, 4 loops, both modes
    .venv/bin/python bench/warm_start.py --mb 100 --kills 2 --json warm.json
    .venv/bin/python bench/warm_start.py --modes off           # one mode only

Targets (printed, never asserted): a killed loop's forked replacement ready within 100 ms and at least
20x faster than a spawned one; N loops with preload on use at most 1.5x the memory of one loop (the
service's PSS: supervisor, template and loops).
Every service is stopped by the API (its supervisor by pid if that fails), every process it ran is
checked gone and killed by pid if not, also on Ctrl-C or SIGTERM; the temp dir is removed.
See docs/warm-start.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

import keepwarm
from keepwarm._sys.procs import child_pids, process_alive
from keepwarm.queue.state import read_supervisor_state
from keepwarm.runtime.heartbeat import read_heartbeat
from provenance import Services, add_workdir_options, describe_machine, run_main, temp_workdir

ROOT = Path(__file__).resolve().parents[1]
APP = "warm_model"
APP_CODE = ROOT / "examples" / "apps" / APP
MODES = ("off", "on")
START_TIMEOUT_SEC = 300.0
STOP_TIMEOUT_SEC = 60.0
POLL_SEC = 0.002
SERVING = ("ready", "processing")
TARGET_FORK_SEC = 0.1
TARGET_SPEEDUP = 20.0
TARGET_MEMORY_RATIO = 1.5


@dataclass
class ModeResult:
    mode: str
    note: str = ""  # why a figure is missing, or the loops were not what the mode asked for
    forked: bool | None = None  # whether the loops answered from a table another process built
    preload_sec: float | None = None  # preload() as the loops' answers report it (the longest)
    scale_up_sec: float | None = None
    replaced_sec: list[float] = field(default_factory=list)
    rolling_sec: float | None = None
    loops_pss_mb: dict[int, float] = field(default_factory=dict)  # loops -> their PSS summed
    service_pss_mb: dict[int, float] = field(default_factory=dict)  # loops -> every process's PSS
    used_mb: dict[int, float] = field(default_factory=dict)  # loops -> the machine's used memory, Δ
    leftover: list[int] = field(default_factory=list)  # pids still alive after stop (then killed)


# ---------------------------------------------------------------------- processes and memory


def pss_mb(pid: int) -> float:
    """A process's proportional set size, in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def used_mb() -> float:
    """The machine's used memory: MemTotal − MemAvailable, in MB."""
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0])
    return (fields["MemTotal"] - fields["MemAvailable"]) / 1024


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(child_pids(pid))
    return found


# ---------------------------------------------------------------------- one service's loops


class Loops:
    """The loops of one running service, as its supervisor's table and their heartbeats show them."""

    def __init__(self, service: keepwarm.Service) -> None:
        self.service = service
        self.state_file = service.env.service_dir / "supervisor.json"
        self.seen: set[int] = set()  # every process of the service this run saw, for the check at stop

    def table(self) -> list[tuple[str, str, int | None]]:
        state = read_supervisor_state(self.state_file)
        return [(r.slot, r.incarnation, r.pid) for r in state.loops] if state else []

    def serving(self) -> dict[str, str]:
        """Slot -> incarnation, for each slot whose heartbeat says the table's incarnation is ready."""
        ready = {}
        for slot, incarnation, _ in self.table():
            beat = read_heartbeat(self.service.queue.heartbeats / f"{slot}.json")
            if beat is not None and beat.incarnation == incarnation and beat.state in SERVING:
                ready[slot] = incarnation
        return ready

    def replaced(self, before: dict[str, str]) -> Callable[[], bool]:
        """Whether each slot of ``before`` (slot -> incarnation) has a next incarnation ready."""
        return lambda: all(self.serving().get(slot, old) != old for slot, old in before.items())

    def pids(self) -> list[int]:
        return [pid for _, _, pid in self.table() if pid is not None]

    def processes(self) -> list[int]:
        state = read_supervisor_state(self.state_file)
        found = descendants(state.pid) if state else []
        self.seen.update(found)
        return found

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        """Seconds until ``condition`` holds, polled every 2 ms; a TimeoutError names ``what``."""
        began = time.perf_counter()
        while not condition():
            if time.perf_counter() - began > timeout:
                raise TimeoutError(f"{self.service.env.namespace}: {what} not within {timeout:g} s")
            time.sleep(POLL_SEC)
        return time.perf_counter() - began


def measure_memory(loops: Loops, result: ModeResult, count: int, baseline: float) -> None:
    result.loops_pss_mb[count] = sum(pss_mb(pid) for pid in loops.pids())
    result.service_pss_mb[count] = sum(pss_mb(pid) for pid in loops.processes())
    result.used_mb[count] = used_mb() - baseline


def check_answers(service: keepwarm.Service, result: ModeResult, count: int) -> None:
    """Tasks answered by the loops: one table everywhere, and whether the loops were forked."""
    handles = service.submit_many([{"args": {"row": 7}} for _ in range(4 * count)])
    answers = [handle.result(timeout=60) for handle in handles]
    if len({a["sum"] for a in answers}) != 1:
        raise AssertionError(f"{result.mode}: loops disagree on row 7: {answers}")
    forked = {a["preloaded_by"] != a["pid"] for a in answers}
    result.forked = forked == {True}
    if result.preload_sec is None:  # with one loop: one preload() on an otherwise idle service
        result.preload_sec = max(a["preload_sec"] for a in answers)
    wanted = result.mode == "on"
    if forked != {wanted}:
        result.note = (
            f"asked for preload {result.mode}, but loops were {'forked' if not wanted else 'spawned'}"
        )


def run_mode(
    service: keepwarm.Service, loops: Loops, result: ModeResult, options: argparse.Namespace, baseline: float
) -> None:
    loops.wait(lambda: len(loops.serving()) == 1, options.timeout, "1 loop ready")
    check_answers(service, result, 1)
    measure_memory(loops, result, 1, baseline)

    began = time.perf_counter()
    service.scale(options.loops)
    loops.wait(lambda: len(loops.serving()) == options.loops, options.timeout, f"{options.loops} loops ready")
    result.scale_up_sec = time.perf_counter() - began
    check_answers(service, result, options.loops)
    measure_memory(loops, result, options.loops, baseline)

    for slot, incarnation, pid in loops.table()[: options.kills]:
        assert pid is not None
        began = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        loops.wait(loops.replaced({slot: incarnation}), options.timeout, f"{slot} replaced")
        result.replaced_sec.append(time.perf_counter() - began)
        loops.processes()

    before = loops.serving()
    began = time.perf_counter()
    service.restart(rolling=True)
    loops.wait(
        loops.replaced(before),
        options.timeout * options.loops,
        "every loop restarted",
    )
    result.rolling_sec = time.perf_counter() - began
    loops.processes()


def app_copy(workdir: Path, mode: str, megabytes: float) -> tuple[Path, bool]:
    """A copy of the app for ``mode``, and whether its ``[cluster] preload`` was accepted (a keepwarm
    without the setting refuses it: the copy then leaves it out, and every loop is spawned)."""
    target = workdir / "apps" / mode / APP
    shutil.copytree(APP_CODE, target, ignore=shutil.ignore_patterns("__pycache__"))
    settings = target / "app_settings.toml"
    document = tomlkit.parse(settings.read_text())
    document["args"]["array_mb"] = megabytes
    document["cluster"]["slots"] = 1
    without = tomlkit.dumps(document)
    document["cluster"]["preload"] = mode == "on"
    settings.write_text(tomlkit.dumps(document))
    try:
        keepwarm.Env(target).settings.cluster  # noqa: B018  (parsed here: a refusal names the key)
    except keepwarm.SettingsError:
        settings.write_text(without)
        return target, False
    return target, True


def measure(mode: str, workdir: Path, services: Services, options: argparse.Namespace) -> ModeResult:
    result = ModeResult(mode)
    folder, accepted = app_copy(workdir, mode, options.mb)
    if not accepted and mode == "on":
        result.note = "not measured: this keepwarm has no [cluster] preload"
        return result
    env = keepwarm.Env(folder, share_dir=workdir / "share", namespace=f"warm-{mode}")
    print(f"preload {mode}: {options.mb:g} MB, 1 → {options.loops} loops", file=sys.stderr, flush=True)
    baseline = used_mb()
    service = services.start(env)
    loops = Loops(service)
    try:
        loops.processes()
        run_mode(service, loops, result, options, baseline)
    finally:
        services.stop(env)
        result.leftover = end_leftovers(loops.seen)
    return result


def end_leftovers(pids: set[int], timeout: float = 10.0) -> list[int]:
    """The processes still alive ``timeout`` s after stop, each then killed by its pid."""
    deadline = time.monotonic() + timeout
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = sorted(pid for pid in pids if process_alive(pid))
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


# ---------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def print_report(
    machine: dict[str, Any], options: argparse.Namespace, results: dict[str, ModeResult]
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(
        f"{machine['cpus']} CPUs ({machine['cpu_model']}) · Linux {machine['kernel']} · "
        f"Python {machine['python']} · numpy {machine['numpy']} · pandas {machine['pandas']} · "
        f"keepwarm {machine['keepwarm']} ({machine['source']}) · load average "
        f"{machine['load_average']:.2f} at the start · {options.mb:g} MB table"
    )
    off, on = results.get("off", ModeResult("off")), results.get("on", ModeResult("on"))
    n = options.loops

    def median(r: ModeResult) -> float | None:
        return statistics.median(r.replaced_sec) if r.replaced_sec else None

    def most(r: ModeResult) -> float | None:
        return max(r.replaced_sec) if r.replaced_sec else None

    def memory_ratio(r: ModeResult, figures: dict[int, float]) -> float | None:
        return ratio(figures.get(n), figures.get(1))

    rows: list[tuple[str, float | bool | None, float | bool | None, str]] = [
        ("loops forked from a template", off.forked, on.forked, ""),
        ("preload(), with 1 loop, s", off.preload_sec, on.preload_sec, "s"),
        (f"scale 1 → {n}: {n} loops ready, s", off.scale_up_sec, on.scale_up_sec, "s"),
        ("kill -9 → the slot's next loop ready, median, s", median(off), median(on), "s"),
        ("kill -9 → the slot's next loop ready, max, s", most(off), most(on), "s"),
        (f"rolling restart of {n} loops, s", off.rolling_sec, on.rolling_sec, "s"),
    ]
    for count in (1, n):
        rows += [
            (
                f"loops' PSS, {count} loop(s), MB",
                off.loops_pss_mb.get(count),
                on.loops_pss_mb.get(count),
                "MB",
            ),
            (
                f"service's PSS (all its processes), {count} loop(s), MB",
                off.service_pss_mb.get(count),
                on.service_pss_mb.get(count),
                "MB",
            ),
            (
                f"machine's used memory Δ, {count} loop(s), MB",
                off.used_mb.get(count),
                on.used_mb.get(count),
                "MB",
            ),
        ]
    rows += [
        (
            f"loops' PSS, {n} / 1 loop",
            memory_ratio(off, off.loops_pss_mb),
            memory_ratio(on, on.loops_pss_mb),
            "x",
        ),
        (
            f"service's PSS, {n} / 1 loop",
            memory_ratio(off, off.service_pss_mb),
            memory_ratio(on, on.service_pss_mb),
            "x",
        ),
        (
            f"machine's used Δ, {n} / 1 loop",
            memory_ratio(off, off.used_mb),
            memory_ratio(on, on.used_mb),
            "x",
        ),
    ]
    table = Table(
        "measure", "preload off", "preload on", "on / off", title="Warm start: spawned and forked loops"
    )
    for name, a, b, unit in rows:
        table.add_row(name, shown(a, unit), shown(b, unit), shown(ratio_of(a, b), "x"))
    console.print(table)
    verdicts = Table("target", "value", "", title="Targets (issue 20)")
    fork_median, spawn_median = median(on), median(off)
    checks = [
        ("forked replacement ready ≤ 0.1 s (median)", fork_median, "s", TARGET_FORK_SEC, False),
        ("spawned / forked replacement ≥ 20x", ratio(spawn_median, fork_median), "x", TARGET_SPEEDUP, True),
        (
            f"preload on: {n} loops ≤ 1.5x one loop (service's PSS)",
            memory_ratio(on, on.service_pss_mb),
            "x",
            TARGET_MEMORY_RATIO,
            False,
        ),
    ]
    for name, value, unit, target, at_least in checks:
        mark = (
            "" if value is None else "pass" if (value >= target if at_least else value <= target) else "miss"
        )
        verdicts.add_row(name, shown(value, unit), mark)
    console.print(verdicts)
    for r in (off, on):
        if r.note:
            console.print(f"preload {r.mode}: {r.note}")
        if r.leftover:
            console.print(f"preload {r.mode}: processes alive 10 s after stop (killed): {r.leftover}")


def ratio_of(a: float | bool | None, b: float | bool | None) -> float | None:
    """``b / a`` (on / off) for figures; None for a yes-or-no row."""
    return None if isinstance(a, bool) or isinstance(b, bool) else ratio(b, a)


def shown(value: float | bool | None, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "x":
        return f"{value:.2f}x" if value < 10 else f"{value:,.0f}x"
    if unit == "MB":
        return f"{value:,.0f}"
    return f"{value:.3f}"


# ---------------------------------------------------------------------- main


def parse_modes(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if not modes or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: expected off, on or off,on")
    return modes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_workdir_options(parser)
    parser.add_argument("--mb", type=float, default=500.0, help="the table's size in MB (default 500)")
    parser.add_argument("--loops", type=int, default=4, help="loops after the scale-up (default 4)")
    parser.add_argument("--kills", type=int, default=3, help="loops killed one after another (default 3)")
    parser.add_argument(
        "--modes", type=parse_modes, default=list(MODES), metavar="off,on", help="modes to run"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, metavar="SEC", help="longest wait for loops to be ready"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to this JSON file")
    options = parser.parse_args(argv)
    if options.mb <= 0 or options.loops < 2 or not 0 <= options.kills <= options.loops:
        parser.error("--mb must be positive, --loops at least 2, --kills between 0 and --loops")
    return options


def run(options: argparse.Namespace) -> int:
    services = Services(START_TIMEOUT_SEC, STOP_TIMEOUT_SEC)
    results: dict[str, ModeResult] = {}
    with temp_workdir(options, "warm-start-") as workdir:
        os.environ["KEEPWARM_LOG_DIR"] = str(workdir / "logs")
        machine = describe_machine(workdir, ("numpy", "pandas"))
        try:
            for mode in options.modes:
                results[mode] = measure(mode, workdir, services, options)
        finally:
            services.stop_all()
    print_report(machine, options, results)
    if options.json:
        report = {"machine": machine, "mb": options.mb, "results": {m: asdict(r) for m, r in results.items()}}
        options.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(r.leftover or r.note.startswith("asked") for r in results.values()) else 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
