"""Trust boundaries: a queue others can write is refused, nothing from the queue is unpickled, and no
name a user gives (task id, slot, namespace) reaches outside its folder. Ids and namespaces are also
covered in test_queue.py and test_env.py."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.service.lifecycle import refuse_shared_writers

from .conftest import ROOT, Services, copy_app

KEEPWARM = Path(sys.executable).parent / "keepwarm"


def prepared(tmp_path: Path, extra: str = "") -> Env:
    env = Env(copy_app(tmp_path, "mycode_project", **{"slots = 2\n": f"slots = 1\n{extra}"}))
    Service(env).queue.ensure()
    return env


def test_the_share_and_queue_are_created_private(tmp_path: Path) -> None:
    env = prepared(tmp_path)
    folders = [env.share_root, *(p for p in env.queue_dir.parents if env.share_root in p.parents)]
    folders += [env.queue_dir, *(p for p in env.queue_dir.iterdir() if p.is_dir())]
    assert {oct(folder.stat().st_mode & 0o7777) for folder in folders} == {"0o700"}
    refuse_shared_writers(env)  # its own fresh queue passes


@pytest.mark.parametrize(
    ("folder", "mode", "said"), [("pending", 0o777, "others"), ("queue", 0o770, "its group")]
)
def test_start_refuses_a_queue_others_can_write_and_says_why(
    tmp_path: Path, folder: str, mode: int, said: str
) -> None:
    env = prepared(tmp_path)
    target = env.queue_dir / folder if folder != "queue" else env.queue_dir
    target.chmod(mode)
    with pytest.raises(KeepwarmError) as refused:
        Service(env).start()
    message = str(refused.value)
    assert f"{target} is writable by {said}" in message
    assert "would run as you" in message and "allow_shared_writers = true" in message
    assert not (env.service_dir / "supervisor.json").exists()  # nothing started

    cli = subprocess.run(
        [str(KEEPWARM), "start", str(env.app_dir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert "error: refusing to start mycode_project" in cli.stderr


def test_start_refuses_a_queue_folder_owned_by_another_user(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    env = prepared(tmp_path)
    os.chown(env.queue_dir / "done", 4321, 4321)
    with pytest.raises(KeepwarmError, match="done belongs to uid 4321"):
        refuse_shared_writers(env)


def test_allow_shared_writers_lets_a_trusted_team_share_the_queue(tmp_path: Path, services: Services) -> None:
    env = prepared(tmp_path, "allow_shared_writers = true\n")
    (env.queue_dir / "pending").chmod(0o770)
    service = services.start(env)
    assert service.submit({"x": 4}).result(timeout=30)["x"] == 4


def test_a_sticky_world_writable_share_root_is_accepted(tmp_path: Path) -> None:
    env = prepared(tmp_path)
    env.share_root.chmod(0o1777)  # like /tmp: others may add their own folders, not touch ours
    refuse_shared_writers(env)


def test_no_module_of_keepwarm_can_unpickle() -> None:
    """Nothing read from the queue is ever deserialized by pickle: no keepwarm module imports it."""
    forbidden = {"pickle", "cloudpickle", "dill", "marshal", "shelve", "_pickle"}
    found = []
    for path in (ROOT / "src" / "keepwarm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{path.name}: {name}" for name in names if name.split(".")[0] in forbidden]
    assert found == []


def test_a_slot_name_from_a_command_cannot_reach_outside(tmp_path: Path, services: Services) -> None:
    env = prepared(tmp_path)
    service = services.start(env)
    for bad in ("../../evil", "/etc/passwd", "loop-0/../../x"):
        with pytest.raises(KeepwarmError, match="no slot"):
            service.restart(bad)
    assert sorted(p.name for p in env.service_dir.parent.iterdir()) == [env.app_target]
