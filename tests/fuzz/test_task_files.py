"""Generated task files against one real loop process.

Bad files of every kind the queue rules name (invalid JSON, wrong types, missing fields, unknown
schema, oversized, deeply nested, odd Unicode, unsafe ids, symlinks, FIFOs, directories,
``*.task.pkl``) each land in ``failed/`` under their own name, unchanged, with their reason in
``failed/<name>.rejection.txt`` and in ``events.jsonl``; after each batch the same loop process
still serves a good task. Valid generated tasks, submitted through the Python API or dropped as
files by "another tool", come back with exactly what the app computed, once each.

The loop is started once for the module (a real ``python -m keepwarm.runtime.loop`` process); every example
uses fresh file names and task ids, so examples never see each other's files.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from keepwarm.api import Service
from keepwarm.backends.local import LoopProcess
from keepwarm.env import Env
from keepwarm.errors import InvalidTaskError
from keepwarm.queue.layout import REJECTION_SUFFIX
from keepwarm.queue.results import wait_for_records
from keepwarm.queue.task import TASK_SUFFIX
from keepwarm.queue.taskfiles import MAX_JSON_DEPTH, list_visible, next_seq
from keepwarm.queue.taskqueue import TaskQueue

from ..conftest import Loops, wait_until, write_app
from .strategies import (
    TASK_SCHEMA,
    json_objects,
    json_values,
    nested_list,
    odd_text,
    safe_ids,
    unsafe_ids,
    valid_task_dict,
)
from .support import canonical, fuzz_settings

MAX_TASK_BYTES = 32 * 1024
TASK_TIMEOUT_SEC = 777.0
MAX_ATTEMPTS = 4
WAIT_SEC = 30.0  # a deadline for what should take milliseconds, generous for a loaded machine

ECHO_WORKER = """
import os
from pathlib import Path

RUNS = Path(__file__).resolve().parents[2] / "runs.log"


class Worker:
    def start(self):
        pass

    def work(self, item):
        fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, (item.task_id + "\\n").encode())
        os.close(fd)
        return {
            "task_id": item.task_id,
            "task_name": item.task_name,
            "args": item.args,
            "plan": item.plan,
            "execution_id": item.execution_id,
            "attempt": item.attempt,
            "max_attempts": item.max_attempts,
            "timeout_sec": item.timeout_sec,
        }

    def stop(self):
        pass
"""

ECHO_SETTINGS = f"""[cluster]
max_task_bytes = {MAX_TASK_BYTES}
task_timeout_sec = {TASK_TIMEOUT_SEC}
max_attempts = {MAX_ATTEMPTS}
rescan_interval_sec = 0.5
"""


@dataclass
class Served:
    """The module's echo app, its queue, and the one loop process serving it."""

    env: Env
    queue: TaskQueue
    service: Service
    loops: Loops
    loop: LoopProcess
    runs: Path
    outside: Path  # a folder beside the share: symlink targets that must stay untouched
    crashes: list[str] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=itertools.count)

    def ensure_serving(self) -> None:
        """Start a new loop if an earlier example (a known bug, kept as an xfail example) killed it."""
        if self.loop.process.poll() is not None:
            self.crashes.append(f"{self.loop.incarnation}: exit {self.loop.process.returncode}")
            (self.loop,) = self.loops.start(self.env)

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    def loop_alive(self) -> bool:
        return self.loop.process.poll() is None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("fuzz-loop")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEPWARM_LOG_DIR", str(base / "logs"))
        app_dir = write_app(base, "echo", ECHO_WORKER, ECHO_SETTINGS)
        env = Env(app_dir, share_dir=base / "share", namespace="fuzz")
        queue = TaskQueue.for_env(env).ensure()
        loops = Loops()
        try:
            (loop,) = loops.start(env)
            outside = base / "outside"
            outside.mkdir()
            yield Served(env, queue, Service(env), loops, loop, base / "apps" / "runs.log", outside)
        finally:
            loops.stop()


# ---------------------------------------------------------------- bad files


