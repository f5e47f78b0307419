"""Autoscaling against fixed loop counts: one load profile, three services, latency and cost.

The app, written by the script into its temp dir: ``start()`` sleeps 2 s (a model's load) and
``work()`` sleeps 50 ms, so one loop serves about 20 tasks/s. The load profile is open loop: one
thread submits the tasks due at each moment (``submit_many(queue_only=True)``) on schedule, whether
or not the service keeps up::

    idle     5 s
    burst   200 tasks/s for 8 s     (ten times what one loop serves)
    steady   10 tasks/s for 25 s
    idle    25 s                    (longer than the bench's scale_down_delay_sec, 10 s)

The same profile runs on three services, one after the other, each alone and in a namespace of its
own, started and stopped by keepwarm's Python API:

autoscale  ``[cluster.autoscale]`` on: min_loops 1, max_loops 4, target_pending_per_loop 10,
           scale_up_delay_sec 2 (the default), scale_down_delay_sec 10 (the default is 120)
fixed-min  autoscaling off, 1 loop
fixed-max  autoscaling off, 4 loops

Per variant: p50 and p99 latency (from the moment a task was due, so a submitter running late does
not hide queueing, to its record's ``finished_at``), over every task and over the burst's; tasks lost
(submitted without a terminal record ``--grace`` seconds after the profile: must be 0) and failed;
loop-seconds (the loops ``Service.status()`` reports, sampled every 0.25 s, integrated from the
profile's start to its end or the last task's finish, whichever is later). For autoscaling also: from
the backlog crossing the target (tasks pending or running above ``target_pending_per_loop`` per
loop, counted from the submit times and the records' finish times) to the first loop added (its
``autoscale`` event in events.jsonl) and ready (the samples), and from the backlog back within
min_loops' target to the loops back at min_loops. Then the issue's targets, printed as pass/miss,
never asserted: under the burst, autoscaling's p99 within 1.5x fixed-max's, at <= 60% of its
loop-seconds over the whole profile; a loop added within scale_up_delay_sec + one tick, back to
min_loops within scale_down_delay_sec + one tick. Last, a service scaled to zero (min_loops 0):
three times, once it holds no loop, one task, timed from submit to result against the target of
the app's start time + 1 s. A PNG (matplotlib) shows offered load, pending tasks and loops over time.

Usage::

    .venv/bin/python bench/autoscale.py                 # about 4 minutes, plot in docs/img/autoscale.png
    .venv/bin/python bench/autoscale.py --quick         # a shorter profile, about 1.5 minutes
    .venv/bin/python bench/autoscale.py --plot /tmp/autoscale.png --json autoscale.json
    .venv/bin/python bench/autoscale.py --tmpfs         # the share on /dev/shm

Every service started here is stopped by the API (its supervisor by pid if that fails), also on
Ctrl-C or SIGTERM, and the temp dir removed. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import keepwarm
from keepwarm.queue.results import wait_for_records
from provenance import Services, add_workdir_options, describe_machine, run_main, temp_workdir

ROOT = Path(__file__).resolve().parents[1]
APP = "warmup"
PLOT = ROOT / "docs" / "img" / "autoscale.png"
START_SEC = 2.0  # the app's start(): a model's load
WORK_SEC = 0.05  # the app's work(): one loop serves 1 / WORK_SEC tasks/s
MIN_LOOPS = 1
MAX_LOOPS = 4
TARGET_PER_LOOP = 10
SCALE_UP_DELAY_SEC = 2.0
TICK_SEC = 0.5  # the supervisor's autoscale tick (keepwarm.service.scaling.AUTOSCALE_EVERY_SEC)
SAMPLE_EVERY_SEC = 0.25
START_TIMEOUT_SEC = 120.0
STOP_TIMEOUT_SEC = 30.0
TARGET_P99_RATIO = 1.5
TARGET_COST_RATIO = 0.60


# ---------------------------------------------------------------------- the profile


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    per_sec: float  # offered tasks/s (0: idle)


PROFILE = (
    Phase("idle", 5, 0),
    Phase("burst", 8, 200),
    Phase("steady", 25, 10),
    Phase("idle again", 25, 0),
)
QUICK_PROFILE = (
    Phase("idle", 2, 0),
    Phase("burst", 3, 200),
    Phase("steady", 8, 10),
    Phase("idle again", 10, 0),
)
SCALE_DOWN_DELAY_SEC = 10.0
QUICK_SCALE_DOWN_DELAY_SEC = 5.0


@dataclass(frozen=True)
class Due:
    """One task of the profile: when it is due (seconds from the profile's start) and its phase."""

    at: float
    phase: str


def schedule(profile: tuple[Phase, ...]) -> list[Due]:
    """Every task of the profile, evenly spaced within its phase."""
    tasks: list[Due] = []
    begin = 0.0
    for phase in profile:
        count = round(phase.seconds * phase.per_sec)
        tasks += [Due(begin + index / phase.per_sec, phase.name) for index in range(count)]
        begin += phase.seconds
    return tasks


def phase_start(profile: tuple[Phase, ...], name: str) -> float:
    begin = 0.0
    for phase in profile:
        if phase.name == name:
            return begin
        begin += phase.seconds
    raise KeyError(name)


# ---------------------------------------------------------------------- the app and its services


WORKER = f"""\
import time


class Worker:
    def start(self):
        time.sleep({START_SEC})  # a model's load

    def work(self, item):
        time.sleep({WORK_SEC})
        return item.args.get("n")
"""

AUTOSCALE = """
[cluster.autoscale]
enabled = true
min_loops = {low}
max_loops = {high}
target_pending_per_loop = {target}
scale_up_delay_sec = {up}
scale_down_delay_sec = {down}
"""


@dataclass(frozen=True)
class Variant:
    name: str
    slots: int | None  # None: autoscaled
    loops: str  # how it is described in the table


def write_app(workdir: Path, variant: Variant, high: int, down: float) -> Path:
    """An app folder of its own per variant, with its ``[cluster]`` settings."""
    folder = workdir / "apps" / variant.name / APP
    package = folder / f"{APP}_code"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "worker.py").write_text(WORKER)
    settings = (
        f'[app]\nworker = "{APP}_code.worker:Worker"\n\n[cluster]\nslots = {variant.slots or MIN_LOOPS}\n'
    )
    if variant.slots is None:
        settings += AUTOSCALE.format(
            low=MIN_LOOPS, high=high, target=TARGET_PER_LOOP, up=SCALE_UP_DELAY_SEC, down=down
        )
    (folder / "app_settings.toml").write_text(settings)
    return folder


