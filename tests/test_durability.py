"""Durability (``[cluster] durable = true``): a power cut between a task's claim and its terminal file.

The share is a real ext4 filesystem in a loop device, mounted with ``commit=600``: ext4 then writes its
journal to the device only when someone syncs (or after ten minutes), so what keepwarm did not fsync
stays in the page cache and is not on the device. The power cut: every keepwarm process is killed at
once (``kill -9``) while two tasks are claimed and running, and the device image is copied as it is
then; unmounting the share and mounting the copy in its place replays ext4's journal, as a reboot
would, and every read comes from the device, not from the page cache of the run that crashed. The
service started again on the copy must find every task whose submit returned: the ones done before
the cut still done (not run again), the two that were running run again and done, the queued ones
done, each with exactly one terminal file.

Without the fsyncs of durable mode the copy misses most of the run (``bench/durability.py`` prints how
much); what this test cannot show is a disk that lies about its cache flushes, or a network
filesystem's server crashing (``docs/reliability.md``, "Durability").
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepwarm._sys.watch import IN_CREATE, IN_MOVED_TO, thread_watcher
from keepwarm.env import Env
from keepwarm.queue.results import wait_for_records
from keepwarm.queue.task import terminal_record
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.service.liveness import pid_alive

from .conftest import EXAMPLE_APPS, Services, copy_app, supervisor_state, wait_until

IMAGE_MB = 64
SLEEP_SEC = 3.0  # the claimed tasks: long enough that the cut surely lands while they run


def run_tool(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def mount_ext4(image: Path, at: Path) -> None:
    mounted = run_tool("mount", "-t", "ext4", "-o", "loop,commit=600", str(image), str(at))
    if mounted.returncode != 0:
        raise OSError(f"mount {image}: {mounted.stderr.strip()}")


def make_ext4(image: Path, mount: Path) -> None:
    """A new ext4 filesystem in ``image``, mounted at ``mount`` (made) with a ten-minute commit."""
    mount.mkdir()
    with open(image, "wb") as file:
        file.truncate(IMAGE_MB << 20)
    made = run_tool("mkfs.ext4", "-q", "-F", str(image))
    if made.returncode != 0:
        raise OSError(f"mkfs.ext4 {image}: {made.stderr.strip()}")
    mount_ext4(image, mount)


def unmount(at: Path) -> None:
    if os.path.ismount(at):
        run_tool("umount", "-l", str(at))  # lazy: a watch the test process still holds does not keep it


@pytest.fixture
def ext4_share(tmp_path: Path) -> Iterator[Path]:
    """An ext4 filesystem in an image file, mounted with a ten-minute journal commit; its mount point."""
    missing = [tool for tool in ("mkfs.ext4", "mount", "umount", "losetup") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: install Debian's e2fsprogs and mount")
    image, mount = tmp_path / "share.img", tmp_path / "mnt"
    try:
        make_ext4(image, mount)
    except OSError as exc:  # no loop devices in this container, or not root
        pytest.skip(f"a loop-device ext4 mount cannot be made here ({exc}): run the tests as root")
    try:
        yield mount
    finally:
        unmount(mount)


def test_a_power_cut_between_claim_and_terminal_file_loses_no_task(
    tmp_path: Path, ext4_share: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEPWARM_SHARE", str(ext4_share / "share"))
    app = copy_app(tmp_path, "flaky", **{"[cluster]\n": "[cluster]\ndurable = true\nstop_timeout_sec = 5\n"})
    env = Env(app)
    service = services.start(env)
    before = {h.task_id: h.result(timeout=30) for h in [service.submit({"value": n}) for n in range(10)]}
    claimed = [service.submit({"action": "sleep", "seconds": SLEEP_SEC, "value": "slow"}) for _ in range(2)]
    queued = [service.submit({"value": n}) for n in range(10, 20)]
    wait_until(
        lambda: all(service.queue.locate(h.task_id).state == "running" for h in claimed),
        what="both slow tasks claimed",
    )
    state = supervisor_state(env)
    pids = [state.pid, *(row.pid for row in state.loops if row.pid is not None)]
    for pid in pids:  # the power cut: every keepwarm process at once
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), what="every keepwarm process gone")
    assert all(service.queue.locate(h.task_id).state == "running" for h in claimed), "the cut came too late"

    crashed = tmp_path / "crashed.img"
    shutil.copyfile(tmp_path / "share.img", crashed)  # the device as it was at the cut
    unmount(ext4_share)
    mount_ext4(crashed, ext4_share)  # journal replayed, nothing read from the crashed run's page cache

    service = services.start(env)
    ids = [*before, *(h.task_id for h in claimed + queued)]
    records = wait_for_records(service.queue, ids, timeout=60)
    assert {task_id: records[task_id].state for task_id in ids} == dict.fromkeys(ids, "done")
    assert {task_id: records[task_id].result for task_id in before} == before  # not run again
    assert all(records[h.task_id].result["value"] == "slow" for h in claimed)
    assert sorted(records[h.task_id].result["value"] for h in queued) == list(range(10, 20))
    queue = service.queue
    terminal = sorted(name for folder in (queue.done, queue.failed) for name in os.listdir(folder))
    assert len(terminal) == len(ids) == len(set(terminal)), terminal  # one terminal file per task
    # (a loop removes its claim just after it publishes the terminal file)
    wait_until(lambda: not any(files for _, _, files in os.walk(queue.running)), what="no claim left")


def remount_a_copy(image: Path, mount: Path) -> None:
    """The share unmounted and a copy of its device mounted in its place (synced first: same files)."""
    assert run_tool("sync", "-f", str(mount)).returncode == 0
    copy = image.with_name(f"copy-{image.name}")
    shutil.copyfile(image, copy)
    (mount / "after-the-copy").touch()
    unmount(mount)
    mount_ext4(copy, mount)
    assert not (mount / "after-the-copy").exists(), "the copy is not what is mounted"


def test_a_watch_on_a_share_mounted_again_is_replaced(
    tmp_path: Path, ext4_share: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch on a share that was unmounted sees nothing of the share mounted in its place: the
    kernel dropped it (IN_IGNORED: the next wait asks for a rescan), or, while anything still holds
    the old filesystem, it watches folders no longer at their paths. Either way ``moved()`` says so,
    and the thread's next wait watches the new folders."""
    monkeypatch.setenv("KEEPWARM_SHARE", str(ext4_share / "share"))
    queue = TaskQueue.for_env(Env("mycode_project", EXAMPLE_APPS)).ensure()  # the share: on the mount
    folders = (queue.done, queue.failed)
    watcher = thread_watcher(folders, IN_CREATE | IN_MOVED_TO)
    assert watcher.mode == "inotify" and not watcher.moved()
    remount_a_copy(tmp_path / "share.img", ext4_share)
    watcher.discard_pending()  # an IN_IGNORED queued by the unmount marks the watch lost
    assert watcher.moved()
    # (a watch the kernel kept is looked at again MOVED_CHECK_SEC after the last look)
    wait_until(lambda: thread_watcher(folders, IN_CREATE | IN_MOVED_TO) is not watcher, 5, "a new watch")
    renewed = thread_watcher(folders, IN_CREATE | IN_MOVED_TO)
    assert renewed.mode == "inotify"
    (task,) = queue.submit([queue.make_task({"x": 3})])
    assert queue.publish_terminal(terminal_record(task, "done", result=3))
    assert f"{task.task_id}.task.json" in renewed.wait(5).names
