"""``<log_dir>/benchmark.json``: the latest timing of each mode, dated, ranked.

Every successful run records its timing there, as the reference system's RUN does, and a benchmark
records every mode it ran. Recording updates the entries of the modes it brings and keeps the others,
so a benchmark of some modes does not erase the rest; an entry measured on another work plan (other
args, another number of workers) is dropped instead, since ranking it beside the new ones would
compare different work, and the report says which and why. The file has the reference's shape, one
entry per mode: ``{"<mode>": {variant, nodes, node, mode, timing, seconds, order, delta}}``
(``variant`` is the mode's bits, ``order`` 1 the fastest, ``delta`` the seconds behind it), plus
``date`` (when the run finished), ``args`` (the plan's), ``run_id``, ``rows`` and ``digest`` (of the
output table: a benchmark's runs have one, a single run none).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm._sys.locks import locked_file
from keepwarm.env import Env

BENCHMARK_FILE = "benchmark.json"


class BenchmarkEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: int
    nodes: int
    node: str
    mode: str
    timing: str
    seconds: float
    order: int = 0
    delta: float = 0.0
    date: str | None = None  # when the run finished (ISO-8601 UTC); None in files of older keepwarms
    args: dict[str, Any] | None = None  # the args of the work plan it ran
    run_id: str
    rows: int
    digest: str | None


class BenchmarkReport(BaseModel):
    """``benchmark.json`` after a recording: its entries, the earlier ones ``kept`` beside them, the
    earlier ones ``dropped`` (mode -> why), and the modes a benchmark ``skipped`` (mode -> why)."""

    model_config = ConfigDict(extra="forbid")

    path: str
    entries: dict[str, BenchmarkEntry]
    skipped: dict[str, str] = {}
    kept: list[str] = []
    dropped: dict[str, str] = {}

    @property
    def ranked(self) -> list[BenchmarkEntry]:
        """The entries, fastest first."""
        return sorted(self.entries.values(), key=lambda entry: entry.order)

    @property
    def same_output(self) -> bool:
        """Every entry that has a digest of its output has the same one."""
        return len({e.digest for e in self.entries.values() if e.digest is not None}) <= 1


def timing(seconds: float) -> str:
    """``seconds`` for people: ``1 min 2.345 s``, or ``2.345 s`` under a minute."""
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.3f} s" if minutes else f"{rest:.3f} s"


def record_timings(env: Env, entries: list[BenchmarkEntry]) -> BenchmarkReport:
    """Put ``entries`` (runs of one work plan) into ``benchmark.json``: each replaces its mode's entry,
    the other modes' entries measured on the same plan are kept, the rest dropped; all re-ranked."""
    path = ensure_private_dir(env.log_dir) / BENCHMARK_FILE
    new = {entry.mode: entry for entry in entries}
    plan = {(entry.nodes, json.dumps(entry.args, sort_keys=True)) for entry in entries}
    kept: list[str] = []
    dropped: dict[str, str] = {}
    with locked_file(path.with_name(f".{path.name}.lock"), create=True):  # one recording at a time
        try:
            earlier = _read_entries(path)
        except FileNotFoundError:
            earlier = {}
        except (OSError, ValueError) as exc:
            earlier = {}
            dropped[BENCHMARK_FILE] = f"{path} could not be read ({_reason(exc)}); it was replaced"
        for name, entry in earlier.items():
            if name in new:
                continue
            if entry.args is not None and {(entry.nodes, json.dumps(entry.args, sort_keys=True))} == plan:
                kept.append(name)
                new[name] = entry
            elif entry.args is None:
                dropped[name] = "recorded without the args of its work plan (by an older keepwarm)"
            else:
                dropped[name] = (
                    f"measured on {entry.date} on another work plan ({entry.nodes} workers, "
                    f"args {json.dumps(entry.args, sort_keys=True)})"
                )
        ranked = _ranked(new)
        document = {entry.mode: entry.model_dump(mode="json") for entry in ranked}
        write_atomic(path, (json.dumps(document, indent=2) + "\n").encode())
    return BenchmarkReport(path=str(path), entries={e.mode: e for e in ranked}, kept=kept, dropped=dropped)


def saved_timings(env: Env) -> BenchmarkReport | None:
    """``benchmark.json`` as the last recording left it, ranked (None when there is none, or it
    cannot be read: the next recording replaces it)."""
    path = env.log_dir / BENCHMARK_FILE
    try:
        entries = _read_entries(path)
    except (OSError, ValueError):
        return None
    return BenchmarkReport(path=str(path), entries={e.mode: e for e in _ranked(entries)})


def _ranked(entries: dict[str, BenchmarkEntry]) -> list[BenchmarkEntry]:
    ordered = sorted(entries.values(), key=lambda entry: entry.seconds)
    fastest = ordered[0].seconds if ordered else 0.0
    return [
        entry.model_copy(update={"order": order, "delta": round(entry.seconds - fastest, 6)})
        for order, entry in enumerate(ordered, start=1)
    ]


def _read_entries(path: Path) -> dict[str, BenchmarkEntry]:
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError("not a JSON object of entries")
    return {name: BenchmarkEntry.model_validate(entry) for name, entry in document.items()}


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return f"an entry is not a benchmark entry: {exc.errors()[0]['msg']}"
    return str(exc)
