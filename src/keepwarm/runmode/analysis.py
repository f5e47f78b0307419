"""Looking at an app's results: its sources (each run's output, the exported CSV), a source as one
table, summary statistics, and a chart request checked and turned into the rows to draw.

A source is a successful run's output (``data.read_table``) or ``<export_dir>/<app>/export.csv``
(written by ``data.export_columns``). :func:`chart_data` refuses a request that cannot be drawn (a
kind keepwarm does not draw, a column the table lacks, text where numbers are needed) with a
``DataError`` that says what to choose instead; for a request it accepts it returns the rows to draw,
already binned (histogram) or averaged (bar), so a surface only maps them to marks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from keepwarm.env import Env
from keepwarm.errors import DataError
from keepwarm.queue.task import iso_of
from keepwarm.runmode.data import EXPORT_FILE, _pandas, read_table, run_reports

ChartKind = Literal["line", "bar", "scatter", "histogram"]
CHART_KINDS: tuple[ChartKind, ...] = get_args(ChartKind)
VegaType = Literal["quantitative", "temporal", "nominal", "ordinal"]

EXPORT_KEY = "export"
CHART_ROW_LIMIT = 5_000  # line and scatter draw at most this many rows (evenly spaced)
HISTOGRAM_BINS = 30
COLOR_LIMIT = 20  # a text colour column names at most this many series
ORDINAL_LIMIT = 50  # bars over a numeric x with at most this many values are evenly spaced
NUMBER_FORMAT = ".6g"  # how summary statistics are shown: six significant digits


@dataclass(frozen=True)
class Source:
    """A table to look at: a run's output (``key`` ``run:<run_id>``) or the export (``export``)."""

    key: str
    kind: Literal["run", "export"]
    path: Path  # the run's folder, or export.csv
    date: str  # ISO UTC: when the run finished, or when export.csv was written
    stamp: str  # changes when the data does: the run's id, or export.csv's mtime and size
    run_id: str | None = None
    mode: str | None = None
    rows: int | None = None  # a run's row count (an export's is known once loaded)

    @property
    def when(self) -> str:
        """The source's date as a person reads it: ``2026-12-03 01:35:40 UTC``."""
        return self.date[:19].replace("T", " ") + " UTC"

    @property
    def label(self) -> str:
        """How a picker names the source."""
        when = self.when
        if self.kind == EXPORT_KEY:
            return f"{EXPORT_FILE} (written {when})"
        return f"run {self.run_id} ({self.mode}, {self.rows} rows, {when})"


def list_sources(env: Env) -> list[Source]:
    """What can be looked at for the app: export.csv first when it exists, then every successful
    run that wrote a table, newest first."""
    sources = []
    export = env.export_dir / EXPORT_FILE
    try:
        written = export.stat()
    except OSError:
        pass
    else:
        stamp = f"{written.st_mtime_ns}:{written.st_size}"
        sources.append(Source(EXPORT_KEY, "export", export, iso_of(written.st_mtime), stamp))
    for report in run_reports(env):
        if report.status == "done" and report.columns:
            sources.append(
                Source(
                    f"run:{report.run_id}",
                    "run",
                    Path(report.output_dir),
                    report.finished_at,
                    report.run_id,
                    run_id=report.run_id,
                    mode=report.mode,
                    rows=report.rows,
                )
            )
    return sources


def find_source(env: Env, key: str) -> Source:
    """The source ``key`` names (``export`` or ``run:<run_id>``)."""
    sources = list_sources(env)
    for source in sources:
        if source.key == key:
            return source
    known = ", ".join(s.key for s in sources[:6]) or f"none: {nothing_yet(env)}"
    raise DataError(f"no source {key!r} for {env.app_target}; sources: {known}")


def nothing_yet(env: Env) -> str:
    """How to get something to look at."""
    return (
        f"run the app (RUN on ORCHESTRATE, or keepwarm run {env.app_target}), then export columns "
        f"(EXPORT in the Data section, or keepwarm export {env.app_target} --all)"
    )


def load_source(env: Env, source: Source) -> Any:
    """The source as one pandas DataFrame."""
    if source.kind == "run":
        assert source.run_id is not None
        return read_table(env, source.run_id)
    pd = _pandas()
    try:
        return pd.read_csv(source.path)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{source.path}: cannot be read ({exc}); export it again: keepwarm export {env.app_target} --all"
        ) from None


