"""keepwarm.Env: where an app's share, namespace, service files and logs live, chosen in which order."""

from __future__ import annotations

from pathlib import Path

import pytest

import keepwarm
from keepwarm.errors import AppError, SettingsError

from .conftest import EXAMPLE_APPS, ROOT, copy_app

APP = "mycode_project"


def app_with_cluster(tmp_path: Path, lines: str) -> Path:
    """A copy of mycode_project with ``lines`` added at the top of its ``[cluster]`` table."""
    return copy_app(tmp_path, APP, **{"[cluster]\n": f"[cluster]\n{lines}\n"})


@pytest.fixture
def login(monkeypatch: pytest.MonkeyPatch) -> str:
    """A known login name: getpass reads $LOGNAME first."""
    monkeypatch.setenv("LOGNAME", "kwtester")
    monkeypatch.setenv("USER", "kwtester")
    return "kwtester"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


# ---------------------------------------------------------------- share dir


def test_explicit_share_dir_beats_environment_and_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = app_with_cluster(tmp_path, 'share_dir = "/from/settings"')
    monkeypatch.setenv("KEEPWARM_SHARE", str(tmp_path / "from-env"))

    env = keepwarm.Env(app=APP, apps_path=folder.parent, share_dir=tmp_path / "explicit")

    assert env.share_root == tmp_path / "explicit"


def test_keepwarm_share_beats_settings_share_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = app_with_cluster(tmp_path, 'share_dir = "/from/settings"')
    monkeypatch.setenv("KEEPWARM_SHARE", str(tmp_path / "from-env"))

    env = keepwarm.Env(app=APP, apps_path=folder.parent)

    assert env.share_root == tmp_path / "from-env"


def test_settings_share_dir_is_relative_to_the_app_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = app_with_cluster(tmp_path, 'share_dir = "shared/queue-root"')
    monkeypatch.delenv("KEEPWARM_SHARE")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    env = keepwarm.Env(app=APP, apps_path=folder.parent)

    assert env.share_root == folder.resolve() / "shared" / "queue-root"


def test_settings_share_dir_may_be_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = app_with_cluster(tmp_path, f'share_dir = "{tmp_path / "absolute-share"}"')
    monkeypatch.delenv("KEEPWARM_SHARE")

    env = keepwarm.Env(app=APP, apps_path=folder.parent)

    assert env.share_root == tmp_path / "absolute-share"


def test_share_dir_defaults_to_xdg_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEPWARM_SHARE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))

    env = keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS)

    assert env.share_root == tmp_path / "xdg" / "keepwarm"


def test_share_dir_without_xdg_data_home_is_under_local_share(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEEPWARM_SHARE")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)

    env = keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS)

    assert env.share_root == home / ".local" / "share" / "keepwarm"


# ---------------------------------------------------------------- namespace


def test_explicit_namespace_beats_environment_and_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, login: str
) -> None:
    folder = app_with_cluster(tmp_path, 'namespace = "from-settings"')
    monkeypatch.setenv("KEEPWARM_NAMESPACE", "from-env")

    env = keepwarm.Env(app=APP, apps_path=folder.parent, namespace="explicit")

    assert env.namespace == "explicit"


def test_keepwarm_namespace_beats_settings_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, login: str
) -> None:
    folder = app_with_cluster(tmp_path, 'namespace = "from-settings"')
    monkeypatch.setenv("KEEPWARM_NAMESPACE", "from-env")

    env = keepwarm.Env(app=APP, apps_path=folder.parent)

    assert env.namespace == "from-env"


def test_settings_namespace_beats_login_name(tmp_path: Path, login: str) -> None:
    folder = app_with_cluster(tmp_path, 'namespace = "from-settings"')

    env = keepwarm.Env(app=APP, apps_path=folder.parent)

    assert env.namespace == "from-settings"


def test_namespace_defaults_to_the_login_name(login: str) -> None:
    env = keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS)

    assert env.namespace == login


def test_login_name_is_made_safe_for_a_folder_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "DOMAIN\\jane doe")

    env = keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS)

    assert env.namespace == "DOMAIN_jane_doe"
    assert env.service_dir.parent.parent.name == "DOMAIN_jane_doe"


@pytest.mark.parametrize("unsafe", ["../escape", "a/b", ".hidden", "x" * 65, "tab\there"])
def test_unsafe_explicit_namespace_is_refused(unsafe: str) -> None:
    with pytest.raises(SettingsError) as caught:
        keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS, namespace=unsafe)

    assert repr(unsafe) in str(caught.value)
    assert "safe" in str(caught.value)


def test_unsafe_namespace_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPWARM_NAMESPACE", "../../etc")

    with pytest.raises(SettingsError) as caught:
        keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS)

    assert "'../../etc'" in str(caught.value)


