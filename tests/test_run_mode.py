"""Run mode: init, install, distribute, run in every mode, benchmark, and the output data.

Real processes (spawned pools, Dask's LocalCluster of nannies and workers via keepwarm.backends.cluster, pip,
Cython and the C compiler), real files under each test's share, log and export dirs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from textwrap import dedent

import pytest

import keepwarm
from keepwarm.app import Partition
from keepwarm.env import Env
from keepwarm.errors import AppError, ModeError, PlanError, RunError, RunFailed, SettingsError
from keepwarm.runmode.benchmark import benchmark
from keepwarm.runmode.contained import distribute_in_child
from keepwarm.runmode.data import export_columns, find_run, read_table
from keepwarm.runmode.freshness import freshness
from keepwarm.runmode.modes import RunMode, available_benchmark_modes
from keepwarm.runmode.plan import IMBALANCE_LIMIT, load_plan, move, move_partition, plan_path, render_tree
from keepwarm.runmode.plan_graph import PARTITIONS_DRAWN, WORKERS_IN_A_COLUMN, collapsed, plan_graph
from keepwarm.runmode.record import RunEvent
from keepwarm.runmode.scaffold import init_app
from keepwarm.runmode.timings import saved_timings
from keepwarm.settings import update_settings

from .conftest import copy_app
from .test_cli import assert_clean_failure, keepwarm_cli
from .test_docs import python_blocks

pd = pytest.importorskip("pandas")

MYCODE_COLUMNS = ["x", "collatz_steps", "collatz_peak", "prime_factors", "factor_count", "is_prime"]


@pytest.fixture
def mycode(tmp_path: Path) -> Env:
    """A private copy of the example app: 2 workers, 600 numbers in 6 partitions."""
    folder = copy_app(
        tmp_path, "mycode_project", **{"items = 2000": "items = 600", "partitions = 8": "partitions = 6"}
    )
    return Env(folder)


def write_app(apps: Path, name: str, worker: str, settings_extra: str = "", manager: bool = True) -> Path:
    """An app whose worker is ``worker`` (source), with the scaffold's manager and args model."""
    init_app(name, apps)
    folder = apps / name
    (folder / name / "worker.py").write_text(worker)
    settings = folder / "app_settings.toml"
    text = settings.read_text()
    if not manager:
        text = text.replace(f'manager = "{name}.manager:Manager"', "")
    settings.write_text(text + settings_extra)
    return folder


# ---------------------------------------------------------------- init → install → run, and start


