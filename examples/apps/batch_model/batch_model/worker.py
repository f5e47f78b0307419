"""A batching worker: ``work(item)`` scores one input, ``work_batch(items)`` all of them in one call.

keepwarm calls ``work_batch`` with up to ``[cluster] max_batch_size`` tasks gathered by a loop, and
``work`` one task at a time when ``max_batch_size = 1``. Both give the same answer for the same input.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from batch_model.model import Model, answer


class Args(BaseModel):
    """``[args]`` describe the model; a task's args give its input (``seed`` or ``x``)."""

    model_config = ConfigDict(extra="forbid")

    features: int = Field(default=512, ge=1, le=8192, description="[args]: an input's length")
    hidden: int = Field(default=1024, ge=1, le=16384, description="[args]: the hidden layer's width")
    classes: int = Field(default=16, ge=2, le=1024, description="[args]: scores per input")
    weights_seed: int = Field(default=42, description="[args]: the seed the weights are drawn from")
    call_overhead_ms: float = Field(
        default=1.0, ge=0, le=10_000, description="[args]: what one call costs, whatever its size"
    )
    seed: int | None = Field(default=None, ge=0, description="a task's input, derived from this seed")
    x: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None, description="a task's input: `features` values in [-1, 1] (wins over seed)"
    )


class Worker:
    def __init__(self, args: Args) -> None:
        self.args = args

    def start(self) -> None:
        a = self.args
        self.model = Model(a.features, a.hidden, a.classes, a.weights_seed, a.call_overhead_ms)

    def work(self, item: Any) -> dict[str, object]:
        """One input, one vector-matrix product."""
        x = self.model.input_of(item.args.seed, item.args.x)
        return answer(self.model.scores(x))

    def work_batch(self, items: list[Any]) -> list[object]:
        """Every input of the batch stacked, one matrix-matrix product; an input that cannot be read
        fails only its own task (its exception in its place), the others are scored."""
        results: list[object] = [None] * len(items)
        rows, positions = [], []
        for position, item in enumerate(items):
            try:
                rows.append(self.model.input_of(item.args.seed, item.args.x))
                positions.append(position)
            except ValueError as exc:
                results[position] = exc
        if rows:
            for position, scores in zip(positions, self.model.scores(np.stack(rows)), strict=True):
                results[position] = answer(scores)
        return results

    def stop(self) -> None:
        del self.model