@dataclass(frozen=True)
class BadFile:
    """One file dropped into pending/ and the words one of which its rejection must give."""

    what: str  # regular | symlink | fifo | directory
    stem: str | bytes  # the name after "<seq>-"; bytes for a name that is not UTF-8
    suffix: str
    content: bytes = b""  # regular files: the bytes; symlinks: dangling | file | directory | loop
    reasons: tuple[str, ...] = ("invalid task",)
    kind: str = "known bug"  # the generator's name, for hypothesis' statistics

    def name(self, seq: int) -> str:
        stem = os.fsdecode(self.stem) if isinstance(self.stem, bytes) else self.stem
        return f"{seq:020d}-{stem}{self.suffix}"


def _task_bytes(task: dict[str, Any]) -> bytes:
    return json.dumps(task, ensure_ascii=False).encode()


def _regular(stem: str, task: Any, reasons: tuple[str, ...]) -> BadFile:
    data = task if isinstance(task, bytes) else _task_bytes(task)
    return BadFile("regular", stem, TASK_SUFFIX, data, reasons)


INVALID_JSON_SNIPPETS = (
    b"",
    b"{",
    b"{not json",
    b"{'schema': 'agi.service.task.v1'}",  # single quotes
    b'{"schema": "agi.service.task.v1", "task_id": "x",}',  # trailing comma
    b'{"schema": "agi.service.task.v1", "task_id": "x"} trailing',
    b'{"schema": "agi.service.task.v1", "task_id": "x", "args": {"a": "\\ud800"}}',  # lone surrogate
    b'{"schema": "agi.service.task.v1", "task_id": "x", "args": {"a": "\\udc00\\ud800"}}',
    b'{"schema": "agi.service.task.v1", "task_id": "x", "args": {"a": "\xff\xfe"}}',  # not UTF-8
    b'{"schema": "agi.service.task.v1", "task_id": "x", "args": {"a": "\xc3("}}',  # broken sequence
    b'{"schema": "agi.service.task.v1", "task_id": "x", "args": {"a": "\xed\xa0\x80"}}',  # CESU surrogate
    b'{"schema": "agi.service.task.v1", "task_id": "x", "args": {"a": "a\x00b"}}',  # raw NUL in a string
    b'{"schema": "agi.service.task.v1", "task_id": "x", "args": {"a": "line\nbreak"}}',
    b'\xef\xbb\xbf{"schema": "agi.service.task.v1", "task_id": "x"}',  # UTF-8 byte-order mark
    b'\xff\xfe{\x00"\x00',  # UTF-16
    b'{"schema": "agi.service.task.v1", "task_id": "x", "args": {"a": 01}}',  # leading zero
    b"/* comment */ {}",
)


@st.composite
def invalid_json_files(draw: st.DrawFn) -> BadFile:
    task_id = draw(safe_ids)
    text = _task_bytes(valid_task_dict(task_id, args=draw(json_objects(6))))
    content = draw(
        st.one_of(
            st.sampled_from(INVALID_JSON_SNIPPETS),
            st.integers(0, len(text) - 1).map(lambda cut: text[:cut]),  # a file cut short
        )
    )
    return _regular("badjson", content, ("invalid JSON",))


@st.composite
def random_byte_files(draw: st.DrawFn) -> BadFile:
    content = draw(st.binary(max_size=300))
    return _regular("bytes", content, ("invalid JSON", "wrong schema", "invalid task"))


@st.composite
def wrong_schema_files(draw: st.DrawFn) -> BadFile:
    task = valid_task_dict(draw(safe_ids), args=draw(json_objects(4)))
    schema = draw(
        st.one_of(
            st.just(None),  # left out
            st.sampled_from(["agi.service.task.v2", "agi.service.task.v1 ", "AGI.SERVICE.TASK.V1", ""]),
            odd_text().filter(lambda s: s != TASK_SCHEMA),
            st.sampled_from([1, 1.0, True, [], {}, [TASK_SCHEMA], {"v": TASK_SCHEMA}]),
        )
    )
    if schema is None:
        del task["schema"]
    else:
        task["schema"] = schema
    return _regular("schema", task, ("wrong schema",))


