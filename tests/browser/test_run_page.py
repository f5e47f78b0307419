"""The Distribute and Run sections in the browser: an app that crashes never takes the page down,
what is shown says when it was computed and whether ``[args]`` changed since, and the tree, the
benchmark and the run logs stay readable.

Each test writes its own app (``keepwarm init``'s scaffold, with a worker or a manager of the test's
own) under a folder name no other test uses. The worker of ``gated`` waits for a file the test creates,
so the test looks at the page while a run is under way without guessing how long it takes.
"""

from __future__ import annotations

import re
from pathlib import Path
from textwrap import dedent

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from keepwarm.runmode.scaffold import init_app

from .conftest import _numbers
from .kit import Page, Screenshots

SCREEN_HEIGHT = 900  # what "fits one screen" means here: a laptop's window, whatever the test's window

QUITTER = dedent(
    """
    import os

    from keepwarm import Partition


    class Worker:
        def __init__(self, args) -> None:
            self.args = args

        def start(self) -> None:
            pass

        def work(self, item):
            if isinstance(item, Partition) and item.name == "part1":
                os._exit(3)  # the interpreter ends under keepwarm, as a segfault would
            first, last = item.data
            return [{"n": n} for n in range(first, last + 1)]

        def stop(self) -> None:
            pass
    """
)

GATED = dedent(
    """
    import time
    from pathlib import Path

    HERE = Path(__file__).resolve().parent.parent


    class Worker:
        def __init__(self, args) -> None:
            self.args = args

        def start(self) -> None:
            pass

        def work(self, item):
            deadline = time.monotonic() + 120
            while not (HERE / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.05)  # the test creates the file once it has looked at the page
            if (HERE / "curse").exists() and item.name == "part2":
                raise ValueError(f"number {item.data[0]} is cursed")
            first, last = item.data
            return [{"n": n} for n in range(first, last + 1)]

        def stop(self) -> None:
            pass
    """
)


def new_app(tmp_path: Path, worker: str | None = None, **settings: tuple[str, str]) -> Path:
    """``keepwarm init``'s app under a unique folder name, its worker replaced, its settings edited
    (``{"partitions = 4": "partitions = 100"}``-style replacements given as keyword pairs)."""
    name = f"runpage_{next(_numbers)}"
    init_app(name, tmp_path / "apps")
    folder = tmp_path / "apps" / name
    if worker is not None:
        (folder / name / "worker.py").write_text(worker)
    path = folder / "app_settings.toml"
    text = path.read_text()
    for old, new in settings.values():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return folder


def press(page: Page, name: str) -> None:
    """Click a button and return at once (``page.click`` waits for the rerun to end)."""
    css = page.css(name, "button")
    page.wait_for(f"{name} to be clickable", lambda d: d.find_element(By.CSS_SELECTOR, css).is_enabled())
    page.driver.find_element(By.CSS_SELECTOR, css).click()


def expanders(page: Page, section: str, title: str) -> list[WebElement]:
    """The ``details`` elements of a section whose summary says ``title``."""
    found = page.driver.find_elements(By.CSS_SELECTOR, f".st-key-section-{section} details")
    return [d for d in found if title in d.find_element(By.TAG_NAME, "summary").text]


def is_open(element: WebElement) -> bool:
    return element.get_attribute("open") is not None


def height(page: Page, name: str) -> float:
    return float(
        page.driver.execute_script("return arguments[0].getBoundingClientRect().height", page.find(name))
    )


def run_ids(text: str) -> set[str]:
    """The run ids a log names (``run 20261203T012345678901Z-ab12 of ...``)."""
    return set(re.findall(r"run (\d{8}T\d+Z-[0-9a-f]+) of", text))


def install(page: Page, app_dir: Path) -> None:
    page.click("install.run", then=f"installed {app_dir.name} in")


def test_an_app_that_ends_its_interpreter_fails_its_run_and_the_page_stays_up(
    page: Page, shots: Screenshots, tmp_path: Path
) -> None:
    app_dir = new_app(tmp_path, QUITTER)
    page.open(app_dir)
    install(page, app_dir)

    page.click("run.run", then="exited with code 3")

    section = page.section_text("run")
    assert "while working partition part1 on worker-1" in section, section
    assert "(os._exit, or a crash of the interpreter)" in section
    (log,) = expanders(page, "run", "Run logs")
    assert is_open(log), "a failed run's log stays open"
    assert "part0 done on worker-0" in log.text
    shots.take("orchestrate-run-failed", section="section-run")

    # The page still answers: another RUN fails the same way, in a new run of its own.
    first = re.findall(r"run (\S+) of runpage", section)
    page.click("run.run", then="exited with code 3")
    assert re.findall(r"run (\S+) of runpage", page.section_text("run")) != first

    # A manager that ends its interpreter fails CHECK DISTRIBUTE, and the benchmark, not the page.
    manager = app_dir / app_dir.name / "manager.py"
    manager.write_text(
        manager.read_text().replace(
            "        size = ", "        import os\n\n        os._exit(4)\n        size = "
        )
    )
    page.click("run.distribute", then="exited with code 4")
    assert "no plan was saved" in page.section_text("distribute")
    page.toggle("run.benchmark")
    page.click("run.run", then="exited with code 4")
    page.click("run.distribute", then="exited with code 4")  # and it still answers