def test_a_new_app_installs_runs_and_passes_its_own_tests(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    files = init_app("squares", apps)
    env = Env("squares", apps)

    assert {f.relative_to(apps / "squares").as_posix() for f in files} >= {
        "app_settings.toml",
        "requirements.txt",
        "squares/worker.py",
        "squares/manager.py",
        "squares/args.py",
        "tests/test_squares.py",
    }
    assert "# the worker class" in env.settings_path.read_text()  # the settings carry their comments
    installed = keepwarm.install(env)
    assert [(s.name, s.status) for s in installed.steps] == [
        ("environment", "done"),
        ("dependencies", "skipped"),
        ("check", "done"),
        ("cython", "skipped"),
        ("dask", "skipped"),
    ]
    report = keepwarm.run(env)

    assert report.status == "done" and report.mode == "python"
    assert report.rows == 1000 and report.columns == ["n", "square", "digits", "even"]
    table = read_table(env)
    assert table["n"].tolist() == list(range(1, 1001))
    assert (table["square"] == table["n"] ** 2).all()
    own_tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=apps / "squares",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert own_tests.returncode == 0, own_tests.stdout + own_tests.stderr
    assert "3 passed" in own_tests.stdout


def test_a_new_app_serves_in_service_mode_unchanged(tmp_path: Path) -> None:
    init_app("squares", tmp_path / "apps")
    service = keepwarm.Service(Env("squares", tmp_path / "apps"))
    service.start(slots=1, timeout=60)
    try:
        assert service.submit({"value": 12}).result(timeout=30) == {
            "n": 12,
            "square": 144,
            "digits": 3,
            "even": True,
        }
    finally:
        service.stop(timeout=30)


def test_init_refuses_a_name_that_is_not_a_package_or_already_a_module(tmp_path: Path) -> None:
    with pytest.raises(AppError, match="lowercase Python identifier"):
        init_app("My-App", tmp_path)
    with pytest.raises(AppError, match="already a module"):
        init_app("json", tmp_path)
    init_app("cubes", tmp_path)
    with pytest.raises(AppError, match="already exists"):
        init_app("cubes", tmp_path)


def test_cli_init_install_distribute_run_data_export(tmp_path: Path) -> None:
    apps = str(tmp_path / "apps")
    steps = [
        ("init", "squares", "--apps-path", apps),
        ("install", "squares", "--apps-path", apps),
        ("distribute", "squares", "--apps-path", apps, "--tree"),
        ("run", "squares", "--apps-path", apps, "--mode", "pool"),
        ("data", "squares", "--apps-path", apps, "--head", "2"),
        ("export", "squares", "--apps-path", apps, "--columns", "n,square"),
    ]
    results = [keepwarm_cli(*argv, timeout=120) for argv in steps]

    for argv, result in zip(steps, results, strict=True):
        assert result.returncode == 0, (argv, result.stderr)
        assert "Traceback" not in result.stderr
    assert "✓ check: worker squares.worker:Worker" in results[1].stderr
    assert "├── worker-0  500 numbers (50.0%), 2 partitions" in results[2].stdout
    assert "part0  count=250  numbers=[1, 250]" in results[2].stdout
    assert "part3 done on worker-1" in results[3].stderr  # the log streamed as the run went
    assert results[4].stdout.splitlines()[1].split() == ["1", "1", "1", "False"]
    export = Path(results[5].stdout.strip())
    assert export == tmp_path / "export" / "squares" / "export.csv"
    assert export.read_text().splitlines()[:3] == ["n,square", "1,1", "2,4"]


# ---------------------------------------------------------------- every mode, the same output; benchmark


def test_every_mode_runs_the_saved_plan_moves_included_and_gives_the_table_of_python(mycode: Env) -> None:
    modes, skipped = available_benchmark_modes()
    assert {m.name for m in modes} >= {"python", "pool", "dask"}, skipped
    keepwarm.distribute(mycode)
    plan = move_partition(mycode, "p1", "worker-0")
    assert [p.name for p in plan.workers["worker-0"]] == ["p0", "p1", "p2", "p4"]

    report = benchmark(mycode)

    document = json.loads((mycode.log_dir / "benchmark.json").read_text())
    assert set(document) == {m.name for m in modes}
    for name, entry in document.items():
        assert set(entry) >= {"variant", "nodes", "node", "mode", "timing", "seconds", "order", "delta"}
        assert entry["mode"] == name and entry["variant"] == RunMode.parse(name).bits
        assert entry["nodes"] == 2 and entry["rows"] == 600 and entry["seconds"] > 0
    assert sorted(e["order"] for e in document.values()) == list(range(1, len(modes) + 1))
    fastest = min(document.values(), key=lambda e: e["seconds"])
    assert fastest["order"] == 1 and fastest["delta"] == 0
    assert report.same_output
    python = read_table(mycode, document["python"]["run_id"])
    assert list(python.columns) == MYCODE_COLUMNS and python["x"].tolist() == list(range(1, 601))
    for name, entry in document.items():
        mode = RunMode.parse(name)
        pd.testing.assert_frame_equal(read_table(mycode, entry["run_id"]), python, obj=name)
        run = find_run(mycode, entry["run_id"])
        assert run.mode == name and run.moves == 1
        by_name = {p.name: p for p in run.partitions}
        assert by_name["p1"].worker == "worker-0"  # the moved partition ran on its new worker ...
        if mode.executor != "python":  # ... in that worker's process, apart from worker-1's
            worker_0 = {p.pid for p in run.partitions if p.worker == "worker-0"}
            worker_1 = {p.pid for p in run.partitions if p.worker == "worker-1"}
            assert worker_0 == {by_name["p1"].pid} and worker_0.isdisjoint(worker_1), name
            assert os.getpid() not in worker_0 | worker_1
        modules = {Path(p.worker_module_file or "").name for p in run.partitions}
        if mode.cython:
            assert modules == {f"worker{_ext_suffix()}"}  # the compiled module ran, not the source
        else:
            assert modules == {"worker.py"}
        if mode.dask:
            assert {p.code_from for p in run.partitions} == {"shipped"}  # via Dask's UploadDirectory


def _ext_suffix() -> str:
    import sysconfig

    return str(sysconfig.get_config_var("EXT_SUFFIX"))


def test_the_plan_is_saved_next_to_the_logs_and_an_unbalanced_one_is_flagged(mycode: Env) -> None:
    plan = keepwarm.distribute(mycode)
    saved = json.loads(plan_path(mycode).read_text())

    assert plan_path(mycode).parent == mycode.log_dir
    assert saved["schema"] == "keepwarm.workplan.v1"
    assert (saved["partition_key"], saved["weights_key"], saved["unit"]) == ("range", "numbers", "numbers")
    assert {w: [p["name"] for p in ps] for w, ps in saved["workers"].items()} == {
        "worker-0": ["p0", "p2", "p4"],
        "worker-1": ["p1", "p3", "p5"],
    }
    assert saved["workers"]["worker-0"][0] == {"name": "p0", "weight": 100.0, "data": [1, 100]}
    assert saved["imbalance"] == 1.0 and saved["balanced"]
    for partition in ("p3", "p5"):
        plan = move_partition(mycode, partition, "worker-0")
    assert plan.imbalance() == round(500 / 300, 4) and plan.imbalance() > IMBALANCE_LIMIT
    assert "imbalance 1.67 (UNBALANCED" in render_tree(plan)
    events: list[RunEvent] = []
    keepwarm.run(mycode, "python", on_event=events.append)
    assert "the work plan is unbalanced: imbalance 1.67" in [e.message for e in events if e.kind == "warning"]


def test_moving_to_an_unknown_worker_or_partition_names_the_known_ones(mycode: Env) -> None:
    keepwarm.distribute(mycode)

    result = keepwarm_cli("distribute", str(mycode.app_dir), "--move", "p9", "--to", "worker-0")
    assert "no partition 'p9' in the work plan; partitions: p0, p1, p2, p3, p4, p5" in assert_clean_failure(
        result
    )
    result = keepwarm_cli("distribute", str(mycode.app_dir), "--move", "p1", "--to", "worker-7")
    assert "no worker 'worker-7' in the work plan; workers: worker-0, worker-1" in assert_clean_failure(
        result
    )
    result = keepwarm_cli("distribute", str(mycode.app_dir), "--move", "p1")
    assert "--move PARTITION and --to WORKER go together" in assert_clean_failure(result)


def test_a_run_rebuilds_the_plan_when_args_change_and_keeps_moves_otherwise(mycode: Env) -> None:
    keepwarm.distribute(mycode)
    move_partition(mycode, "p1", "worker-0")
    kept = keepwarm.run(mycode, "python")
    assert kept.moves == 1 and kept.rows == 600

    events: list[RunEvent] = []
    rebuilt = keepwarm.run(mycode, "python", args={"items": 60}, on_event=events.append)

    assert rebuilt.rows == 60 and rebuilt.moves == 0
    messages = [e.message for e in events]
    assert any("work plan built (the saved work plan was built from other [args])" in m for m in messages)
    assert "the 1 moves of the saved work plan were not kept" in messages
    saved = load_plan(mycode)
    assert saved is not None and saved.args["items"] == 60


# ---------------------------------------------------------------- failures say what and where


def test_a_failing_partition_fails_the_run_naming_it_and_keeps_the_traceback_in_the_log(
    tmp_path: Path,
) -> None:
    worker = dedent(
        """
        class Worker:
            def start(self):
                pass

            def work(self, item):
                if item.name == "part2":
                    raise ValueError("number 501 is cursed")
                return [{"n": item.data[0]}]

            def stop(self):
                pass
        """
    )
    env = Env(write_app(tmp_path / "apps", "cursed", worker))

    with pytest.raises(RunError) as caught:
        keepwarm.run(env, "python")

    message = str(caught.value)
    assert "partition part2 on worker-0" in message and "ValueError: number 501 is cursed" in message
    log = Path(message.rpartition("log: ")[2])
    assert "cursed/worker.py" in log.read_text() and "Traceback" in log.read_text()
    runs = sorted(env.data_dir.iterdir())
    assert json.loads((runs[-1] / "run.json").read_text())["status"] == "failed"
    result = keepwarm_cli("data", str(env.app_dir))
    assert "has no output yet" in assert_clean_failure(result)


@pytest.mark.parametrize(
    ("mode", "named"),
    [
        (
            "pool",
            "died while working partition part2: its interpreter exited with code 3 (os._exit, or the app "
            "ended the interpreter)",
        ),
        ("dask", "the Dask worker of worker-0 (tcp://"),
    ],
)
def test_a_process_that_dies_fails_the_run_instead_of_hanging_it(
    tmp_path: Path, mode: str, named: str
) -> None:
    worker = dedent(
        """
        import os


        class Worker:
            def start(self):
                pass

            def work(self, item):
                if item.name == "part2":
                    os._exit(3)  # the interpreter dies under keepwarm, as a segfault would
                return [{"n": item.data[0]}]

            def stop(self):
                pass
        """
    )
    env = Env(write_app(tmp_path / "apps", "crashy", worker))

    with pytest.raises(RunError) as caught:
        keepwarm.run(env, mode)

    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        (
            "import-error",
            ["nonexistent_dependency", "broken/worker.py:1", "requirements.txt", "keepwarm install"],
        ),
        ("bad-args", ["app_settings.toml", "[args] items", "greater than or equal to 1"]),
    ],
)
def test_install_of_a_broken_app_names_the_file_and_the_fix(
    tmp_path: Path, broken: str, named: list[str]
) -> None:
    apps = tmp_path / "apps"
    init_app("broken", apps)
    folder = apps / "broken"
    settings = folder / "app_settings.toml"
    if broken == "import-error":
        worker = folder / "broken" / "worker.py"
        worker.write_text("import nonexistent_dependency\n" + worker.read_text())
    else:
        settings.write_text(settings.read_text().replace("items = 1000", "items = 0"))

    result = keepwarm_cli("install", "broken", "--apps-path", str(apps))

    message = assert_clean_failure(result)
    assert "install broken: step 'check' failed" in message
    for part in named:
        assert part in message, (part, message)


