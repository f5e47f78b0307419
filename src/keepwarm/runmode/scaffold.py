"""``keepwarm init NAME``: a new app that install, distribute, run and start accept as it is.

The app squares numbers, the smallest real workload that has both halves: in service mode a task's
``args.value`` gives one row; in run mode the manager splits the numbers ``1..items`` into weighted
partitions and each partition gives a table. It comes with commented settings, an args model, an
empty ``requirements.txt`` (where the app's dependencies go) and a test of its own; with
``args_form``, its own form for ``[args]`` on the page (``app_args_form.py``); with ``batching``, a
worker that also defines ``work_batch(items)``, so that service mode serves it in batches.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import sys
from pathlib import Path

from keepwarm.errors import AppError

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")

SETTINGS = """\
# {name}: a keepwarm app, made by `keepwarm init {name}`.
#   run mode:     keepwarm install {name}; keepwarm distribute {name} --tree; keepwarm run {name}
#   service mode: keepwarm start {name}; keepwarm submit {name} --args '{"value": 12}' --wait
# Every key: docs/configuration.md. The app's dependencies go in requirements.txt.

[app]
worker = "{name}.worker:Worker"       # the worker class: start(), work(item), stop()
manager = "{name}.manager:Manager"    # run mode: build_distribution(workers) -> keepwarm.WorkPlan
args_model = "{name}.args:Args"       # validates [args] and each task's args
description = "Squares numbers: a task squares one, a run tabulates a range."

[args]
value = 7          # service mode: the number a task squares when its args give none
items = 1000       # run mode: the numbers 1..items are tabulated
partitions = 4     # run mode: in this many partitions

[cluster]
slots = 2          # service loops, and run mode's plan workers
pool = false       # run mode: a process per plan worker (or: keepwarm run {name} --mode pool)
cython = false     # run mode: compile the worker module with Cython
isolated = false   # install requirements.txt into a virtual environment of the app's own
"""

REQUIREMENTS = """\
# {name}'s dependencies, one per line in pip's format (for example: requests>=2.31).
# `keepwarm install {name}` installs them into the environment that runs the app.
"""

ARGS = '''\
"""The app's arguments: [args] in app_settings.toml, and each service task's args."""

from pydantic import BaseModel, ConfigDict, Field


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in [args] or in a task is an error, not ignored

    value: int = Field(default=7, description="service mode: the number a task squares")
    items: int = Field(default=1000, ge=1, description="run mode: how many numbers a run tabulates")
    partitions: int = Field(default=4, ge=1, description="run mode: how many partitions")
'''

MANAGER = '''\
"""Run mode: split the numbers 1..items into partitions, weighted by their size, over the workers."""

from keepwarm import Partition, WorkPlan


class Manager:
    def __init__(self, args) -> None:
        self.items = args.items
        self.partitions = min(args.partitions, args.items)

    def build_distribution(self, workers: list[str]) -> WorkPlan:
        size = -(-self.items // self.partitions)  # ceiling division
        plan: dict[str, list[Partition]] = {worker: [] for worker in workers}
        for index in range(self.partitions):
            first, last = index * size + 1, min(self.items, (index + 1) * size)
            if first > last:
                break
            partition = Partition(name=f"part{index}", weight=last - first + 1, data=[first, last])
            plan[workers[index % len(workers)]].append(partition)
        return WorkPlan(workers=plan, partition_key="numbers", weights_key="count", unit="numbers")
'''

WORKER = '''\
"""The worker: start() once per worker, then work(item) many times, stop() once.

