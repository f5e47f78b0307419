"""One safe-name rule and one share/namespace resolver, whoever asks: an app's Env, ``ps``, workflow
runs, the fleet file; and the fleet starter's report, in the child line protocol."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from keepwarm._sys.child import child_command, last_report
from keepwarm.env import Env, namespace_root, resolve_namespace, resolve_share_root
from keepwarm.errors import SettingsError
from keepwarm.groups.starter import FAILED, STARTER_MODULE
from keepwarm.settings import is_safe_name

from .conftest import copy_app


@pytest.mark.parametrize("name", ["team-a", "a", "A.b_c-9", "x" * 64])
def test_safe_names_are_accepted(name: str) -> None:
    assert is_safe_name(name)


@pytest.mark.parametrize("name", ["", ".hidden", "-dash", "a/b", "a b", "abc\n", "x" * 65])
def test_unsafe_names_are_refused(name: str) -> None:
    assert not is_safe_name(name)


def test_a_shorter_limit_is_the_same_rule_with_fewer_characters() -> None:
    assert is_safe_name("w" * 48, max_length=48)
    assert not is_safe_name("w" * 49, max_length=48)


def test_an_apps_env_and_the_namespace_verbs_resolve_the_same_share_and_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_app(tmp_path, "mycode_project")
    monkeypatch.setenv("KEEPWARM_NAMESPACE", "team-a")
    env = Env("mycode_project", tmp_path / "apps")
    assert namespace_root() == (env.share_root, env.namespace) == (resolve_share_root(), "team-a")


def test_explicit_beats_the_environment_which_beats_the_apps_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEEPWARM_SHARE")
    assert resolve_namespace("mine", "configured") == "mine"
    assert resolve_namespace(None, "configured") == "configured"
    monkeypatch.setenv("KEEPWARM_NAMESPACE", "from-env")
    assert resolve_namespace(None, "configured") == "from-env"
    assert resolve_share_root(None, "relative", tmp_path) == tmp_path / "relative"
    assert resolve_share_root(tmp_path / "explicit", "relative", tmp_path) == tmp_path / "explicit"


def test_an_unsafe_namespace_is_refused_with_the_rule() -> None:
    with pytest.raises(SettingsError, match=r"namespace 'a/b' is not a safe name: use letters"):
        namespace_root("a/b")


def test_a_service_folder_gives_an_env_without_its_app(tmp_path: Path) -> None:
    share = tmp_path / "share"
    folder = share / "team-a" / "service" / "gone_app"
    folder.mkdir(parents=True)
    env = Env.of_service_folder(folder, share, "team-a")
    assert (env.app_target, env.namespace, env.share_root, env.service_dir) == (
        "gone_app",
        "team-a",
        share,
        folder,
    )
    assert env.settings_error is None


def test_the_starter_child_reports_a_failed_start_in_the_child_line_protocol(tmp_path: Path) -> None:
    command = child_command(STARTER_MODULE, "--app", str(tmp_path / "no_such_app"), "--namespace", "team-a")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    answer = last_report(done.stdout)
    assert done.returncode == 1 and answer is not None and answer.kind == FAILED
    assert "no_such_app" in answer.fields["error"]
