"""Fleets: services started and stopped as a group from one fleet.toml, and namespaces kept apart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import FleetAlreadyRunning, FleetStartError, SettingsError, WorkflowNotFound
from keepwarm.groups.fleet import Fleet, list_services
from keepwarm.groups.workflow import start_workflow, workflow_status
from keepwarm.queue.state import read_supervisor_state
from keepwarm.service.liveness import pid_alive

from .conftest import EXAMPLE_APPS, ROOT, copy_app, wait_until, write_app

KEEPWARM = Path(sys.executable).parent / "keepwarm"


def write_fleet(folder: Path, body: str, name: str = "fleet.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def two_apps(folder: Path, namespace: str = "team-a", apps: Path = EXAMPLE_APPS) -> Path:
    return write_fleet(
        folder,
        f"""
        [fleet]
        namespace = "{namespace}"
        apps_path = "{apps}"

        [services.calc]
        app = "mycode_project"
        workers = 1

        [services.flaky]
        workers = 1
        env = {{ FLAKY_LABEL = "from-the-fleet" }}

        [services.model_server]
        enabled = false
        """,
    )


def keepwarm_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KEEPWARM), *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr + result.stdout
    return " ".join(result.stderr.split())


class Fleets:
    """Brings down, at the end of the test, every fleet the test used (and kills what would not stop)."""

    def __init__(self) -> None:
        self.fleets: list[Fleet] = []

    def track(self, path: Path) -> Fleet:
        fleet = Fleet(path)
        self.fleets.append(fleet)
        return fleet

    def down_all(self) -> None:
        for fleet in self.fleets:
            try:
                fleet.members  # noqa: B018
            except SettingsError:
                continue  # a fleet file the test made invalid: it started nothing
            states = [read_supervisor_state(m.env.service_dir / "supervisor.json") for m in fleet.members]
            try:
                fleet.down(timeout=5)
            finally:
                for state in states:
                    if state is not None and pid_alive(state.pid):
                        os.kill(state.pid, signal.SIGKILL)


@pytest.fixture
def fleets() -> Iterator[Fleets]:
    manager = Fleets()
    yield manager
    manager.down_all()


# ---------------------------------------------------------------------- the file


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[services.a]\napp = "mycode_project"\n', "fleet: required but missing"),
        (
            '[fleet]\nnamespace = "../up"\n[services.a]\n',
            "[fleet] namespace: '../up' is not a safe name: use letters, digits, '_', '-', '.'",
        ),
        ('[fleet]\nnamespace = "t"\n[services.a]\nwrkers = 2\n', "[services.a] wrkers: unknown key; did you"),
        ('[fleet]\nnamespace = "t"\n[services.a]\nworkers = 0\n', "[services.a] workers: input should be"),
        ('[fleet]\nnamespace = "t"\n[services.a]\nenv = { KEEPWARM_SHARE = "/x" }\n', "keepwarm's own"),
        ('[fleet]\nnamespace = "t"\n[services.a]\nenv = { A = 1 }\n', "[services.a.env] A: input should be"),
        ('[fleet]\nnamespace = "t"\n[services.a]\n[workflow]\nservice = "b"\n', "[workflow] service: no"),
        ('[fleet]\nnamespace = "t"\n', "services: required but missing"),
        ("[fleet\n", "not valid TOML"),
    ],
)
def test_fleet_file_errors_name_the_file_and_the_key(tmp_path: Path, body: str, expected: str) -> None:
    path = write_fleet(tmp_path, body)
    with pytest.raises(SettingsError) as caught:
        Fleet(path).members  # noqa: B018 - the members are resolved (and their apps checked) lazily
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_members_are_checked_before_anything_starts(tmp_path: Path) -> None:
    unknown = write_fleet(
        tmp_path / "a", f'[fleet]\nnamespace = "t"\napps_path = "{EXAMPLE_APPS}"\n[services.x]\n'
    )
    with pytest.raises(SettingsError, match=r"\[services.x\]: app 'x' not found.*apps there: batch_model"):
        Fleet(unknown).up()
    twice = write_fleet(
        tmp_path / "b",
        f'[fleet]\nnamespace = "t"\napps_path = "{EXAMPLE_APPS}"\n'
        '[services.one]\napp = "flaky"\n[services.two]\napp = "flaky"\n',
    )
    with pytest.raises(SettingsError, match="both run app 'flaky'; one namespace holds one service per app"):
        Fleet(twice).up()
    message = assert_clean_failure(keepwarm_cli("up", str(unknown)))
    assert "app 'x' not found" in message
    assert "fleet file 'no-such.toml' not found" in assert_clean_failure(keepwarm_cli("up", "no-such.toml"))
    assert "pass one: keepwarm up path/to/fleet.toml" in assert_clean_failure(
        keepwarm_cli("up", cwd=tmp_path)
    )
    folder = assert_clean_failure(keepwarm_cli("up", str(tmp_path / "a")))
    assert f"fleet file '{tmp_path / 'a'}' is a folder; pass the file: {unknown}" in folder


# ---------------------------------------------------------------------- up, ps, down


def test_up_starts_every_enabled_member_ready_then_refuses_until_down(tmp_path: Path, fleets: Fleets) -> None:
    path = two_apps(tmp_path)
    fleet = fleets.track(path)

    started = keepwarm_cli("up", str(path), "--json")
    assert started.returncode == 0, started.stderr
    status = json.loads(started.stdout)
    assert status["namespace"] == "team-a" and status["ready"] is True
    rows = {row["service"]: row for row in status["services"]}
    assert {name: (row["status"], row["ready"]) for name, row in rows.items()} == {
        "calc": ("idle", True),
        "flaky": ("idle", True),
        "model_server": ("stopped", False),  # disabled: up leaves it alone
    }
    assert rows["calc"]["loops_healthy"] == rows["flaky"]["loops_healthy"] == 1
    # idle fails the app's own gate (allow_idle = false), but an idle service is ready for work
    assert rows["calc"]["gate_code"] == 4 and not rows["calc"]["gate_passed"]

    # The member's env reaches its loops (through the environment of its supervisor), and no other member.
    flaky_loop = Service(fleet.member("flaky").env).status().worker_health[0].pid
    calc_loop = Service(fleet.member("calc").env).status().worker_health[0].pid
    assert b"FLAKY_LABEL=from-the-fleet" in Path(f"/proc/{flaky_loop}/environ").read_bytes().split(b"\0")
    assert b"FLAKY_LABEL=from-the-fleet" not in Path(f"/proc/{calc_loop}/environ").read_bytes().split(b"\0")
    assert "FLAKY_LABEL" not in os.environ

    refused = assert_clean_failure(keepwarm_cli("up", str(path)))
    assert "already running: calc (app mycode_project), flaky (app flaky)" in refused
    assert f"stop it first: keepwarm down {path}" in refused
    with pytest.raises(FleetAlreadyRunning):
        fleet.up()

    listed = keepwarm_cli("ps", "--namespace", "team-a", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {(r["app"], r["status"], r["ready"]) for r in json.loads(listed.stdout)["services"]} == {
        ("mycode_project", "idle", True),
        ("flaky", "idle", True),
    }
    table = keepwarm_cli("ps", "--fleet", str(path))
    assert table.returncode == 0 and "calc" in table.stdout and "disabled" in table.stdout

    stopped = keepwarm_cli("down", str(path))
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.splitlines() == [
        "calc: service mycode_project stopped",
        "flaky: service flaky stopped",
        "model_server: service model_server is not running",
    ]
    after = fleet.status()
    assert not after.ready and {row.status for row in after.services} == {"stopped"}
    assert fleet.up().ready  # after down, up works again (stopped by the fixture)


def test_a_member_that_fails_to_start_is_named_and_the_others_are_stopped(
    tmp_path: Path, fleets: Fleets
) -> None:
    apps = tmp_path / "apps"
    copy_app(tmp_path, "mycode_project")
    copy_app(tmp_path, "model_server")
    copy_app(tmp_path, "flaky", settings_extra="", **{"[args]": "[args]\nfail_start = true"})
    fleet = fleets.track(two_apps(tmp_path / "fleet", apps=apps))

    with pytest.raises(FleetStartError) as caught:
        fleet.up()
    message = str(caught.value)
    assert "did not start; stopped again: calc" in message
    assert "service 'flaky' (app flaky):" in message
    assert "start() failed on purpose" in message  # the loop's own error
    assert "calc (app" not in message.partition("\n")[2]  # only the failed member is blamed
    assert {row.service: row.status for row in fleet.status().services} == {
        "calc": "stopped",
        "flaky": "error",  # a failed start stays visible until the next start or stop
        "model_server": "stopped",
    }


def test_two_namespaces_on_one_share_never_see_each_others_services_or_tasks(
    tmp_path: Path, fleets: Fleets
) -> None:
    body = (
        '[fleet]\nnamespace = "{ns}"\napps_path = "{apps}"\n'
        '[services.calc]\napp = "mycode_project"\nworkers = 1\n'
    )
    team_a = fleets.track(write_fleet(tmp_path / "a", body.format(ns="team-a", apps=EXAMPLE_APPS)))
    team_b = fleets.track(write_fleet(tmp_path / "b", body.format(ns="team-b", apps=EXAMPLE_APPS)))
    assert team_a.up().ready and team_b.up().ready  # the same app, twice on one share: no collision

    a, b = Service(team_a.member("calc").env), Service(team_b.member("calc").env)
    assert a.env.queue_dir != b.env.queue_dir
    results = [a.submit({"x": x}).result(timeout=30)["x"] for x in (3, 4, 5)]
    assert results == [3, 4, 5]
    run = start_workflow(a, 2, {"x": 7})
    assert workflow_status(run.execution_id, namespace="team-a").total == 2
    with pytest.raises(WorkflowNotFound, match="a run belongs to the namespace that started it"):
        workflow_status(run.execution_id, namespace="team-b")

    assert [(row.namespace, row.app) for row in list_services("team-a")] == [("team-a", "mycode_project")]
    assert [(row.namespace, row.app) for row in list_services("team-b")] == [("team-b", "mycode_project")]
    assert b.counts().done == 0 and b.tasks() == []
    assert list_services("team-c") == []

    team_a.down()
    assert Service(team_a.member("calc").env).status().status == "stopped"
    assert Service(team_b.member("calc").env).status().supervisor.alive  # the other team's service runs on


def test_the_example_fleet_file_is_valid() -> None:
    fleet = Fleet(ROOT / "examples" / "fleet.toml")
    assert fleet.namespace == "demo-fleet"
    assert [(m.name, m.env.app_target, m.spec.enabled) for m in fleet.members] == [
        ("calc", "mycode_project", True),
        ("flaky", "flaky", True),
        ("model_server", "model_server", False),
    ]
    assert fleet.workflow_member().name == "calc"


def test_ready_means_every_loop_is_healthy_and_the_gate_is_its_own_column(
    tmp_path: Path, fleets: Fleets
) -> None:
    path = write_fleet(
        tmp_path,
        f"""
        [fleet]
        namespace = "team-a"
        apps_path = "{EXAMPLE_APPS}"

        [services.flaky]
        workers = 1
        """,
    )
    fleet = fleets.track(path)
    fleet.up()
    flaky = fleet.member("flaky").service
    crash = flaky.submit({"action": "crash", "only_attempt": 1})
    assert crash.result(timeout=30)["attempt"] == 2  # the loop died once and was restarted
    wait_until(lambda: flaky.status().status in ("running", "idle"), 30, "the restarted loop")

    row = fleet.status().services[0]
    # One restart over one slot in the restart window: the gate fails on the rate (exit 5) for an
    # hour, but the service serves: every loop is healthy, so it is ready.
    assert row.ready and fleet.status().ready
    assert (row.gate_code, row.gate_passed) == (5, False)
    table = keepwarm_cli("ps", "--fleet", str(path))
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if line.startswith("flaky"))
    assert " yes " in line and "fail (5: restart_rate)" in line


def test_up_with_workflow_starts_the_fleet_then_a_run_of_its_workflow_table(
    tmp_path: Path, fleets: Fleets
) -> None:
    path = write_fleet(
        tmp_path,
        f"""
        [fleet]
        namespace = "team-a"
        apps_path = "{EXAMPLE_APPS}"

        [services.calc]
        app = "mycode_project"
        workers = 1

        [workflow]
        name = "collatz"
        count = 3
        args = {{ x = 27 }}
        """,
    )
    fleet = fleets.track(path)
    started = keepwarm_cli("up", str(path), "--workflow")
    assert started.returncode == 0, started.stderr
    assert "1 service ready" in started.stderr
    execution_id = started.stdout.splitlines()[-1]  # the run's id last on stdout, for scripts
    assert execution_id.startswith("collatz-") and f"started {execution_id}: 3 tasks on" in started.stderr
    wait_until(lambda: workflow_status(execution_id, namespace="team-a").state == "completed", 30, "the run")
    listed = keepwarm_cli("ps", "--fleet", str(path), "--json")
    assert json.loads(listed.stdout)["ready"] is True  # the fleet-level ready, as up --json gives it
    fleet.down()

    without = write_fleet(
        tmp_path / "plain", f'[fleet]\nnamespace = "team-a"\napps_path = "{EXAMPLE_APPS}"\n[services.flaky]\n'
    )
    refused = assert_clean_failure(keepwarm_cli("up", str(without), "--workflow"))
    assert "no [workflow] table to start" in refused
    assert fleets.track(without).status().services[0].status == "stopped"  # refused before starting


def test_down_all_stops_every_service_of_the_namespace_and_lists_them(tmp_path: Path, fleets: Fleets) -> None:
    fleet = fleets.track(two_apps(tmp_path))
    fleet.up()
    worker = "class Worker:\n    def work(self, item):\n        return 1\n"
    loose = Service(Env(write_app(tmp_path, "loose", worker), namespace="team-a"))  # in no fleet file
    other = Service(Env("flaky", EXAMPLE_APPS, namespace="team-b"))
    try:
        loose.start(slots=1)
        other.start(slots=1)
        stopped = keepwarm_cli("down", "--all", "--namespace", "team-a", "--json")
        assert stopped.returncode == 0, stopped.stderr
        document = json.loads(stopped.stdout)
        assert document["namespace"] == "team-a"
        assert sorted((row["app"], row["message"]) for row in document["services"]) == [
            ("flaky", "service flaky stopped"),
            ("loose", "service loose stopped"),
            ("mycode_project", "service mycode_project stopped"),
        ]
        assert {row.status for row in list_services("team-a")} == {"stopped"}
        assert other.status().supervisor.alive  # another namespace is not touched

        again = keepwarm_cli("down", "--all", "--namespace", "team-a")
        assert again.returncode == 0 and "no running services in namespace team-a" in again.stderr
        both = assert_clean_failure(keepwarm_cli("down", str(tmp_path / "fleet.toml"), "--all"))
        assert "give either FLEET or --all" in both
    finally:
        other.stop(timeout=5)
        loose.stop(timeout=5)
