"""Round-trip latency and drain throughput of keepwarm's file queue, in one run on one filesystem.

Four systems, measured one after the other in this order, each alone on the machine:

dask      ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``: ``submit(...).result()``
          and ``gather(map(...))``. First, because it creates no queue files.
floor     the bare mechanism: a client renames a file into ``req/``, a server process woken by inotify
          renames it into its own folder and answers by temp file + rename into ``rsp/``, the client is
          woken by inotify. No parsing, no work, no bookkeeping.
keepwarm  ``Service.submit(...).result()`` and ``submit_many`` + ``wait_for_records`` through
          ``python -m keepwarm.runtime.loop`` processes running the bundled app ``mycode_project``.
naive     the same rename protocol as the floor with JSON payloads and the app's computation (the
          practical limit of a Python file queue); two workers for the drain.

Usage::

    .venv/bin/python bench/queue_roundtrip.py               # local disk: a temp dir under .bench/
    .venv/bin/python bench/queue_roundtrip.py --tmpfs       # tmpfs: a temp dir under /dev/shm
    .venv/bin/python bench/queue_roundtrip.py --quick       # small sizes, under a minute
    .venv/bin/python bench/queue_roundtrip.py --filesystems disk,tmpfs,sshfs   # side by side, below

``--filesystems`` measures keepwarm and naive on each filesystem listed, one after the other in one
run, and prints their round trip p50 and drain rate side by side with ratios to local disk. ``sshfs``
starts an sshd on 127.0.0.2 with keys made for the run and mounts a folder through sshfs
(tests/multihost/hosts.py, the tests' harness; ``scripts/install-multihost.sh`` installs what it needs),
then measures twice: client and workers both through the mount (hosts that all mount the share), and
the client on the served folder with the workers through the mount. Fewer round trips and tasks there
(each round trip takes ~30 ms). Everything is unmounted and stopped by pid at the end, also on Ctrl-C.
On a shared filesystem (FUSE, NFS) the watchers poll with back-off, reset whenever work was found.

On a disk, the run pauses ``--pause`` seconds (default 120) before naive, so that the files keepwarm
deleted do not slow naive's file creations (see ``Run.pause_after_deletions``).

Targets are printed as pass/miss, never asserted. Every process started here is stopped by pid and
the temp dir removed, also on Ctrl-C or SIGTERM (a Ctrl-C while the Dask cluster starts is ignored).
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from keepwarm._sys.watch import IN_MOVED_TO, Watcher, filesystem_type
from provenance import (
    APP,
    APPS_PATH,
    ROOT,
    TMPFS_DIR,
    BenchError,
    Ratio,
    add_workdir_options,
    compute,
    describe_machine,
    run_main,
    task_inputs,
    temp_dir_under,
    temp_workdir,
    use_app_code,
)

NAMESPACE = "bench"
ROUNDTRIP_TIMEOUT_SEC = 30.0
DRAIN_TIMEOUT_SEC = 900.0
START_TIMEOUT_SEC = 60.0
STOP_GRACE_SEC = 15.0
PAUSE_SEC = 120.0


# ---------------------------------------------------------------------- the computation


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class Sizes:
    roundtrips: int
    warmup: int
    tasks: int


FULL = Sizes(roundtrips=2000, warmup=200, tasks=20_000)
QUICK = Sizes(roundtrips=200, warmup=30, tasks=2000)


@dataclass(frozen=True)
class Latency:
    system: str
    workers: int
    count: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


@dataclass(frozen=True)
class Drain:
    system: str
    workers: int
    tasks: int
    seconds: float
    tasks_per_sec: float


@dataclass
class Results:
    latencies: list[Latency] = field(default_factory=list)
    drains: list[Drain] = field(default_factory=list)
    pauses: dict[str, float] = field(default_factory=dict)  # system -> seconds paused before it


def summarize(system: str, workers: int, seconds: list[float]) -> Latency:
    millis = [s * 1000 for s in seconds]
    cuts = statistics.quantiles(millis, n=100, method="inclusive")
    return Latency(
        system, workers, len(millis), statistics.median(millis), cuts[98], statistics.fmean(millis)
    )


# ---------------------------------------------------------------------- child processes


class Children:
    """Processes this run started: stopped by pid (SIGTERM, then SIGKILL after a grace period)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches this script only; it stops the children
            )

    def wait_until(self, name: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SEC
        while not ready():
            code = self.procs[name].poll()
            if code is not None:
                raise BenchError(f"{name} exited with code {code}:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise BenchError(f"{name} not ready after {START_TIMEOUT_SEC}s:\n{self.log_tail(name)}")
            time.sleep(0.01)

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(STOP_GRACE_SEC)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


# ---------------------------------------------------------------------- floor and naive file queues


def publish(folder: Path, name: str, data: bytes) -> None:
    """Write ``data`` to a temp file in ``folder``, then rename it to ``name`` (no fsync)."""
    tmp = folder / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, folder / name)


def answer_floor(claimed: Path) -> bytes:
    return b"ok"


def answer_naive(claimed: Path) -> bytes:
    request = json.loads(claimed.read_bytes())
    return json.dumps(compute(request["x"])).encode()


@dataclass(frozen=True)
class Role:
    answer: Callable[[Path], bytes]
    release_claim: bool  # the worker unlinks the claimed file once answered
    read_answer: bool  # the client reads and decodes the answer


ROLES = {
    "floor": Role(answer_floor, release_claim=False, read_answer=False),
    "naive": Role(answer_naive, release_claim=True, read_answer=True),
}


def serve(root: Path, slot: str, role_name: str, parent_pid: int) -> None:
    """A floor or naive worker: wait on inotify, claim by rename, answer by temp + rename."""
    from keepwarm._sys.procs import set_parent_death_signal

    set_parent_death_signal(parent_pid)
    role = ROLES[role_name]
    requests, responses, mine = root / "req", root / "rsp", root / f"claimed-{slot}"
    mine.mkdir()
    with Watcher([requests], IN_MOVED_TO) as watcher:
        publish(root, f"ready-{slot}", b"")
        names = sorted(n for n in os.listdir(requests) if n[0] != ".")
        while True:
            for name in names:
                claimed = mine / name
                try:
                    os.rename(requests / name, claimed)
                except FileNotFoundError:
                    continue  # the other worker won it
                publish(responses, name, role.answer(claimed))
                if role.release_claim:
                    os.unlink(claimed)
                watcher.found_work()  # polling (a shared filesystem): look again soon, as keepwarm's loops do
            wakeup = watcher.wait(None)
            names = sorted(n for n in os.listdir(requests) if n[0] != ".") if wakeup.rescan else wakeup.names


class FileQueueBackend:
    """The client side of the floor and naive queues (in ``workdir``), and their worker processes (in
    ``worker_dir``: the same folder, or the same folder through a mount)."""

    def __init__(self, role: str, workdir: Path, worker_dir: Path) -> None:
        self.role = role
        self.root = workdir / role
        self.worker_root = worker_dir / role
        self.requests, self.responses = self.root / "req", self.root / "rsp"
        self.requests.mkdir(parents=True)
        self.responses.mkdir()
        self.children = Children(workdir / "logs")
        self.watcher = Watcher([self.responses], IN_MOVED_TO)
        self.read = ROLES[role].read_answer
        self.seq = 0

    def __enter__(self) -> FileQueueBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.children.stop_all()
        self.watcher.close()

    def scale(self, workers: int) -> None:
        while len(self.children.procs) < workers:
            slot = f"{self.role}-{len(self.children.procs)}"
            command = [sys.executable, __file__, "--serve", self.role, "--serve-dir", str(self.worker_root)]
            self.children.start(slot, [*command, "--serve-slot", slot, "--parent-pid", str(os.getpid())])
            self.children.wait_until(slot, (self.root / f"ready-{slot}").exists)

    def roundtrip(self, x: int) -> Any:
        return self.request([x], ROUNDTRIP_TIMEOUT_SEC)[0]

    def drain(self, xs: Sequence[int]) -> list[Any]:
        return self.request(xs, DRAIN_TIMEOUT_SEC)

    def request(self, xs: Sequence[int], timeout: float) -> list[Any]:
        names = []
        for x in xs:
            self.seq += 1
            name = f"{self.seq:012d}.json"
            publish(self.requests, name, json.dumps({"x": x}).encode())
            names.append(name)
        self.wait_for(set(names), timeout)
        if not self.read:
            return [None] * len(names)
        return [json.loads((self.responses / name).read_bytes()) for name in names]

    def wait_for(self, names: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.watcher.found_work()  # a new wait: when polling, look first after the shortest delay
        while names:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.role}: {len(names)} responses missing after {timeout}s")
            wakeup = self.watcher.wait(left)
            names.difference_update(os.listdir(self.responses) if wakeup.rescan else wakeup.names)


# ---------------------------------------------------------------------- keepwarm


class KeepwarmBackend:
    """keepwarm's client API in this process, ``python -m keepwarm.runtime.loop`` processes as workers
    (their share: ``worker_dir``, the same folder or the same folder through a mount)."""

    def __init__(self, workdir: Path, worker_dir: Path) -> None:
        import keepwarm

        self.share = workdir / "keepwarm"
        self.worker_share = worker_dir / "keepwarm"
        self.env = keepwarm.Env(APP, APPS_PATH, share_dir=self.share, namespace=NAMESPACE)
        self.service = keepwarm.Service(self.env)
        self.service.queue.ensure()
        self.children = Children(workdir / "logs")

    def __enter__(self) -> KeepwarmBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.children.stop_all()

    def scale(self, workers: int) -> None:
        while len(self.children.procs) < workers:
            slot = f"loop-{len(self.children.procs)}"
            command = [
                sys.executable,
                "-m",
                "keepwarm.runtime.loop",
                "--app",
                APP,
                "--apps-path",
                str(APPS_PATH),
            ]
            command += ["--slot", slot, "--namespace", NAMESPACE, "--parent-pid", str(os.getpid())]
            self.children.start(slot, command, env={**os.environ, "KEEPWARM_SHARE": str(self.worker_share)})
            self.children.wait_until(slot, lambda slot=slot: self.loop_ready(slot))

    def loop_ready(self, slot: str) -> bool:
        from keepwarm.runtime.heartbeat import read_heartbeat

        beat = read_heartbeat(self.service.queue.heartbeats / f"{slot}.json")
        return beat is not None and beat.state in ("ready", "processing")

    # The loops run here without a supervisor (no service is "running"): queue_only=True queues for
    # them, as Service.submit refuses by default when no service is running.
    def roundtrip(self, x: int) -> Any:
        return self.service.submit({"x": x}, queue_only=True).result(ROUNDTRIP_TIMEOUT_SEC)

    def drain(self, xs: Sequence[int]) -> list[Any]:
        from keepwarm.queue.results import value_of, wait_for_records

        handles = self.service.submit_many([{"args": {"x": x}} for x in xs], queue_only=True)
        # As each handle's result() does: the watch taken before submitting spares a first look.
        ids = [h.task_id for h in handles]
        records = wait_for_records(self.service.queue, ids, DRAIN_TIMEOUT_SEC, since=handles[0].since)
        return [value_of(records[h.task_id]) for h in handles]


# ---------------------------------------------------------------------- Dask


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Processes started meanwhile ignore SIGINT: a terminal's Ctrl-C reaches this script, which closes them.

    Dask's worker processes share this script's process group, so without this they would die of the
    Ctrl-C while this script waits for them.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class DaskBackend:
    """A two-worker process LocalCluster and its client."""

    def __init__(self, workdir: Path, worker_dir: Path) -> None:
        import logging

        from distributed import Client, LocalCluster

        with sigint_ignored():
            self.cluster = LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                local_directory=str(workdir / "dask"),
                silence_logs=logging.ERROR,
            )
        self.client = Client(self.cluster)

    def __enter__(self) -> DaskBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.cluster.close()

    def scale(self, workers: int) -> None:
        if workers != 2:
            raise BenchError("the Dask cluster has two workers")

    def roundtrip(self, x: int) -> Any:
        return self.client.submit(compute, x, pure=False).result(ROUNDTRIP_TIMEOUT_SEC)

    def drain(self, xs: Sequence[int]) -> list[Any]:
        return list(self.client.gather(self.client.map(compute, xs, pure=False)))


