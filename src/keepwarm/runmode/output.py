"""A partition's output, written in its run's folder: a table as Parquet (CSV without pyarrow), any
other JSON value as JSON, ``None`` as nothing; each file appears whole or not at all."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any


def write_output(value: Any, output_dir: Path, index: int) -> tuple[str | None, int | None, list[str]]:
    """Write a partition's output as ``part-<index>.parquet`` (or ``.csv``, ``.json``); returns the
    file's name, its row count and columns (None, None, [] when ``work()`` returned None)."""
    if value is None:
        return None, None, []
    frame = as_frame(value)
    stem = f"part-{index:05d}"
    if frame is None:
        name = f"{stem}.json"
        _publish(output_dir / name, lambda path: path.write_text(json.dumps(value), encoding="utf-8"))
        return name, None, []
    keep_index = not _plain_index(frame)
    if importlib.util.find_spec("pyarrow") is not None:
        name = f"{stem}.parquet"
        _publish(output_dir / name, lambda path: frame.to_parquet(path, index=keep_index))
    else:
        name = f"{stem}.csv"
        _publish(output_dir / name, lambda path: frame.to_csv(path, index=keep_index))
    return name, len(frame), [str(column) for column in frame.columns]


def as_frame(value: Any) -> Any:
    """A pandas DataFrame for a table-like value (DataFrame, polars/pyarrow table, list of row
    dicts, dict of columns); None for any other value."""
    module = type(value).__module__.partition(".")[0]
    if module == "pandas" and hasattr(value, "to_parquet"):
        return value
    if module in ("polars", "pyarrow") and hasattr(value, "to_pandas"):
        return value.to_pandas()
    rows = isinstance(value, list) and bool(value) and all(isinstance(row, dict) for row in value)
    columns = isinstance(value, dict) and bool(value) and all(isinstance(c, list) for c in value.values())
    if not (rows or columns):
        return None
    try:
        import pandas as pd  # type: ignore[import-untyped]
    except ImportError:
        raise RuntimeError(
            "work() returned a table, and writing it needs pandas: pip install 'keepwarm[data]'"
        ) from None
    return pd.DataFrame(value)


def _plain_index(frame: Any) -> bool:
    index = frame.index
    return type(index).__name__ == "RangeIndex" and index.name is None


def _publish(path: Path, write: Any) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
