"""A worker in two phases: ``preload()`` loads what every loop shares, ``start()`` what each owns.

``preload()`` imports the heavy modules and builds a large read-only table. With ``[cluster] preload``
on it runs once, in the template process, and each loop is forked from the template after it: the
table's pages are shared by every loop (copy-on-write, never written, so never copied). ``start()``
runs in each loop and holds only what must not cross a fork; here, the loop's own random generator.
With preload off (or on a backend that spawns), ``start()`` calls ``preload()`` itself: the same app,
loaded cold in every loop.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from warm_model.args import Args

ROW_LENGTH = 1024  # floats in a row of the table: 8 KiB
SIZE_VARIABLE = "WARM_MODEL_MB"


def table_mb(args: Args) -> float:
    """The table's size: ``WARM_MODEL_MB`` when set, else ``[args] array_mb``."""
    return float(os.environ.get(SIZE_VARIABLE) or args.array_mb)


class Worker:
    def __init__(self, args: Args) -> None:
        self.args = args
        self.table: Any = None  # a read-only numpy array of rows, built by preload()
        self.preloaded_by: int | None = None  # the pid of the process that ran preload()
        self.preload_sec: float | None = None

    def preload(self) -> None:
        """Import numpy and pandas and build the table: slow, read-only, shareable across a fork."""
        began = time.perf_counter()
        import numpy as np
        import pandas  # noqa: F401  (a heavy import, as a real model's framework is)

        rows = max(1, round(table_mb(self.args) * 2**20 / (8 * ROW_LENGTH)))
        table = np.random.default_rng(self.args.seed).standard_normal((rows, ROW_LENGTH))
        table.setflags(write=False)  # a write would copy the page it touches into this loop
        self.table = table
        self.preloaded_by = os.getpid()
        self.preload_sec = time.perf_counter() - began

    def start(self) -> None:
        """Per loop: nothing that crosses a fork. A loop gets its own random generator (a forked
        generator would repeat the template's draws in every loop)."""
        if self.table is None:  # spawned: no template ran preload() for this loop
            self.preload()
        self.rng = random.Random()  # seeded from os.urandom, here, in this loop

    def work(self, item: Any) -> dict[str, Any]:
        """A row of the table: its sum and first value (the same in every process for one seed),
        and who built the table: a forked loop answers with the template's pid, not its own."""
        row = self.table[item.args.row % len(self.table)]
        return {
            "row": item.args.row,
            "sum": float(row.sum()),
            "first": float(row[0]),
            "rows": len(self.table),
            "pid": os.getpid(),
            "preloaded_by": self.preloaded_by,
            "preload_sec": self.preload_sec,
        }

    def stop(self) -> None:
        self.table = None
