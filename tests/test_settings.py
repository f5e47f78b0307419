"""app_settings.toml: typed settings, errors that name the file and the key, edits that keep comments."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepwarm.app import load_app
from keepwarm.env import Env
from keepwarm.errors import AppError, SettingsError
from keepwarm.settings import AppSettings, load_settings, update_settings

from .conftest import EXAMPLE_APPS, copy_app, write_app

MINIMAL = '[app]\nworker = "somewhere.worker:Worker"\n'


@pytest.fixture
def restore_imports(tmp_path: Path) -> Iterator[None]:
    """load_app puts app folders on sys.path and imports their modules; undo that after the test."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if origin.startswith((str(tmp_path), str(EXAMPLE_APPS))):
            del sys.modules[name]


def write_settings(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app_settings.toml"
    path.write_text(text)
    return path


def one_line(message: object) -> str:
    return " ".join(str(message).split())


# ---------------------------------------------------------------- typed models and defaults


def test_minimal_file_gets_the_reference_defaults(tmp_path: Path) -> None:
    settings = load_settings(write_settings(tmp_path, MINIMAL))

    assert isinstance(settings, AppSettings)
    assert settings.app.worker == "somewhere.worker:Worker"
    assert settings.args == {}
    health = settings.cluster.service_health
    assert health.allow_idle is False
    assert health.max_unhealthy == 0
    assert health.max_restart_rate == 0.25
    assert health.max_pending_age_sec is None
    cluster = settings.cluster
    assert (cluster.done_ttl_hours, cluster.done_max_files) == (168, 2000)
    assert (cluster.failed_ttl_hours, cluster.failed_max_files) == (336, 2000)
    assert (cluster.heartbeat_ttl_hours, cluster.heartbeat_max_files) == (24, 1000)
    assert cluster.retention_min_age_sec == 600
    assert cluster.heartbeat_timeout_sec == 10
    assert cluster.backend == "local"


def test_bundled_app_settings_are_read_into_typed_sections() -> None:
    settings = load_settings(EXAMPLE_APPS / "mycode_project" / "app_settings.toml")

    assert settings.app.worker == "mycode.worker:Worker"
    assert settings.app.manager == "mycode.manager:Manager"
    assert settings.app.args_model == "mycode.args:Args"
    assert settings.args == {"x": 27, "items": 2000, "partitions": 8}
    assert settings.cluster.slots == 2
    assert isinstance(settings.cluster.heartbeat_timeout_sec, float)
    assert settings.cluster.service_health.max_restart_rate == 0.25


def test_values_in_the_file_override_the_defaults(tmp_path: Path) -> None:
    text = MINIMAL + (
        "[cluster]\nslots = 5\ndurable = true\nheartbeat_timeout_sec = 3\ndone_max_files = 10\n"
        "[cluster.service_health]\nallow_idle = true\nmax_unhealthy = 1\nmax_pending_age_sec = 30\n"
    )
    settings = load_settings(write_settings(tmp_path, text))

    assert settings.cluster.slots == 5
    assert settings.cluster.durable is True
    assert settings.cluster.heartbeat_timeout_sec == 3
    assert settings.cluster.done_max_files == 10
    assert settings.cluster.service_health.allow_idle is True
    assert settings.cluster.service_health.max_unhealthy == 1
    assert settings.cluster.service_health.max_pending_age_sec == 30


# ---------------------------------------------------------------- errors name the file and the key


def test_unknown_key_names_file_and_suggests_fix(tmp_path: Path) -> None:
    path = write_settings(tmp_path, MINIMAL + "[cluster]\nheartbeat_timout_sec = 5\n")

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    message = one_line(caught.value)
    assert str(path) in message
    assert "[cluster] heartbeat_timout_sec" in message
    assert "heartbeat_timeout_sec" in message.replace("heartbeat_timout_sec", "")


def test_unknown_key_in_a_nested_table_names_the_table(tmp_path: Path) -> None:
    path = write_settings(tmp_path, MINIMAL + "[cluster.service_health]\nallow_idel = true\n")

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    message = one_line(caught.value)
    assert "[cluster.service_health] allow_idel" in message
    assert "allow_idle" in message.replace("allow_idel", "")


def test_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path: Path) -> None:
    path = write_settings(tmp_path, MINIMAL + "[cluster.service_health]\nzzz = 1\n")

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    message = one_line(caught.value)
    assert "[cluster.service_health] zzz" in message
    assert "max_restart_rate" in message


