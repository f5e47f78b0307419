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
