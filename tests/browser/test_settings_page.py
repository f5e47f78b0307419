"""Settings and args the page can be trusted with, in the browser (issue 15, defects 1, 2, 7, 8, §3.1).

What the page shows is what the app's file says: each app's own values, a change made from a shell
taken in, and a save that writes only what the user changed, refused when the same key changed on
disk meanwhile.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from keepwarm.runmode.modes import RAPIDS, RunMode, unavailable_reason
from keepwarm.runmode.scaffold import init_app
from keepwarm.settings import load_settings

from .conftest import app_copy
from .kit import Page, Screenshots

CHANGED_ON_DISK = "app_settings.toml changed on disk at "


def settings_of(app_dir: Path) -> Path:
    return app_dir / "app_settings.toml"


def edit_file(app_dir: Path, old: str, new: str) -> None:
    """What a shell does to the file while the page is open: a plain text edit."""
    path = settings_of(app_dir)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def checked(page: Page, name: str) -> bool:
    return bool(page.find(name, "input").is_selected())


def wait_value(page: Page, name: str, value: str) -> None:
    page.wait_for(f"{name} to show {value}", lambda d: page.value(name) == value)


def test_each_app_shows_and_saves_its_own_settings(page: Page, tmp_path: Path) -> None:
    """Defect 1: switching apps shows the other app's values; a save writes one key into that app only."""
    pooled = app_copy(tmp_path)
    edit_file(pooled, "slots = 2\n", "slots = 3\npool = true\n")
    plain = app_copy(tmp_path)
    assert pooled.parent == plain.parent
    pooled_bytes = settings_of(pooled).read_bytes()
    plain_text = settings_of(plain).read_text()

    page.open(pooled)
    assert page.value("settings.slots") == "3" and checked(page, "settings.pool")
    page.wait_for_text("mode 1: pool")

    page.choose_app(plain.name)
    page.bind(plain)
    wait_value(page, "settings.slots", "2")
    assert not checked(page, "settings.pool")
    assert "mode 0: python" in page.section_text("settings")

    page.type("settings.slots", "4")
    page.click("settings.save", then="saved to")
    assert "[cluster] slots" in page.section_text("settings")
    assert "pool" not in page.section_text("settings").split("saved to")[1].split("\n")[0]
    assert settings_of(plain).read_text() == plain_text.replace("slots = 2\n", "slots = 4\n")
    assert settings_of(pooled).read_bytes() == pooled_bytes

    page.choose_app(pooled.name)  # and back: the first app's own values again
    page.bind(pooled)
    wait_value(page, "settings.slots", "3")
    assert checked(page, "settings.pool")


def test_args_changed_from_a_shell_are_kept_and_a_conflict_is_refused_with_reload(
    page: Page, shots: Screenshots, tmp_path: Path
) -> None:
    """Defect 2: the page takes in the file's changes, saves only the edited key, refuses a conflict."""
    app_dir = app_copy(tmp_path)
    page.open(app_dir)
    assert page.value("args.items") == "2000"

    edit_file(app_dir, "items = 2000", "items = 500")  # from a shell, while the page is open
    page.type("args.partitions", "4")  # the user changes only another key
    page.wait_for_text(CHANGED_ON_DISK)
    wait_value(page, "args.items", "500")  # the file's value, in the field the user did not edit
    page.click("args.save", then="saved to")
    assert load_settings(settings_of(app_dir)).args == {"x": 27, "items": 500, "partitions": 4}

    edit_file(app_dir, "x = 27", "x = 50")  # the same key, changed on disk and in the form
    page.type("args.x", "60")
    page.click("args.save", then="SettingsConflict")
    message = page.section_text("distribute")
    assert "[args] x is 50 in the file (it was 27 when loaded; this save sets 60)" in message
    assert "Nothing was saved" in message
    assert load_settings(settings_of(app_dir)).args["x"] == 50
    shots.take("orchestrate-settings-conflict", section="section-distribute")

    page.click("args.reload", then="reloaded from app_settings.toml")
    wait_value(page, "args.x", "50")
    assert page.value("args.items") == "500" and page.value("args.partitions") == "4"
    page.type("args.x", "61")
    page.click("args.save", then="saved to")
    assert load_settings(settings_of(app_dir)).args == {"x": 61, "items": 500, "partitions": 4}


def test_service_settings_keep_a_change_made_from_a_shell(page: Page, tmp_path: Path) -> None:
    """Defect 2 for SAVE SERVICE SETTINGS: another key changed on disk survives the save."""
    app_dir = app_copy(tmp_path)
    page.open(app_dir)
    page.expand("section-service", "Service and SLA settings")
    edit_file(app_dir, "max_unhealthy = 0", "max_unhealthy = 2")
    page.type("service.stop_timeout_sec", "12.00")
    wait_value(page, "service.max_unhealthy", "2")
    page.click("service.save_settings", then="saved to")
    cluster = load_settings(settings_of(app_dir)).cluster
    assert (cluster.stop_timeout_sec, cluster.service_health.max_unhealthy) == (12.0, 2)


