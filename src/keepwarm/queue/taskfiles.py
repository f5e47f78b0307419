"""Task files one by one: their names, their JSON, and reads that never follow a link nor block.

``pending/<seq>-<task_id>.task.json`` carries a 20-digit nanosecond sequence (FIFO per submitter);
terminal records are ``<task_id>.task.json``. Nothing here knows folders of a queue or its states.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from keepwarm.errors import TaskNotFound
from keepwarm.queue.layout import REJECTION_SUFFIX
from keepwarm.queue.task import TASK_SCHEMA, TASK_SUFFIX, is_safe_id
from keepwarm.settings import describe_error

MAX_JSON_DEPTH = 64  # args and results nested deeper than this are refused: readers stop at 200 levels

_seq_lock = threading.Lock()
_last_seq = 0


def next_seq() -> int:
    """A nanosecond timestamp, strictly increasing within this process."""
    global _last_seq
    with _seq_lock:
        _last_seq = max(time.time_ns(), _last_seq + 1)
        return _last_seq


def pending_name(seq: int, task_id: str) -> str:
    """The name of a pending task file: its sequence, then its id."""
    return f"{seq:020d}-{task_id}{TASK_SUFFIX}"


def task_id_from_name(name: str) -> str | None:
    """The task id a queue file name carries (``<seq>-<id>.task.json`` or ``<id>.task.json``)."""
    if not name.endswith(TASK_SUFFIX):
        return None
    stem = name[: -len(TASK_SUFFIX)]
    seq, dash, rest = stem.partition("-")
    return rest if dash and seq.isdigit() and len(seq) == 20 else stem


def seq_from_name(name: str) -> int | None:
    """The sequence a pending file name starts with, or None if it has none."""
    head = name[:20]
    return int(head) if len(name) > 20 and head.isdigit() and name[20] == "-" else None


def name_problem(named: str, task_id: str) -> str:
    """Why a file name does not match its task_id: often a hand-written sequence of the wrong length."""
    seq, _, rest = named.partition("-")
    if seq.isdigit() and rest == task_id:
        padded = f"{seq.zfill(20)}-{task_id}{TASK_SUFFIX}, " if len(seq) < 20 else ""
        return (
            f"file name {named}{TASK_SUFFIX} starts with a {len(seq)}-digit sequence, but a sequence "
            f"must be 20 digits ({padded}or no sequence: {task_id}{TASK_SUFFIX})"
        )
    return f"file name says task {named!r} but task_id is {task_id!r}"


def require_safe_id(task_id: str) -> None:
    """TaskNotFound unless ``task_id`` could name a task file."""
    if not is_safe_id(task_id):
        raise TaskNotFound(
            f"{task_id!r} is not a task id: ids are 1-128 letters, digits, '_', '-', '.' (no '/' or '..')"
        )


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(obj: Any) -> bytes:
    """Compact JSON; NaN and infinities are refused (they are not JSON)."""
    return _ENCODER.encode(obj).encode()


def json_problem(value: Any, what: str) -> str | None:
    """Why ``value`` cannot travel through the queue as JSON, or None when it can.

    Refused: NaN and infinities (``1e400`` parses as one), lone surrogates (not UTF-8), other objects,
    and nesting deeper than ``MAX_JSON_DEPTH`` levels, which a reader would refuse later.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"{what} is nested deeper than {MAX_JSON_DEPTH} levels"
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    try:
        encode(value)
    except ValueError as exc:  # UnicodeEncodeError is a ValueError too
        return f"{what} is not valid JSON: {exc}"
    except TypeError as exc:
        return f"{what} is not JSON: {exc}"
    return None


def check_regular_file(path: Path, max_bytes: int) -> str | None:
    """Why ``path`` cannot be a task file without opening it, or None if it may be read."""
    return name_kind_problem(path.name) or stat_problem(os.lstat(path), max_bytes)


def name_kind_problem(name: str) -> str | None:
    """Why a file named ``name`` cannot be a task file, or None."""
    if name.endswith(".task.pkl"):
        return "pickle task files are never deserialized; submit JSON (*.task.json) instead"
    if not name.endswith(TASK_SUFFIX):
        return f"not a task file: expected a name ending in {TASK_SUFFIX}"
    return None


def stat_problem(info: os.stat_result, max_bytes: int) -> str | None:
    """Why a file with this ``lstat`` (or ``fstat``) cannot be a task file, or None."""
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        return f"{kind}: task files must be regular files"
    if info.st_size > max_bytes:
        return f"oversized: {info.st_size} bytes, over max_task_bytes ({max_bytes})"
    return None


