"""Where a run's partitions are worked: in this process, one plan worker after the other, or on a
Dask cluster, each plan worker pinned to one Dask worker (the pool is ``pool.py``). Each executor
yields every partition's outcome as it comes, then what each plan worker's ``stop()`` wrote."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keepwarm.errors import RunError
from keepwarm.runmode.appcode import borrowed_imports
from keepwarm.runmode.batch import (
    PartitionJob,
    PartitionOutcome,
    WorkerLog,
    finish_worker,
    run_partition,
)

if TYPE_CHECKING:
    from keepwarm.runmode.steps import RunJob

DASK_LIVENESS_SEC = 2.0

PartitionJobs = dict[str, list[PartitionJob]]  # plan worker: its partitions, in the plan's order


def partition_results(
    run: RunJob, jobs: PartitionJobs, code_dir: Path
) -> Iterator[PartitionOutcome | WorkerLog]:
    """The results of ``jobs`` worked by the executor of ``run``'s mode."""
    if run.mode.executor == "dask":
        return on_dask(run, jobs, code_dir)
    if run.mode.executor == "pool":
        from keepwarm.runmode.pool import in_pools

        return in_pools(run.run_id, jobs)
    return in_process(run.run_id, jobs, code_dir)


def in_process(run_id: str, jobs: PartitionJobs, code_dir: Path) -> Iterator[PartitionOutcome | WorkerLog]:
    """Work the partitions here, with the app's code in ``code_dir`` importable meanwhile."""
    with borrowed_imports(code_dir):
        try:
            for worker, worker_jobs in jobs.items():
                for job in worker_jobs:
                    yield run_partition(job)
                yield WorkerLog(worker, finish_worker(run_id, worker))
        finally:
            for worker in jobs:
                finish_worker(run_id, worker)


def on_dask(run: RunJob, jobs: PartitionJobs, code_dir: Path) -> Iterator[PartitionOutcome | WorkerLog]:
    """Work the partitions on the run's Dask cluster (opened here, closed after), the app's code
    shipped to its workers."""
    from keepwarm.backends.staging import open_run_cluster, ship_to_dask, stage_app

    folder = code_dir if run.mode.cython else stage_app(run.env)
    began = time.perf_counter()
    handle = open_run_cluster(run.env, workers=len(jobs), scheduler=run.scheduler)
    try:
        client = handle.client
        shipped = ship_to_dask(client, folder)
        addresses = dask_worker_addresses(client)
        if not addresses:
            raise RunError(f"the Dask cluster at {handle.address} has no worker")
        placement = {worker: addresses[i % len(addresses)] for i, worker in enumerate(jobs)}
        run.log.emit(
            "info",
            f"dask: {len(addresses)} workers at {handle.address} ready in "
            f"{time.perf_counter() - began:.2f}s; code shipped as {shipped}",
        )
        futures = _submit_partitions(client, run.run_id, jobs, placement, shipped)
        yield from _results_as_done(client, futures, placement)
        yield from _finish_workers(client, run.run_id, placement)
    finally:
        handle.close(shutdown=True)


def _submit_partitions(
    client: Any, run_id: str, jobs: PartitionJobs, placement: dict[str, str], shipped: str
) -> list[Any]:
    futures = []
    for worker, worker_jobs in jobs.items():
        for position, job in enumerate(worker_jobs):
            future = client.submit(
                run_partition,
                replace(job, shipped=shipped),
                key=f"keepwarm-{run_id}-{job.index:05d}",
                workers=[placement[worker]],
                allow_other_workers=False,
                priority=len(worker_jobs) - position,  # a worker's partitions in the plan's order
                pure=False,
            )
            futures.append(future)
    return futures


def _results_as_done(
    client: Any, futures: list[Any], placement: dict[str, str]
) -> Iterator[PartitionOutcome]:
    finished: queue.Queue[Any] = queue.Queue()
    for future in futures:
        future.add_done_callback(finished.put)
    for _ in futures:
        while True:
            try:
                future = finished.get(timeout=DASK_LIVENESS_SEC)
                break
            except queue.Empty:
                _check_placement(client, placement)
        yield _result_while_placed(future, client, placement)


def _finish_workers(client: Any, run_id: str, placement: dict[str, str]) -> Iterator[WorkerLog]:
    stops = {
        client.submit(
            finish_worker,
            run_id,
            worker,
            key=f"keepwarm-{run_id}-stop-{worker}",
            workers=[address],
            pure=False,
        ): worker
        for worker, address in placement.items()
    }
    for future, worker in stops.items():
        yield WorkerLog(worker, future.result(timeout=60))


def _result_while_placed(future: Any, client: Any, placement: dict[str, str]) -> Any:
    """A done future's result: a future whose worker died can read as done and then wait forever for
    a worker it is pinned to, so its placement is checked while it waits."""
    while True:
        try:
            return future.result(timeout=DASK_LIVENESS_SEC)
        except TimeoutError:
            _check_placement(client, placement)


def dask_worker_addresses(client: Any) -> list[str]:
    """The addresses of the cluster's workers, sorted by name."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return sorted(workers, key=lambda address: (str(workers[address].get("name")), address))


def _check_placement(client: Any, placement: dict[str, str]) -> None:
    alive = set(client.scheduler_info(n_workers=-1)["workers"])
    for worker, address in placement.items():
        if address not in alive:
            raise RunError(
                f"the Dask worker of {worker} ({address}) left the cluster during the run "
                "(its process died: killed, or the app crashed the interpreter)"
            )