# ---------------------------------------------------------------------- one variant's run


@dataclass(frozen=True)
class Sample:
    at: float  # seconds from the profile's start
    loops: int  # len(worker_health): every loop kept, starting or stopping ones included
    healthy: int
    pending: int
    running: int


class Sampler(threading.Thread):
    """``Service.status()`` every SAMPLE_EVERY_SEC until stopped."""

    def __init__(self, service: keepwarm.Service, began: float) -> None:
        super().__init__(daemon=True)
        self.service = service
        self.began = began
        self.samples: list[Sample] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            at = time.time()
            try:
                report = self.service.status()
            except keepwarm.KeepwarmError as exc:  # a file read mid-replace: the next sample comes
                print(f"status: {exc}", file=sys.stderr)
                self.done.wait(SAMPLE_EVERY_SEC)
                continue
            self.samples.append(
                Sample(
                    at - self.began,
                    len(report.worker_health),
                    report.workers_healthy_count,
                    report.queue.pending,
                    report.queue.running,
                )
            )
            self.done.wait(max(0.0, at + SAMPLE_EVERY_SEC - time.time()))


@dataclass
class Run:
    """What one variant's run saw: per task its due, submit and finish times (seconds from the
    profile's start; finish None when lost), the samples and the autoscale events."""

    variant: str
    tasks: list[Due]
    submitted: list[float]
    finished: list[float | None]
    failed: int
    samples: list[Sample]
    decisions: list[dict[str, Any]] = field(default_factory=list)  # each with "at" from the start
    submit_late_max_sec: float = 0.0


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def run_profile(service: keepwarm.Service, variant: str, profile: tuple[Phase, ...], grace: float) -> Run:
    """Submit the profile on schedule, wait out its last idle phase and every record."""
    tasks = schedule(profile)
    length = sum(phase.seconds for phase in profile)
    began = time.time() + 0.2
    sampler = Sampler(service, began)
    sampler.start()
    ids: list[str] = []
    submitted: list[float] = []
    late_max = 0.0
    dues = [task.at for task in tasks]
    try:
        while len(ids) < len(tasks):
            now = time.time() - began
            ready = bisect.bisect_right(dues, now, lo=len(ids))
            if ready <= len(ids):
                time.sleep(max(0.0, tasks[len(ids)].at - now))
                continue
            handles = service.submit_many(
                ({"args": {"n": n}} for n in range(len(ids), ready)), queue_only=True
            )
            late_max = max(late_max, now - tasks[len(ids)].at)
            ids += [handle.task_id for handle in handles]
            submitted += [time.time() - began] * len(handles)
        time.sleep(max(0.0, began + length - time.time()))
        try:
            records = wait_for_records(service.queue, ids, timeout=grace)
        except Exception as exc:  # some never finished: they count as lost
            print(f"{variant}: {exc}", file=sys.stderr)
            records = {t: r for t in ids if (r := service.queue.read_terminal(t)) is not None}
    finally:
        sampler.done.set()
        sampler.join()
    finished = [
        epoch(records[t].finished_at) - began if t in records and records[t].finished_at else None
        for t in ids
    ]
    decisions = [
        {**event, "at": epoch(event["timestamp"]) - began}
        for event in service.queue.events.read("autoscale")
        if epoch(event["timestamp"]) >= began
    ]
    return Run(
        variant=variant,
        tasks=tasks,
        submitted=submitted,
        finished=finished,
        failed=sum(r.status != "done" for r in records.values()),
        samples=sampler.samples,
        decisions=decisions,
        submit_late_max_sec=late_max,
    )