def loaded_at() -> str:
    """Now, as the page says when it read a source."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------- column kinds and statistics


def is_numeric(series: Any) -> bool:
    """Numbers (booleans are not: they are counted, like text)."""
    types = _pandas().api.types
    return bool(types.is_numeric_dtype(series) and not types.is_bool_dtype(series))


def vega_type(series: Any) -> VegaType:
    """How a chart encodes the column: numbers, dates, or categories."""
    if is_numeric(series):
        return "quantitative"
    if _pandas().api.types.is_datetime64_any_dtype(series):
        return "temporal"
    return "nominal"


@dataclass(frozen=True)
class NumericStats:
    """A numeric column: count of values, mean, standard deviation, min, quartiles, max (None for a
    column with no value; std None with fewer than two)."""

    column: str
    count: int
    mean: float | None
    std: float | None
    min: float | None
    q25: float | None
    median: float | None
    q75: float | None
    max: float | None


@dataclass(frozen=True)
class CountStats:
    """Any other column: count of values, distinct values, the most frequent one and how often."""

    column: str
    count: int
    unique: int
    top: str | None
    freq: int | None


@dataclass(frozen=True)
class Summary:
    """Summary statistics of a table: one entry per column, numeric and other apart."""

    rows: int
    numeric: list[NumericStats]
    other: list[CountStats]

    def numeric_table(self) -> Any:
        """The numeric statistics as text (six significant digits), one row per column."""
        pd = _pandas()
        names = ("count", "mean", "std", "min", "25%", "50%", "75%", "max")
        rows = {
            s.column: [
                str(s.count),
                *map(format_number, (s.mean, s.std, s.min, s.q25, s.median, s.q75, s.max)),
            ]
            for s in self.numeric
        }
        return pd.DataFrame.from_dict(rows, orient="index", columns=list(names))

    def other_table(self) -> Any:
        """The other columns' counts as text, one row per column."""
        pd = _pandas()
        rows = {
            s.column: [str(s.count), str(s.unique), "" if s.top is None else s.top, str(s.freq or 0)]
            for s in self.other
        }
        return pd.DataFrame.from_dict(rows, orient="index", columns=["count", "unique", "top", "freq"])


def format_number(value: float | None) -> str:
    """A statistic as shown: a whole number in full, any other in six significant digits, an em
    dash for none."""
    if value is None:
        return "—"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # a count or an extreme of integers: every digit
    return format(value, NUMBER_FORMAT)