# Values each field refuses whatever pydantic's lax mode coerces.
WRONG_VALUES: dict[str, tuple[Any, ...]] = {
    "task_id": ([], {}, 1, 1.5, True, None),
    "task_name": ([], {}, 1, True, None),
    "created_at": ([], {}, 1, True, None),
    "args": ([], "x", 1, 1.5, True, None, [{"a": 1}]),
    "execution_id": ([], {}, 1, True),
    "attempt": (0, -1, 1.5, "one", [], {}, None),
    "max_attempts": (0, -7, 2.5, "three", [], {}, None),
    "timeout_sec": (0, -1, -0.0, "soon", [], {}),
    "attempts": ("x", 1, {}, [1], [[]], ["done"]),
}


@st.composite
def wrong_type_files(draw: st.DrawFn) -> BadFile:
    task = valid_task_dict(draw(safe_ids), args=draw(json_objects(4)))
    broken = draw(st.sampled_from(sorted(WRONG_VALUES)))
    task[broken] = draw(st.sampled_from(WRONG_VALUES[broken]))
    return _regular("types", task, ("invalid task",))


KNOWN_FIELDS = {"schema", "task_id", "task_name", "created_at", "args", "plan", "execution_id"} | {
    "attempt",
    "max_attempts",
    "timeout_sec",
    "attempts",
}


@st.composite
def missing_or_unknown_field_files(draw: st.DrawFn) -> BadFile:
    task = valid_task_dict(draw(safe_ids), args=draw(json_objects(4)))
    if draw(st.booleans()):
        del task["task_id"]
    else:
        unknown = draw(st.one_of(st.sampled_from(["status", "result", "id", "Task_id", ""]), odd_text()))
        if unknown in KNOWN_FIELDS:
            unknown += "_extra"
        task[unknown] = draw(json_values(4))
    return _regular("fields", task, ("invalid task",))


@st.composite
def unsafe_id_files(draw: st.DrawFn) -> BadFile:
    bad = draw(unsafe_ids)
    if draw(st.booleans()):
        return _regular("unsafe", valid_task_dict(bad), ("unsafe task_id",))
    task = valid_task_dict("unsafe", execution_id=bad)
    return _regular("unsafe", task, ("unsafe execution_id",))


@st.composite
def mismatched_id_files(draw: st.DrawFn) -> BadFile:
    content_id = draw(safe_ids)
    name_id = draw(safe_ids)
    if name_id == content_id:
        name_id += "-other"
    return _regular(name_id, valid_task_dict(content_id), ("file name says task",))


@st.composite
def odd_name_files(draw: st.DrawFn) -> BadFile:
    """Names with bytes that are not UTF-8, control characters, RTL overrides: never the id inside."""
    raw = draw(st.one_of(st.binary(max_size=60), odd_text(30).map(str.encode)))
    stem = raw.replace(b"/", b"_").replace(b"\x00", b"_") or b"_"
    if stem == b"named-oddly":
        stem += b"_"  # never the id inside
    task = _task_bytes(valid_task_dict("named-oddly"))
    return BadFile("regular", stem, TASK_SUFFIX, task, ("file name says task",))


