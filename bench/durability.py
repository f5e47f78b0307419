"""What a power cut leaves of a service's queue, with and without ``[cluster] durable = true``.

The run of ``tests/test_durability.py`` at a size that shows the difference: a service of the flaky
app on a fresh ext4 filesystem in a loop device, mounted with ``commit=600`` (ext4 writes its journal
to the device only when someone syncs, or after ten minutes); TASKS quick tasks submitted and done,
then two slow ones claimed and TASKS more queued behind them; every keepwarm process ``kill -9``-ed at
once; the device image copied as it is then (the power cut) and mounted in the share's place (the
journal replayed, as at a reboot). Then, for every task whose submit had returned: where the copy
has it (done, running, pending, nowhere), and whether a service started on the copy finishes it.

Second, what ``durable`` costs: the submit-and-result round trip (p50 of ROUNDS) and the drain of
DRAIN tasks through mycode_project's 2 loops on the machine's disk, durable and not, alternated
twice in one run, with the ratio of the medians.

Needs root (loop devices, mount). Usage: ``.venv/bin/python bench/durability.py [--tasks N]
[--json PATH]``. Every process it starts is stopped by pid; its temp dir (under .bench/) is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the disk-image helpers live with the test they serve

from tests.test_durability import make_ext4, mount_ext4, unmount  # noqa: E402

from keepwarm.api import Service  # noqa: E402
from keepwarm.env import Env  # noqa: E402
from keepwarm.errors import KeepwarmError  # noqa: E402
from keepwarm.queue.results import wait_for_records  # noqa: E402
from keepwarm.queue.state import read_supervisor_state  # noqa: E402
from keepwarm.service.lifecycle import stop_service  # noqa: E402
from keepwarm.service.liveness import pid_alive  # noqa: E402
from provenance import describe_machine, source_version, wait_for  # noqa: E402

FLAKY = ROOT / "examples" / "apps" / "flaky"
MYCODE = ROOT / "examples" / "apps" / "mycode_project"
ROUNDS = 300
DRAIN = 1000


def with_durable(source: Path, folder: Path, durable: bool) -> Env:
    """A copy of the app ``source`` in ``folder`` with ``[cluster] durable`` set; its logs in folder."""
    app = folder / "apps" / source.name
    shutil.copytree(source, app)
    settings = app / "app_settings.toml"
    text = settings.read_text()
    line = f"durable = {str(durable).lower()}\n"
    if "[cluster]\n" in text:
        text = text.replace("[cluster]\n", f"[cluster]\n{line}")
    else:
        text = f"{text}\n[cluster]\n{line}"
    settings.write_text(text)
    os.environ["KEEPWARM_LOG_DIR"] = str(folder / "logs")
    return Env(app)


def cost(folder: Path, durable: bool) -> tuple[float, float]:
    """Round trip p50 (ms) and drain (tasks/s) of a service with ``durable``, on ``folder``'s disk."""
    os.environ["KEEPWARM_SHARE"] = str(folder / "share")
    env = with_durable(MYCODE, folder, durable)
    service = Service(env)
    service.start()
    try:
        for n in range(20):  # warm
            service.submit({"x": n + 2}).result(timeout=30)
        trips = []
        for n in range(ROUNDS):
            began = time.perf_counter()
            service.submit({"x": n + 2}).result(timeout=30)
            trips.append(time.perf_counter() - began)
        began = time.perf_counter()
        handles = service.submit_many({"args": {"x": n + 2}} for n in range(DRAIN))
        wait_for_records(service.queue, [h.task_id for h in handles], timeout=120)
        return statistics.median(trips) * 1000, DRAIN / (time.perf_counter() - began)
    finally:
        stop_service(env, timeout=10)


def one_cut(folder: Path, durable: bool, tasks: int) -> dict[str, object]:
    image, mount = folder / "share.img", folder / "mnt"
    make_ext4(image, mount)
    os.environ["KEEPWARM_SHARE"] = str(mount / "share")
    env = with_durable(FLAKY, folder, durable)
    try:
        service = Service(env)
        service.start()
        done_before = [h.task_id for h in service.submit_many({"args": {"value": n}} for n in range(tasks))]
        wait_for_records(service.queue, done_before, timeout=120)
        slow = [service.submit({"action": "sleep", "seconds": 5, "value": "slow"}).task_id for _ in range(2)]
        queued = [h.task_id for h in service.submit_many({"args": {"value": n}} for n in range(tasks))]
        wait_for(
            lambda: all(service.queue.locate(t).state == "running" for t in slow),
            60,
            "the slow tasks claimed",
        )
        state = read_supervisor_state(env.service_dir / "supervisor.json")
        assert state is not None
        pids = [state.pid, *(row.pid for row in state.loops if row.pid is not None)]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(pid_alive(pid) for pid in pids), 60, "every keepwarm process gone")
        shutil.copyfile(image, folder / "crashed.img")
        unmount(mount)
        mount_ext4(folder / "crashed.img", mount)
        ids = [*done_before, *slow, *queued]
        found = dict.fromkeys(("done", "running", "pending", "nowhere"), 0)
        for task_id in ids:
            found[where(Service(env), task_id)] += 1
        service = Service(env)
        service.start()
        there = [task_id for task_id in ids if where(service, task_id) != "nowhere"]
        records = wait_for_records(service.queue, there, timeout=120)
        finished = sum(1 for record in records.values() if record.state == "done")
        return {"durable": durable, "acknowledged": len(ids), **found, "done after restart": finished}
    finally:
        try:
            stop_service(env, timeout=10)
        finally:
            unmount(mount)


def where(service: Service, task_id: str) -> str:
    """done, running or pending (the task's folder on the share), or nowhere."""
    try:
        state = service.queue.locate(task_id).state
    except (KeepwarmError, OSError):
        return "nowhere"
    return state if state in ("done", "running", "pending") else "nowhere"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100, help="tasks done before the cut, and queued at it")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/durability.py needs root: it makes loop-device mounts", file=sys.stderr)
        return 2
    (ROOT / ".bench").mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="durability-", dir=ROOT / ".bench"))
    rows = []
    costs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    machine = describe_machine(workdir)
    try:
        for durable in (True, False):
            folder = workdir / ("durable" if durable else "not-durable")
            folder.mkdir()
            rows.append(one_cut(folder, durable, args.tasks))
        for turn, durable in enumerate((False, True, False, True)):
            folder = workdir / f"cost-{turn}"
            folder.mkdir()
            costs[durable].append(cost(folder, durable))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"# {machine}; keepwarm {source_version()}")
    columns = ["durable", "acknowledged", "done", "running", "pending", "nowhere", "done after restart"]
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    print("\n| durable | round trip p50 (ms), each turn | drain (tasks/s), each turn |\n| --- | --- | --- |")
    for durable in (False, True):
        trips = ", ".join(f"{trip:.2f}" for trip, _ in costs[durable])
        drains = ", ".join(f"{drain:,.0f}" for _, drain in costs[durable])
        print(f"| {str(durable).lower()} | {trips} | {drains} |")
    median = {d: [statistics.median(x[i] for x in costs[d]) for i in (0, 1)] for d in (False, True)}
    print(
        f"durable / not: round trip p50 {median[True][0] / median[False][0]:.2f}x, "
        f"drain {median[True][1] / median[False][1]:.2f}x (medians of the turns)"
    )
    if args.json:
        document = {"cuts": rows, "costs": {str(key): value for key, value in costs.items()}}
        args.json.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
