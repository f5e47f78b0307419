"""The "model": two integer-valued layers in numpy, scoring one input or a stacked batch of them.

Inputs are quantized to integers in [-127, 127] (as an int8 model's are) and the weights are small
integers, so every product and sum is an integer far below 2**53: float64 computes it exactly, in any
order. That is why one input scored alone (a vector-matrix product) and the same input scored in a
batch (a matrix-matrix product, summed in another order by BLAS) give the same answer, bit for bit.
Within the limits of ``Args`` the largest sum is 127 * 8 * 8192 * 8 * 16384, about 1.1e12.

Each call also costs ``call_overhead_ms`` whatever its size: a stand-in for what a real model pays
per call (a GPU kernel launch and the wait for its result, a framework's dispatch). It is spent
waiting, as a CPU waits on its device, so it takes no CPU from the loops and the client measured
with it. That fixed cost, paid once per batch rather than once per input, is what batching saves.
"""

from __future__ import annotations

import time

import numpy as np

INPUT_LEVELS = 127  # an input value in [-1, 1] becomes an integer in [-127, 127]
WEIGHT_LEVELS = 8  # weights are integers in [-8, 8]
INPUT_TABLE_ROWS = 4096  # distinct inputs a seed can pick


class Model:
    """Weights drawn from ``weights_seed``; ``scores`` of a vector or of a matrix of stacked inputs."""

    def __init__(
        self, features: int, hidden: int, classes: int, weights_seed: int, call_overhead_ms: float
    ) -> None:
        rng = np.random.default_rng(weights_seed)
        self.features = features
        self.w1 = rng.integers(-WEIGHT_LEVELS, WEIGHT_LEVELS + 1, (features, hidden)).astype(np.float64)
        self.w2 = rng.integers(-WEIGHT_LEVELS, WEIGHT_LEVELS + 1, (hidden, classes)).astype(np.float64)
        self.table = rng.integers(-INPUT_LEVELS, INPUT_LEVELS + 1, (INPUT_TABLE_ROWS, features))
        self.overhead_sec = call_overhead_ms / 1000

    def input_of(self, seed: int | None, x: list[float] | None) -> np.ndarray:
        """One input vector, quantized: from ``x`` (``features`` values in [-1, 1]) or from ``seed``."""
        if x is not None:
            if len(x) != self.features:
                raise ValueError(f"x has {len(x)} values; this model takes {self.features} ([args] features)")
            return np.rint(np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0) * INPUT_LEVELS)
        if seed is None:
            raise ValueError(f'no input: give args {{"seed": N}} or {{"x": [{self.features} floats]}}')
        return self.table[seed % INPUT_TABLE_ROWS].astype(np.float64)

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """The class scores of one input (a vector) or of a batch (a matrix, one input a row)."""
        if self.overhead_sec:
            time.sleep(self.overhead_sec)
        hidden = np.maximum(inputs @ self.w1, 0.0)
        return hidden @ self.w2


def answer(scores: np.ndarray) -> dict[str, object]:
    """One input's answer as JSON: its label (the highest score) and every score, as integers."""
    values = scores.astype(np.int64).tolist()
    return {"label": int(np.argmax(scores)), "scores": values}
