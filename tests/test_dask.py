"""Service mode on the Dask backend: real schedulers, nannies and worker processes on 127.0.0.1.

A service's own cluster is a ``LocalCluster`` (processes, nannies) held by keepwarm's keeper process; the
joined-cluster tests start ``dask scheduler`` and ``dask worker`` as real processes, as an operator would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from keepwarm.api import Service
from keepwarm.backends.cluster import LOOP_RESOURCE, read_keeper
from keepwarm.env import Env
from keepwarm.errors import ServiceStartError
from keepwarm.queue.results import wait_for_records
from keepwarm.queue.state import read_service_record
from keepwarm.service.liveness import pid_alive

from .conftest import EXAMPLE_APPS, ROOT, Services, copy_app, supervisor_state, wait_until

pytest.importorskip("distributed")

BIN = Path(sys.executable).parent
FAST = 'backend = "dask"\nheartbeat_timeout_sec = 4\nstop_timeout_sec = 3\nstart_timeout_sec = 60\n'


def dask_app(tmp_path: Path, scheduler: str | None = None) -> Env:
    """The example app on the Dask backend with short timeouts; ``scheduler`` joins that cluster."""
    cluster = FAST + (f'scheduler = "{scheduler}"\n' if scheduler else "")
    replace = {'backend = "local"\n': cluster, "heartbeat_timeout_sec = 10\n": ""}
    return Env(copy_app(tmp_path, "mycode_project", **replace))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DaskProcesses:
    """``dask scheduler`` and ``dask worker`` processes of a cluster keepwarm joins; stopped by pid."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_scheduler(self) -> None:
        command = ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"]
        with open(self.tmp_path / "scheduler.log", "ab") as log:  # the process keeps its own copy
            self.scheduler = subprocess.Popen([str(BIN / "dask"), *command], stdout=log, stderr=log)

    def start_worker(
        self,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        host: str = "127.0.0.1",
        loops: int = 1,
    ) -> None:
        """``dask worker`` (``loops`` single-threaded workers, each with its nanny) in a process group
        of its own: a "host" that ``kill_host`` ends at once; ``prefix`` runs it under another command
        (ending in ``exec``)."""
        with open(self.tmp_path / f"worker-{len(self.workers)}.log", "ab") as log:
            self.workers.append(
                subprocess.Popen(
                    [
                        *prefix,
                        str(BIN / "dask"),
                        "worker",
                        self.address,
                        "--nthreads",
                        "1",
                        "--resources",
                        f"{LOOP_RESOURCE}=1",
                        "--nworkers",
                        str(loops),
                        "--no-dashboard",
                        "--host",
                        host,
                    ],
                    env={**os.environ, **(env or {})},
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            )

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(count, timeout=60)

    def kill_host(self, index: int) -> None:
        """Every process of worker ``index``'s group at once (nanny, worker, the loops in it)."""
        try:
            os.killpg(self.workers[index].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.workers[index].wait()

    def stop(self) -> None:
        for index in range(len(self.workers)):
            self.kill_host(index)
        if self.scheduler is not None and self.scheduler.poll() is None:
            self.scheduler.kill()
            self.scheduler.wait()


@pytest.fixture
def dask_processes(tmp_path: Path) -> Iterator[DaskProcesses]:
    processes = DaskProcesses(tmp_path)
    yield processes
    processes.stop()


def test_dask_service_starts_serves_reports_and_stops(tmp_path: Path, services: Services) -> None:
    env = dask_app(tmp_path)
    service = services.start(env)
    report = service.status()
    assert report.backend == "dask" and report.workers_healthy_count == 2
    record = read_service_record(env.service_dir / "service.json")
    assert record is not None and record.backend == "dask" and record.cluster is not None
    assert record.cluster.owned and record.cluster.keeper_pid is not None
    loop_pids = {row.pid for row in supervisor_state(env).loops}
    assert os.getpid() not in loop_pids and len(loop_pids) == 2  # two Dask worker processes

    handles = service.submit_many([{"args": {"x": x}} for x in range(1, 41)])
    assert [handle.result(timeout=60)["x"] for handle in handles] == list(range(1, 41))

    status = subprocess.run(
        [str(BIN / "keepwarm"), "status", str(env.app_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(status.stdout)
    assert seen["backend"] == "dask" and seen["workers_healthy_count"] == 2 and seen["queue"]["done"] == 40

    keeper = record.cluster.keeper_pid
    assert service.stop(timeout=10)["status"] == "stopped"
    wait_until(lambda: not pid_alive(keeper), timeout=30, what="the local cluster to be shut down")
    assert service.status().status == "stopped"


def test_a_killed_dask_worker_comes_back_and_nothing_is_lost(tmp_path: Path, services: Services) -> None:
    env = dask_app(tmp_path)
    service = services.start(env)
    victim = supervisor_state(env).loops[0]
    assert victim.pid is not None
    handles = service.submit_many([{"args": {"x": x}} for x in range(1, 301)])
    wait_until(lambda: service.counts().done >= 20, timeout=60, what="tasks to flow")
    os.kill(victim.pid, signal.SIGKILL)

    records = wait_for_records(service.queue, [h.task_id for h in handles], timeout=120)
    assert sorted(r.result["x"] for r in records.values() if r.status == "done") == list(range(1, 301))

    def replaced() -> bool:
        (row,) = [r for r in supervisor_state(env).loops if r.slot == victim.slot]
        return row.incarnation != victim.incarnation and row.future_state == "running"

    wait_until(replaced, timeout=60, what="the loop to run again on its restarted worker")
    report = service.status()
    # Seen by Dask (the future ends when the worker leaves) or, when the scheduler is slower than the
    # heartbeat timeout, by the loop's heartbeat going stale: one restart either way.
    ((reason, count),) = report.restart_reasons.items()
    assert count == 1 and (reason == "worker-lost" or reason.startswith("stale-heartbeat")), reason
    assert report.workers_healthy_count == 2
    assert service.counts().pending == service.counts().running == 0


def test_stop_no_shutdown_keeps_the_cluster_for_the_next_start(tmp_path: Path, services: Services) -> None:
    env = dask_app(tmp_path)
    service = services.start(env)
    record = read_service_record(env.service_dir / "service.json")
    assert record is not None and record.cluster is not None
    service.stop(timeout=10, shutdown=False)
    kept = read_service_record(env.service_dir / "service.json")
    assert kept is not None and kept.cluster is not None and kept.cluster.kept
    assert read_keeper(env.service_dir / "cluster.json") == (
        record.cluster.address,
        record.cluster.keeper_pid,
    )

    service.start()
    again = read_service_record(env.service_dir / "service.json")
    assert again is not None and again.cluster is not None
    assert again.cluster.address == record.cluster.address  # the same cluster, reused
    assert service.submit({"x": 9}).result(timeout=60)["x"] == 9


def test_the_seed_example_runs_on_the_dask_backend(tmp_path: Path) -> None:
    apps = tmp_path / "examples" / "apps"
    shutil.copytree(EXAMPLE_APPS / "mycode_project", apps / "mycode_project")
    settings = apps / "mycode_project" / "app_settings.toml"
    settings.write_text(settings.read_text().replace('backend = "local"', 'backend = "dask"'))
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "seed" / "service_mode_end_to_end.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[:4] == [
        "START: idle",
        "STATUS: idle 2",
        "HEALTH: idle 0",
        "STOP: stopped",
    ]
    service_dir = Env("mycode_project", apps).service_dir
    record = read_service_record(service_dir / "service.json")
    assert record is not None and record.backend == "dask"
    # The example stops with shutdown_on_stop=False: its cluster is kept for the next start.
    kept = read_keeper(service_dir / "cluster.json")
    assert kept is not None, "shutdown_on_stop=False should have kept the Dask cluster"
    os.kill(kept[1], signal.SIGKILL)
    wait_until(lambda: not pid_alive(kept[1]), 30, "the kept cluster's keeper gone")


def test_a_worker_that_sees_another_queue_fails_start_naming_host_and_paths(
    tmp_path: Path, services: Services, dask_processes: DaskProcesses
) -> None:
    dask_processes.start_scheduler()
    elsewhere = tmp_path / "elsewhere"
    dask_processes.start_worker({"KEEPWARM_SHARE": str(elsewhere)})
    dask_processes.wait_for_workers(1)
    env = dask_app(tmp_path, dask_processes.address)
    with pytest.raises(ServiceStartError) as failure:
        services.start(env)
    message = str(failure.value)
    assert "does not share the service's queue" in message
    assert f"on host {os.uname().nodename}" in message
    assert str(env.queue_dir) in message
    assert str(elsewhere / env.namespace / "service" / "mycode_project" / "queue") in message
    assert dask_processes.scheduler is not None and dask_processes.scheduler.poll() is None  # joined: kept


def test_a_worker_whose_share_path_is_another_folder_fails_start_naming_both_mounts(
    tmp_path: Path, services: Services, dask_processes: DaskProcesses
) -> None:
    """The worker names the same path, but in its own mount namespace (``unshare -m``) a bind mount
    puts another folder there: what a host with the share mounted in the wrong place looks like."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a mount namespace needs root and unshare(1)")
    share = Path(os.environ["KEEPWARM_SHARE"])
    share.mkdir(parents=True, exist_ok=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    in_namespace = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
    bind = f'mount --bind "{elsewhere}" "{share}" && exec "$0" "$@"'
    dask_processes.start_scheduler()
    dask_processes.start_worker(prefix=[*in_namespace, bind])
    dask_processes.wait_for_workers(1)
    env = dask_app(tmp_path, dask_processes.address)
    with pytest.raises(ServiceStartError) as failure:
        services.start(env)
    message = str(failure.value)
    assert "does not share the service's queue" in message, message
    assert f"on host {os.uname().nodename}" in message
    assert f"the supervisor's queue is {env.queue_dir} (on " in message
    assert "the worker's is another folder at the same path" in message
    assert f"its folder {elsewhere}" in message, message  # the bind mount's source, seen by the worker
    assert Service(env).status().status == "stopped"  # nothing started half-way
    assert not list(elsewhere.iterdir())  # and nothing written where the worker looked


def test_a_lost_scheduler_is_an_error_and_start_recovers(
    tmp_path: Path, services: Services, dask_processes: DaskProcesses
) -> None:
    dask_processes.start_scheduler()
    dask_processes.start_worker()
    dask_processes.wait_for_workers(1)
    env = dask_app(tmp_path, dask_processes.address)
    service = services.start(env, slots=1)
    assert service.submit({"x": 3}).result(timeout=60)["x"] == 3

    assert dask_processes.scheduler is not None
    dask_processes.scheduler.kill()
    dask_processes.scheduler.wait()
    wait_until(lambda: service.status().status == "error", timeout=60, what="status error")
    assert any("scheduler" in c for c in service.status().conditions), service.status().conditions

    # Queued while the cluster is down (the supervisor may be giving up): kept for the next start.
    task = service.submit({"x": 5}, queue_only=True)
    wait_until(lambda: not pid_alive(supervisor_state(env).pid), timeout=60, what="the supervisor to give up")
    assert service.status().status == "error"
    dask_processes.start_scheduler()  # the operator brings the cluster back (workers exit with it)
    dask_processes.start_worker()
    dask_processes.wait_for_workers(1)
    service.start(slots=1)
    assert task.result(timeout=60)["x"] == 5
    # A loop of the dead supervisor may still heartbeat for a moment, until it sees the new one.
    wait_until(lambda: service.status().status in ("running", "idle"), timeout=30, what="a healthy service")


def test_the_app_code_reaches_workers_that_do_not_have_it(tmp_path: Path) -> None:
    """The app's folder is uploaded to each worker (Dask's UploadDirectory through the nannies): a
    worker runs the app from its copy once the original folder is gone."""
    from distributed import Client, LocalCluster

    from keepwarm.backends.dask_worker import _app_dir_here
    from keepwarm.backends.staging import ship_to_dask, stage_app

    app_dir = copy_app(tmp_path, "mycode_project")
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        staged = stage_app(Env(app_dir))
        shipped = ship_to_dask(client, staged)
        shutil.rmtree(app_dir)  # neither the app nor its staged copy on the share: only the upload
        shutil.rmtree(staged)

        def run_there(dask_worker: object) -> object:
            from keepwarm.app import load_app
            from keepwarm.queue.task import TaskItem

            found = _app_dir_here(str(app_dir), shipped, dask_worker)
            app = load_app(Env(found))
            worker = app.new_worker()
            worker.start()
            item = TaskItem(
                task_id="t",
                task_name="t",
                args=app.validate_args({"x": 12}),
                plan=None,
                attempt=1,
                max_attempts=1,
                execution_id=None,
                created_at="2026-01-01T00:00:00Z",
                timeout_sec=None,
            )
            return str(found), worker.work(item)

        ((where, result),) = client.run(run_there).values()
    assert not Path(where).is_relative_to(tmp_path) and result["x"] == 12


def test_after_the_supervisor_is_killed_start_recovers_on_the_same_cluster(
    tmp_path: Path, services: Services
) -> None:
    env = dask_app(tmp_path)
    service = services.start(env)
    state = supervisor_state(env)
    keeper = read_keeper(env.service_dir / "cluster.json")
    assert keeper is not None
    handles = service.submit_many([{"args": {"x": x}} for x in range(1, 201)])
    wait_until(lambda: service.counts().done >= 10, timeout=60, what="tasks to flow")
    os.kill(state.pid, signal.SIGKILL)
    wait_until(lambda: service.status().status == "error", timeout=30, what="status error")

    service.start()  # the old loops see a new supervisor take over, finish their task and stop
    assert read_keeper(env.service_dir / "cluster.json") == keeper  # the cluster outlived its supervisor
    records = wait_for_records(service.queue, [h.task_id for h in handles], timeout=120)
    assert sorted(r.result["x"] for r in records.values() if r.status == "done") == list(range(1, 201))
    old = {row.incarnation for row in state.loops}
    wait_until(
        lambda: (
            not old & {row.incarnation for row in supervisor_state(env).loops}
            and service.status().workers_healthy_count == 2
        ),
        timeout=60,
        what="new loops only",
    )