# ---------------------------------------------------------------------- measuring


class Backend(Protocol):
    def scale(self, workers: int) -> None: ...
    def roundtrip(self, x: int) -> Any: ...
    def drain(self, xs: Sequence[int]) -> list[Any]: ...


@dataclass(frozen=True)
class System:
    name: str
    open: Callable[[Path, Path], AbstractContextManager[Backend]]  # (client's folder, workers' view of it)
    roundtrip_workers: tuple[int, ...]
    drain_workers: int | None
    answers: bool = True  # returns the computed value (the floor returns nothing)
    deletes_files: bool = False  # unlinks a file per task (see Run.pause_after_deletions)


SYSTEMS = (
    System("dask", DaskBackend, (2,), 2),
    System("floor", lambda d, w: FileQueueBackend("floor", d, w), (1,), None, answers=False),
    System("keepwarm", KeepwarmBackend, (1, 2), 2, deletes_files=True),
    System("naive", lambda d, w: FileQueueBackend("naive", d, w), (1, 2), 2, deletes_files=True),
)


def check_answers(system: System, xs: Sequence[int], answers: Sequence[Any]) -> None:
    if system.answers and list(answers) != [compute(x) for x in xs]:
        raise BenchError(f"{system.name} returned wrong results")


def time_roundtrips(system: System, backend: Backend, workers: int, sizes: Sizes) -> Latency:
    xs = task_inputs(sizes.warmup + sizes.roundtrips)
    for x in xs[: sizes.warmup]:
        backend.roundtrip(x)
    measured = xs[sizes.warmup :]
    seconds, answers = [], []
    gc.collect()
    for x in measured:
        began = time.perf_counter()
        answers.append(backend.roundtrip(x))
        seconds.append(time.perf_counter() - began)
    check_answers(system, measured, answers)
    return summarize(system.name, workers, seconds)