def test_unsafe_namespace_in_settings_is_refused_naming_the_key(tmp_path: Path) -> None:
    folder = app_with_cluster(tmp_path, 'namespace = "../other-team"')

    with pytest.raises(SettingsError) as caught:
        keepwarm.Env(app=APP, apps_path=folder.parent)

    message = " ".join(str(caught.value).split())
    assert str(folder / "app_settings.toml") in message
    assert "[cluster] namespace" in message


# ---------------------------------------------------------------- service and log layout


def test_service_and_queue_dirs_follow_the_share_namespace_service_layout(tmp_path: Path) -> None:
    env = keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS, share_dir=tmp_path / "s", namespace="team-a")

    assert env.app_target == APP
    assert env.service_dir == tmp_path / "s" / "team-a" / "service" / APP
    assert env.queue_dir == tmp_path / "s" / "team-a" / "service" / APP / "queue"
    assert env.data_dir == tmp_path / "s" / "team-a" / "data" / APP


def test_namespaces_keep_services_apart_on_one_share(tmp_path: Path) -> None:
    mine = keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS, namespace="alice")
    theirs = keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS, namespace="bob")

    assert mine.share_root == theirs.share_root
    assert mine.queue_dir != theirs.queue_dir


def test_log_dir_under_keepwarm_log_dir_is_per_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPWARM_LOG_DIR", str(tmp_path / "custom-logs"))

    env = keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS, namespace="team-a")

    assert env.log_dir == tmp_path / "custom-logs" / APP


def test_log_dir_for_own_namespace_is_home_log_execute_app(
    home: Path, monkeypatch: pytest.MonkeyPatch, login: str
) -> None:
    monkeypatch.delenv("KEEPWARM_LOG_DIR")

    env = keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS)

    assert env.namespace == login
    assert env.log_dir == home / "log" / "execute" / APP


def test_explicit_own_login_namespace_logs_like_the_default(
    home: Path, monkeypatch: pytest.MonkeyPatch, login: str
) -> None:
    monkeypatch.delenv("KEEPWARM_LOG_DIR")

    env = keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS, namespace=login)

    assert env.log_dir == home / "log" / "execute" / APP


def test_log_dir_for_another_namespace_adds_the_namespace(
    home: Path, monkeypatch: pytest.MonkeyPatch, login: str
) -> None:
    monkeypatch.delenv("KEEPWARM_LOG_DIR")

    env = keepwarm.Env(app=APP, apps_path=EXAMPLE_APPS, namespace="team-a")

    assert env.log_dir == home / "log" / "execute" / "team-a" / APP


# ---------------------------------------------------------------- finding the app


def test_unknown_app_lists_the_apps_that_exist() -> None:
    with pytest.raises(AppError) as caught:
        keepwarm.Env(app="mycode_projet", apps_path=EXAMPLE_APPS)

    message = " ".join(str(caught.value).split())
    assert "'mycode_projet'" in message
    assert "flaky, model_server, mycode_project" in message
    assert "--apps-path" in message


def test_unknown_app_in_an_empty_folder_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(AppError) as caught:
        keepwarm.Env(app=APP, apps_path=tmp_path)

    assert str(tmp_path / APP) in str(caught.value)


def test_app_may_be_given_as_a_path_to_its_folder(tmp_path: Path) -> None:
    folder = copy_app(tmp_path, "flaky")

    env = keepwarm.Env(app=folder)

    assert env.app_dir == folder.resolve()
    assert env.app_target == "flaky"
    assert env.settings_path == folder.resolve() / "app_settings.toml"


def test_apps_path_defaults_to_keepwarm_apps_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPWARM_APPS_PATH", str(EXAMPLE_APPS))

    env = keepwarm.Env(app="model_server")

    assert env.app_dir == (EXAMPLE_APPS / "model_server").resolve()


def test_reload_settings_reads_an_edited_file(tmp_path: Path) -> None:
    folder = copy_app(tmp_path, APP)
    env = keepwarm.Env(app=APP, apps_path=folder.parent)
    settings = folder / "app_settings.toml"

    settings.write_text(settings.read_text().replace("slots = 2", "slots = 7"))

    assert env.settings.cluster.slots == 2
    assert env.reload_settings().cluster.slots == 7
    assert env.settings.cluster.slots == 7


def test_agi_env_works_as_in_the_reference_docs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    apps_path = "examples/apps"  # relative, as the reference example passes it

    env = keepwarm.AgiEnv(apps_path=apps_path, app="mycode_project", verbose=1)

    assert env.verbose == 1
    assert env.app == "mycode_project"
    assert env.app_target == "mycode_project"
    assert env.app_dir == (EXAMPLE_APPS / "mycode_project").resolve()
    assert env.settings.cluster.service_health.max_restart_rate == 0.25
    assert env.queue_dir.name == "queue"
    assert env.service_dir.name == "mycode_project"