Service mode gives work() a task (its args in item.args); run mode gives it one partition of the
manager's plan (its data in item.data) and keeps the table it returns as the partition's output.
"""

from keepwarm import Partition


class Worker:
    def __init__(self, args) -> None:
        self.args = args  # [args] of app_settings.toml, validated by Args

    def start(self) -> None:
        # The expensive part of a real app goes here (load a model, open a pool): it runs once.
        self.started = True

    def work(self, item):
        if isinstance(item, Partition):
            first, last = item.data
            return [self.row(n) for n in range(first, last + 1)]
        return self.row(item.args.value)

    def row(self, n: int) -> dict:
        return {"n": n, "square": n * n, "digits": len(str(n * n)), "even": n % 2 == 0}

    def stop(self) -> None:
        self.started = False
'''

TEST = '''\
"""Tests of the app's own code, without keepwarm running it: python -m pytest tests"""

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keepwarm import Partition  # noqa: E402

from {name}.args import Args  # noqa: E402
from {name}.manager import Manager  # noqa: E402
from {name}.worker import Worker  # noqa: E402


def test_the_plan_covers_every_number_once() -> None:
    plan = Manager(Args(items=10, partitions=3)).build_distribution(["worker-0", "worker-1"])
    numbers = sorted(
        n for parts in plan.workers.values() for p in parts for n in range(p.data[0], p.data[1] + 1)
    )
    assert numbers == list(range(1, 11))
    assert sum(p.weight for parts in plan.workers.values() for p in parts) == 10


def test_a_partition_becomes_one_row_per_number() -> None:
    worker = Worker(Args())
    worker.start()
    rows = worker.work(Partition(name="part0", weight=3, data=[4, 6]))
    worker.stop()
    assert [row["square"] for row in rows] == [16, 25, 36]


def test_a_task_squares_its_value() -> None:
    worker = Worker(Args())
    worker.start()
    assert worker.work(SimpleNamespace(args=Args(value=12)))["square"] == 144
'''


BATCHING_SETTINGS = """\
# Service mode calls work_batch(items) with the tasks a loop gathers (work(item) when max_batch_size = 1):
# max_batch_size = 32   # most tasks one work_batch() call receives
# batch_wait_ms = 5     # how long a loop waits after a batch's first task for more to join it
"""

BATCHING_WORKER = '''\
"""The worker: start() once per worker, then work(item) or work_batch(items) many times, stop() once.

Service mode gives work_batch() the tasks a loop gathered (up to [cluster] max_batch_size, waiting
at most batch_wait_ms after the first), each with its args in item.args; run mode gives work() one
partition of the manager's plan (its data in item.data) and keeps the table it returns.
"""

from keepwarm import Partition


class Worker:
    def __init__(self, args) -> None:
        self.args = args  # [args] of app_settings.toml, validated by Args

    def start(self) -> None:
        # The expensive part of a real app goes here (load a model, open a pool): it runs once.
        self.started = True

    def work(self, item):
        if isinstance(item, Partition):
            first, last = item.data
            return self.rows(list(range(first, last + 1)))
        return self.rows([self.checked(item.args.value)])[0]

    def work_batch(self, items):
        # One result per item, in the items' order. An exception object in an item's place fails
        # that task alone; raising fails the whole batch (each task is retried while it has attempts).
        results = [None] * len(items)
        numbers, places = [], []
        for place, item in enumerate(items):
            try:
                numbers.append(self.checked(item.args.value))
                places.append(place)
            except ValueError as exc:
                results[place] = exc
        for place, row in zip(places, self.rows(numbers)):
            results[place] = row
        return results

    def checked(self, value: int) -> int:
        if value < 0:
            raise ValueError(f"value {value} is negative: give a number >= 0")
        return value

    def rows(self, numbers: list[int]) -> list[dict]:
        # The one call for many inputs: where a real app runs its model once over the stacked batch.
        squares = [n * n for n in numbers]
        return [
            {"n": n, "square": square, "digits": len(str(square)), "even": n % 2 == 0}
            for n, square in zip(numbers, squares)
        ]

    def stop(self) -> None:
        self.started = False
