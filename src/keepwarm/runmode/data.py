"""Run mode's output data: find a run's output, read it as one table, preview it, export columns.

A run writes one file per partition (``part-<index>.parquet``, ``.csv`` or ``.json``) and its record
``run.json`` into ``<share_dir>/<namespace>/data/<app_target>/<run_id>/``. The table of a run is its
partitions' tables concatenated in the natural order of their names (``p2`` before ``p10``), so it is
the same whichever worker, process or mode produced each part. ``export_columns`` writes chosen
columns of the latest run to ``<export_dir>/<app_target>/export.csv`` (``$KEEPWARM_EXPORT``, default
``~/export``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm.env import Env
from keepwarm.errors import DataError
from keepwarm.runmode.record import RUN_RECORD, RunReport

EXPORT_FILE = "export.csv"


class ExportReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    run_id: str
    rows: int
    columns: list[str]


def _pandas() -> Any:
    try:
        import pandas as pd  # type: ignore[import-untyped]
    except ImportError:
        raise DataError("reading run-mode output needs pandas: pip install 'keepwarm[data]'") from None
    return pd


def run_reports(env: Env) -> list[RunReport]:
    """Every recorded run of the app, newest first (failed ones included)."""
    reports = []
    if not env.data_dir.is_dir():
        return []
    for folder in sorted(env.data_dir.iterdir(), reverse=True):
        record = folder / RUN_RECORD
        try:
            reports.append(RunReport.model_validate_json(record.read_bytes()))
        except (OSError, ValidationError):
            continue
    return reports


def find_run(env: Env, run_id: str | None = None) -> RunReport:
    """The run ``run_id``, or the latest successful one."""
    reports = run_reports(env)
    if run_id is not None:
        for report in reports:
            if report.run_id == run_id:
                if report.status != "done":
                    raise DataError(
                        f"run {run_id} of {env.app_target} failed ({report.error}); it has no output"
                    )
                return report
        known = ", ".join(r.run_id for r in reports[:5]) or "none"
        raise DataError(f"no run {run_id!r} of {env.app_target} in {env.data_dir}; latest runs: {known}")
    for report in reports:
        if report.status == "done":
            return report
    raise DataError(
        f"{env.app_target} has no output yet (nothing in {env.data_dir}): "
        f"run it first: keepwarm run {env.app_target}"
    )


def read_table(env: Env, run_id: str | None = None, columns: list[str] | None = None) -> Any:
    """A run's output as one pandas DataFrame, partitions in the natural order of their names."""
    pd = _pandas()
    report = find_run(env, run_id)
    folder = Path(report.output_dir)
    frames = []
    for outcome in sorted(report.partitions, key=lambda o: o.index):
        if outcome.file is None or outcome.rows is None:
            continue
        path = folder / outcome.file
        try:
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot be read ({exc}); run {env.app_target} again") from None
        frames.append(frame)
    if not frames:
        raise DataError(f"run {report.run_id} of {env.app_target} wrote no table (its work() returned none)")
    table = pd.concat(frames)
    if all(index is None for index in table.index.names):
        table = table.reset_index(drop=True)
    if columns is not None:
        table = table[select_columns(list(map(str, table.columns)), columns, report.run_id)]
    return table


def select_columns(available: list[str], wanted: list[str], run_id: str) -> list[str]:
    """``wanted``, each once; none chosen, or a column the run does not have, is a ``DataError``."""
    missing = [column for column in wanted if column not in available]
    if missing:
        raise DataError(
            f"no column {', '.join(map(repr, missing))} in run {run_id}; columns: {', '.join(available)}"
        )
    if not wanted:
        raise DataError(f"no column chosen; columns: {', '.join(available)}")
    return list(dict.fromkeys(wanted))


def head(env: Env, rows: int = 5, run_id: str | None = None) -> tuple[RunReport, Any]:
    """The run (latest by default) and its first ``rows`` rows."""
    report = find_run(env, run_id)
    return report, read_table(env, report.run_id).head(rows)


def table_digest(table: Any) -> str:
    """A digest of a table's columns, dtypes and values: equal tables have equal digests."""
    pd = _pandas()
    digest = hashlib.sha256(
        json.dumps([list(map(str, table.columns)), list(map(str, table.dtypes))]).encode()
    )
    digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def export_columns(env: Env, columns: list[str] | None = None, run_id: str | None = None) -> ExportReport:
    """Write the chosen columns (all with None) of a run's table to ``<export_dir>/export.csv``."""
    report = find_run(env, run_id)
    table = read_table(env, report.run_id)
    chosen = (
        select_columns(list(map(str, table.columns)), columns, report.run_id)
        if columns is not None
        else [str(c) for c in table.columns]
    )
    path = ensure_private_dir(env.export_dir) / EXPORT_FILE
    write_atomic(path, table[chosen].to_csv(index=False).encode())
    return ExportReport(path=str(path), run_id=report.run_id, rows=len(table), columns=chosen)