# ---------------------------------------------------------------------- measures


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank); inf counts as a task never finished."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def latencies(run: Run, phase: str | None = None) -> list[float]:
    return [
        (end - task.at) if end is not None else math.inf
        for task, end in zip(run.tasks, run.finished, strict=True)
        if phase is None or task.phase == phase
    ]


def loop_seconds(samples: list[Sample], end: float) -> float:
    """The loops sampled, each held until the next sample, integrated from 0 to ``end``."""
    total = 0.0
    for sample, following in zip(samples, [*samples[1:], None], strict=True):
        until = min(end, following.at if following is not None else end)
        if until > sample.at:
            total += sample.loops * (until - max(0.0, sample.at))
    return total


def ongoing_steps(run: Run) -> list[tuple[float, int]]:
    """Tasks pending or running over time, exactly: +1 at each submit, -1 at each finish."""
    changes = [(at, 1) for at in run.submitted] + [(at, -1) for at in run.finished if at is not None]
    steps, count = [], 0
    for at, change in sorted(changes):
        count += change
        steps.append((at, count))
    return steps


@dataclass(frozen=True)
class Reaction:
    """The autoscaler's timing, in seconds, None when the run did not show it."""

    crossed_at: float | None = None  # the backlog above the target of min_loops
    added_at: float | None = None  # the first scale-up's event
    ready_at: float | None = None  # a loop more than min_loops ready (the samples)
    within_min_at: float | None = None  # the backlog back within min_loops' target, for good
    at_min_at: float | None = None  # the last scale-down to min_loops (its event)
    stopped_at: float | None = None  # the samples show min_loops loops again

    @property
    def up(self) -> float | None:
        return None if self.added_at is None or self.crossed_at is None else self.added_at - self.crossed_at

    @property
    def up_ready(self) -> float | None:
        return None if self.ready_at is None or self.crossed_at is None else self.ready_at - self.crossed_at

    @property
    def down(self) -> float | None:
        if self.at_min_at is None or self.within_min_at is None:
            return None
        return self.at_min_at - self.within_min_at

    @property
    def down_stopped(self) -> float | None:
        if self.stopped_at is None or self.within_min_at is None:
            return None
        return self.stopped_at - self.within_min_at