'''

BATCHING_TEST = """

def test_a_batch_gives_each_task_its_own_row_and_fails_only_a_bad_one() -> None:
    worker = Worker(Args())
    worker.start()
    items = [SimpleNamespace(args=Args(value=v)) for v in (2, -1, 12)]
    results = worker.work_batch(items)
    assert [row["square"] for row in (results[0], results[2])] == [4, 144]
    assert isinstance(results[1], ValueError)
    assert results[2] == worker.work(items[2])  # the same answer one by one
    try:
        worker.work(items[1])
    except ValueError as refused:
        assert str(refused) == str(results[1])  # and the same refusal
    else:
        raise AssertionError("work() must refuse a negative value as work_batch() does")
"""

ARGS_FORM = '''\
"""{name}'s own form for [args]: the page (keepwarm ui) shows it instead of the generated one.

The contract (docs/ui.md, "An app's own args form"): the page calls render(args, model, key), which
draws Streamlit widgets and returns the args to save.
  args   the values to show: the file's [args], the model's default for a key it leaves out, and
         what the user changed and has not saved yet
  model  the app's args model (Args), or None
  key    key("items") is the widget key of the widget that edits args["items"]: give it to that
         widget, and the page fills it with the file's value (also when the file changes on disk)
         and keeps it apart from other apps' widgets
SAVE ARGS checks what render returns with the args model, then writes the keys that changed.
"""

import streamlit as st


def render(args, model, key):
    st.caption("{name}'s own form (app_args_form.py)")
    value = st.number_input("value: the number a task squares", step=1, key=key("value"))
    items = st.number_input("items: run mode tabulates 1..items", step=100, key=key("items"))
    partitions = st.number_input("partitions: run mode splits them in", step=1, key=key("partitions"))
    if partitions > 0:
        st.caption(f"about {items // partitions} numbers per partition")
    return {"value": value, "items": items, "partitions": partitions}
'''


def check_name(name: str) -> None:
    """Refuse (``AppError``) a name that cannot be the app's package name."""
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise AppError(
            f"app name {name!r} is not usable: the app's package is named after it, so use a lowercase "
            "Python identifier (letters, digits and '_', not starting with a digit), e.g. my_app"
        )
    if name in sys.stdlib_module_names or importlib.util.find_spec(name) is not None:
        raise AppError(
            f"app name {name!r} is already a module in this environment; the app's package would "
            "collide with it: choose another name"
        )


def init_app(
    name: str, apps_path: str | Path | None = None, *, args_form: bool = False, batching: bool = False
) -> list[Path]:
    """Create the app ``name`` under ``apps_path`` (default ``.``); returns the files written.

    ``args_form`` adds ``app_args_form.py``, the app's own form for ``[args]`` on the page;
    ``batching`` writes a worker with ``work_batch(items)`` beside ``work(item)``, its settings and a
    test of it."""
    check_name(name)
    folder = Path(apps_path or ".").expanduser() / name
    if folder.exists():
        raise AppError(f"{folder} already exists; choose another name or remove it")
    files = {
        "app_settings.toml": SETTINGS,
        "requirements.txt": REQUIREMENTS,
        f"{name}/__init__.py": "",
        f"{name}/args.py": ARGS,
        f"{name}/manager.py": MANAGER,
        f"{name}/worker.py": WORKER,
        f"tests/test_{name}.py": TEST,
    }
    if batching:
        files["app_settings.toml"] = (
            SETTINGS.replace(
                "start(), work(item), stop()", "start(), work(item), work_batch(items), stop()"
            ).replace("a task squares one,", "tasks square one each, in batches;")
            + BATCHING_SETTINGS
        )
        files[f"{name}/worker.py"] = BATCHING_WORKER
        files[f"tests/test_{name}.py"] = TEST + BATCHING_TEST
    if args_form:
        files["app_args_form.py"] = ARGS_FORM
    written = []
    for relative, template in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.replace("{name}", name), encoding="utf-8")
        written.append(path)
    return written