def time_drain(system: System, backend: Backend, workers: int, sizes: Sizes) -> Drain:
    xs = task_inputs(sizes.tasks, offset=1)
    gc.collect()
    began = time.perf_counter()
    answers = backend.drain(xs)
    seconds = time.perf_counter() - began
    check_answers(system, xs, answers)
    return Drain(system.name, workers, len(xs), seconds, len(xs) / seconds)


@dataclass
class Run:
    workdir: Path
    sizes: Sizes
    pause_sec: float
    results: Results
    files_deleted: bool = False
    worker_dir: Path | None = None  # the workers' view of workdir (a mount of it), if not workdir itself
    label: str = ""

    def say(self, text: str) -> None:
        print(f"{self.label}: {text}" if self.label else text, file=sys.stderr, flush=True)

    def measure(self, system: System) -> None:
        sizes, results = self.sizes, self.results
        self.pause_after_deletions(system.name)
        with system.open(self.workdir, self.worker_dir or self.workdir) as backend:
            for workers in system.roundtrip_workers:
                backend.scale(workers)
                self.say(f"{system.name}: {sizes.roundtrips} round trips, {workers} worker(s)")
                results.latencies.append(time_roundtrips(system, backend, workers, sizes))
            if system.drain_workers is not None:
                backend.scale(system.drain_workers)
                self.say(f"{system.name}: drain of {sizes.tasks} tasks, {system.drain_workers} workers")
                results.drains.append(time_drain(system, backend, system.drain_workers, sizes))
        self.files_deleted |= system.deletes_files

    def pause_after_deletions(self, system: str) -> None:
        """Let the previous systems' deletions age before the next system creates files.

        ext4 without a journal (the test VM's disk) refuses to reuse an inode freed in the last 60 s
        (300 s while its inode table block is dirty) and scans past every such inode on each create:
        right after a drain deleted 20,000 files, creating a file costs up to 1 ms instead of 20 µs.
        """
        if self.files_deleted and self.pause_sec > 0:
            self.say(f"{system}: pausing {self.pause_sec:g} s so that earlier deletions age")
            time.sleep(self.pause_sec)
            self.results.pauses[system] = self.pause_sec