def test_a_dependency_that_cannot_be_installed_fails_step_dependencies(tmp_path: Path) -> None:
    init_app("needy", tmp_path / "apps")
    (tmp_path / "apps" / "needy" / "requirements.txt").write_text("no-such-package-for-keepwarm==1.0\n")

    result = subprocess.run(
        [*keepwarm_cli_command(), "install", "needy", "--apps-path", str(tmp_path / "apps")],
        env=dict(os.environ, PIP_NO_INDEX="1"),  # no network: pip fails at once, deterministically
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    message = assert_clean_failure(result)
    assert "install needy: step 'dependencies' failed: pip exited 1" in message
    assert "no-such-package-for-keepwarm" in message and "requirements.txt" in message


def keepwarm_cli_command() -> list[str]:
    return [str(Path(sys.executable).parent / "keepwarm")]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--mode", "rapids"], "mode rapids needs a CUDA GPU and cuDF: no CUDA GPU found"),
        (["--mode", "turbo"], "unknown mode 'turbo'"),
        (["--mode", "5"], "combines pool and dask"),
        (["--args", '{"items": 0}'], "invalid args: items: input should be greater than or equal to 1"),
    ],
    ids=["rapids", "unknown", "pool-and-dask", "bad-args"],
)
def test_run_refuses_what_it_cannot_do_with_a_clear_message(argv: list[str], named: str, mycode: Env) -> None:
    result = keepwarm_cli("run", str(mycode.app_dir), *argv)

    assert named in assert_clean_failure(result)