def test_a_failed_runs_log_stays_open_with_its_traceback_and_a_new_run_replaces_it(
    page: Page, shots: Screenshots, tmp_path: Path
) -> None:
    app_dir = new_app(tmp_path, GATED)
    (app_dir / "release").touch()
    (app_dir / "curse").touch()
    page.open(app_dir)
    install(page, app_dir)

    page.click("run.run", then="is cursed")

    (log,) = expanders(page, "run", "Run logs")
    assert is_open(log), "a failed run's log stays open"
    assert "Traceback (most recent call last)" in log.text
    assert "ValueError: number 501 is cursed" in log.text
    assert "part2 on worker-0" in log.text

    # A new run streams into the same place: never a second, greyed "Run logs" beside it.
    (failed,) = run_ids(log.text)
    (app_dir / "curse").unlink()
    (app_dir / "release").unlink()
    press(page, "run.run")
    page.wait_for(
        "the new run's log",
        lambda d: any(run_ids(e.text) - {failed} for e in expanders(page, "run", "Run logs")),
    )
    assert page.running()
    during = expanders(page, "run", "Run logs")
    assert len(during) == 1, [d.text[:200] for d in during]
    assert "is cursed" not in page.section_text("run")  # the last run's log and message are gone
    (app_dir / "release").touch()
    page.wait_for_text("rows in")
    page.wait_idle()
    assert len(expanders(page, "run", "Run logs")) == 1

    # The run's report is labelled, never a bare {...}.
    (report,) = expanders(page, "run", "run report (JSON)")
    json_blocks = page.driver.find_elements(By.CSS_SELECTOR, ".st-key-section-run [data-testid='stJson']")
    inside = report.find_elements(By.CSS_SELECTOR, "[data-testid='stJson']")
    assert len(json_blocks) == len(inside) == 1
    page.expand("section-run", "Run logs")
    page.wait_for("the timings chart", lambda d: page.find("run.bench_chart", "svg .role-axis-label"))
    shots.take("orchestrate-run", section="section-run")

    # A new session on the page says when the app was installed, not only that it was.
    page.open(app_dir)
    assert "installed earlier, at 20" in page.section_text("install")