def reaction(run: Run, burst_at: float) -> Reaction:
    """The autoscaled run's reaction to the burst (at ``burst_at``) and to its end."""
    threshold = TARGET_PER_LOOP * MIN_LOOPS
    steps = [(at, count) for at, count in ongoing_steps(run) if at >= burst_at]
    crossed = next((at for at, count in steps if count > threshold), None)
    if crossed is None:
        return Reaction()
    ups = [d for d in run.decisions if d["to"] > d["from"] and d["at"] >= crossed - TICK_SEC]
    added = ups[0]["at"] if ups else None
    ready = next(
        (s.at for s in run.samples if added is not None and s.at >= added and s.healthy > MIN_LOOPS), None
    )
    above = [at for at, count in steps if count > threshold]
    within = next((at for at, count in steps if at > above[-1] and count <= threshold), None)
    downs = [d for d in run.decisions if d["to"] == MIN_LOOPS and d["from"] > MIN_LOOPS]
    at_min = downs[-1]["at"] if downs else None
    stopped = next(
        (s.at for s in run.samples if at_min is not None and s.at >= at_min and s.loops == MIN_LOOPS), None
    )
    return Reaction(crossed, added, ready, within, at_min, stopped)


@dataclass(frozen=True)
class Row:
    variant: str
    loops: str
    tasks: int
    lost: int
    failed: int
    p50_sec: float
    p99_sec: float
    burst_p99_sec: float
    loop_seconds: float
    window_sec: float
    most_loops: int
    submit_late_max_ms: float


def summarize(run: Run, loops: str, length: float) -> Row:
    ends = [end for end in run.finished if end is not None]
    window = max([length, *ends])
    every = latencies(run)
    return Row(
        variant=run.variant,
        loops=loops,
        tasks=len(run.tasks),
        lost=sum(end is None for end in run.finished),
        failed=run.failed,
        p50_sec=percentile(every, 50),
        p99_sec=percentile(every, 99),
        burst_p99_sec=percentile(latencies(run, "burst"), 99),
        loop_seconds=loop_seconds(run.samples, window),
        window_sec=window,
        most_loops=max((s.loops for s in run.samples), default=0),
        submit_late_max_ms=run.submit_late_max_sec * 1000,
    )


@dataclass(frozen=True)
class Verdict:
    name: str
    value: str
    target: str = ""
    passed: bool | None = None


def seconds(value: float | None) -> str:
    return "not seen" if value is None else f"{value:.2f} s"


