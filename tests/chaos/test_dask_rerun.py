"""The Dask backend's guard against a loop running twice: a rerun of a loop's Dask task returns at once.

When a worker dies, the scheduler may run the dead worker's task again elsewhere. For a loop that
would be a second, untracked loop for an incarnation the supervisor has already given up: it claims
tasks into a folder nobody will requeue and holds a worker's only thread. The run marker
(``loops/<slot>.<incarnation>.run``) is the guard; it must hold however late the rerun comes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keepwarm.backends.cluster import LOOP_RESOURCE, read_keeper
from keepwarm.env import Env

from ..conftest import Services, copy_app, supervisor_state, wait_until

pytestmark = pytest.mark.chaos
pytest.importorskip("distributed")


def test_a_late_rerun_of_a_retired_loop_returns_at_once(tmp_path: Path, chaos_services: Services) -> None:
    from distributed import Client

    from keepwarm.backends.dask_worker import RERUN_EXIT, LoopSpec, serve_on_worker

    dask = '[cluster]\nbackend = "dask"\nstop_timeout_sec = 3\nstart_timeout_sec = 60\n'
    env = Env(
        copy_app(
            tmp_path,
            "flaky",
            **{"[cluster]\n": dask, "heartbeat_timeout_sec = 2": "heartbeat_timeout_sec = 4"},
        )
    )
    service = chaos_services.start(env)  # two loops, on the two workers of the cluster keepwarm starts
    state = supervisor_state(env)
    retired = state.loops[1]
    assert service.scale(1) == {"from": 2, "to": 1}
    wait_until(lambda: len(supervisor_state(env).loops) == 1, timeout=60, what="loop-1 retired")
    assert service.submit({"value": 1}).result(timeout=60)["value"] == 1

    # What the scheduler does when it reschedules a loop's task late: run the same spec again.
    spec = LoopSpec(
        app_dir=str(env.app_dir),
        share_root=str(env.share_root),
        namespace=env.namespace,
        slot=retired.slot,
        incarnation=retired.incarnation,
        supervisor=state.incarnation,
        heartbeat_timeout_sec=4.0,
    )
    kept = read_keeper(env.service_dir / "cluster.json")
    assert kept is not None
    with Client(kept[0], timeout=30, set_as_default=False) as client:
        rerun = client.submit(serve_on_worker, spec, resources={LOOP_RESOURCE: 1}, pure=False)
        try:
            assert rerun.result(timeout=30) == RERUN_EXIT
        finally:
            rerun.cancel()
    assert service.status().workers_healthy_count == 1