class _NotPlain(ValueError):
    """A JSON text holds NaN, an infinity, or a number too large for a float."""


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise _NotPlain(text)
    return value


def _refuse_constant(name: str) -> Any:
    raise _NotPlain(name)


_PLAIN_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant)


def loads_plain(raw: bytes) -> Any | None:
    """``raw`` parsed, when it is UTF-8 JSON holding nothing ``json_problem`` would refuse; else None.

    Refused on the way (so that no walk is needed after): NaN and infinities, spelled out or a float
    past 1.8e308; escapes that could hide a lone surrogate; more opening brackets than
    ``MAX_JSON_DEPTH``. None sends the caller to the full check, never to a different verdict.
    """
    if b"\\u" in raw or raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:
        return None
    try:
        return _PLAIN_DECODER.decode(raw.decode())
    except (ValueError, RecursionError):  # UnicodeDecodeError, JSONDecodeError and _NotPlain too
        return None


def read_claimed(path: str | Path, max_bytes: int) -> bytes | str:
    """A claimed task file's bytes, or why it cannot be one (the messages of ``check_regular_file``).

    One ``open`` that follows no link and waits on no FIFO, one ``fstat``, one ``read`` for a file
    read whole at once: no ``lstat``.
    """
    problem = name_kind_problem(os.path.basename(path))
    if problem is not None:
        return problem
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink: task files must be regular files"
        try:
            return check_regular_file(Path(path), max_bytes) or f"unreadable: {exc}"
        except OSError:
            return f"unreadable: {exc}"
    try:
        info = os.fstat(fd)
        problem = stat_problem(info, max_bytes)
        if problem is not None:
            return problem
        return _read_whole(fd, info.st_size)
    except OSError as exc:
        return f"unreadable: {exc}"
    finally:
        os.close(fd)


def describe_task_error(exc: ValidationError) -> str:
    """Why a task file failed validation, in one line."""
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        return f"invalid JSON: {errors[0]['msg']}"
    if any(e["loc"] == ("schema",) for e in errors):
        return f"wrong schema: expected {TASK_SCHEMA!r}"
    return "invalid task: " + "; ".join(describe_error(e) for e in errors)


def read_regular(path: str | Path, max_bytes: int) -> bytes:
    """A regular file's bytes, never following a symlink nor blocking on a FIFO (OSError otherwise).

    One ``open``, one ``fstat``, and one ``read`` for a file read whole at once.
    """
    fd = open_no_follow(os.fspath(path), os.O_RDONLY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{os.path.basename(path)} is not a regular file")
        if info.st_size > max_bytes:
            raise OSError(f"{os.path.basename(path)} is {info.st_size} bytes, over the limit of {max_bytes}")
        return _read_whole(fd, info.st_size)
    finally:
        os.close(fd)


def _read_whole(fd: int, size: int) -> bytes:
    data = os.read(fd, size + 1)
    if len(data) >= size:
        return data  # whole (a file that grew meanwhile is read as far as size + 1)
    parts = [data]
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def peek_object(path: Path, max_bytes: int) -> dict[str, Any] | None:
    """A queued file's JSON object, or None (gone, unreadable, not an object). Never claims it."""
    try:
        with open(path, "rb", opener=open_no_follow) as handle:
            value = json.loads(handle.read(max_bytes))
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def open_no_follow(path: str, flags: int) -> int:
    """An ``opener`` for ``open``: no symlink followed, no FIFO waited on, not inherited."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it is empty; a folder still holding files stays."""
    try:
        os.rmdir(folder)
    except OSError:
        pass  # not empty after a failure: the supervisor requeues it once this process is gone


def list_visible(folder: Path) -> list[str]:
    """The names in ``folder`` that are not temp files (no leading dot), sorted; [] if it is gone."""
    try:
        return sorted(n for n in os.listdir(folder) if n[0] != ".")
    except (FileNotFoundError, NotADirectoryError):
        return []


def count_terminal(folder: Path) -> int:
    """How many terminal files ``folder`` holds (rejection notes and temp files not counted)."""
    try:
        return sum(1 for n in os.listdir(folder) if n[0] != "." and not n.endswith(REJECTION_SUFFIX))
    except FileNotFoundError:
        return 0


def newest_terminal(folder: Path, limit: int) -> list[Path]:
    """The ``limit`` newest task files of ``folder`` (by modification time), newest first."""
    entries = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.endswith(TASK_SUFFIX) and entry.name[0] != ".":
                    entries.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
    except FileNotFoundError:
        return []
    entries.sort(reverse=True)
    return [Path(p) for _, p in entries[:limit]]
