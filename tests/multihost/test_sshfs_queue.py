"""A real network filesystem under the queue: the share mounted through sshfs over the loopback sshd.

The service (supervisor and loops) is started with its share on the sshfs mount, as on a host that
mounts the share; this test submits and reads results through the folder itself, as the host that
serves it. The loops' writes reach the folder through SFTP, and inotify on the mount sees none of the
folder's: keepwarm must see the FUSE filesystem and poll with back-off. No attribute, entry or
directory caching (the mount options below), or a loop would miss new tasks for seconds.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from pathlib import Path

import pytest

from keepwarm._sys.watch import filesystem_type, inotify_usable
from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.queue.results import wait_for_records
from keepwarm.service.liveness import pid_alive

from ..conftest import Services, copy_app, supervisor_state, wait_until
from .hosts import SshfsShare

TASKS = 200
ROUND_TRIPS = 20


def test_the_mount_is_a_shared_filesystem_and_its_primitives_work(sshfs_share: SshfsShare) -> None:
    """statfs says FUSE; and what the queue does to files behaves on it as on a local disk."""
    from keepwarm._sys.atomic import publish_new, write_atomic

    assert filesystem_type(sshfs_share.folder) != "fuse" and inotify_usable(sshfs_share.folder)
    assert filesystem_type(sshfs_share.mount) == "fuse"
    assert not inotify_usable(sshfs_share.mount)
    probe = sshfs_share.mount / "probe"
    probe.mkdir()
    # renameat2(RENAME_NOREPLACE) is EINVAL over FUSE: publish_new falls back to link() + unlink.
    assert publish_new(probe / "task", b"first", durable=True)
    assert not publish_new(probe / "task", b"second", durable=True)
    write_atomic(probe / "state", b"1", durable=True)
    write_atomic(probe / "state", b"2", durable=True)
    seen = sshfs_share.folder / "probe"
    assert (seen / "task").read_bytes() == b"first" and (seen / "state").read_bytes() == b"2"
    assert sorted(os.listdir(seen)) == ["state", "task"]  # no temp file left behind


@pytest.mark.parametrize("loops_on", ["mount", "folder"])
def test_a_service_on_the_mount_serves_a_submitter_on_the_folder_and_loses_nothing(
    loops_on: str, tmp_path: Path, sshfs_share: SshfsShare, services: Services
) -> None:
    """Loops read the queue through sshfs (``folder``: beside it, for the figures); 20 round trips, then
    200 tasks with one loop killed under load: all done and right; stop leaves no process."""
    app = copy_app(tmp_path, "mycode_project")
    (sshfs_share.folder / loops_on).mkdir(mode=0o700)  # this test's own share, seen from both sides
    served = (sshfs_share.mount if loops_on == "mount" else sshfs_share.folder) / loops_on
    on_share = Env(app, share_dir=served)  # the supervisor's view: its detached processes inherit it
    on_folder = Env(app, share_dir=sshfs_share.folder / loops_on)  # the submitter's, on the share's server
    services.start(on_share, timeout=60)
    first = supervisor_state(on_folder)  # the supervisor's state, written through the mount
    assert sorted(row.slot for row in first.loops) == ["loop-0", "loop-1"]
    mode = "poll" if loops_on == "mount" else "inotify"
    for slot in ("loop-0", "loop-1"):
        log = (on_folder.log_dir / f"{slot}.log").read_text()
        assert f"waking by {mode} on {served}" in log, log

    service = Service(on_folder)
    trips = []
    for n in range(ROUND_TRIPS):
        began = time.perf_counter()
        assert service.submit({"x": n + 2}).result(timeout=30)["x"] == n + 2
        trips.append(time.perf_counter() - began)

    began = time.monotonic()
    handles = service.submit_many([{"args": {"x": n}} for n in range(1, TASKS + 1)])
    victim = next(row for row in first.loops if row.slot == "loop-0")
    assert victim.pid is not None
    wait_until(lambda: service.counts().done >= ROUND_TRIPS + TASKS // 4, 60, "a quarter of the tasks done")
    os.kill(victim.pid, signal.SIGKILL)
    done_at_kill = service.counts().done - ROUND_TRIPS
    records = wait_for_records(service.queue, [h.task_id for h in handles], timeout=120)
    drained = time.monotonic() - began
    assert all(record.state == "done" for record in records.values())
    results = {record.result["x"]: record.result for record in records.values()}
    assert sorted(results) == list(range(1, TASKS + 1))
    assert all(_product(result["prime_factors"]) == x for x, result in results.items())

    def replaced() -> bool:
        row = next(r for r in supervisor_state(on_folder).loops if r.slot == "loop-0")
        return row.pid is not None and row.pid != victim.pid and row.future_state == "running"

    wait_until(replaced, 60, "loop-0 running again")
    if loops_on == "mount":  # (beside the folder, the 200 may all be done before the kill lands)
        assert done_at_kill < TASKS, "the kill came after the load: it proves nothing"
    print(
        f"\nloops on the {loops_on} ({filesystem_type(served)}): round trip p50 "
        f"{statistics.median(trips) * 1000:.1f} ms over {ROUND_TRIPS}; {TASKS} tasks with loop-0 killed "
        f"at {done_at_kill} done drained in {drained:.2f} s ({TASKS / drained:.0f} tasks/s)"
    )

    pids = [first.pid, *(row.pid for row in supervisor_state(on_folder).loops if row.pid is not None)]
    # Stopped from the folder's side: flock over sshfs is local to each side, so the service lock is
    # free there; the supervisor's heartbeat says it runs, and it is asked to stop.
    assert service.stop(timeout=30)["message"] == f"service {service.env.app_target} stopped"
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 30, "the supervisor and loops gone")


def _product(factors: list[int]) -> int:
    out = 1
    for factor in factors:
        out *= factor
    return out