def _number(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


def summarize(table: Any) -> Summary:
    """Count, mean, std, min, quartiles and max of each numeric column; count, distinct values and
    the most frequent value of every other column. Missing values are not counted."""
    numeric, other = [], []
    for name in table.columns:
        series = table[name]
        if is_numeric(series):
            numeric.append(_numeric_stats(str(name), series.dropna()))
        else:
            other.append(_count_stats(str(name), series.dropna()))
    return Summary(len(table), numeric, other)


def _numeric_stats(name: str, values: Any) -> NumericStats:
    if not len(values):
        return NumericStats(name, 0, None, None, None, None, None, None, None)
    q25, median, q75 = (_number(values.quantile(q)) for q in (0.25, 0.5, 0.75))
    std = _number(values.std()) if len(values) > 1 else None
    return NumericStats(
        name,
        len(values),
        _number(values.mean()),
        std,
        _number(values.min()),
        q25,
        median,
        q75,
        _number(values.max()),
    )


def _count_stats(name: str, values: Any) -> CountStats:
    counts = values.astype(str).value_counts()
    if not len(counts):
        return CountStats(name, 0, 0, None, None)
    return CountStats(name, len(values), len(counts), str(counts.index[0]), int(counts.iloc[0]))


# ---------------------------------------------------------------- charts


def suggest_axes(table: Any) -> tuple[str | None, str | None]:
    """A first chart's columns: the first column on x, the first other numeric column on y."""
    columns = [str(c) for c in table.columns]
    x = columns[0] if columns else None
    y = next((c for c in columns if c != x and is_numeric(table[c])), None)
    return x, y


@dataclass(frozen=True)
class ChartData:
    """What to draw: ``frame`` holds the rows, already binned (histogram: ``x`` to ``x2``, ``y`` the
    count) or averaged (bar: ``y`` the mean per ``x``); ``note`` says when rows were left out."""

    kind: ChartKind
    frame: Any
    x: str
    y: str
    x_type: VegaType
    y_type: VegaType
    x_title: str
    y_title: str
    color: str | None = None
    color_type: VegaType | None = None
    x2: str | None = None
    note: str | None = None


def _column(table: Any, name: str, role: str) -> Any:
    if name not in table.columns:
        raise DataError(f"no column {name!r} for {role}; columns: {', '.join(map(str, table.columns))}")
    return table[name]


def _need_numbers(table: Any, name: str, why: str) -> None:
    series = table[name]
    if not is_numeric(series):
        numbers = [str(c) for c in table.columns if is_numeric(table[c])]
        kind = {"temporal": "date", "nominal": "text"}.get(vega_type(series), "text")
        held = "true/false" if _pandas().api.types.is_bool_dtype(series) else f"{kind} ({series.dtype})"
        choose = f"numeric columns: {', '.join(numbers)}" if numbers else "this table has no numeric column"
        raise DataError(f"{why}: {name!r} holds {held} values, not numbers; {choose}")


def check_chart(table: Any, kind: str, x: str, y: str | None = None, color: str | None = None) -> ChartKind:
    """Refuse a chart that cannot be drawn, saying what to choose: the kind is one of
    ``CHART_KINDS``; the columns exist; a histogram counts one numeric ``x`` (no ``y``); a scatter
    needs numeric ``x`` and ``y``; a line a numeric ``y``; a bar a numeric ``y`` (none: rows counted);
    a text colour names at most ``COLOR_LIMIT`` series."""
    if kind not in CHART_KINDS:
        raise DataError(f"no chart kind {kind!r}; kinds: {', '.join(CHART_KINDS)}")
    if not len(table):
        raise DataError("nothing to plot: the table has no rows")
    _column(table, x, "x")
    if kind == "histogram":
        if y is not None:
            raise DataError(f"a histogram counts the values of one column (x): choose no y (not {y!r})")
        _need_numbers(table, x, "a histogram needs a numeric column")
    elif y is None:
        if kind != "bar":
            raise DataError(f"a {kind} chart needs a y column; choose a numeric one")
    else:
        _column(table, y, "y")
        _need_numbers(table, y, f"a {kind} chart plots numbers on y")
    if kind == "scatter":
        _need_numbers(table, x, "a scatter chart needs numbers on x too")
    if color is not None:
        series = _column(table, color, "colour")
        grouped = kind in ("bar", "histogram") or not is_numeric(series)
        distinct = series.nunique()
        if grouped and distinct > COLOR_LIMIT:
            raise DataError(
                f"colour by {color!r} would draw {distinct} series (at most {COLOR_LIMIT}); "
                f"choose a column with fewer distinct values, or no colour"
            )
    return kind


def chart_data(table: Any, kind: str, x: str, y: str | None = None, color: str | None = None) -> ChartData:
    """The rows to draw for a chart request, checked by :func:`check_chart` (``DataError`` when it
    cannot be drawn). Rows missing a chosen value, or holding an infinite one, are left out."""
    chart_kind = check_chart(table, kind, x, y, color)
    used = list(dict.fromkeys(c for c in (x, y, color) if c is not None))
    rows = table[used]
    numbers = [c for c in used if is_numeric(rows[c])]
    rows = rows.dropna()
    if numbers:
        rows = rows[rows[numbers].apply(lambda column: column.abs() != math.inf).all(axis=1)]
    if not len(rows):
        raise DataError(f"nothing to plot: no row has a finite value in each of {', '.join(used)}")
    color_type = (
        None
        if color is None
        else ("nominal" if chart_kind in ("bar", "histogram") else vega_type(rows[color]))
    )
    if chart_kind == "histogram":
        return _histogram(rows, x, color, color_type)
    if chart_kind == "bar":
        return _bars(rows, x, y, color, color_type)
    note = None
    if len(rows) > CHART_ROW_LIMIT:
        step = math.ceil(len(rows) / CHART_ROW_LIMIT)
        note = f"every {step}th of {len(rows)} rows drawn"
        rows = rows.iloc[::step]
    assert y is not None  # check_chart: line and scatter have a y
    return ChartData(
        chart_kind, rows, x, y, vega_type(rows[x]), "quantitative", x, y, color, color_type, note=note
    )


def _histogram(rows: Any, x: str, color: str | None, color_type: VegaType | None) -> ChartData:
    import numpy as np

    pd = _pandas()
    values = rows[x].to_numpy(dtype=float)
    edges = np.histogram_bin_edges(values, bins=min(HISTOGRAM_BINS, max(1, len(np.unique(values)))))
    groups = [(None, rows)] if color is None else list(rows.groupby(color, sort=True))
    frames = []
    for value, group in groups:
        counts, _ = np.histogram(group[x].to_numpy(dtype=float), bins=edges)
        frame = pd.DataFrame({"bin_start": edges[:-1], "bin_end": edges[1:], "count": counts})
        if color is not None:
            frame[color] = value
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    return ChartData(
        "histogram",
        frame,
        "bin_start",
        "count",
        "quantitative",
        "quantitative",
        x,
        "rows",
        color,
        color_type,
        "bin_end",
    )


def _bars(rows: Any, x: str, y: str | None, color: str | None, color_type: VegaType | None) -> ChartData:
    keys = [x] if color is None else list(dict.fromkeys([x, color]))
    if y is None:
        frame = rows.groupby(keys, sort=True).size().reset_index(name="rows")
        value, title = "rows", "rows"
    else:
        frame = rows.groupby(keys, sort=True)[y].mean().reset_index()
        value, title = y, f"mean of {y}"
    x_type = vega_type(frame[x])
    if x_type != "nominal" and frame[x].nunique() <= ORDINAL_LIMIT:
        x_type = "ordinal"  # a bar per value, evenly spaced, instead of slivers on a number line
    return ChartData("bar", frame, x, value, x_type, "quantitative", x, title, color, color_type)