def verdicts(rows: dict[str, Row], react: Reaction, down_delay: float, cold: list[float]) -> list[Verdict]:
    auto, fixed_max = rows["autoscale"], rows["fixed-max"]
    p99_ratio = auto.burst_p99_sec / fixed_max.burst_p99_sec
    cost_ratio = auto.loop_seconds / fixed_max.loop_seconds
    lost = sum(row.lost for row in rows.values())
    up_target, down_target = SCALE_UP_DELAY_SEC + TICK_SEC, down_delay + TICK_SEC
    return [
        Verdict(
            "burst p99: autoscale / fixed-max",
            f"{p99_ratio:.2f}x ({auto.burst_p99_sec:.2f} s / {fixed_max.burst_p99_sec:.2f} s)",
            f"<= {TARGET_P99_RATIO:g}x",
            p99_ratio <= TARGET_P99_RATIO,
        ),
        Verdict(
            "loop-seconds: autoscale / fixed-max",
            f"{cost_ratio:.0%} ({auto.loop_seconds:,.0f} / {fixed_max.loop_seconds:,.0f})",
            f"<= {TARGET_COST_RATIO:.0%}",
            cost_ratio <= TARGET_COST_RATIO,
        ),
        Verdict(
            "burst p99: fixed-min / autoscale",
            f"{rows['fixed-min'].burst_p99_sec / auto.burst_p99_sec:.2f}x",
        ),
        Verdict("tasks lost, all variants", str(lost), "0", lost == 0),
        Verdict(
            "backlog over the target -> first loop added (event)",
            seconds(react.up),
            f"<= scale_up_delay_sec + a tick ({up_target:g} s)",
            None if react.up is None else react.up <= up_target,
        ),
        Verdict(
            "backlog over the target -> that loop ready",
            seconds(react.up_ready),
            f"+ start() {START_SEC:g} s",
        ),
        Verdict(
            "backlog within min_loops' target -> scaled to min_loops (event)",
            seconds(react.down),
            f"<= scale_down_delay_sec + a tick ({down_target:g} s)",
            None if react.down is None else react.down <= down_target,
        ),
        Verdict("backlog within min_loops' target -> min_loops loops left", seconds(react.down_stopped)),
        Verdict(
            f"min_loops 0: first task after idle, submit to result (median of {len(cold)})",
            f"{statistics.median(cold):.2f} s (each: {', '.join(f'{t:.2f}' for t in cold)})",
            f"<= start() + 1 s ({COLD_TARGET_SEC:g} s)",
            statistics.median(cold) <= COLD_TARGET_SEC,
        ),
    ]


# ---------------------------------------------------------------------- scaled to zero


COLD_STARTS = 3  # first tasks after idle, each on a service scaled to zero
COLD_TARGET_SEC = START_SEC + 1.0  # the target: the app's start time + 1 s


def cold_starts(services: Services, workdir: Path, repeats: int) -> list[float]:
    """Seconds from submitting one task to its result on a service scaled to zero (min_loops 0):
    each time, once the service holds no loop, one task starts one (a cold start) and waits for it."""
    folder = workdir / "apps" / "zero" / APP
    package = folder / f"{APP}_code"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "worker.py").write_text(WORKER)
    autoscale = AUTOSCALE.format(low=0, high=1, target=TARGET_PER_LOOP, up=SCALE_UP_DELAY_SEC, down=1)
    (folder / "app_settings.toml").write_text(f'[app]\nworker = "{APP}_code.worker:Worker"\n{autoscale}')
    env = keepwarm.Env(folder, share_dir=workdir / "share", namespace="zero")
    service = services.start(env)
    took = []
    try:
        for number in range(repeats):
            deadline = time.monotonic() + START_TIMEOUT_SEC
            while service.status().worker_health:  # idle: back to zero loops
                if time.monotonic() > deadline:
                    raise keepwarm.KeepwarmError("the scaled-to-zero service kept a loop")
                time.sleep(0.05)
            began = time.perf_counter()
            service.submit({"n": number}).result(timeout=START_TIMEOUT_SEC)
            took.append(time.perf_counter() - began)
    finally:
        services.stop(env)
    return took


# ---------------------------------------------------------------------- report