# ---------------------------------------------------------------------- ratios and targets


def ratio(
    name: str, value: float, unit: str = "x", at_least: float | None = None, at_most: float | None = None
) -> Ratio:
    if at_least is not None:
        return Ratio(name, value, unit, f">= {at_least:g}{unit}", value >= at_least)
    if at_most is not None:
        return Ratio(name, value, unit, f"<= {at_most:g}{unit}", value <= at_most)
    return Ratio(name, value, unit)


def ratios(results: Results) -> list[Ratio]:
    """The issue's targets: round trip p50 <= 1.2x naive's (1 and 2 loops), drain >= 1x naive's,
    Dask's p50 >= 10x keepwarm's, and the drain >= 5x Dask's."""
    p50 = {(r.system, r.workers): r.p50_ms for r in results.latencies}
    rate = {r.system: r.tasks_per_sec for r in results.drains}
    rows = []
    for loops, label in ((1, "1 loop"), (2, "2 loops")):
        keepwarm = p50["keepwarm", loops]
        rows += [
            ratio(f"keepwarm p50, {label}", keepwarm, " ms"),
            ratio(f"keepwarm p50 ({label}) / floor p50", keepwarm / p50["floor", 1]),
            ratio(
                f"keepwarm p50 ({label}) / naive p50 ({label.replace('loop', 'worker')})",
                keepwarm / p50["naive", loops],
                at_most=1.2,
            ),
            ratio(f"Dask p50 / keepwarm p50 ({label})", p50["dask", 2] / keepwarm, at_least=10),
        ]
    rows += [
        ratio("keepwarm drain / Dask map+gather", rate["keepwarm"] / rate["dask"], at_least=5),
        ratio("keepwarm drain / naive drain", rate["keepwarm"] / rate["naive"], at_least=1.0),
    ]
    return rows


