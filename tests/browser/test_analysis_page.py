"""The ANALYSIS page in the browser: an exported CSV drawn as a chart, its statistics right.

The CSV comes the real way (``keepwarm.run``, then ``export_columns``, as EXPORT does); the expected
statistics are computed here from the CSV with the ``statistics`` module, not with keepwarm's code.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from selenium.webdriver.common.by import By

import keepwarm
from keepwarm.env import Env
from keepwarm.runmode.analysis import format_number
from keepwarm.runmode.data import export_columns

from .conftest import app_copy
from .kit import Page, Screenshots


def table_row(page: Page, container: str, column: str) -> list[str]:
    """The cells of the row headed ``column`` in the tables of widget container ``container``."""
    xpath = f".//tr[th[normalize-space(.)='{column}']]/td"

    def cells(driver: object) -> list[str]:
        found = page.find(container).find_elements(By.XPATH, xpath)
        assert found, f"no row {column}"
        return [cell.text.strip() for cell in found]

    return page.wait_for(f"the row of {column} in {container}", cells)  # type: ignore[no-any-return]


def expected_numbers(values: list[float]) -> list[str]:
    q25, q50, q75 = statistics.quantiles(values, n=4, method="inclusive")
    stats = [statistics.fmean(values), statistics.stdev(values), min(values), q25, q50, q75, max(values)]
    return [str(len(values)), *map(format_number, stats)]


def chart_drawn(page: Page) -> bool:
    """A Vega-Lite view with a canvas (or SVG) of a real size in the chart's container."""
    script = (
        "const c = document.querySelector(arguments[0]);"
        "if (!c) return false; const r = c.getBoundingClientRect();"
        "return r.width > 100 && r.height > 100;"
    )
    css = page.css("analysis.chart", ".vega-embed canvas, .vega-embed svg.marks")
    return bool(page.driver.execute_script(script, css))


def test_an_exported_csv_is_plotted_with_its_summary_statistics(
    page: Page, shots: Screenshots, tmp_path: Path
) -> None:
    app_dir = app_copy(tmp_path)
    env = Env(app_dir)
    run = keepwarm.run(env, "python")
    exported = export_columns(env)
    with open(exported.path, newline="") as file:
        rows = list(csv.DictReader(file))

    page.open(app_dir, "analysis")
    page.wait_for_text("ANALYSIS")
    page.choose("analysis.source", "export.csv")
    page.wait_for_text(f"{len(rows)} rows × 6 columns")
    page.wait_for_text(exported.path)
    page.choose("analysis.kind", "scatter")
    page.choose("analysis.x", "x")
    page.choose("analysis.y", "collatz_steps")
    page.choose("analysis.color", "is_prime")
    page.wait_for("a chart drawn", lambda d: chart_drawn(page))

    steps = [float(row["collatz_steps"]) for row in rows]
    assert table_row(page, "analysis.stats", "collatz_steps") == expected_numbers(steps)
    peaks = [float(row["collatz_peak"]) for row in rows]
    assert table_row(page, "analysis.stats", "collatz_peak") == expected_numbers(peaks)
    primes = sum(row["is_prime"] == "True" for row in rows)
    assert table_row(page, "analysis.stats", "is_prime") == ["2000", "2", "False", str(len(rows) - primes)]
    page.driver.execute_script("document.activeElement.blur()")  # no caret in the screenshot
    shots.take("analysis-page", section="section-analysis")
    page.expand("section-analysis", "Python: the same source")
    page.wait_for_text('chart_data(table, "scatter", "x", "collatz_steps", "is_prime")')

    # A histogram of a text column is refused in words, and nothing is drawn.
    page.choose("analysis.kind", "histogram")
    page.choose("analysis.x", "prime_factors")
    page.wait_for_text("a histogram needs a numeric column: 'prime_factors' holds text")
    assert "Traceback" not in page.text()
    assert not page.driver.find_elements(By.CSS_SELECTOR, page.css("analysis.chart"))
    assert "Python: the same source" not in page.section_text("analysis")  # no snippet of a refusal
    shots.take("analysis-refused", section="section-analysis")

    # A numeric column's histogram is drawn.
    page.choose("analysis.x", "collatz_steps")
    page.wait_for("a histogram drawn", lambda d: chart_drawn(page))

    # Exported again, with two columns: the page reads the new file at its next rerun.
    export_columns(env, ["x", "collatz_steps"])
    page.choose("analysis.kind", "line")
    page.wait_for_text(f"{len(rows)} rows × 2 columns")
    page.wait_for("a line drawn", lambda d: chart_drawn(page))
    assert "collatz_peak" not in page.section_text("analysis")

    # The run's own output is a source too: the same columns, dated by the run.
    page.choose("analysis.source", run.run_id)
    page.wait_for_text(f"{len(rows)} rows × 6 columns · {run.output_dir} · run finished")
    page.wait_for("the run's histogram drawn", lambda d: chart_drawn(page))


def test_an_app_without_output_is_told_how_to_get_some(page: Page, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path)

    page.open(app_dir, "analysis")

    page.wait_for_text(f"Nothing to look at for {app_dir.name} yet: run the app")
    page.wait_for_text(f"keepwarm export {app_dir.name} --all")
