"""app_settings.toml: typed settings, errors that name the file and the key, edits that keep comments."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from keepwarm.app import load_app
from keepwarm.env import Env
from keepwarm.errors import AppError, ConfigError, SettingsConflict, SettingsError
from keepwarm.runmode.scaffold import init_app
from keepwarm.settings import AppSettings, load_settings, update_sections, update_settings
from keepwarm.settings_form import FormBaseline, check_form_args, form_edits, load_args_form, refresh_form

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


# ---------------------------------------------------------------- saving against what was loaded


def test_a_save_against_what_was_loaded_keeps_a_key_changed_elsewhere(tmp_path: Path) -> None:
    path = copy_app(tmp_path, "mycode_project") / "app_settings.toml"
    update_settings(path, "args", {"items": 500})  # a shell changes another key meanwhile

    update_settings(path, "args", {"partitions": 4}, expected={"partitions": 8})

    assert load_settings(path).args == {"x": 27, "items": 500, "partitions": 4}


def test_a_key_changed_on_disk_since_it_was_loaded_refuses_the_save_and_names_both_values(
    tmp_path: Path,
) -> None:
    path = copy_app(tmp_path, "mycode_project") / "app_settings.toml"
    update_settings(path, "args", {"x": 50})
    before = path.read_bytes()

    with pytest.raises(SettingsConflict) as caught:
        update_settings(path, "args", {"x": 60, "items": 10}, expected={"x": 27, "items": 2000})

    assert isinstance(caught.value, ConfigError)
    assert caught.value.conflicts == [("args", "x", 27, 50, 60)]
    assert one_line(caught.value).startswith(
        "app_settings.toml changed on disk since it was loaded: [args] x is 50 in the file (it was 27 "
        "when loaded; this save sets 60). Nothing was saved"
    )
    assert path.read_bytes() == before


def test_a_key_set_on_disk_to_the_value_being_saved_is_no_conflict(tmp_path: Path) -> None:
    path = copy_app(tmp_path, "mycode_project") / "app_settings.toml"
    update_settings(path, "cluster", {"pool": True})

    update_settings(path, "cluster", {"pool": True, "slots": 3}, expected={"pool": None, "slots": 2})

    assert (load_settings(path).cluster.pool, load_settings(path).cluster.slots) == (True, 3)


def test_several_sections_are_saved_all_or_none(tmp_path: Path) -> None:
    path = copy_app(tmp_path, "mycode_project") / "app_settings.toml"
    update_settings(path, "cluster.service_health", {"max_unhealthy": 2})
    before = path.read_bytes()

    with pytest.raises(SettingsConflict):
        update_sections(
            path,
            [
                ("cluster", {"stop_timeout_sec": 5.0}, {"stop_timeout_sec": None}),
                ("cluster.service_health", {"max_unhealthy": 1}, {"max_unhealthy": 0}),
            ],
        )
    assert path.read_bytes() == before


def _add_keys(path: str, writer: int, count: int) -> None:
    for number in range(count):
        update_settings(Path(path), "args", {f"w{writer}_{number}": number})


def test_writers_in_several_processes_never_lose_each_others_keys(tmp_path: Path) -> None:
    """Each update reads, changes and replaces the file under a lock: no write is lost."""
    path = write_settings(tmp_path, MINIMAL)
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_add_keys, args=(str(path), w, 15)) for w in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
        assert process.exitcode == 0
    assert len(load_settings(path).args) == 4 * 15


def baseline(shown: dict[str, object], digest: str, mtime: float = 0.0) -> FormBaseline:
    return FormBaseline(shown, dict(shown), digest, mtime)


def test_a_refreshed_form_keeps_the_users_edits_and_shows_the_files_other_values() -> None:
    loaded = baseline({"x": 27, "items": 2000, "partitions": 8}, "a")
    on_disk = baseline({"x": 27, "items": 500, "partitions": 8}, "b", mtime=1_700_000_000.0)

    values, kept = refresh_form(loaded, {"x": 27, "items": 2000, "partitions": 4}, on_disk)

    assert values == {"x": 27, "items": 500, "partitions": 4}
    assert kept.shown == {"x": 27, "items": 500, "partitions": 8}  # partitions: edited from 8
    assert form_edits(kept, values) == {"partitions": 4}
    assert kept.expected({"partitions": 4}) == {"partitions": 8}
    assert kept.notice is not None and kept.notice.startswith("app_settings.toml changed on disk at ")
    assert kept.notice.endswith("; the form shows its values")


def test_a_key_edited_in_the_form_and_on_disk_stays_the_forms_and_is_checked_against_the_load() -> None:
    loaded = baseline({"x": 27}, "a")
    values, kept = refresh_form(loaded, {"x": 60}, baseline({"x": 50}, "b"))
    assert values == {"x": 60}
    assert kept.expected(form_edits(kept, values)) == {"x": 27}  # the save is refused: the file says 50


def test_an_unchanged_file_leaves_the_form_as_the_user_has_it() -> None:
    loaded = baseline({"x": 27, "items": 2000}, "a")
    values, kept = refresh_form(loaded, {"x": 30}, baseline({"x": 27, "items": 2000}, "a"))
    assert values == {"x": 30, "items": 2000}  # items was not drawn: not edited
    assert kept.notice is None


class Ranged(BaseModel):
    x: int = Field(default=5, ge=1, le=100)
    rate: float = Field(default=0.5, gt=0)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"x": 500}, "x = 500 is out of range: at most 100"),
        ({"x": 0}, "x = 0 is out of range: at least 1"),
        ({"rate": 0}, "rate = 0 is out of range: more than 0"),
        ({"x": "five"}, "x: input should be a valid integer"),
    ],
)
def test_args_out_of_range_say_the_bound_and_that_nothing_was_saved(
    tmp_path: Path, values: dict[str, object], problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        check_form_args(Ranged, values, tmp_path / "app_settings.toml")
    message = str(caught.value)
    assert message.startswith(f"[args] of {tmp_path / 'app_settings.toml'}: invalid args: {problem}")
    assert message.endswith("; nothing was saved")


def test_an_apps_args_form_is_its_render_function(tmp_path: Path) -> None:
    assert load_args_form(tmp_path) is None
    form = tmp_path / "app_args_form.py"
    form.write_text("def render(args, model, key):\n    return {'x': args['x'] + 1}\n")
    render = load_args_form(tmp_path)
    assert render is not None and render({"x": 1}, None, str) == {"x": 2}

    form.write_text("def draw(args):\n    return args\n")
    os.utime(form, ns=(1, 1))  # another mtime: imported again
    with pytest.raises(AppError, match=r"app_args_form.py: defines no render\(args, model, key\) function"):
        load_args_form(tmp_path)

    form.write_text("import no_such_module_here\n")
    os.utime(form, ns=(2, 2))
    with pytest.raises(AppError, match="importing the app's args form failed: ModuleNotFoundError"):
        load_args_form(tmp_path)


def test_init_with_args_form_scaffolds_a_form_the_page_accepts(tmp_path: Path) -> None:
    plain = init_app("plain_squares", tmp_path)
    assert not any(path.name == "app_args_form.py" for path in plain)
    files = init_app("formed_squares", tmp_path, args_form=True)
    assert tmp_path / "formed_squares" / "app_args_form.py" in files
    render = load_args_form(tmp_path / "formed_squares")
    assert render is not None and render.__name__ == "render"
