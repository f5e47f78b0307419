"""Retention: TTLs and file-count limits per folder, in batches, never touching live or unfinished work."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from keepwarm.queue.retention import RetentionReport, enforce_retention
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.settings import ClusterSettings

NOW = 1_900_000_000.0  # a fixed clock: files are aged with os.utime, never by sleeping
HOUR = 3600.0


@pytest.fixture
def queue(tmp_path: Path) -> TaskQueue:
    return TaskQueue(tmp_path / "service" / "queue").ensure()


def put(folder: Path, name: str, age_sec: float, content: str = "{}") -> Path:
    """A real file ``age_sec`` old (by mtime) at ``NOW``."""
    path = folder / name
    path.write_text(content)
    age(path, age_sec)
    return path


def age(path: Path, age_sec: float) -> None:
    os.utime(path, (NOW - age_sec, NOW - age_sec), follow_symlinks=False)


def names(folder: Path) -> set[str]:
    return set(os.listdir(folder))


def settings(**overrides: Any) -> ClusterSettings:
    return ClusterSettings(**overrides)


def test_done_files_past_their_ttl_are_removed_and_younger_ones_kept(queue: TaskQueue) -> None:
    put(queue.done, "old.task.json", 169 * HOUR)
    put(queue.done, "recent.task.json", 167 * HOUR)
    report = enforce_retention(queue, settings(), now=NOW)
    assert names(queue.done) == {"recent.task.json"}
    assert report == RetentionReport(done=1)


def test_each_folder_has_its_own_ttl(queue: TaskQueue) -> None:
    config = settings(done_ttl_hours=1, failed_ttl_hours=2, heartbeat_ttl_hours=0.5)
    put(queue.done, "a.task.json", 1.5 * HOUR)
    put(queue.failed, "b.task.json", 1.5 * HOUR)
    put(queue.heartbeats, "loop-7.json", 1.5 * HOUR)
    put(queue.heartbeats, "loop-8.json", 0.25 * HOUR)
    report = enforce_retention(queue, config, now=NOW)
    assert names(queue.done) == set()
    assert names(queue.failed) == {"b.task.json"}
    assert names(queue.heartbeats) == {"loop-8.json"}
    assert (report.done, report.failed, report.heartbeats, report.more) == (1, 0, 1, False)


def test_the_reference_defaults_apply_without_configuration(queue: TaskQueue) -> None:
    put(queue.failed, "kept.task.json", 300 * HOUR)  # failed lives 336 h, done only 168 h
    put(queue.failed, "gone.task.json", 337 * HOUR)
    put(queue.heartbeats, "loop-9.json", 25 * HOUR)
    enforce_retention(queue, settings(), now=NOW)
    assert names(queue.failed) == {"kept.task.json"}
    assert names(queue.heartbeats) == set()


def test_count_limit_removes_the_oldest_beyond_the_limit(queue: TaskQueue) -> None:
    config = settings(done_max_files=3, failed_max_files=2)
    for hours in range(1, 7):
        put(queue.done, f"d{hours}.task.json", hours * HOUR)
        put(queue.failed, f"f{hours}.task.json", hours * HOUR)
    report = enforce_retention(queue, config, now=NOW)
    assert names(queue.done) == {"d1.task.json", "d2.task.json", "d3.task.json"}
    assert names(queue.failed) == {"f1.task.json", "f2.task.json"}
    assert (report.done, report.failed) == (3, 4)


def test_count_limit_never_removes_a_file_younger_than_min_age(queue: TaskQueue) -> None:
    config = settings(done_max_files=2, retention_min_age_sec=600)
    put(queue.done, "old-1.task.json", 2 * HOUR)
    put(queue.done, "old-2.task.json", 1 * HOUR)
    for seconds in (30, 60, 599):
        put(queue.done, f"young-{seconds}.task.json", seconds)
    report = enforce_retention(queue, config, now=NOW)
    # Over the limit still (3 > 2), but every file left is younger than 600 s: the submitters of
    # these results may not have read them yet.
    assert names(queue.done) == {"young-30.task.json", "young-60.task.json", "young-599.task.json"}
    assert report.done == 2 and not report.more


def test_live_heartbeats_are_kept_whatever_their_age(queue: TaskQueue) -> None:
    config = settings(heartbeat_max_files=1)
    for slot in ("loop-0", "loop-1", "loop-2", "loop-3"):
        put(queue.heartbeats, f"{slot}.json", 48 * HOUR)
    put(queue.heartbeats, "loop-4.json", 2 * HOUR)
    report = enforce_retention(queue, config, now=NOW, live_slots={"loop-0", "loop-1"})
    # TTL takes the dead slots' 48 h heartbeats; the count limit then takes loop-4 but cannot go
    # below the live slots.
    assert names(queue.heartbeats) == {"loop-0.json", "loop-1.json"}
    assert report.heartbeats == 3


def test_a_rejected_file_goes_with_its_rejection_note_and_counts_once(queue: TaskQueue) -> None:
    config = settings(failed_max_files=2)
    for index, hours in enumerate((5, 4, 3)):
        name = f"r{index}.task.json"
        put(queue.failed, name, hours * HOUR, "not json")
        put(queue.failed, name + ".rejection.txt", hours * HOUR, "invalid JSON\n")
    report = enforce_retention(queue, config, now=NOW)
    assert names(queue.failed) == {
        "r1.task.json",
        "r1.task.json.rejection.txt",
        "r2.task.json",
        "r2.task.json.rejection.txt",
    }
    assert report.failed == 1


def test_a_rejected_file_is_aged_from_its_rejection_not_its_old_mtime(queue: TaskQueue) -> None:
    pending = put(queue.pending, "00000000000000000001-stale.task.json", 400 * HOUR, "not json")
    rejected = queue.reject(pending, "invalid JSON")  # a rename keeps the submitter's 400 h mtime
    note = rejected.with_name(rejected.name + ".rejection.txt")
    age(note, 1 * HOUR)
    put(queue.failed, "orphan.task.json.rejection.txt", 400 * HOUR)  # its file already removed
    report = enforce_retention(queue, settings(), now=NOW)
    assert names(queue.failed) == {rejected.name, note.name}
    assert report.failed == 1


def test_pending_and_running_files_are_never_removed(queue: TaskQueue) -> None:
    config = settings(done_ttl_hours=0.001, done_max_files=1, failed_max_files=1, retention_min_age_sec=0)
    owner = queue.owner_dir("loop-0", "abc")
    owner.mkdir()
    for hours in (1000, 2000):
        put(queue.pending, f"{hours:020d}-t{hours}.task.json", hours * HOUR)
        put(owner, f"{hours:020d}-r{hours}.task.json", hours * HOUR)
    put(queue.done, "d.task.json", 1000 * HOUR)
    enforce_retention(queue, config, now=NOW)
    assert len(names(queue.pending)) == 2
    assert len(names(owner)) == 2
    assert names(queue.done) == set()


def test_temp_files_are_left_to_their_writers_and_not_counted(queue: TaskQueue) -> None:
    config = settings(done_max_files=1, heartbeat_max_files=1)
    put(queue.done, "result.task.json", 1 * HOUR)
    for folder in (queue.done, queue.failed, queue.heartbeats):
        put(folder, ".result.task.json.0a1b2c3d.tmp", 1000 * HOUR)
        put(folder, ".loop-0.json.4e5f6a7b.tmp", 1000 * HOUR)
    report = enforce_retention(queue, config, now=NOW)
    assert names(queue.done) == {
        "result.task.json",
        ".result.task.json.0a1b2c3d.tmp",
        ".loop-0.json.4e5f6a7b.tmp",
    }
    assert len(names(queue.failed)) == 2 and len(names(queue.heartbeats)) == 2
    assert report.removed == 0


def test_a_symlink_is_removed_as_a_link_and_never_followed(queue: TaskQueue, tmp_path: Path) -> None:
    precious = put(tmp_path, "precious.txt", 1000 * HOUR)
    precious_dir = tmp_path / "precious-dir"
    precious_dir.mkdir()
    put(precious_dir, "inside.txt", 1000 * HOUR)
    old_link = queue.failed / "old-link.task.json"
    old_link.symlink_to(precious)
    age(old_link, 400 * HOUR)
    dir_link = queue.failed / "dir-link.task.json"
    dir_link.symlink_to(precious_dir, target_is_directory=True)
    age(dir_link, 400 * HOUR)
    young_link = queue.failed / "young-link.task.json"
    young_link.symlink_to(precious)  # its target is old, the link is not: lstat decides
    age(young_link, 1 * HOUR)
    report = enforce_retention(queue, settings(), now=NOW)
    assert names(queue.failed) == {"young-link.task.json"}
    assert precious.read_text() == "{}"
    assert names(precious_dir) == {"inside.txt"}
    assert report.failed == 2


def test_a_rejected_directory_is_removed_whole_without_following_links_inside(
    queue: TaskQueue, tmp_path: Path
) -> None:
    precious = put(tmp_path, "precious.txt", 1 * HOUR)
    rejected = queue.failed / "dir.task.json"
    rejected.mkdir()
    put(rejected, "junk", 1 * HOUR)
    (rejected / "escape").symlink_to(tmp_path)
    put(queue.failed, "dir.task.json.rejection.txt", 400 * HOUR, "not a regular file\n")
    age(rejected, 400 * HOUR)
    report = enforce_retention(queue, settings(), now=NOW)
    assert names(queue.failed) == set()
    assert precious.exists()
    assert report.failed == 1


def test_a_queue_folder_replaced_by_a_symlink_is_not_followed(queue: TaskQueue) -> None:
    put(queue.pending, "00000000000000000001-t.task.json", 1000 * HOUR)
    queue.done.rmdir()
    queue.done.symlink_to(queue.pending, target_is_directory=True)
    put(queue.failed, "f.task.json", 1000 * HOUR)
    report = enforce_retention(queue, settings(), now=NOW)
    assert names(queue.pending) == {"00000000000000000001-t.task.json"}
    assert report.failed == 1 and report.unlisted == ("done",)


def test_removal_works_in_batches_until_done(queue: TaskQueue) -> None:
    for index in range(7):
        put(queue.done, f"d{index}.task.json", 200 * HOUR)
    for index in range(3):
        put(queue.failed, f"f{index}.task.json", 400 * HOUR)
    first = enforce_retention(queue, settings(), now=NOW, batch=5)
    assert first == RetentionReport(done=5, more=True)
    second = enforce_retention(queue, settings(), now=NOW, batch=5)
    assert second == RetentionReport(done=2, failed=3, more=False)
    assert names(queue.done) == set() and names(queue.failed) == set()
    assert enforce_retention(queue, settings(), now=NOW, batch=5) == RetentionReport()


def test_batches_remove_the_oldest_first(queue: TaskQueue) -> None:
    for hours in range(170, 175):
        put(queue.done, f"d{hours}.task.json", hours * HOUR)
    enforce_retention(queue, settings(), now=NOW, batch=2)
    assert names(queue.done) == {"d170.task.json", "d171.task.json", "d172.task.json"}


def test_a_backlog_of_ten_thousand_files_is_worked_off_in_batches(queue: TaskQueue) -> None:
    # Hard links of one file: creating 10,000 inodes is slow on some filesystems, and every link
    # is a name retention must list and remove like any other.
    first = put(queue.done, "t00000.task.json", HOUR)
    for index in range(1, 10_000):
        os.link(first, queue.done / f"t{index:05d}.task.json")
    config = settings(done_max_files=2000)
    reports: list[RetentionReport] = []
    while not reports or reports[-1].more:
        reports.append(enforce_retention(queue, config, now=NOW, batch=500))
    assert [r.done for r in reports] == [500] * 16
    assert len(names(queue.done)) == 2000


def test_one_retention_event_with_counts_when_something_was_removed(queue: TaskQueue) -> None:
    put(queue.done, "d.task.json", 200 * HOUR)
    put(queue.heartbeats, "loop-3.json", 25 * HOUR)
    enforce_retention(queue, settings(), now=NOW)
    enforce_retention(queue, settings(), now=NOW)  # nothing left: no second event
    events = queue.events.read("retention")
    assert len(events) == 1
    assert {k: v for k, v in events[0].items() if k != "timestamp"} == {
        "event": "retention",
        "done": 1,
        "failed": 0,
        "heartbeats": 1,
        "more": False,
    }


def test_a_file_that_vanishes_mid_pass_is_skipped_and_counts_as_gone(
    queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(4):
        put(queue.done, f"d{index}.task.json", (10 - index) * HOUR)
    real_unlink = os.unlink

    # A race with another remover (retry, an operator) cannot be timed from a test: this stand-in
    # removes the oldest file itself just before retention does, as the other process would.
    def racing_unlink(path: Any, *, dir_fd: int | None = None) -> None:
        if path == "d0.task.json":
            real_unlink(path, dir_fd=dir_fd)
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", racing_unlink)
    report = enforce_retention(queue, settings(done_max_files=2), now=NOW)
    assert names(queue.done) == {"d2.task.json", "d3.task.json"}
    assert report.done == 1


def test_a_storage_error_is_raised_only_when_no_folder_can_be_listed(queue: TaskQueue) -> None:
    put(queue.failed, "f.task.json", 400 * HOUR)
    queue.done.rmdir()
    queue.done.write_text("not a folder")
    report = enforce_retention(queue, settings(), now=NOW)
    assert report == RetentionReport(failed=1, unlisted=("done",))
    for folder in (queue.failed, queue.heartbeats):
        folder.rmdir()
        folder.write_text("not a folder")
    with pytest.raises(NotADirectoryError):
        enforce_retention(queue, settings(), now=NOW)


def test_a_queue_without_folders_has_nothing_to_remove(tmp_path: Path) -> None:
    queue = TaskQueue(tmp_path / "never-started" / "queue")
    assert enforce_retention(queue, settings(), now=NOW) == RetentionReport()


def test_batch_must_allow_at_least_one_removal(queue: TaskQueue) -> None:
    with pytest.raises(ValueError, match="batch"):
        enforce_retention(queue, settings(), batch=0)