@pytest.mark.parametrize(
    ("table", "line", "where", "shown"),
    [
        ("cluster", 'slots = "many"', "[cluster] slots", "'many'"),
        ("cluster", 'backend = "kubernetes"', "[cluster] backend", "'kubernetes'"),
        ("cluster", "heartbeat_timeout_sec = -1", "[cluster] heartbeat_timeout_sec", "-1"),
        (
            "cluster.service_health",
            'allow_idle = "sometimes"',
            "[cluster.service_health] allow_idle",
            "'sometimes'",
        ),
        (
            "cluster.service_health",
            "max_restart_rate = -0.5",
            "[cluster.service_health] max_restart_rate",
            "-0.5",
        ),
    ],
)
def test_wrong_type_names_the_key_and_the_value_got(
    tmp_path: Path, table: str, line: str, where: str, shown: str
) -> None:
    path = write_settings(tmp_path, MINIMAL + f"[{table}]\n{line}\n")

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    message = one_line(caught.value)
    assert str(path) in message
    assert where in message
    assert shown in message


def test_every_problem_in_the_file_is_reported_at_once(tmp_path: Path) -> None:
    path = write_settings(tmp_path, MINIMAL + '[cluster]\nslots = "many"\nheartbeat_timout_sec = 5\n')

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    message = one_line(caught.value)
    assert "[cluster] slots" in message
    assert "[cluster] heartbeat_timout_sec" in message


def test_missing_app_worker_is_named(tmp_path: Path) -> None:
    path = write_settings(tmp_path, '[app]\nmanager = "mycode.manager:Manager"\n')

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    message = one_line(caught.value)
    assert str(path) in message
    assert "[app] worker" in message
    assert "missing" in message