def test_an_out_of_range_arg_is_named_and_nothing_is_saved(page: Page, tmp_path: Path) -> None:
    """Defect 7: 500 where the model allows at most 100 is seen, and refused with the bound."""
    app_dir = app_copy(tmp_path)
    module = f"ranged_{app_dir.name}"  # a module name of its own: the page's process imports it
    (app_dir / f"{module}.py").write_text(
        "from pydantic import BaseModel, Field\n\n\n"
        "class Args(BaseModel):\n"
        "    x: int = Field(default=27, ge=1, le=100)\n"
        "    items: int = Field(default=2000, ge=1)\n"
        "    partitions: int = Field(default=8, ge=1)\n"
    )
    edit_file(app_dir, '"mycode.args:Args"', f'"{module}:Args"')
    before = settings_of(app_dir).read_bytes()
    page.open(app_dir)
    page.type("args.x", "500")
    page.click("args.save", then="out of range")
    assert "x = 500 is out of range: at most 100; nothing was saved" in page.section_text("distribute")
    assert settings_of(app_dir).read_bytes() == before


def test_rapids_without_a_gpu_is_said_at_the_toggle(page: Page, tmp_path: Path) -> None:
    """Defect 8: switching rapids on says at once what a run will do on this machine."""
    reason = unavailable_reason(RunMode(RAPIDS))
    app_dir = app_copy(tmp_path)
    page.open(app_dir)
    assert "rapids is on" not in page.section_text("settings")
    page.toggle("settings.rapids")
    if reason is None:  # a machine with a GPU and cuDF: nothing to warn about
        assert "rapids is on" not in page.section_text("settings")
        return
    page.wait_for_text("rapids is on, but this machine cannot run it")
    assert reason in page.section_text("settings")


def set_apps_path(page: Page, path: Path) -> str:
    """Type another apps path into the sidebar; the app the page then shows (from its URL)."""
    field = page.wait_for(
        "the apps path field", lambda d: d.find_element(By.CSS_SELECTOR, ".st-key-apps_path input")
    )
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(str(path), Keys.ENTER)

    def query() -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlparse(page.driver.current_url).query)

    page.wait_for(f"apps path {path}", lambda d: query().get("apps_path") == [str(path)])
    page.wait_idle()
    return query()["app"][0]


def test_a_new_apps_path_keeps_the_app_when_it_is_there_and_says_so_when_not(
    page: Page, tmp_path: Path
) -> None:
    """Defect 8: changing the apps path does not silently reset the chosen app."""
    app_dir = app_copy(tmp_path, folder="keep_me")
    app_copy(tmp_path / "first", folder="another_app")
    other = app_copy(tmp_path / "elsewhere", folder="keep_me")  # after another app, alphabetically
    app_copy(tmp_path / "elsewhere", folder="a_first_app")
    lonely = app_copy(tmp_path / "third", folder="only_app")
    page.open(app_dir)
    assert set_apps_path(page, other.parent) == "keep_me"
    assert "no app 'keep_me'" not in page.text()
    assert set_apps_path(page, lonely.parent) == "only_app"
    page.wait_for_text(f"no app 'keep_me' under {lonely.parent}: showing 'only_app'")


def test_an_apps_own_args_form_is_toggled_and_saved_to_args(page: Page, tmp_path: Path) -> None:
    """§3.1: an app scaffolded with its own form (keepwarm init --args-form): toggle, edit, save."""
    name = f"squares_{tmp_path.name[-12:].replace('-', '_').lower()}"
    apps = tmp_path / "apps"
    init_app(name, apps, args_form=True)
    app_dir = apps / name
    page.open(app_dir)
    page.wait_for_text(f"{name}'s own form (app_args_form.py)")
    assert page.value("args.custom.partitions") == "4"

    page.toggle("args.use_custom")  # the generated form instead
    page.find("args.partitions")
    assert f"{name}'s own form" not in page.section_text("distribute")
    page.toggle("args.use_custom")
    page.wait_for_text("about 250 numbers per partition")  # the form drawn whole, with the file's values
    page.wait_idle()

    page.type("args.custom.partitions", "5")
    page.wait_for_text("about 200 numbers per partition")
    page.click("args.save", then="saved to")
    assert load_settings(settings_of(app_dir)).args == {"value": 7, "items": 1000, "partitions": 5}
    assert "partitions = 5     # run mode: in this many partitions" in settings_of(app_dir).read_text()