@st.composite
def oversized_files(draw: st.DrawFn) -> BadFile:
    extra = draw(st.integers(1, 8000))
    if draw(st.booleans()):
        padding = "x" * (MAX_TASK_BYTES + extra)
        content = _task_bytes(valid_task_dict("big", args={"pad": padding}))
    else:
        chunk = draw(st.binary(min_size=1, max_size=64))
        content = (chunk * ((MAX_TASK_BYTES + extra) // len(chunk) + 1))[: MAX_TASK_BYTES + extra]
    return _regular("big", content, ("oversized",))


@st.composite
def deeply_nested_files(draw: st.DrawFn) -> BadFile:
    depth = draw(st.integers(260, 5000))  # under max_task_bytes either way
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    inner = opener * depth + b"1" * (opener == b'{"a":') + closer * depth * draw(st.sampled_from([0, 1]))
    content = b'{"schema": "agi.service.task.v1", "task_id": "deep", "args": {"v": ' + inner + b"}}"
    return _regular("deep", content, ("invalid JSON",))


class Exploit:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


@st.composite
def pickle_files(draw: st.DrawFn) -> BadFile:
    content = draw(
        st.one_of(
            st.binary(max_size=200),
            st.just(b"EXPLOIT"),  # replaced by a real pickle of Exploit when dropped
            json_values(6).map(pickle.dumps),
        )
    )
    return BadFile("regular", "legacy", ".task.pkl", content, ("never deserialized",))


@st.composite
def not_task_named_files(draw: st.DrawFn) -> BadFile:
    suffix = draw(
        st.one_of(
            st.sampled_from(["", ".txt", ".json", ".task", ".task.json.bak", ".TASK.JSON", ".task.jsonl"]),
            odd_text(12).filter(
                lambda s: "/" not in s and "\x00" not in s and not s.endswith((".task.json", ".task.pkl"))
            ),
        )
    )
    content = draw(st.one_of(st.binary(max_size=100), st.just(_task_bytes(valid_task_dict("x")))))
    return BadFile("regular", "notes", suffix, content, ("not a task file",))


@st.composite
def special_files(draw: st.DrawFn) -> BadFile:
    what = draw(st.sampled_from(["symlink", "fifo", "directory"]))
    if what == "symlink":
        target = draw(st.sampled_from(["file", "dangling", "directory", "loop"]))
        return BadFile("symlink", "link", TASK_SUFFIX, target.encode(), ("a symlink",))
    return BadFile(what, what, TASK_SUFFIX, b"", ("not a regular file",))


bad_files = st.one_of(
    [
        generator().map(lambda bad, kind=generator.__name__: replace(bad, kind=kind))
        for generator in (
            invalid_json_files,
            random_byte_files,
            wrong_schema_files,
            wrong_type_files,
            missing_or_unknown_field_files,
            unsafe_id_files,
            mismatched_id_files,
            odd_name_files,
            oversized_files,
            deeply_nested_files,
            pickle_files,
            not_task_named_files,
            special_files,
        )
    ]
)


def _drop(served: Served, bad: BadFile) -> tuple[str, Any]:
    """Publish ``bad`` in pending/ the way a producer must (made under a temp name, then renamed);
    returns its name and what must be found again in failed/."""
    queue = served.queue
    name = bad.name(next_seq())
    path = queue.pending / name
    temp = queue.pending / f".{served.unique('drop')}.tmp"
    kept: Any = None
    if bad.what == "regular":
        kept = bad.content
        if kept == b"EXPLOIT":
            kept = pickle.dumps(Exploit(str(served.outside / f"{served.unique('marker')}.unpickled")))
        temp.write_bytes(kept)
    elif bad.what == "symlink":
        kind = bad.content.decode()
        target = served.outside / served.unique(f"target-{kind}")
        if kind == "file":
            target.write_bytes(_task_bytes(valid_task_dict(target.name)))
        elif kind == "directory":
            target.mkdir()
        elif kind == "loop":
            target = path  # once renamed, a link to itself
        os.symlink(target, temp)
        kept = str(target)
    elif bad.what == "fifo":
        os.mkfifo(temp)
    else:
        temp.mkdir()
        (temp / "inside.task.json").write_bytes(_task_bytes(valid_task_dict("inside")))
    os.rename(temp, path)
    return name, kept


def _assert_rejected(served: Served, bad: BadFile, name: str, kept: Any, rejected: dict[str, str]) -> None:
    failed = served.queue.failed / name
    reason = (served.queue.failed / (name + REJECTION_SUFFIX)).read_text(encoding="utf-8")
    assert any(word in reason for word in bad.reasons), (name, reason, bad.reasons)
    assert not os.path.lexists(served.queue.pending / name)
    info = os.lstat(failed)  # the file itself, moved unopened under its own name
    if bad.what == "regular":
        assert stat.S_ISREG(info.st_mode) and failed.read_bytes() == kept
    elif bad.what == "symlink":
        assert stat.S_ISLNK(info.st_mode) and os.readlink(failed) == kept
    elif bad.what == "fifo":
        assert stat.S_ISFIFO(info.st_mode)
    else:
        assert stat.S_ISDIR(info.st_mode) and os.listdir(failed) == ["inside.task.json"]
    assert rejected.get(name) == reason.rstrip("\n"), f"no 'rejected' event with that reason for {name!r}"


# Once a bug: a task file whose numbers are not finite (NaN and Infinity, which are not JSON but which
# pydantic-core's parser accepts, or 1e400, past the double range) was claimed and run, then its
# terminal record could not be written and the loop died. It is now rejected when claimed.
def _poison(stem: str, number: bytes) -> BadFile:
    content = b'{"schema": "%s", "task_id": "%s", "args": {"v": %s}}' % (
        TASK_SCHEMA.encode(),
        stem.encode(),
        number,
    )
    return _regular(stem, content, ("args is not valid JSON",))


@fuzz_settings(max_examples=120)
@given(batch=st.lists(bad_files, min_size=1, max_size=6))
@example(batch=[_poison("overflow", b"1e400")])
@example(batch=[_poison("nan", b"NaN"), _poison("infinity", b"-Infinity")])
@example(  # found by this test: is_safe_id's "$" let one trailing newline through
    batch=[
        _regular("unsafe", valid_task_dict("abc\n"), ("unsafe task_id",)),
        _regular("unsafe", valid_task_dict("unsafe", execution_id="batch-7\n"), ("unsafe execution_id",)),
    ]
)
def test_bad_task_files_are_rejected_with_their_reason_and_the_loop_keeps_serving(
    served: Served, batch: list[BadFile]
) -> None:
    served.ensure_serving()
    for bad in batch:
        event(bad.kind)
    dropped = [(bad, *_drop(served, bad)) for bad in batch]
    # Loops without a supervisor: no service "runs", so every submit here takes queue_only=True.
    good = served.service.submit({"n": served.unique("good")}, queue_only=True)
    wait_until(lambda: good.done() or not served.loop_alive(), timeout=WAIT_SEC, what="the good task")
    assert served.loop_alive(), f"the loop died; its log: {served.loop.log_path}"

    record = good.record(timeout=WAIT_SEC)
    assert record.status == "done", record.error
    assert record.claim is not None and record.claim["incarnation"] == served.loop.incarnation
    assert canonical(record.result["args"]) == canonical(record.args)
    for _, name, _ in dropped:
        wait_until(
            lambda name=name: os.path.exists(served.queue.failed / (name + REJECTION_SUFFIX)),
            timeout=WAIT_SEC,
            what=f"the rejection of {name!r}",
        )
    rejected = {entry["file"]: entry["reason"] for entry in served.queue.events.read("rejected")}
    for bad, name, kept in dropped:
        _assert_rejected(served, bad, name, kept, rejected)
    assert not list(served.outside.glob("*.unpickled")), "a pickle from the queue was deserialized"
    assert list_visible(served.queue.owner_dir("loop-0", served.loop.incarnation)) == []


# ---------------------------------------------------------------- valid tasks round-trip


@dataclass(frozen=True)
class ValidTask:
    via: str  # api | file
    args: dict[str, Any]
    task_name: str | None
    plan: Any
    execution_id: str | None
    timeout_sec: float | int | None
    max_attempts: int | None
    ensure_ascii: bool = True
    indent: int | None = None

    def expected(self, task_id: str) -> dict[str, Any]:
        """What the echo app returns: the task as the loop handed it to work()."""
        return {
            "task_id": task_id,
            "task_name": "task" if self.task_name is None else self.task_name,
            "args": self.args,
            "plan": self.plan,
            "execution_id": self.execution_id,
            "attempt": 1,
            "max_attempts": MAX_ATTEMPTS if self.max_attempts is None else self.max_attempts,
            "timeout_sec": TASK_TIMEOUT_SEC if self.timeout_sec is None else float(self.timeout_sec),
        }


valid_tasks = st.builds(
    ValidTask,
    via=st.sampled_from(["api", "file"]),
    args=json_objects(),
    task_name=st.none() | odd_text(),
    plan=st.none() | json_values(6),
    execution_id=st.none() | safe_ids,
    timeout_sec=st.none() | st.integers(1, 10**6) | st.floats(1e-3, 1e12),
    max_attempts=st.none() | st.integers(1, 10**6),
    ensure_ascii=st.booleans(),
    indent=st.none() | st.sampled_from([0, 2]),
)


def _submit(served: Served, task: ValidTask) -> str:
    if task.via == "api":
        handle = served.service.submit(
            task.args,
            task_name="task" if task.task_name is None else task.task_name,
            execution_id=task.execution_id,
            max_attempts=task.max_attempts,
            timeout_sec=task.timeout_sec,
            plan=task.plan,
            queue_only=True,
        )
        return handle.task_id
    # Another tool: only the fields it cares about, in its own JSON style.
    task_id = served.unique("hand")
    document: dict[str, Any] = {"task_id": task_id, "schema": TASK_SCHEMA, "args": task.args}
    optional = {
        "task_name": task.task_name,
        "plan": task.plan,
        "execution_id": task.execution_id,
        "timeout_sec": task.timeout_sec,
        "max_attempts": task.max_attempts,
    }
    document |= {key: value for key, value in optional.items() if value is not None}
    data = json.dumps(document, ensure_ascii=task.ensure_ascii, indent=task.indent).encode()
    name = f"{next_seq():020d}-{task_id}{TASK_SUFFIX}"
    temp = served.queue.pending / f".{name}.tmp"
    temp.write_bytes(data)
    os.rename(temp, served.queue.pending / name)
    return task_id


@fuzz_settings(max_examples=120)
@given(tasks=st.lists(valid_tasks, min_size=1, max_size=4))
def test_valid_tasks_round_trip_exactly_once(served: Served, tasks: list[ValidTask]) -> None:
    served.ensure_serving()
    ids = [_submit(served, task) for task in tasks]
    records = wait_for_records(served.queue, ids, timeout=WAIT_SEC)
    for task_id, task in zip(ids, tasks, strict=True):
        record = records[task_id]
        assert record.status == "done", (record.error, record.traceback)
        assert canonical(record.result) == canonical(task.expected(task_id))
        assert canonical(record.args) == canonical(task.args)
        assert record.claim is not None and record.claim["incarnation"] == served.loop.incarnation
    runs = Counter(served.runs.read_text(encoding="utf-8").split())
    assert [runs[task_id] for task_id in ids] == [1] * len(ids), "every task runs exactly once"
    assert served.loop_alive()


# Once bugs: pydantic-core's JSON parser takes at most 200 levels of nesting and json.dumps any, so args
# nested 200 levels were queued that no loop could read, and a result one level too deep could not be
# read back: either way the submitter waited forever. keepwarm now carries at most MAX_JSON_DEPTH.
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 199, 200])
def test_args_nested_too_deep_are_refused_at_submit(served: Served, depth: int) -> None:
    served.ensure_serving()
    with pytest.raises(
        InvalidTaskError, match=f"nested deeper than {MAX_JSON_DEPTH} levels; nothing was queued"
    ):
        served.service.submit({"v": nested_list(depth)}, queue_only=True)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 199, 200])