def print_report(
    machine: dict[str, Any],
    profile: tuple[Phase, ...],
    down_delay: float,
    rows: list[Row],
    checks: list[Verdict],
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)  # a table unbroken in a log or a doc
    console.print(
        f"{machine['cpus']} CPUs ({machine['cpu_model']}) · Linux {machine['kernel']} · "
        f"Python {machine['python']} · keepwarm {machine['keepwarm']} ({machine['source']}) · "
        f"{machine['filesystem']} · load average {machine['load_average']:.2f} at the start"
    )
    console.print(
        "profile: "
        + ", ".join(
            f"{p.name} {p.seconds:g} s" + (f" at {p.per_sec:g}/s" if p.per_sec else "") for p in profile
        )
        + f" · app: start() {START_SEC:g} s, work() {WORK_SEC * 1000:g} ms (one loop: "
        f"{1 / WORK_SEC:g} tasks/s) · autoscale: min_loops {MIN_LOOPS}, target_pending_per_loop "
        f"{TARGET_PER_LOOP}, scale_up_delay_sec {SCALE_UP_DELAY_SEC:g}, scale_down_delay_sec {down_delay:g}"
    )
    table = Table(
        "variant",
        "loops",
        "tasks",
        "lost",
        "failed",
        "p50 s",
        "p99 s",
        "burst p99 s",
        "loop-seconds",
        "over s",
        "most loops",
        "client late max ms",
        title="One load profile, three services",
    )
    for row in rows:
        table.add_row(
            row.variant,
            row.loops,
            f"{row.tasks:,}",
            str(row.lost),
            str(row.failed),
            f"{row.p50_sec:.2f}",
            f"{row.p99_sec:.2f}",
            f"{row.burst_p99_sec:.2f}",
            f"{row.loop_seconds:,.0f}",
            f"{row.window_sec:.0f}",
            str(row.most_loops),
            f"{row.submit_late_max_ms:,.1f}",
        )
    verdict_table = Table("measure", "value", "target", "", title="Ratios and targets")
    for check in checks:
        mark = "" if check.passed is None else "[green]pass[/]" if check.passed else "[red]miss[/]"
        verdict_table.add_row(check.name, check.value, check.target, mark)
    console.print(table)
    console.print(verdict_table)


def offered_per_sec(tasks: list[Due], length: float) -> tuple[list[float], list[int]]:
    """Tasks due per whole second of the profile."""
    counts = [0] * math.ceil(length)
    for task in tasks:
        counts[min(int(task.at), len(counts) - 1)] += 1
    return [float(second) for second in range(len(counts))], counts


