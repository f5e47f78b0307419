"""``AGI.serve``, the seed-compatible façade: each action does what the matching CLI verb does."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from keepwarm import AGI
from keepwarm.backends.cluster import read_keeper
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.queue.state import read_service_record
from keepwarm.service.liveness import pid_alive

from .conftest import Services, copy_app


def test_health_output_path_in_a_missing_folder_is_created(mycode_env: Env, tmp_path: Path) -> None:
    target = tmp_path / "reports" / "today" / "health.json"
    document = asyncio.run(AGI.serve(mycode_env, action="health", health_output_path=target))
    assert document["health_output_path"] == str(target)
    assert json.loads(target.read_text())["schema"] == "agi.service.health.v1"


def test_health_output_path_that_cannot_be_written_is_one_clear_error(
    mycode_env: Env, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(KeepwarmError, match=r"cannot write the health report to .*a-file/h\.json") as caught:
        asyncio.run(AGI.serve(mycode_env, action="health", health_output_path=blocker / "h.json"))
    assert "\n" not in str(caught.value)
    assert blocker.read_text() == "not a folder"


def test_stop_with_shutdown_on_stop_false_keeps_the_dask_cluster(tmp_path: Path, services: Services) -> None:
    pytest.importorskip("distributed")
    fast = 'backend = "dask"\nstop_timeout_sec = 3\n'
    env = Env(copy_app(tmp_path, "mycode_project", **{'backend = "local"\n': fast}))
    services.start(env)
    record = read_service_record(env.service_dir / "service.json")
    assert record is not None and record.cluster is not None and record.cluster.keeper_pid is not None

    stopped = asyncio.run(AGI.serve(env, action="stop", shutdown_on_stop=False))

    assert stopped["status"] == "stopped" and stopped["shutdown_on_stop"] is False
    assert pid_alive(record.cluster.keeper_pid)  # the fixture kills the kept keeper at the end
    kept_cluster = (record.cluster.address, record.cluster.keeper_pid)
    assert read_keeper(env.service_dir / "cluster.json") == kept_cluster
    kept = read_service_record(env.service_dir / "service.json")
    assert kept is not None and kept.cluster is not None and kept.cluster.kept