def test_a_file_too_deep_for_the_loop_gets_a_failed_record(served: Served, depth: int) -> None:
    served.ensure_serving()
    task_id = served.unique("deep")
    data = json.dumps({"task_id": task_id, "schema": TASK_SCHEMA, "args": {"v": nested_list(depth)}})
    name = f"{next_seq():020d}-{task_id}{TASK_SUFFIX}"
    (served.queue.pending / f".{name}.tmp").write_text(data)
    os.rename(served.queue.pending / f".{name}.tmp", served.queue.pending / name)
    record = wait_for_records(served.queue, [task_id], timeout=WAIT_SEC)[task_id]
    assert record.status == "failed" and record.error is not None and record.error.startswith("rejected: ")
    assert (served.queue.failed / name).is_file()  # the file itself, kept with its reason
    assert served.loop_alive()


def test_a_result_nested_too_deep_fails_its_task_instead_of_hanging(served: Served) -> None:
    served.ensure_serving()
    # The app nests it deeper.
    handle = served.service.submit({"v": nested_list(MAX_JSON_DEPTH - 1)}, queue_only=True)
    record = wait_for_records(served.queue, [handle.task_id], timeout=WAIT_SEC)[handle.task_id]
    assert record.status == "failed" and record.error is not None
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in record.error
    assert served.loop_alive()