def pick(page: Page, name: str, typed: str) -> None:
    """Choose in selectbox ``name`` the first option that ``typed`` matches."""
    box = page.find(name, "input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(typed, Keys.ENTER)
    page.wait_for(f"{typed} picked", lambda d: page.value(name).startswith(typed))
    page.wait_idle()


def imbalance_metric(page: Page) -> str:
    metrics = page.driver.find_elements(
        By.CSS_SELECTOR, ".st-key-section-distribute [data-testid='stMetric']"
    )
    (imbalance,) = [m for m in metrics if m.text.startswith("Imbalance")]
    return imbalance.find_element(By.CSS_SELECTOR, "[data-testid='stMetricValue']").text


def test_after_move_the_message_tree_and_picker_agree_and_save_args_marks_the_plan_out_of_date(
    page: Page, tmp_path: Path
) -> None:
    weights = {"items": ("items = 1000", "items = 997"), "parts": ("partitions = 4", "partitions = 7")}
    app_dir = new_app(tmp_path, **weights)
    page.open(app_dir)
    page.click("run.distribute", then="work plan of 7 partitions")
    assert "work plan computed " in page.section_text("distribute")
    assert '"items": 997' in page.section_text("distribute")

    page.expand("section-distribute", "Workplan")
    pick(page, "run.move_partition", "part5")
    assert page.value("run.move_partition") == "part5 (on worker-1)"
    page.click("run.move", then="part5 moved from worker-1 to worker-0")

    message = page.section_text("distribute")
    said = re.search(r"part5 moved from worker-1 to worker-0 and the plan saved; imbalance (\S+)", message)
    assert said is not None, message
    assert said.group(1) == imbalance_metric(page)
    page.wait_for(
        "the picker to say where part5 is now",
        lambda d: page.value("run.move_partition") == "part5 (on worker-0)",
        timeout=10,
    )

    # [args] changed in the form: the plan shown was made with other args, and says so.
    page.type("args.items", "500")
    page.click("args.save", then="saved to")
    stale = page.find("plan.freshness").text
    assert "out of date: made with other [args] (keys items)" in stale, stale


def test_a_plan_of_100_partitions_fits_one_screen_and_its_legend_is_whole(
    page: Page, shots: Screenshots, tmp_path: Path
) -> None:
    app_dir = new_app(
        tmp_path, slots=("slots = 2", "slots = 4"), parts=("partitions = 4", "partitions = 100")
    )
    page.open(app_dir)
    page.click("run.distribute", then="work plan of 100 partitions over 4 workers")

    assert height(page, "plan.tree") < SCREEN_HEIGHT
    assert height(page, "plan.loads") < SCREEN_HEIGHT
    tree = page.find("plan.tree").text
    assert "25 partitions" in tree or "25 partitions" in page.find("plan.tree", "svg").get_attribute(
        "innerHTML"
    )
    legends = page.driver.find_elements(By.CSS_SELECTOR, f"{page.css('plan.loads')} .role-legend")
    assert not legends, "no per-partition legend past a dozen partitions"
    assert "worker-3: 25 partitions" in page.section_text("distribute")
    shots.take("orchestrate-distribute", section="section-distribute")

    # Ten partitions: each block has its entry in the legend, none cut.
    settings = app_dir / "app_settings.toml"
    settings.write_text(settings.read_text().replace("partitions = 100", "partitions = 10"))
    page.click("run.distribute", then="work plan of 10 partitions")
    page.wait_for(
        "the legend", lambda d: d.find_element(By.CSS_SELECTOR, f"{page.css('plan.loads')} .role-legend")
    )
    labels = page.driver.find_elements(By.CSS_SELECTOR, f"{page.css('plan.loads')} .role-legend-label text")
    assert sorted(label.text for label in labels) == sorted(f"part{i}" for i in range(10))
    box = page.find("plan.loads")
    bottom = box.rect["y"] + box.rect["height"]
    assert all(label.rect["y"] + label.rect["height"] <= bottom + 1 for label in labels)


def chips(page: Page) -> list[str]:
    """The modes chosen in the benchmark's picker, as its chips say."""
    tags = page.driver.find_elements(By.CSS_SELECTOR, f"{page.css('run.bench_modes')} [data-tag]")
    return [str(tag.get_attribute("aria-label")) for tag in tags]


def choose_modes(page: Page, modes: list[str]) -> None:
    """Keep only ``modes`` in the benchmark's picker: the other chips removed one by one."""
    for chip in chips(page):
        if chip not in modes:
            page.find("run.bench_modes", f"button[aria-label='Remove {chip}']").click()
            page.wait_for(f"{chip} removed", lambda d, chip=chip: chip not in chips(page))
            page.wait_idle()
    assert sorted(chips(page)) == sorted(modes)


def test_benchmark_results_are_ranked_dated_and_out_of_date_once_args_change(
    page: Page, shots: Screenshots, tmp_path: Path
) -> None:
    app_dir = new_app(tmp_path)
    page.open(app_dir)
    install(page, app_dir)
    page.toggle("run.benchmark")
    picker = page.find("run.bench_modes")
    section = page.driver.find_element(By.CSS_SELECTOR, ".st-key-section-run")
    assert picker.rect["x"] + picker.rect["width"] <= section.rect["x"] + section.rect["width"] + 1
    box = page.find("run.bench_modes", "[role='group']")
    inside = box.rect["x"] + box.rect["width"] + 1
    for tag in page.driver.find_elements(By.CSS_SELECTOR, f"{page.css('run.bench_modes')} [data-tag]"):
        assert tag.rect["x"] + tag.rect["width"] <= inside, f"{tag.text} spills out of the picker"
    choose_modes(page, ["python", "pool"])
    page.click("run.run", then="benchmarked 2 modes")

    results = page.find("run.bench_results")
    assert "timings computed " in results.text and '"items": 1000' in results.text
    header = [th.text for th in results.find_elements(By.CSS_SELECTOR, "thead th")]
    assert {"order", "mode", "nodes", "node", "timing", "date"} <= set(header), header
    rows = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in results.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    ranking = [row[header.index("mode")] for row in rows]
    assert [row[header.index("order")] for row in rows] == ["1", "2"]
    cells = results.find_elements(By.CSS_SELECTOR, "tbody td")
    assert all(td.value_of_css_property("white-space") == "nowrap" for td in cells)
    labels = page.driver.find_elements(
        By.CSS_SELECTOR, f"{page.css('run.bench_chart')} .role-axis-label text"
    )
    drawn = sorted((label.rect["y"], label.text) for label in labels if label.text in ranking)
    assert [text for _, text in drawn] == ranking

    page.type("args.items", "200")
    page.click("args.save", then="saved to")
    stale = page.find("run.bench_results").text
    assert "out of date: made with other [args] (keys items)" in stale, stale
