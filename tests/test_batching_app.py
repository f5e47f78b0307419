"""The batching example app (``examples/apps/batch_model``) and ``keepwarm init --batching``, served
by real services: ``work_batch`` answers what ``work`` answers, and batches form from a burst."""

from __future__ import annotations

import collections
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

import keepwarm as keepwarm_api
from keepwarm.env import Env
from keepwarm.queue.task import TaskRecord

from .conftest import EXAMPLE_APPS, Services, copy_app

KEEPWARM = Path(sys.executable).parent / "keepwarm"
FEATURES = 512  # [args] features of the bundled batch_model
MAX_BATCH_SIZE = 32  # the default of [cluster] max_batch_size
SLOW_GATHER = "batch_wait_ms = 2000\n"  # a batch waits for the whole burst, so sizes do not hang on timing


@pytest.fixture
def batch_model_code(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The app's worker module imported here, to compute the answers ``work()`` gives one by one."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # what the app's package sets (restored after)
    monkeypatch.syspath_prepend(str(EXAMPLE_APPS / "batch_model"))
    return importlib.import_module("batch_model.worker")


def answers_one_by_one(code: ModuleType, inputs: list[dict[str, Any]]) -> list[Any]:
    """What ``work(item)`` returns for each input (or the error it raises), in a worker of this process."""
    worker = code.Worker(code.Args())
    worker.start()
    answers: list[Any] = []
    for args in inputs:
        try:
            answers.append(worker.work(SimpleNamespace(args=code.Args(**args))))
        except ValueError as exc:
            answers.append(f"ValueError: {exc}")
    return answers


def outcome(record: TaskRecord) -> Any:
    return record.result if record.status == "done" else record.error


def batch_sizes(records: list[TaskRecord]) -> list[int | None]:
    return [getattr(record, "batch_size", None) for record in records]


def assert_whole_batches(sizes: list[int | None]) -> None:
    """Every task ran in a batch of the size its record says: k records say k for each batch of k."""
    for size, count in collections.Counter(sizes).items():
        assert size is not None and 1 <= size <= MAX_BATCH_SIZE, sizes
        assert count % size == 0, f"{count} records say they ran in a batch of {size}"


def burst(count: int) -> list[dict[str, Any]]:
    """``count`` inputs: seeds, two vectors (one with values past [-1, 1], clipped), two it refuses."""
    inputs: list[dict[str, Any]] = [{"seed": seed} for seed in range(count - 4)]
    inputs += [
        {"x": [((i * 37) % 200 - 100) / 100 for i in range(FEATURES)]},
        {"x": [3.0, -2.5] * (FEATURES // 2), "seed": 5},  # x wins over seed
        {"x": [0.5, 0.25, 0.0]},  # the wrong length: fails alone
        {},  # no input at all: fails alone
    ]
    return inputs


def test_batch_model_serves_a_burst_in_batches_with_work_answers(
    tmp_path: Path, services: Services, batch_model_code: ModuleType
) -> None:
    env = Env(copy_app(tmp_path, "batch_model", SLOW_GATHER))
    service = services.start(env, timeout=120)
    inputs = burst(200)

    handles = service.submit_many({"args": args} for args in inputs)
    records = service.wait([h.task_id for h in handles], timeout=120)

    assert [outcome(r) for r in records] == answers_one_by_one(batch_model_code, inputs)
    assert [r.status for r in records[-2:]] == ["failed", "failed"]
    assert records[-2].error == f"ValueError: x has 3 values; this model takes {FEATURES} ([args] features)"
    assert (
        records[-1].error == f'ValueError: no input: give args {{"seed": N}} or {{"x": [{FEATURES} floats]}}'
    )
    assert all(r.status == "done" for r in records[:-2])
    sizes = batch_sizes(records)
    assert max(s or 0 for s in sizes) > 1, f"200 tasks at once never made a batch: {sizes}"
    assert_whole_batches(sizes)


def test_batch_model_with_default_settings_batches_a_burst(tmp_path: Path, services: Services) -> None:
    env = Env(copy_app(tmp_path, "batch_model"))  # max_batch_size 32, batch_wait_ms 5: as bundled
    service = services.start(env, timeout=120)

    handles = service.submit_many({"args": {"seed": seed}} for seed in range(200))
    records = service.wait([h.task_id for h in handles], timeout=120)

    assert all(r.status == "done" for r in records)
    assert max(s or 0 for s in batch_sizes(records)) > 1
    assert_whole_batches(batch_sizes(records))


def test_batch_model_with_max_batch_size_1_is_served_by_work_one_by_one(
    tmp_path: Path, services: Services, batch_model_code: ModuleType
) -> None:
    env = Env(copy_app(tmp_path, "batch_model", "max_batch_size = 1\n"))
    service = services.start(env, timeout=120)
    inputs = burst(24)

    handles = service.submit_many({"args": args} for args in inputs)
    records = service.wait([h.task_id for h in handles], timeout=120)

    assert [outcome(r) for r in records] == answers_one_by_one(batch_model_code, inputs)
    assert batch_sizes(records) == [None] * len(inputs)  # work(item): no batch


def test_batch_model_work_and_work_batch_agree_in_process(batch_model_code: ModuleType) -> None:
    inputs = burst(40)
    worker = batch_model_code.Worker(batch_model_code.Args())
    worker.start()
    items = [SimpleNamespace(args=batch_model_code.Args(**args)) for args in inputs]

    batched = worker.work_batch(items)

    assert len(batched) == len(items)
    assert [f"ValueError: {r}" if isinstance(r, ValueError) else r for r in batched] == answers_one_by_one(
        batch_model_code, inputs
    )


# ---------------------------------------------------------------- keepwarm init --batching


def keepwarm(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KEEPWARM), *argv], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def test_init_help_documents_batching() -> None:
    shown = keepwarm("init", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "--batching" in shown.stdout and "work_batch(items)" in shown.stdout


def test_init_batching_writes_an_app_whose_own_tests_pass_and_that_is_served_in_batches(
    tmp_path: Path, services: Services
) -> None:
    apps = tmp_path / "apps"
    created = keepwarm("init", "batched_squares", "--batching", "--apps-path", str(apps))
    assert created.returncode == 0, created.stderr
    folder = apps / "batched_squares"
    settings = (folder / "app_settings.toml").read_text()
    assert "# max_batch_size = 32" in settings and "# batch_wait_ms = 5" in settings
    assert "def work_batch(self, items):" in (folder / "batched_squares" / "worker.py").read_text()

    own_tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert own_tests.returncode == 0, own_tests.stdout + own_tests.stderr
    assert "4 passed" in own_tests.stdout  # the scaffold's three, and work_batch's
    run_env = Env("batched_squares", apps)
    keepwarm_api.install(run_env)
    ran = keepwarm_api.run(run_env)  # run mode still calls work(item), one partition at a time
    assert (ran.status, ran.rows) == ("done", 1000)

    (folder / "app_settings.toml").write_text(settings.replace("# batch_wait_ms = 5", "batch_wait_ms = 2000"))
    service = services.start(Env("batched_squares", apps), slots=1, timeout=120)
    values = [*range(1, 60), -4]
    handles = service.submit_many({"args": {"value": value}} for value in values)
    records = service.wait([h.task_id for h in handles], timeout=120)

    assert [r.result["square"] for r in records[:-1]] == [v * v for v in values[:-1]]
    assert records[-1].status == "failed"
    assert records[-1].error == "ValueError: value -4 is negative: give a number >= 0"
    sizes = batch_sizes(records)
    assert max(s or 0 for s in sizes) > 1, f"60 tasks at once never made a batch: {sizes}"
    assert_whole_batches(sizes)


def test_init_without_batching_writes_no_work_batch(tmp_path: Path) -> None:
    created = keepwarm("init", "plain", "--apps-path", str(tmp_path))
    assert created.returncode == 0, created.stderr
    assert "work_batch" not in (tmp_path / "plain" / "plain" / "worker.py").read_text()
    assert "max_batch_size" not in (tmp_path / "plain" / "app_settings.toml").read_text()
