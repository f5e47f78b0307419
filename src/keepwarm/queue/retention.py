"""Retention: prune old terminal files and heartbeats in small batches; pending and running work never.

Per folder (``done/``, ``failed/``, ``heartbeats/``), files older than the folder's TTL go first, then
the oldest beyond the folder's file-count limit; the count limit never takes a file younger than
``retention_min_age_sec``, so a result is not pruned before its submitter reads it. A rejected file and
its ``.rejection.txt`` are one entry, aged by the newer of the two (a rename keeps the submitter's
mtime; the note is written at rejection). Temp files (``.*``) are left to their writers, symlinks are
removed as links and never followed, and the heartbeats of live slots are kept whatever their age.

Each folder is listed once (one ``scandir``, one ``lstat`` per entry) through a descriptor opened
without following symlinks, and every removal is made relative to it, so a folder swapped for a
symlink after listing cannot redirect a removal into ``pending/`` or elsewhere.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from keepwarm.queue.layout import REJECTION_SUFFIX, heartbeat_name
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.settings import ClusterSettings

HOUR_SEC = 3600.0


@dataclass(frozen=True)
class RetentionReport:
    """What one call removed, per folder; ``more`` when the batch limit stopped it with work left.

    ``unlisted`` names the folders that could not be listed (a storage fault) and were skipped.
    """

    done: int = 0
    failed: int = 0
    heartbeats: int = 0
    more: bool = False
    unlisted: tuple[str, ...] = ()

    @property
    def removed(self) -> int:
        return self.done + self.failed + self.heartbeats


@dataclass(frozen=True)
class _Rule:
    folder: Path
    ttl_sec: float
    max_files: int
    keep: frozenset[str]  # names never removed (live heartbeats)


@dataclass(frozen=True)
class _Entry:
    """A file and the rejection notes that go with it."""

    mtime: float
    name: str
    is_dir: bool
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Pruned:
    removed: int
    attempts: int
    more: bool


def enforce_retention(
    queue: TaskQueue,
    settings: ClusterSettings,
    *,
    now: float | None = None,
    batch: int = 500,
    live_slots: Collection[str] = (),
) -> RetentionReport:
    """Remove at most ``batch`` expired or surplus files from ``done/``, ``failed/`` and ``heartbeats/``.

    ``now`` is the wall-clock time files are aged against (default: the current time). Heartbeats of
    ``live_slots`` are never removed. Call again while the report says ``more``. A file that cannot
    be removed (it vanished, or the share refused) is skipped; an ``OSError`` is raised only when
    none of the folders could be listed. One ``retention`` event (counts only) is appended to
    ``queue.events`` when something was removed.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    clock = time.time() if now is None else now
    rules = {
        "done": _Rule(queue.done, settings.done_ttl_hours * HOUR_SEC, settings.done_max_files, frozenset()),
        "failed": _Rule(
            queue.failed, settings.failed_ttl_hours * HOUR_SEC, settings.failed_max_files, frozenset()
        ),
        "heartbeats": _Rule(
            queue.heartbeats,
            settings.heartbeat_ttl_hours * HOUR_SEC,
            settings.heartbeat_max_files,
            frozenset(heartbeat_name(slot) for slot in live_slots),
        ),
    }
    removed: dict[str, int] = {}
    errors: dict[str, OSError] = {}
    budget = batch
    more = False
    for name, rule in rules.items():
        try:
            pruned = _prune(rule, clock, settings.retention_min_age_sec, budget)
        except OSError as exc:
            errors[name] = exc
            continue
        removed[name] = pruned.removed
        budget -= pruned.attempts
        more = more or pruned.more
    if errors and not removed:
        raise next(iter(errors.values()))
    report = RetentionReport(
        done=removed.get("done", 0),
        failed=removed.get("failed", 0),
        heartbeats=removed.get("heartbeats", 0),
        more=more,
        unlisted=tuple(errors),
    )
    if report.removed:
        try:
            queue.events.append(
                "retention",
                done=report.done,
                failed=report.failed,
                heartbeats=report.heartbeats,
                more=report.more,
            )
        except OSError:
            pass  # the files are gone either way; a share that refuses writes shows up in health
    return report


def _prune(rule: _Rule, now: float, min_age_sec: float, budget: int) -> _Pruned:
    """Apply one folder's rule with at most ``budget`` removal attempts."""
    try:
        fd = os.open(rule.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return _Pruned(0, 0, False)
    try:
        entries = _list_entries(fd)
        entries.sort(key=lambda e: (e.mtime, e.name))
        expired_before = now - rule.ttl_sec
        young_after = now - min_age_sec
        left = len(entries)
        removed = attempts = 0
        for entry in entries:  # oldest first: once one is spared, every later one is too
            if entry.name in rule.keep:
                continue
            expired = entry.mtime < expired_before
            surplus = left > rule.max_files and entry.mtime <= young_after
            if not (expired or surplus):
                break
            if attempts >= budget:
                return _Pruned(removed, attempts, True)
            attempts += 1
            outcome = _remove(fd, entry)
            if outcome is not None:
                left -= 1
                removed += outcome
        return _Pruned(removed, attempts, False)
    finally:
        os.close(fd)


def _list_entries(fd: int) -> list[_Entry]:
    """The folder's files (temp files skipped), each with its rejection notes attached."""
    # Only (mtime, is_dir) per name, not whole stat results: the scan of a large done/ is what sets
    # the supervisor's peak memory.
    stats: dict[str, tuple[float, bool]] = {}
    with os.scandir(fd) as listing:
        for item in listing:
            if item.name.startswith("."):
                continue
            try:
                info = item.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished (or unreadable) since the listing: not ours to judge this time
            stats[item.name] = (info.st_mtime, stat.S_ISDIR(info.st_mode))
    entries = []
    for name, (own_mtime, is_dir) in stats.items():
        if name.endswith(REJECTION_SUFFIX) and name[: -len(REJECTION_SUFFIX)] in stats:
            continue  # a note: it goes with its file
        notes, mtime = [], own_mtime
        note = name + REJECTION_SUFFIX
        while note in stats:
            notes.append(note)
            mtime = max(mtime, stats[note][0])
            note += REJECTION_SUFFIX
        entries.append(_Entry(mtime, name, is_dir, tuple(notes)))
    return entries


def _remove(fd: int, entry: _Entry) -> int | None:
    """1 if this call removed the entry, 0 if it was already gone, None if it could not be removed."""
    try:
        if entry.is_dir:
            # A rejected non-regular file. rmtree with dir_fd never follows a symlink inside it.
            if shutil.rmtree.avoids_symlink_attacks:
                shutil.rmtree(entry.name, dir_fd=fd)
            else:
                os.rmdir(entry.name, dir_fd=fd)
        else:
            os.unlink(entry.name, dir_fd=fd)
    except FileNotFoundError:
        outcome = 0
    except OSError:
        return None
    else:
        outcome = 1
    for note in entry.notes:
        try:
            os.unlink(note, dir_fd=fd)
        except OSError:
            pass
    return outcome
