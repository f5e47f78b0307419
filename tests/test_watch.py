"""Which filesystems get inotify: the type statfs(2) reports decides, and shared ones are polled."""

from __future__ import annotations

from pathlib import Path

import pytest

from keepwarm._sys import watch


def test_a_local_folder_is_watched_by_inotify(tmp_path: Path) -> None:
    magic = watch.filesystem_magic(tmp_path)
    assert magic is not None and magic not in watch._SHARED_FS
    assert watch.inotify_usable(tmp_path)


def test_keepwarm_watch_poll_forces_polling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPWARM_WATCH", "poll")
    assert not watch.inotify_usable(tmp_path)
    with watch.Watcher([tmp_path]) as watcher:
        assert watcher.mode == "poll"


@pytest.mark.parametrize(("magic", "name"), [(0x6969, "nfs"), (0xFF534D42, "cifs"), (0x65735546, "fuse")])
def test_shared_filesystems_are_polled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, magic: int, name: str
) -> None:
    # A test double at a boundary this machine cannot cross: no NFS, SMB or FUSE mount exists here, so
    # statfs(2)'s answer is replaced by the magic number such a mount reports.
    monkeypatch.setattr(watch, "filesystem_magic", lambda path: magic)
    assert watch._SHARED_FS[magic] == name
    assert not watch.inotify_usable(tmp_path)
    with watch.Watcher([tmp_path]) as watcher:
        assert watcher.mode == "poll"


def test_a_polled_watcher_handed_out_again_starts_its_back_off_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result wait takes its thread's watcher again: polling, its first look must come after the
    shortest delay, not after the longest one the previous wait backed off to (each result() on an
    sshfs share took 250 ms)."""
    monkeypatch.setenv("KEEPWARM_WATCH", "poll")
    delays: list[float | None] = []
    real_wait = watch._wait_readable

    def spied_wait(fds: list[int], timeout: float | None) -> list[int]:
        delays.append(timeout)
        return real_wait(fds, timeout)

    monkeypatch.setattr(watch, "_wait_readable", spied_wait)
    folder = tmp_path / "done"
    folder.mkdir()
    first = watch.thread_watcher((folder,))
    assert first.mode == "poll"
    while not delays or delays[-1] != watch.POLL_MAX_SEC:  # an idle wait backs off to the longest
        first.wait(None)
    again = watch.thread_watcher((folder,))
    assert again is first
    again.wait(None)
    assert delays[-1] == watch.POLL_MIN_SEC
