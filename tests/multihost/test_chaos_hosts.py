"""The chaos run on many hosts: loops ``kill -9``-ed at random and the supervisor ``kill -9``-ed and
started again while tasks flow, with the queue's share mounted through sshfs (tests/multihost/hosts.py).

The service (supervisor and loops) runs with its share on the mount, so every claim, heartbeat and
terminal file goes through FUSE and SFTP; the run submits and counts through the folder the mount
serves, as the share's own host would, where inotify sees none of the loops' writes. The harness is
the one of ``tests/chaos`` (``run_chaos``); ``bench/chaos.py --backend sshfs`` runs it bigger and
prints the figures. Nothing may be lost, every task ends with exactly one terminal file, and each
result is the one an execution of that task returned.
"""

from __future__ import annotations

from pathlib import Path

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.service.liveness import pid_alive

from ..chaos.harness import ChaosPlan, ChaosReport, chaos_app, run_chaos
from ..conftest import Services, supervisor_state, wait_until
from .hosts import SshfsShare

TASKS = 90


def executions(log: Path) -> set[tuple[str, int]]:
    """(task id, pid) of every execution whose line the loop wrote whole."""
    found = set()
    for line in log.read_text().splitlines():
        task_id, _, pid = line.partition(" ")
        if pid.isdigit():
            found.add((task_id, int(pid)))
    return found


def test_loops_and_the_supervisor_killed_on_an_sshfs_queue_lose_nothing(
    tmp_path: Path, sshfs_share: SshfsShare, services: Services
) -> None:
    plan = ChaosPlan(
        backend="local",
        tasks=TASKS,
        loops=3,
        seconds=2.5,
        kill_every=0.25,
        task_seconds=0.02,
        freeze=False,  # tests/chaos proves the frozen loop; here the kills and the dead supervisor
        seed=19,
        settle_timeout=60,
        # the supervisor handles a loop's exit through SFTP (listing, requeue, event): it may die in the
        # middle for longer than on a local disk, leaving that kill to the next supervisor's recovery
        unrecorded_margin_sec=2.0,
    )
    app = chaos_app(tmp_path, plan).app_dir
    (sshfs_share.folder / "chaos").mkdir(mode=0o700)
    on_mount = Env(app, share_dir=sshfs_share.mount / "chaos")  # the service's view, inherited by its loops
    on_folder = Env(app, share_dir=sshfs_share.folder / "chaos")  # the share's own host: submits and counts
    services.envs.append(on_mount)

    report: ChaosReport = run_chaos(on_mount, plan, client=on_folder)
    print(report.table())  # shown when the test fails
    assert report.problems() == []
    assert len(report.done) == TASKS and not report.lost and not report.failed and not report.in_both
    assert len(report.kills) >= 3  # the schedule really hit live loops (10 ticks; restarting ones miss)
    assert report.restart_sec is not None and report.submitted_while_down > 0
    assert report.slots_back == len(report.kills)  # every killed loop's slot served again
    for slot in ("loop-0", "loop-1", "loop-2"):  # the loops read the queue through sshfs, polling
        log = (on_mount.log_dir / f"{slot}.log").read_text()
        assert f"waking by poll on {sshfs_share.mount / 'chaos'}" in log, log

    ran = executions(tmp_path / "executions.log")
    client = Service(on_folder)
    for task_id in report.submitted:
        record = client.queue.read_record(task_id)
        assert record is not None and record.status == "done", (task_id, record)
        result = record.result
        assert result["ok"] is True and result["attempt"] == record.attempt, record
        assert (task_id, result["pid"]) in ran, (
            f"{task_id}'s result names pid {result['pid']}, which never ran it"
        )

    pids = [
        supervisor_state(on_folder).pid,
        *(row.pid for row in supervisor_state(on_folder).loops if row.pid),
    ]
    assert client.stop(timeout=30)["message"] == f"service {on_folder.app_target} stopped"
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 30, "the supervisor and loops gone")