def test_mode_cython_without_a_c_compiler_says_which_is_missing(mycode: Env) -> None:
    result = subprocess.run(
        [*keepwarm_cli_command(), "run", str(mycode.app_dir), "--mode", "cython"],
        env=dict(os.environ, CC="/nonexistent/cc"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    message = assert_clean_failure(result)
    assert (
        "mode cython needs Cython and a C compiler: the C compiler $CC='/nonexistent/cc' is not found"
        in message
    )


def test_modes_parse_names_bits_and_the_references_letters() -> None:
    assert [RunMode.parse(m).name for m in ("python", 1, "cython", 4, "pool+cython", "dc", 6)] == [
        "python",
        "pool",
        "cython",
        "dask",
        "pool+cython",
        "dask+cython",
        "dask+cython",
    ]
    with pytest.raises(ModeError, match="out of range"):
        RunMode.parse(16)


# ---------------------------------------------------------------- output data


def test_export_writes_exactly_the_chosen_columns(mycode: Env) -> None:
    keepwarm.run(mycode, "python")

    result = keepwarm_cli("export", str(mycode.app_dir), "--columns", "x,is_prime,collatz_steps")

    assert result.returncode == 0, result.stderr
    exported = pd.read_csv(result.stdout.strip())
    assert list(exported.columns) == ["x", "is_prime", "collatz_steps"]
    assert len(exported) == 600 and exported["is_prime"].sum() == 109  # primes up to 600
    everything = export_columns(mycode)
    assert everything.columns == MYCODE_COLUMNS
    assert list(pd.read_csv(everything.path).columns) == MYCODE_COLUMNS
    wrong = keepwarm_cli("export", str(mycode.app_dir), "--columns", "x,colatz")
    assert "no column 'colatz' in run" in assert_clean_failure(wrong)
    neither = keepwarm_cli("export", str(mycode.app_dir))
    assert "--columns a,b or --all; columns: x, collatz_steps" in assert_clean_failure(neither)


def test_data_previews_the_latest_output_as_json(mycode: Env) -> None:
    keepwarm.run(mycode, "python", args={"items": 30})
    latest = keepwarm.run(mycode, "python")

    result = keepwarm_cli("data", str(mycode.app_dir), "--head", "3", "--json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["run_id"] == latest.run_id and document["rows"] == 600
    assert document["head"][2] == {
        "x": 3,
        "collatz_steps": 7,
        "collatz_peak": 16,
        "prime_factors": "3",
        "factor_count": 1,
        "is_prime": True,
    }
    assert sorted(p.name for p in Path(latest.output_dir).iterdir()) == [
        *(f"part-0000{i}.parquet" for i in range(6)),
        "run.json",
        "work_plan.json",
    ]  # each partition's output is kept, beside the run's record and its plan
    assert Path(latest.output_dir).parent == mycode.share_root / mycode.namespace / "data" / "mycode_project"


# ---------------------------------------------------------------- install: isolated venv, Dask code shipping


def build_wheel(folder: Path, name: str, source: str) -> Path:
    """A pure-Python wheel of one module, built by hand (pip installs it offline, no build backend)."""
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: keepwarm-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def test_an_isolated_app_gets_its_dependencies_in_its_own_venv_and_runs_there(tmp_path: Path) -> None:
    worker = dedent(
        """
        import kw_isolated_dep


        class Worker:
            def start(self):
                pass

            def work(self, item):
                first, last = item.data
                return [{"n": n, "magic": kw_isolated_dep.MAGIC * n} for n in range(first, last + 1)]

            def stop(self):
                pass
        """
    )
    folder = write_app(tmp_path / "apps", "lonely", worker, settings_extra="")
    settings = folder / "app_settings.toml"
    settings.write_text(
        settings.read_text()
        .replace("isolated = false", "isolated = true")
        .replace("items = 1000", "items = 40")
    )
    wheel = build_wheel(folder, "kw_isolated_dep", "MAGIC = 42\n")
    (folder / "requirements.txt").write_text(f"./{wheel.name}\n")
    env = Env(folder)

    report = keepwarm.install(env)

    assert report.isolated and report.python == str(
        env.share_root / env.namespace / "venv" / "lonely" / "bin" / "python"
    )
    assert report.entry_points["python"] == report.python  # the check ran in the app's interpreter
    with pytest.raises(ImportError):
        __import__("kw_isolated_dep")  # installed for the app only, not into keepwarm's environment
    events: list[RunEvent] = []
    run = keepwarm.run(env, "python", on_event=events.append)
    assert run.python == report.python and run.rows == 40
    assert read_table(env)["magic"].tolist() == [42 * n for n in range(1, 41)]
    assert any("part1 done on worker-1" in e.message for e in events)  # streamed from the venv's run


def test_install_ships_the_code_to_every_dask_worker(mycode: Env) -> None:
    report = keepwarm.install(mycode, dask=True)

    step = {s.name: s for s in report.steps}["dask"]
    assert step.status == "done" and "shipped to 2 workers" in step.detail
    assert report.shipped is not None and report.shipped.startswith("mycode_project-")


# ---------------------------------------------------------------- the reference's façade


def test_the_agi_facade_installs_distributes_and_runs_with_the_references_arguments(mycode: Env) -> None:
    async def main() -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
        installed = await keepwarm.AGI.install(mycode, modes_enabled=0, verbose=1)
        plan = await keepwarm.AGI.get_distrib(mycode, workers={"127.0.0.1": 3}, items=90, partitions=9)
        run = await keepwarm.AGI.run(
            mycode, scheduler="127.0.0.1", workers={"127.0.0.1": 3}, mode=0, items=90, partitions=9
        )
        return installed, plan, run

    installed, plan, run = asyncio.run(main())

    assert installed["app"] == "mycode_project"
    assert list(plan["workers"]) == ["worker-0", "worker-1", "worker-2"]  # type: ignore[call-overload]
    assert plan["loads"] == {"worker-0": 30.0, "worker-1": 30.0, "worker-2": 30.0}
    assert (
        run["mode"] == "python"
        and run["rows"] == 90
        and run["workers"] == ["worker-0", "worker-1", "worker-2"]
    )


def test_an_async_worker_runs_in_run_mode(tmp_path: Path) -> None:
    worker = dedent(
        """
        import asyncio


        class Worker:
            async def start(self):
                self.loop = asyncio.get_running_loop()

            async def work(self, item):
                await asyncio.sleep(0)
                assert asyncio.get_running_loop() is self.loop  # start()'s loop lives on
                return {"first": [item.data[0]], "last": [item.data[1]]}

            async def stop(self):
                pass
        """
    )
    env = Env(write_app(tmp_path / "apps", "waiter", worker))

    report = keepwarm.run(env, "python")

    assert read_table(env).to_dict("records") == [
        {"first": 1, "last": 250},
        {"first": 251, "last": 500},
        {"first": 501, "last": 750},
        {"first": 751, "last": 1000},
    ]
    assert report.rows == 4


def test_a_partition_is_what_work_receives(tmp_path: Path) -> None:
    worker = dedent(
        """
        from keepwarm import Partition


        class Worker:
            def start(self):
                print("warming up")

            def work(self, item):
                assert isinstance(item, Partition)
                print("working", item.name)
                return {"name": item.name, "weight": item.weight}

            def stop(self):
                pass
        """
    )
    env = Env(write_app(tmp_path / "apps", "echo", worker))

    report = keepwarm.run(env, "python")

    assert [p.file for p in report.partitions] == [f"part-0000{i}.json" for i in range(4)]
    assert json.loads((Path(report.output_dir) / "part-00002.json").read_text()) == {
        "name": "part2",
        "weight": 250.0,
    }
    log = Path(report.log_path).read_text()
    assert "| [worker-0 part0] warming up" in log and "| [worker-1 part3] working part3" in log
    assert isinstance(Partition(name="p", data=[1, 2]), Partition)


# ---------------------------------------------------------------- the run's args reach its workers

ARGS_ECHO_WORKER = dedent(
    """
    class Worker:
        def __init__(self, args):
            self.args = args

        def start(self):
            pass

        def work(self, item):
            return [{"partition": item.name, "items": self.args.items}]

        def stop(self):
            pass
    """
)


@pytest.mark.parametrize("mode", ["python", "pool"])
def test_the_args_of_a_run_are_those_of_its_manager_and_of_its_workers(tmp_path: Path, mode: str) -> None:
    env = Env(write_app(tmp_path / "apps", "echoargs", ARGS_ECHO_WORKER))  # [args] items = 1000

    report = keepwarm.run(env, mode, args={"items": 5})

    assert report.rows == 3  # the manager planned with items 5: 3 partitions, over 2 workers
    assert read_table(env)["items"].tolist() == [5, 5, 5]  # and every worker was built with it


def test_run_args_on_the_cli_and_through_the_facade_reach_the_workers(tmp_path: Path) -> None:
    env = Env(write_app(tmp_path / "apps", "echoargs", ARGS_ECHO_WORKER))

    result = keepwarm_cli("run", str(env.app_dir), "--mode", "python", "--args", '{"items": 3}')
    assert result.returncode == 0, result.stderr
    assert read_table(env)["items"].tolist() == [3, 3, 3]

    run = asyncio.run(keepwarm.AGI.run(env, mode=1, items=7))
    assert run["rows"] == 4 and read_table(env)["items"].tolist() == [7] * 4


# ---------------------------------------------------------------- the app's errors name the app's line


def test_a_negative_partition_weight_names_the_managers_line_not_pydantics(tmp_path: Path) -> None:
    folder = write_app(tmp_path / "apps", "negative", ARGS_ECHO_WORKER)
    manager = folder / "negative" / "manager.py"
    source = manager.read_text()
    assert "weight=last - first + 1" in source
    manager.write_text(source.replace("weight=last - first + 1", "weight=first - last - 1"))
    line = next(n for n, text in enumerate(manager.read_text().splitlines(), 1) if "weight=first" in text)

    message = assert_clean_failure(keepwarm_cli("distribute", str(folder)))

    assert "[app] manager = 'negative.manager:Manager': build_distribution(workers) raised" in message
    assert "weight: input should be greater than or equal to 0 (got -250" in message
    assert f"at {manager}:{line}" in message
    assert "pydantic" not in message.replace("pydantic model", "")  # no library frame, no pydantic URL


@pytest.mark.parametrize("mode", ["python", "pool"])
def test_a_worker_whose_start_raises_fails_the_run_naming_start(tmp_path: Path, mode: str) -> None:
    worker = dedent(
        """
        class Worker:
            def start(self):
                raise RuntimeError("the model file is missing")

            def work(self, item):
                return [{"n": item.data[0]}]

            def stop(self):
                pass
        """
    )
    folder = write_app(tmp_path / "apps", "coldstart", worker)

    with pytest.raises(RunError) as caught:
        keepwarm.run(Env(folder), mode)

    message = str(caught.value)
    assert "start() of worker-" in message and "failed (pid " in message
    assert f"RuntimeError: the model file is missing at {folder / 'coldstart' / 'worker.py'}:4" in message
    assert "partition part" in message  # the partition it was about to work, named after start()
    assert message.index("start()") < message.index("partition part")


def test_moving_a_partition_to_the_worker_that_holds_it_says_nothing_moved(mycode: Env) -> None:
    keepwarm.distribute(mycode)
    saved = plan_path(mycode).read_bytes()

    result = keepwarm_cli("distribute", str(mycode.app_dir), "--move", "p1", "--to", "worker-1")

    assert result.returncode == 0, result.stderr
    assert "p1 is already on worker-1: nothing moved" in result.stderr
    assert "moved p1" not in result.stderr
    assert plan_path(mycode).read_bytes() == saved  # not rewritten, no move recorded
    moved = keepwarm_cli("distribute", str(mycode.app_dir), "--move", "p1", "--to", "worker-0")
    assert "moved p1 from worker-1 to worker-0; imbalance 1.33" in moved.stderr


# ---------------------------------------------------------------- pool processes are keepwarm's own


def test_the_from_python_example_runs_as_a_script_without_a_main_guard(tmp_path: Path) -> None:
    page = Path(__file__).resolve().parents[1] / "docs" / "run-mode.md"
    block = next(b.source for b in python_blocks(page) if 'keepwarm.run(env, "pool"' in b.source)
    assert "__main__" not in block
    script = tmp_path / "from_python.py"
    script.write_text(block)

    completed = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False
    )

    assert completed.returncode == 0, completed.stderr  # the pool did not re-run the script


def test_a_script_without_a_main_guard_runs_on_a_local_dask_cluster(tmp_path: Path) -> None:
    script = tmp_path / "on_dask.py"
    script.write_text(
        dedent(
            f"""
            import keepwarm
            from keepwarm.runmode.scaffold import init_app

            init_app("squares", {str(tmp_path / "apps")!r})
            report = keepwarm.run(keepwarm.Env("squares", apps_path={str(tmp_path / "apps")!r}), "dask")
            print(report.rows, report.mode)
            """
        )
    )

    completed = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False
    )

    assert completed.returncode == 0, completed.stderr  # the nannies did not re-run the script
    assert completed.stdout.split() == ["1000", "dask"]


@pytest.mark.parametrize(
    ("death", "cause"),
    [
        ("os._exit(3)", "its interpreter exited with code 3"),
        ("os.kill(os.getpid(), signal.SIGKILL)", "killed by signal SIGKILL"),
    ],
)
def test_a_pool_process_that_dies_is_reported_with_its_cause_and_last_words(
    tmp_path: Path, death: str, cause: str
) -> None:
    worker = dedent(
        f"""
        import os
        import signal
        import sys


        class Worker:
            def start(self):
                pass

            def work(self, item):
                if item.name == "part3":
                    os.write(2, b"libfoo: the device went away\\n")  # as a C library says it, unbuffered
                    {death}
                return [{{"n": item.data[0]}}]

            def stop(self):
                pass
        """
    )
    env = Env(write_app(tmp_path / "apps", "dying", worker))

    with pytest.raises(RunError) as caught:
        keepwarm.run(env, "pool")

    message = str(caught.value)
    assert "the pool process of worker-1 (pid " in message
    assert f"died while working partition part3: {cause}" in message
    assert "its last words on stderr: libfoo: the device went away" in message
    log = Path(message.rpartition("log: ")[2]).read_text()
    assert "| [worker-1] libfoo: the device went away" in log
    record = json.loads((sorted(env.data_dir.iterdir())[-1] / "run.json").read_text())
    assert record["status"] == "failed" and cause in record["error"]


# ---------------------------------------------------------------- an app that ends the interpreter


def test_an_app_that_ends_the_interpreter_in_python_mode_fails_the_cli_run_recorded(tmp_path: Path) -> None:
    worker = dedent(
        """
        import os


        class Worker:
            def start(self):
                pass

            def work(self, item):
                if item.name == "part2":
                    os._exit(3)
                return [{"n": item.data[0]}]

            def stop(self):
                pass
        """
    )
    env = Env(write_app(tmp_path / "apps", "quitter", worker))

    result = keepwarm_cli("run", str(env.app_dir), "--mode", "python")

    message = assert_clean_failure(result)
    assert "the run's process (pid " in message
    assert "exited with code 3 while working partition part2 on worker-0, 1 of 4 partitions done" in message
    assert "(os._exit, or a crash of the interpreter)" in message
    (folder,) = env.data_dir.iterdir()
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "failed" and "exited with code 3" in record["error"]
    assert record["mode"] == "python" and record["workers"] == ["worker-0", "worker-1"]
    assert [p["name"] for p in record["partitions"]] == ["part0"]  # what finished before is kept
    log = Path(record["log_path"]).read_text()
    assert "part0 done on worker-0" in log and f"run {folder.name} failed: the run's process" in log


# ---------------------------------------------------------------- benchmark.json: every mode's latest timing


def test_a_partial_benchmark_updates_its_modes_and_keeps_the_others_dated(mycode: Env) -> None:
    first = benchmark(mycode, ["python", "pool"])
    before = json.loads((mycode.log_dir / "benchmark.json").read_text())

    result = keepwarm_cli(
        "run", str(mycode.app_dir), "--benchmark", "--mode", "python,rapids", "--json", timeout=120
    )

    assert result.returncode == 0, result.stderr
    after = json.loads((mycode.log_dir / "benchmark.json").read_text())
    assert set(after) == {"python", "pool"}  # rapids skipped, pool kept
    ranking = {"order": after["pool"]["order"], "delta": after["pool"]["delta"]}
    assert after["pool"] == before["pool"] | ranking  # the same run, re-ranked
    assert after["python"]["run_id"] != first.entries["python"].run_id
    assert after["python"]["date"] > before["python"]["date"]  # each entry dated: the one of its run
    assert sorted(e["order"] for e in after.values()) == [1, 2]
    document = json.loads(result.stdout)
    assert document["kept"] == ["pool"] and document["dropped"] == {}
    assert "rapids" in document["skipped"] and document["same_output"]
    shown = keepwarm_cli("run", str(mycode.app_dir), "--benchmark", "--mode", "python", timeout=120)
    assert "kept from earlier runs of the same work plan: pool" in shown.stderr


def test_a_single_run_records_its_timing_and_drops_timings_of_another_plan(mycode: Env) -> None:
    python = keepwarm.run(mycode, "python")
    pool = keepwarm.run(mycode, "pool")

    document = json.loads((mycode.log_dir / "benchmark.json").read_text())
    assert set(document) == {"python", "pool"}
    assert document["pool"]["run_id"] == pool.run_id and document["pool"]["date"] == pool.finished_at
    assert document["python"]["seconds"] == python.seconds and document["python"]["rows"] == 600
    assert document["pool"]["args"] == {"x": 27, "items": 600, "partitions": 6}
    assert {e["order"] for e in document.values()} == {1, 2}

    events: list[RunEvent] = []
    keepwarm.run(mycode, "python", args={"items": 60}, on_event=events.append)

    document = json.loads((mycode.log_dir / "benchmark.json").read_text())
    assert set(document) == {"python"} and document["python"]["rows"] == 60
    warnings = [e.message for e in events if e.kind == "warning"]
    assert any(
        w.startswith("benchmark.json: the entry of pool was dropped: measured on")
        and 'another work plan (2 workers, args {"items": 600' in w
        for w in warnings
    ), warnings


def test_a_benchmark_of_modes_that_cannot_run_here_changes_nothing(mycode: Env) -> None:
    keepwarm.run(mycode, "python")
    before = (mycode.log_dir / "benchmark.json").read_bytes()

    result = keepwarm_cli("run", str(mycode.app_dir), "--benchmark", "--mode", "rapids")

    assert "no mode to benchmark can run here (rapids: " in assert_clean_failure(result)
    assert (mycode.log_dir / "benchmark.json").read_bytes() == before


def test_run_json_stays_one_document_when_the_app_writes_to_stdout_itself(tmp_path: Path) -> None:
    worker = dedent(
        """
        import os


        class Worker:
            def start(self):
                os.write(1, b"a C library says hello on fd 1\\n")

            def work(self, item):
                return [{"n": item.data[0]}]

            def stop(self):
                pass
        """
    )
    env = Env(write_app(tmp_path / "apps", "chatty", worker))

    result = keepwarm_cli("run", str(env.app_dir), "--mode", "python", "--json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "done" and document["rows"] == 4
    assert "a C library says hello on fd 1" in Path(document["log_path"]).read_text()


# ---------------------------------------------------------------- contained: no app code in the caller

MYCODE_LIKE_WORKER = dedent(
    """
    class Worker:
        def __init__(self, args) -> None:
            self.args = args

        def start(self) -> None:
            pass

        def work(self, item):
            first, last = item.data
            return [{"n": n} for n in range(first, last + 1)]

        def stop(self) -> None:
            pass
    """
)

ENDS_ITS_INTERPRETER = "        import os\n\n        os._exit(4)\n        size = "


def test_a_plan_built_in_a_child_process_is_the_managers_and_a_manager_that_dies_is_a_plan_error(
    tmp_path: Path,
) -> None:
    env = Env(write_app(tmp_path / "apps", "planner", MYCODE_LIKE_WORKER))

    plan = distribute_in_child(env, workers=3, args={"items": 90})

    assert plan == load_plan(env) and list(plan.workers) == ["worker-0", "worker-1", "worker-2"]
    assert plan.args["items"] == 90
    manager = env.app_dir / "planner" / "manager.py"
    manager.write_text(manager.read_text().replace("        size = ", ENDS_ITS_INTERPRETER))
    with pytest.raises(PlanError) as caught:  # and this process, the caller, is still here
        distribute_in_child(env, workers=2, args=None)
    message = str(caught.value)
    assert "(planner.manager:Manager, pid " in message and "exited with code 4" in message
    assert "no plan was saved" in message
    assert load_plan(env) == plan
    (env.app_dir / "app_settings.toml").write_text(
        (env.app_dir / "app_settings.toml").read_text().replace("items = 1000", "items = 0")
    )
    with pytest.raises(SettingsError, match=r"\[args\] items"):  # the child's error, as the child raised it
        distribute_in_child(env, workers=2, args=None)


@pytest.mark.parametrize("mode", ["python", "pool"])
def test_a_contained_run_of_any_mode_builds_its_plan_in_a_child_process(tmp_path: Path, mode: str) -> None:
    env = Env(write_app(tmp_path / "apps", f"contained_{mode}", MYCODE_LIKE_WORKER))
    manager = env.app_dir / env.app_target / "manager.py"
    manager.write_text(manager.read_text().replace("        size = ", ENDS_ITS_INTERPRETER))

    with pytest.raises(RunError) as caught:  # not contained, the manager would end this process
        keepwarm.run(env, mode, contained=True)

    assert "exited with code 4 before the run had a plan" in str(caught.value)


def test_a_failed_run_carries_its_report_and_the_failed_partitions_traceback(tmp_path: Path) -> None:
    worker = MYCODE_LIKE_WORKER.replace(
        "        first, last = item.data\n",
        '        if item.name == "part2":\n            raise ValueError("number 501 is cursed")\n'
        "        first, last = item.data\n",
    )
    env = Env(write_app(tmp_path / "apps", "cursed_again", worker))

    with pytest.raises(RunFailed) as caught:
        keepwarm.run(env, "python", contained=True)

    report = caught.value.report
    assert report.status == "failed" and report.run_id in str(caught.value)
    (traceback,) = report.tracebacks()
    assert traceback.startswith("part2 on worker-0 (pid ")
    assert "Traceback (most recent call last)" in traceback
    assert "ValueError: number 501 is cursed" in traceback


# ---------------------------------------------------------------- what the page shows: fresh or out of date


def test_a_plan_is_out_of_date_when_args_change_and_says_which_keys(mycode: Env) -> None:
    plan = keepwarm.distribute(mycode)

    fresh = freshness(mycode, plan.created_at, plan.args)  # [args] names x, items, partitions; all equal
    assert not fresh.stale and fresh.out_of_date() is None
    assert fresh.computed().startswith(f"computed {plan.created_at[:10]} ")
    assert '"items": 600' in fresh.computed()

    update_settings(mycode.settings_path, "args", {"items": 60, "x": 5})
    mycode.reload_settings()
    stale = freshness(mycode, plan.created_at, plan.args)
    assert stale.changed == ["items", "x"]
    assert stale.out_of_date() == "out of date: made with other [args] (keys items, x)"
    assert freshness(mycode, None, None).computed() == "computed at an unknown time with unrecorded args"


def test_a_default_left_out_of_the_file_is_not_a_change(tmp_path: Path) -> None:
    env = Env(write_app(tmp_path / "apps", "defaults", MYCODE_LIKE_WORKER))
    plan = keepwarm.distribute(env)
    assert plan.args == {"value": 7, "items": 1000, "partitions": 4}

    update_settings(env.settings_path, "args", {"value": None})  # removed: its default, 7, applies
    env.reload_settings()

    assert "value" not in env.settings.args
    assert not freshness(env, plan.created_at, plan.args).stale


def test_the_tree_collapses_partitions_per_worker_past_a_dozen(tmp_path: Path) -> None:
    env = Env(write_app(tmp_path / "apps", "many", MYCODE_LIKE_WORKER))
    few = keepwarm.distribute(env, workers=2, args={"partitions": PARTITIONS_DRAWN})
    many = keepwarm.distribute(env, workers=4, args={"partitions": 100})

    assert not collapsed(few) and collapsed(many)
    drawn = plan_graph(few)
    assert '"worker-0/part0"' in drawn and "rankdir=LR" in drawn
    folded = plan_graph(many)
    assert '"worker-0/part0"' not in folded
    assert folded.count("25 partitions, 250 numbers (25%)") == 4
    assert 'tooltip="worker-3: part3, part7, ' in folded
    wide = plan_graph(keepwarm.distribute(env, workers=WORKERS_IN_A_COLUMN + 1, args={"partitions": 100}))
    assert "rankdir=TB" in wide


def test_the_move_message_and_the_saved_plan_agree(mycode: Env) -> None:
    keepwarm.distribute(mycode)

    outcome = move(mycode, "p1", "worker-0")

    saved = load_plan(mycode)
    assert outcome.plan == saved and saved is not None
    assert outcome.message.endswith(f"imbalance {saved.imbalance():.2f}")
    assert saved.worker_of("p1") == "worker-0"


def test_saved_timings_are_ranked_and_none_without_a_file(mycode: Env) -> None:
    assert saved_timings(mycode) is None
    keepwarm.run(mycode, "python")
    keepwarm.run(mycode, "pool")

    timings = saved_timings(mycode)

    assert timings is not None
    assert [e.order for e in timings.ranked] == [1, 2]
    assert {e.mode for e in timings.ranked} == {"python", "pool"}
    assert all(e.date and e.args == {"x": 27, "items": 600, "partitions": 6} for e in timings.ranked)
