"""Storage faults on a real filesystem: a small tmpfs that fills up (ENOSPC), and one remounted read-only.

Mounting needs root with CAP_SYS_ADMIN (as in CI's container); elsewhere these tests skip and say why.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import StorageError

from .conftest import Services, copy_app, supervisor_state, wait_until

KEEPWARM = Path(sys.executable).parent / "keepwarm"


class SmallShare:
    """A 1 MiB tmpfs mounted at the test's share dir; filled and freed, remounted ro and rw on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        """Write until the filesystem refuses (down to single bytes, so not even a small file fits)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 1):
                while _wrote(fd, size):
                    pass
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink()


class ReadOnly:
    """A folder made read-only by a read-only bind mount over itself (root ignores file modes)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)

    def undo(self) -> None:
        subprocess.run(["umount", str(self.folder)], check=True)


def _wrote(fd: int, size: int) -> bool:
    try:
        os.write(fd, b"\0" * size)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return False
    return True


@pytest.fixture
def small_share(isolated_dirs: Path) -> Iterator[SmallShare]:
    isolated_dirs.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(isolated_dirs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN): {mounted.stderr.strip()}"
        )
    try:
        yield SmallShare(isolated_dirs)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(isolated_dirs)], check=False)
        subprocess.run(["umount", "-l", str(isolated_dirs)], check=True)


def visible_and_temp_files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_submit_on_a_full_share_fails_clearly_and_leaves_nothing(
    tmp_path: Path, small_share: SmallShare
) -> None:
    env = Env(copy_app(tmp_path, "mycode_project"))
    service = Service(env)
    service.queue.ensure()
    small_share.fill()

    with pytest.raises(StorageError, match="is full: nothing was queued"):
        service.submit({"x": 1}, queue_only=True)
    with pytest.raises(StorageError):
        service.submit_many([{"args": {"x": x}} for x in range(1, 51)], queue_only=True)
    assert visible_and_temp_files(service.queue.pending) == []  # no task, no half-written temp file

    cli = subprocess.run(
        [str(KEEPWARM), "submit", str(env.app_dir), "--queue-only", "--args", '{"x": 2}'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert "error: the share holding" in cli.stderr and "is full" in cli.stderr
    assert any(c.startswith("storage:") and "full" in c for c in service.status().conditions)

    small_share.free()
    assert service.status().conditions == []
    assert service.submit({"x": 3}, queue_only=True).task_id in "".join(os.listdir(service.queue.pending))


def test_a_loop_keeps_its_task_through_a_full_share_and_is_not_killed(
    tmp_path: Path, small_share: SmallShare, services: Services
) -> None:
    env = Env(copy_app(tmp_path, "flaky"))
    service = services.start(env, slots=1)
    (before,) = supervisor_state(env).loops
    handle = service.submit({"action": "sleep", "seconds": 1.0})
    wait_until(lambda: service.counts().running == 1, what="the task to be claimed")
    small_share.fill()

    log = env.log_dir / "loop-0.log"
    wait_until(lambda: "cannot publish task" in log.read_text(), timeout=30, what="a refused publish")
    assert any("full" in c for c in service.status().conditions)
    heartbeat = service.queue.heartbeats / "loop-0.json"
    timeout = env.settings.cluster.heartbeat_timeout_sec
    # Long enough that the supervisor would have killed the loop for a stale heartbeat in normal times.
    wait_until(
        lambda: os.path.getmtime(heartbeat) < os.path.getmtime(log) - 2 * timeout,
        timeout=30,
        what="the heartbeat to go stale for two heartbeat timeouts while the loop retries",
    )
    assert service.counts().running == 1 and service.counts().done == 0  # kept, not lost

    small_share.free()
    result = handle.result(timeout=30)
    assert result["ok"] and result["pid"] == before.pid and result["attempt"] == 1
    (after,) = supervisor_state(env).loops
    assert (after.incarnation, after.restarts) == (before.incarnation, 0)  # never killed or restarted
    assert service.counts().done == 1 and service.counts().running == 0
    assert [name for name in os.listdir(service.queue.done) if name.startswith(".")] == []


def test_a_read_only_queue_folder_refuses_submits_and_the_service_resumes(
    tmp_path: Path, small_share: SmallShare, services: Services
) -> None:
    env = Env(copy_app(tmp_path, "mycode_project"))
    service = services.start(env, slots=1)
    assert service.submit({"x": 5}).result(timeout=30)["x"] == 5
    read_only = ReadOnly(env.queue_dir)
    try:
        with pytest.raises(StorageError, match="is read-only: nothing was queued"):
            service.submit({"x": 6})
        assert any("read-only" in c for c in service.status().conditions)
        assert visible_and_temp_files(service.queue.pending) == []
    finally:
        read_only.undo()
    assert service.submit({"x": 7}).result(timeout=30)["x"] == 7
    (loop,) = supervisor_state(env).loops
    assert loop.restarts == 0
    wait_until(lambda: service.status().conditions == [], timeout=30, what="the condition to clear")