def write_plot(path: Path, runs: dict[str, Run], profile: tuple[Phase, ...], max_loops: int) -> None:
    """Offered load, pending tasks and loops over time: autoscaling bold, the fixed counts thin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "autoscale": {"color": "tab:blue", "linewidth": 2.2},
        "fixed-min": {"color": "tab:orange", "linewidth": 1.0},
        "fixed-max": {"color": "tab:green", "linewidth": 1.0},
    }
    length = sum(p.seconds for p in profile)
    end = max(length, *(s.at for run in runs.values() for s in run.samples[-1:]))
    figure, (offered, pending, loops) = plt.subplots(
        3, 1, sharex=True, figsize=(10, 7.5), gridspec_kw={"height_ratios": [1, 1.4, 1]}
    )
    seconds_, counts = offered_per_sec(runs["autoscale"].tasks, length)
    seconds_, counts = [*seconds_, length], [*counts, counts[-1]]  # the last second drawn to its end
    offered.step(seconds_, counts, where="post", color="black", linewidth=1.2, label="offered")
    offered.axhline(1 / WORK_SEC, color="grey", linestyle=":", linewidth=1, label="what one loop serves")
    offered.set_ylabel("tasks/s")
    offered.legend(loc="upper right", fontsize=8)
    for name, run in runs.items():
        at = [s.at for s in run.samples]
        pending.plot(at, [s.pending for s in run.samples], label=name, **styles[name])  # type: ignore[arg-type]
        loops.step(at, [s.loops for s in run.samples], where="post", label=name, **styles[name])  # type: ignore[arg-type]
        if name == "autoscale":  # the loops kept, and of those the ones past their start()
            ready = [s.healthy for s in run.samples]
            loops.step(
                at,
                ready,
                where="post",
                color="tab:blue",
                linestyle="--",
                linewidth=1,
                label="autoscale, ready",
            )
    pending.set_ylabel("tasks pending")
    pending.legend(loc="upper right", fontsize=8)
    loops.set_ylabel("loops")
    loops.set_ylim(0, max_loops + 0.5)
    loops.set_xlabel("seconds from the profile's start")
    loops.legend(loc="upper right", fontsize=8)
    begin = 0.0
    for phase in profile:
        for axis in (offered, pending, loops):
            axis.axvline(begin, color="lightgrey", linewidth=0.8, zorder=0)
        offered.text(begin + 0.3, max(counts) * 0.92, phase.name, fontsize=8, color="dimgrey", va="top")
        begin += phase.seconds
    loops.set_xlim(0, end)
    offered.set_title("bench/autoscale.py: offered load, pending tasks and loops over time")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_json(
    path: Path, machine: dict[str, Any], profile: tuple[Phase, ...], rows: list[Row], checks: list[Verdict]
) -> None:
    def finite(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    report = {
        "machine": machine,
        "profile": [asdict(p) for p in profile],
        "rows": [{k: finite(v) for k, v in asdict(r).items()} for r in rows],
        "verdicts": [asdict(c) for c in checks],
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_workdir_options(parser)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a shorter profile (burst 3 s, steady 8 s, idle 10 s) and scale_down_delay_sec 5",
    )
    parser.add_argument(
        "--max-loops",
        type=int,
        default=MAX_LOOPS,
        metavar="N",
        help=f"max_loops and fixed-max's loops (default {MAX_LOOPS})",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=300.0,
        metavar="SEC",
        help="how long to wait for the last records after the profile (default 300: fixed-min drains slowly)",
    )
    parser.add_argument(
        "--plot", type=Path, default=PLOT, metavar="PATH", help=f"the PNG (default {PLOT.relative_to(ROOT)})"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers to this JSON file")
    options = parser.parse_args(argv)
    if options.max_loops <= MIN_LOOPS:
        parser.error(f"--max-loops must be above min_loops ({MIN_LOOPS})")
    return options


def run(options: argparse.Namespace) -> int:
    profile = QUICK_PROFILE if options.quick else PROFILE
    down_delay = QUICK_SCALE_DOWN_DELAY_SEC if options.quick else SCALE_DOWN_DELAY_SEC
    high = options.max_loops
    variants = (
        Variant("autoscale", None, f"{MIN_LOOPS}-{high}, auto"),
        Variant("fixed-min", MIN_LOOPS, str(MIN_LOOPS)),
        Variant("fixed-max", high, str(high)),
    )
    length = sum(p.seconds for p in profile)
    services = Services(START_TIMEOUT_SEC, STOP_TIMEOUT_SEC)
    runs: dict[str, Run] = {}
    rows: list[Row] = []
    with temp_workdir(options, "autoscale-") as workdir:
        machine = describe_machine(workdir)
        print(f"scale_down_delay_sec {down_delay:g} for this bench (the default is 120)", file=sys.stderr)
        try:
            for variant in variants:
                folder = write_app(workdir, variant, high, down_delay)
                env = keepwarm.Env(folder, share_dir=workdir / "share", namespace=variant.name)
                print(
                    f"{variant.name} (loops: {variant.loops}): the profile, {length:g} s",
                    file=sys.stderr,
                    flush=True,
                )
                service = services.start(env)
                try:
                    runs[variant.name] = run_profile(service, variant.name, profile, options.grace)
                finally:
                    services.stop(env)
                rows.append(summarize(runs[variant.name], variant.loops, length))
            print(f"scaled to zero: {COLD_STARTS} cold starts", file=sys.stderr, flush=True)
            cold = cold_starts(services, workdir, COLD_STARTS)
        finally:
            services.stop_all()
    react = reaction(runs["autoscale"], phase_start(profile, "burst"))
    checks = verdicts({row.variant: row for row in rows}, react, down_delay, cold)
    print_report(machine, profile, down_delay, rows, checks)
    write_plot(options.plot, runs, profile, high)
    print(f"plot: {options.plot}")
    if options.json:
        write_json(options.json, machine, profile, rows, checks)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