def test_worker_that_is_not_an_entry_point_is_named(tmp_path: Path) -> None:
    path = write_settings(tmp_path, '[app]\nworker = "mycode/worker.py"\n')

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    assert "[app] worker" in one_line(caught.value)
    assert "'mycode/worker.py'" in one_line(caught.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write_settings(tmp_path, "[app\nworker = \n")

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    message = one_line(caught.value)
    assert str(path) in message
    assert "TOML" in message
    assert "line 1" in message


def test_missing_settings_file_says_how_to_create_one(tmp_path: Path) -> None:
    path = tmp_path / "app_settings.toml"

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    assert str(path) in one_line(caught.value)
    assert "[app] worker" in one_line(caught.value)


# ---------------------------------------------------------------- writing keeps comments


def test_update_settings_keeps_comments_and_formatting_of_untouched_lines(tmp_path: Path) -> None:
    path = copy_app(tmp_path, "mycode_project") / "app_settings.toml"
    before = path.read_text().splitlines()

    settings = update_settings(path, "cluster.service_health", {"max_restart_rate": 0.5})

    after = path.read_text().splitlines()
    assert settings.cluster.service_health.max_restart_rate == 0.5
    assert load_settings(path).cluster.service_health.max_restart_rate == 0.5
    assert len(after) == len(before)
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert changed == [("max_restart_rate = 0.25", "max_restart_rate = 0.5")]


def test_update_settings_keeps_the_inline_comment_of_the_changed_key(tmp_path: Path) -> None:
    path = copy_app(tmp_path, "mycode_project") / "app_settings.toml"
    before = path.read_text()

    update_settings(path, "args", {"x": 9})

    assert path.read_text() == before.replace("x = 27  ", "x = 9  ")
    assert load_settings(path).args["x"] == 9


def test_update_settings_adds_a_key_without_moving_the_next_tables_comment(tmp_path: Path) -> None:
    path = copy_app(tmp_path, "mycode_project") / "app_settings.toml"
    comment = "# The reference system's SLA defaults."

    update_settings(path, "cluster", {"durable": True})

    lines = path.read_text().splitlines()
    assert load_settings(path).cluster.durable is True
    assert "durable = true" in lines
    # The comment describes [cluster.service_health]: it must stay directly above that table.
    assert lines[lines.index("[cluster.service_health]") - 1] == comment


def test_update_settings_creates_a_missing_table(tmp_path: Path) -> None:
    path = write_settings(tmp_path, "# my app\n" + MINIMAL)

    update_settings(path, "cluster.service_health", {"allow_idle": True})

    assert path.read_text().startswith("# my app\n")
    assert load_settings(path).cluster.service_health.allow_idle is True


def test_update_settings_with_none_removes_the_key(tmp_path: Path) -> None:
    path = copy_app(tmp_path, "mycode_project") / "app_settings.toml"

    update_settings(path, "cluster", {"heartbeat_timeout_sec": None})

    assert "heartbeat_timeout_sec" not in path.read_text()
    assert load_settings(path).cluster.heartbeat_timeout_sec == 10


@pytest.mark.parametrize(
    ("section", "values", "named"),
    [
        ("cluster", {"slots": 0}, "[cluster] slots"),
        ("cluster.service_health", {"max_unhealthy": "none"}, "[cluster.service_health] max_unhealthy"),
        ("cluster", {"heartbeat_timout_sec": 3}, "[cluster] heartbeat_timout_sec"),
    ],
)
def test_bad_value_in_update_leaves_the_file_byte_for_byte_unchanged(
    tmp_path: Path, section: str, values: dict[str, object], named: str
) -> None:
    path = copy_app(tmp_path, "mycode_project") / "app_settings.toml"
    before = path.read_bytes()

    with pytest.raises(SettingsError) as caught:
        update_settings(path, section, values)

    assert named in one_line(caught.value)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------- [args] and the app's entry points


@pytest.mark.parametrize(
    ("value", "shown"),
    [('"abc"', "'abc'"), ("0", "0")],
)
def test_invalid_args_for_the_args_model_name_args_key_when_the_app_is_loaded(
    tmp_path: Path, restore_imports: None, value: str, shown: str
) -> None:
    folder = copy_app(tmp_path, "mycode_project", **{"x = 27": f"x = {value}"})
    env = Env(folder.name, folder.parent)

    with pytest.raises(SettingsError) as caught:
        load_app(env)

    message = one_line(caught.value)
    assert str(env.settings_path) in message
    assert "[args] x" in message
    assert shown in message


def test_unknown_args_key_is_named_when_the_app_is_loaded(tmp_path: Path, restore_imports: None) -> None:
    folder = copy_app(tmp_path, "mycode_project", **{"x = 27": "x = 27\nitemz = 5"})

    with pytest.raises(SettingsError) as caught:
        load_app(Env(folder.name, folder.parent))

    assert "[args] itemz" in one_line(caught.value)


def test_valid_app_loads_its_worker_manager_and_args_model(restore_imports: None) -> None:
    app = load_app(Env("mycode_project", EXAMPLE_APPS))

    assert app.worker_class.__name__ == "Worker"
    assert app.manager_class is not None
    assert app.manager_class.__name__ == "Manager"
    assert app.args_model is not None
    assert app.settings_args().x == 27


def test_missing_entry_point_module_names_settings_file_key_and_expected_form(
    tmp_path: Path, restore_imports: None
) -> None:
    folder = copy_app(
        tmp_path, "mycode_project", **{'"mycode.worker:Worker"': '"kw_no_such_package.worker:Worker"'}
    )
    env = Env(folder.name, folder.parent)

    with pytest.raises(AppError) as caught:
        load_app(env)

    message = one_line(caught.value)
    assert str(env.settings_path) in message
    assert "[app] worker" in message
    assert "kw_no_such_package.worker" in message
    assert "not found" in message
    assert "module:Name" in message


def test_missing_entry_point_attribute_names_the_attribute(tmp_path: Path, restore_imports: None) -> None:
    folder = copy_app(tmp_path, "mycode_project", **{'"mycode.manager:Manager"': '"mycode.manager:Boss"'})
    env = Env(folder.name, folder.parent)

    with pytest.raises(AppError) as caught:
        load_app(env)

    message = one_line(caught.value)
    assert str(env.settings_path) in message
    assert "[app] manager" in message
    assert "'Boss'" in message


def test_worker_without_work_method_is_named_with_the_expected_contract(
    tmp_path: Path, restore_imports: None
) -> None:
    code = "class Worker:\n    def start(self):\n        pass\n\n    def stop(self):\n        pass\n"
    folder = write_app(tmp_path, "kw_lazy_app", code)
    env = Env(folder.name, folder.parent)

    with pytest.raises(AppError) as caught:
        load_app(env)

    message = one_line(caught.value)
    assert str(env.settings_path) in message
    assert "[app] worker" in message
    assert "no work method" in message
    assert "work(item)" in message


def test_entry_point_module_that_fails_to_import_reports_its_error(
    tmp_path: Path, restore_imports: None
) -> None:
    folder = write_app(tmp_path, "kw_broken_app", "import kw_missing_dependency_xyz\n\nclass Worker: ...\n")
    env = Env(folder.name, folder.parent)

    with pytest.raises(AppError) as caught:
        load_app(env)

    message = one_line(caught.value)
    assert "[app] worker" in message
    assert "kw_missing_dependency_xyz" in message
