"""Looking at results: an app's sources, a source as a table, summary statistics, chart requests.

The runs are real (``keepwarm.run`` of a scaffolded app), the export is written by
``export_columns``; the expected statistics are computed with the ``statistics`` module.
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import keepwarm
from keepwarm.env import Env
from keepwarm.errors import DataError, RunError
from keepwarm.runmode.analysis import (
    CHART_KINDS,
    CHART_ROW_LIMIT,
    chart_data,
    check_chart,
    find_source,
    format_number,
    list_sources,
    load_source,
    suggest_axes,
    summarize,
)
from keepwarm.runmode.data import export_columns, read_table
from keepwarm.runmode.scaffold import init_app
from keepwarm.ui import snippets

pd = pytest.importorskip("pandas")

# The scaffold's worker, except that a run of 7 items fails and a run of 3 returns no table.
WORKER = """\
from keepwarm import Partition


class Worker:
    def __init__(self, args) -> None:
        self.args = args

    def work(self, item):
        if self.args.items == 7:
            raise ValueError("seven items are refused")
        first, last = item.data
        if self.args.items == 3:
            return {"first": first, "last": last}
        return [{"n": n, "square": n * n, "even": n % 2 == 0} for n in range(first, last + 1)]
"""


@pytest.fixture
def squares(tmp_path: Path) -> Env:
    apps = tmp_path / "apps"
    # its own name: another file's in-process run may have left a module "squares" in this worker
    init_app("sq_table", apps)
    (apps / "sq_table" / "sq_table" / "worker.py").write_text(WORKER)
    return Env("sq_table", apps)


# ---------------------------------------------------------------- sources


def test_an_app_without_output_has_no_source_and_is_told_how_to_get_one(squares: Env) -> None:
    assert list_sources(squares) == []
    with pytest.raises(DataError) as caught:
        find_source(squares, "export")
    assert "no source 'export' for sq_table; sources: none: run the app" in str(caught.value)
    assert "keepwarm run sq_table" in str(caught.value) and "keepwarm export sq_table --all" in str(
        caught.value
    )


def test_sources_are_the_export_then_each_run_with_a_table_newest_first(squares: Env) -> None:
    older = keepwarm.run(squares, "python", args={"items": 10})
    with pytest.raises(RunError):
        keepwarm.run(squares, "python", args={"items": 7})  # failed: no output
    keepwarm.run(squares, "python", args={"items": 3})  # JSON, not a table
    newer = keepwarm.run(squares, "python", args={"items": 20})

    runs = list_sources(squares)
    assert [(s.key, s.kind, s.run_id, s.mode, s.rows) for s in runs] == [
        (f"run:{newer.run_id}", "run", newer.run_id, "python", 20),
        (f"run:{older.run_id}", "run", older.run_id, "python", 10),
    ]
    assert runs[0].date == newer.finished_at and runs[0].path == Path(newer.output_dir)
    assert runs[0].label == f"run {newer.run_id} (python, 20 rows, {runs[0].when})"

    exported = export_columns(squares, ["n", "square"])
    sources = list_sources(squares)
    assert [s.key for s in sources] == ["export", f"run:{newer.run_id}", f"run:{older.run_id}"]
    export = sources[0]
    assert export.path == Path(exported.path) and export.label.startswith("export.csv (written ")
    assert find_source(squares, f"run:{older.run_id}") == sources[2]


def test_a_source_loads_as_the_table_it_holds(squares: Env) -> None:
    run = keepwarm.run(squares, "python", args={"items": 12})
    export_columns(squares, ["square", "even"])

    from_run = load_source(squares, find_source(squares, f"run:{run.run_id}"))
    assert from_run.equals(read_table(squares, run.run_id))
    from_export = load_source(squares, find_source(squares, "export"))
    assert list(from_export.columns) == ["square", "even"]
    assert from_export["square"].tolist() == [n * n for n in range(1, 13)]


def test_a_rewritten_export_is_a_new_stamp_and_a_broken_one_a_clear_error(squares: Env) -> None:
    keepwarm.run(squares, "python", args={"items": 12})
    export_columns(squares)
    first = find_source(squares, "export")
    path = first.path
    path.write_text("")  # emptied by hand

    broken = find_source(squares, "export")
    assert broken.stamp != first.stamp
    with pytest.raises(DataError) as caught:
        load_source(squares, broken)
    message = str(caught.value)
    assert f"{path}: cannot be read" in message and "keepwarm export sq_table --all" in message


# ---------------------------------------------------------------- statistics


def test_summary_statistics_match_an_independent_computation() -> None:
    floats = [2.5, None, -1.0, 7.25, 3.0, 10.5]
    table = pd.DataFrame(
        {
            "ints": [4, 8, 15, 16, 23, 42],
            "floats": floats,
            "text": ["a", "b", "a", None, "a", "c"],
            "flag": [True, False, True, True, False, True],
            "empty": [float("nan")] * 6,
        }
    )

    summary = summarize(table)

    assert summary.rows == 6
    assert [s.column for s in summary.numeric] == ["ints", "floats", "empty"]
    assert [s.column for s in summary.other] == ["text", "flag"]  # true/false values are counted
    for stats, values in zip(
        summary.numeric[:2], ([4, 8, 15, 16, 23, 42], [v for v in floats if v is not None]), strict=True
    ):
        q25, q50, q75 = statistics.quantiles(values, n=4, method="inclusive")
        assert stats.count == len(values)
        assert math.isclose(stats.mean or 0, statistics.fmean(values))
        assert math.isclose(stats.std or 0, statistics.stdev(values))
        assert (stats.min, stats.max) == (min(values), max(values))
        assert [stats.q25, stats.median, stats.q75] == pytest.approx([q25, q50, q75])
    empty = summary.numeric[2]
    assert (empty.count, empty.mean, empty.std, empty.min, empty.max) == (0, None, None, None, None)
    text, flag = summary.other
    assert (text.count, text.unique, text.top, text.freq) == (5, 3, "a", 3)
    assert (flag.count, flag.unique, flag.top, flag.freq) == (6, 2, "True", 4)

    shown = summary.numeric_table()
    assert list(shown.columns) == ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]
    spread = format(statistics.stdev([4, 8, 15, 16, 23, 42]), ".6g")
    assert shown.loc["ints"].tolist() == ["6", "18", spread, "4", "9.75", "15.5", "21.25", "42"]
    assert shown.loc["empty"].tolist() == ["0", "—", "—", "—", "—", "—", "—", "—"]
    assert summary.other_table().loc["flag"].tolist() == ["6", "2", "True", "4"]


def test_numbers_are_shown_whole_when_whole_and_with_six_digits_otherwise() -> None:
    assert [format_number(v) for v in (1276936.0, 0.0, -3.0, 2.98551234, 1e20, None)] == [
        "1276936",
        "0",
        "-3",
        "2.98551",
        "1e+20",
        "—",
    ]


# ---------------------------------------------------------------- charts


def table_of_mixed_columns() -> object:
    return pd.DataFrame(
        {
            "n": [1, 2, 3, 4, 5, 6],
            "value": [1.5, 2.5, 2.5, 4.0, None, 9.0],
            "word": ["x", "y", "x", "z", "y", "x"],
            "flag": [True, False, True, False, True, False],
            "serial": ["a1", "a2", "a3", "a4", "a5", "a6"],
        }
    )


@pytest.mark.parametrize(
    ("kind", "x", "y", "color", "message"),
    [
        ("pie", "n", "value", None, "no chart kind 'pie'; kinds: line, bar, scatter, histogram"),
        ("line", "m", "value", None, "no column 'm' for x; columns: n, value, word, flag, serial"),
        ("line", "n", "values", None, "no column 'values' for y"),
        ("line", "n", "value", "colour", "no column 'colour' for colour"),
        (
            "histogram",
            "word",
            None,
            None,
            "a histogram needs a numeric column: 'word' holds text (",
        ),
        ("histogram", "flag", None, None, "'flag' holds true/false values, not numbers"),
        ("histogram", "n", "value", None, "a histogram counts the values of one column (x): choose no y"),
        ("scatter", "word", "value", None, "a scatter chart needs numbers on x too: 'word' holds text"),
        ("scatter", "n", "word", None, "a scatter chart plots numbers on y: 'word' holds text"),
        ("line", "n", None, None, "a line chart needs a y column; choose a numeric one"),
        ("bar", "word", "flag", None, "a bar chart plots numbers on y: 'flag' holds true/false"),
    ],
)
def test_a_chart_that_cannot_be_drawn_says_what_to_choose(
    kind: str, x: str, y: str | None, color: str | None, message: str
) -> None:
    with pytest.raises(DataError) as caught:
        chart_data(table_of_mixed_columns(), kind, x, y, color)
    assert message in str(caught.value)
    if "holds" in message:
        assert str(caught.value).endswith("numeric columns: n, value")


def test_a_colour_that_would_draw_too_many_series_is_refused() -> None:
    table = pd.DataFrame({"n": range(30), "v": range(30), "id": [f"row{i}" for i in range(30)]})
    with pytest.raises(DataError, match="colour by 'id' would draw 30 series \\(at most 20\\)"):
        check_chart(table, "scatter", "n", "v", "id")
    check_chart(table, "scatter", "n", "v", "v")  # numbers: one colour scale, not 30 series
    with pytest.raises(DataError, match="nothing to plot: the table has no rows"):
        check_chart(table.iloc[0:0], "line", "n", "v")


def test_every_kind_draws_the_mixed_table() -> None:
    table = table_of_mixed_columns()
    for kind in CHART_KINDS:
        y = None if kind == "histogram" else "value"
        assert chart_data(table, kind, "n", y).kind == kind


def test_a_histogram_counts_every_row_with_a_value_in_shared_bins() -> None:
    table = table_of_mixed_columns()

    whole = chart_data(table, "histogram", "value")
    assert (whole.x, whole.x2, whole.y, whole.x_title, whole.y_title) == (
        "bin_start",
        "bin_end",
        "count",
        "value",
        "rows",
    )
    assert whole.frame["count"].sum() == 5  # the row without a value is left out
    assert whole.frame["bin_start"].iloc[0] == 1.5 and whole.frame["bin_end"].iloc[-1] == 9.0

    by_word = chart_data(table, "histogram", "value", color="word")
    assert by_word.frame.groupby("word")["count"].sum().to_dict() == {"x": 3, "y": 1, "z": 1}
    assert by_word.color_type == "nominal"


def test_a_bar_chart_averages_y_per_x_or_counts_rows() -> None:
    table = table_of_mixed_columns()

    means = chart_data(table, "bar", "word", "value")
    assert dict(zip(means.frame["word"], means.frame["value"], strict=True)) == {
        "x": 13 / 3,
        "y": 2.5,
        "z": 4.0,
    }
    assert (means.x_type, means.y_title) == ("nominal", "mean of value")
    counts = chart_data(table, "bar", "flag", None)
    assert counts.frame.to_dict("records") == [{"flag": False, "rows": 3}, {"flag": True, "rows": 3}]
    assert chart_data(table, "bar", "n", "value").x_type == "ordinal"  # a bar per number, evenly spaced


def test_lines_and_scatters_of_a_large_table_draw_evenly_spaced_rows() -> None:
    rows = CHART_ROW_LIMIT * 3 + 1
    table = pd.DataFrame({"t": range(rows), "v": [n % 7 for n in range(rows)]})

    line = chart_data(table, "line", "t", "v")

    assert len(line.frame) <= CHART_ROW_LIMIT and line.frame["t"].iloc[0] == 0
    assert line.frame["t"].diff().dropna().nunique() == 1
    assert line.note == f"every 4th of {rows} rows drawn"
    small = chart_data(table.head(100), "scatter", "t", "v", "v")
    assert len(small.frame) == 100 and small.note is None and small.color_type == "quantitative"


def test_a_first_chart_puts_the_first_column_on_x_and_a_number_on_y() -> None:
    assert suggest_axes(table_of_mixed_columns()) == ("n", "value")
    assert suggest_axes(pd.DataFrame({"word": ["a"], "flag": [True]})) == ("word", None)


def test_the_pages_python_snippet_prints_the_same_statistics_and_chart_rows(squares: Env) -> None:
    keepwarm.run(squares, "python", args={"items": 40})
    export_columns(squares)
    code = snippets.analysis(snippets.AppRef.of(squares), "export", "histogram", "square", None, "even")

    ran = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False, timeout=120
    )

    assert ran.returncode == 0, ran.stderr
    table = load_source(squares, find_source(squares, "export"))
    assert str(summarize(table).numeric_table()) in ran.stdout
    assert str(chart_data(table, "histogram", "square", None, "even").frame) in ran.stdout


def test_rows_without_a_finite_value_are_left_out_and_none_left_is_refused() -> None:
    table = pd.DataFrame({"n": [1.0, 2.0, math.inf, 4.0, None], "v": [None, 1.0, 2.0, -math.inf, None]})

    assert chart_data(table, "histogram", "n").frame["count"].sum() == 3
    assert chart_data(table, "scatter", "n", "v").frame.to_dict("records") == [{"n": 2.0, "v": 1.0}]
    with pytest.raises(DataError, match="nothing to plot: no row has a finite value in each of v"):
        chart_data(table.iloc[[0, 4]], "histogram", "v")