# ---------------------------------------------------------------------- report


def print_report(machine: dict[str, Any], sizes: Sizes, results: Results, rows: list[Ratio]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{machine['filesystem']}[/] at {machine['workdir']}")
    console.print(
        f"{machine['cpus']} CPUs ({machine['cpu_model']}) · Linux {machine['kernel']} · "
        f"Python {machine['python']} · keepwarm {machine['keepwarm']} ({machine['source']}) · "
        f"distributed {machine['distributed']}"
    )
    latency = Table(
        "system",
        "workers",
        "round trips",
        "p50 ms",
        "p99 ms",
        "mean ms",
        title=f"Round trip (after {sizes.warmup} warm-up)",
    )
    for r in results.latencies:
        latency.add_row(
            r.system, str(r.workers), str(r.count), f"{r.p50_ms:.3f}", f"{r.p99_ms:.3f}", f"{r.mean_ms:.3f}"
        )
    drain = Table("system", "workers", "tasks", "seconds", "tasks/s", title="Drain")
    for d in results.drains:
        drain.add_row(d.system, str(d.workers), str(d.tasks), f"{d.seconds:.2f}", f"{d.tasks_per_sec:,.0f}")
    ratio_table = Table("measure", "value", "target", "", title="Ratios and targets")
    for row in rows:
        verdict = "" if row.passed is None else "[green]pass[/]" if row.passed else "[red]miss[/]"
        ratio_table.add_row(row.name, f"{row.value:.3g}{row.unit}", row.target or "", verdict)
    for table in (latency, drain, ratio_table):
        console.print(table)
    for system, seconds in results.pauses.items():
        console.print(f"Paused {seconds:g} s before {system} so that earlier file deletions aged.")


def write_json(
    path: Path, machine: dict[str, Any], sizes: Sizes, results: Results, rows: list[Ratio]
) -> None:
    report = {
        "machine": machine,
        "sizes": asdict(sizes),
        "latency": [asdict(r) for r in results.latencies],
        "drain": [asdict(d) for d in results.drains],
        "pauses": results.pauses,
        "ratios": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------------- several filesystems, one run

FILESYSTEMS = ("disk", "tmpfs", "sshfs")
FS_SYSTEMS = ("keepwarm", "naive")  # Dask and the floor make no queue files, or answer nothing
SSHFS_MOST = Sizes(roundtrips=200, warmup=20, tasks=500)  # ~30 ms a round trip through sshfs


@dataclass(frozen=True)
class Placement:
    """One column of the table: the client's queue folder, and the workers' view of the same folder."""

    name: str
    client: Path
    workers: Path
    sizes: Sizes
    pause_sec: float
    where: str  # who is on which filesystem, for the report


def filesystem_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names or set(names) - set(FILESYSTEMS) or len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(FILESYSTEMS)}: {text!r}")
    return names


@contextmanager
def sshfs_mount() -> Iterator[Any]:
    """A folder under /tmp mounted through sshfs from an sshd on 127.0.0.2 started for the run (the
    tests' harness); unmounted, the sshd and its sessions' processes stopped by pid at the end."""
    sys.path.insert(0, str(ROOT))  # the harness lives with the tests it serves
    from tests.multihost.hosts import Unavailable, mounted_share, running_sshd

    with ExitStack() as stack:
        try:
            sshd = stack.enter_context(running_sshd())
            share = stack.enter_context(mounted_share(sshd))
        except Unavailable as exc:
            raise BenchError(f"no sshfs mount here: {exc}") from exc
        yield share


@contextmanager
def placements(options: argparse.Namespace, sizes: Sizes) -> Iterator[list[Placement]]:
    """Each filesystem of ``--filesystems``: a temp dir on it (sshfs: both sides on the mount, then the
    client on the served folder and the workers on the mount); all removed or unmounted at the end."""
    with ExitStack() as stack:
        found = []
        for name in options.filesystems:
            if name in ("disk", "tmpfs"):
                parent = TMPFS_DIR if name == "tmpfs" else options.dir or ROOT / ".bench"
                folder = stack.enter_context(temp_dir_under(parent, "queue_roundtrip-"))
                kind = filesystem_type(folder)
                pause = choose_pause(options, kind)
                found.append(Placement(name, folder, folder, sizes, pause, f"client and workers on {kind}"))
                continue
            share = stack.enter_context(sshfs_mount())
            small = Sizes(*(min(a, b) for a, b in zip(astuple(sizes), astuple(SSHFS_MOST), strict=True)))
            served = filesystem_type(share.folder)
            mixed = f"client on the served folder ({served}), workers through the mount"
            for label, client, subdir, where in (
                ("sshfs", share.mount, "both", "client and workers through the sshfs mount"),
                ("sshfs mixed", share.folder, "mixed", mixed),
            ):
                (share.folder / subdir).mkdir()
                found.append(Placement(label, client / subdir, share.mount / subdir, small, 0.0, where))
        yield found


def run_filesystems(options: argparse.Namespace) -> int:
    """keepwarm and naive on each filesystem of ``--filesystems``, one after the other, in one run."""
    systems = [system for system in SYSTEMS if system.name in FS_SYSTEMS]
    measured: dict[str, tuple[Placement, Results]] = {}
    with placements(options, choose_sizes(options)) as where:
        machine = describe_machine(where[0].client, ("distributed",))
        for place in where:
            bench = Run(place.client, place.sizes, place.pause_sec, Results(), worker_dir=place.workers)
            bench.label = place.name
            for system in systems:
                bench.measure(system)
            measured[place.name] = (place, bench.results)
    print_filesystems(machine, measured)
    if options.json:
        write_filesystems_json(options.json, machine, measured)
    return 0


def per_filesystem(measured: dict[str, tuple[Placement, Results]]) -> tuple[list[list[str]], list[list[str]]]:
    """Rows of the two tables: round trip p50 and drain rate per system and placement, × disk's."""

    def cell(value: float, base: float | None, digits: str) -> str:
        text = format(value, digits)
        return text if base is None else f"{text} ({value / base:.3g}×)"

    names = list(measured)
    latency_rows, drain_rows = [], []
    first = measured[names[0]][1]
    for row in first.latencies:
        key = (row.system, row.workers)
        values = {
            name: next(r.p50_ms for r in results.latencies if (r.system, r.workers) == key)
            for name, (_, results) in measured.items()
        }
        base = values.get("disk")
        cells = [
            cell(v, None if name == "disk" or base is None else base, ".3g") for name, v in values.items()
        ]
        latency_rows.append([row.system, str(row.workers), *cells])
    for drain in first.drains:
        rates = {
            name: next(d.tasks_per_sec for d in results.drains if d.system == drain.system)
            for name, (_, results) in measured.items()
        }
        base = rates.get("disk")
        cells = [
            cell(v, None if name == "disk" or base is None else base, ",.0f") for name, v in rates.items()
        ]
        drain_rows.append([drain.system, str(drain.workers), *cells])
    return latency_rows, drain_rows


def print_filesystems(machine: dict[str, Any], measured: dict[str, tuple[Placement, Results]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"{machine['cpus']} CPUs ({machine['cpu_model']}) · Linux {machine['kernel']} · "
        f"Python {machine['python']} · keepwarm {machine['keepwarm']} ({machine['source']}) · "
        f"load average {machine['load_average']:.2f} at the start"
    )
    for name, (place, _) in measured.items():
        sizes = place.sizes
        console.print(
            f"[bold]{name}[/]: {place.where}; {sizes.roundtrips} round trips after {sizes.warmup} "
            f"warm-up, {sizes.tasks}-task drain"
            + (f", paused {place.pause_sec:g} s before naive" if place.pause_sec else "")
        )
    latency_rows, drain_rows = per_filesystem(measured)
    names = list(measured)
    for title, rows in (
        ("Round trip p50, ms (× disk's)", latency_rows),
        ("Drain, tasks/s (× disk's)", drain_rows),
    ):
        table = Table("system", "workers", *names, title=title)
        for row in rows:
            table.add_row(*row)
        console.print(table)


def write_filesystems_json(
    path: Path, machine: dict[str, Any], measured: dict[str, tuple[Placement, Results]]
) -> None:
    report = {
        "machine": machine,
        "placements": {
            name: {
                "where": place.where,
                "client": str(place.client),
                "workers": str(place.workers),
                "sizes": asdict(place.sizes),
                "latency": [asdict(r) for r in results.latencies],
                "drain": [asdict(d) for d in results.drains],
                "pauses": results.pauses,
            }
            for name, (place, results) in measured.items()
        },
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_workdir_options(parser)
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole run takes < 60 s")
    parser.add_argument("--roundtrips", type=int, metavar="N", help="timed sequential round trips per case")
    parser.add_argument("--tasks", type=int, metavar="N", help="tasks per drain")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers to this JSON file")
    parser.add_argument(
        "--filesystems",
        type=filesystem_list,
        metavar="LIST",
        help="keepwarm and naive on each of these, side by side in one run: disk (under --dir or .bench/), "
        "tmpfs, sshfs (an sshd on 127.0.0.2 and an sshfs mount made for the run; at most "
        f"{SSHFS_MOST.roundtrips} round trips and {SSHFS_MOST.tasks} tasks there), e.g. disk,tmpfs,sshfs",
    )
    parser.add_argument(
        "--pause",
        type=float,
        metavar="SEC",
        help="seconds to pause before a system when an earlier one deleted files "
        f"(default: {PAUSE_SEC:g}; 0 with --quick or on tmpfs)",
    )
    for hidden in ("--serve", "--serve-dir", "--serve-slot"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def choose_sizes(options: argparse.Namespace) -> Sizes:
    base = QUICK if options.quick else FULL
    roundtrips = options.roundtrips or base.roundtrips
    if roundtrips < 100:
        raise SystemExit("--roundtrips must be at least 100 (for a p99)")
    return Sizes(roundtrips, base.warmup, options.tasks or base.tasks)


def choose_pause(options: argparse.Namespace, filesystem: str | None) -> float:
    if options.pause is not None:
        return float(options.pause)
    return 0.0 if options.quick or filesystem == "tmpfs" else PAUSE_SEC


def run(options: argparse.Namespace) -> int:
    sizes = choose_sizes(options)
    results = Results()
    with temp_workdir(options, "queue_roundtrip-") as workdir:
        machine = describe_machine(workdir, ("distributed",))
        bench = Run(workdir, sizes, choose_pause(options, machine["filesystem"]), results)
        for system in SYSTEMS:
            bench.measure(system)
    rows = ratios(results)
    print_report(machine, sizes, results, rows)
    if options.json:
        write_json(options.json, machine, sizes, results, rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    use_app_code()
    if options.serve:
        serve(Path(options.serve_dir), options.serve_slot, options.serve, options.parent_pid)
        return 0
    if options.filesystems and options.tmpfs:
        raise SystemExit("--tmpfs and --filesystems: list tmpfs in --filesystems instead")
    return run_main(run_filesystems if options.filesystems else run, options)


if __name__ == "__main__":
    sys.exit(main())
