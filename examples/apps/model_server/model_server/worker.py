"""A "model" that takes load_seconds to load and then scores inputs in microseconds."""

from __future__ import annotations

import random
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")

    load_seconds: float = Field(default=2.0, ge=0)
    features: int = Field(default=64, ge=1)
    inputs: list[float] = Field(default_factory=list, description="a task's input vector")


class Worker:
    def __init__(self, args: Args) -> None:
        self.settings = args

    def start(self) -> None:
        deadline = time.monotonic() + self.settings.load_seconds
        rng = random.Random(42)
        self.weights = [rng.uniform(-1, 1) for _ in range(self.settings.features)]
        while time.monotonic() < deadline:  # stands for reading and building a large model
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def work(self, item: Any) -> dict[str, Any]:
        inputs = item.args.inputs
        score = sum(w * x for w, x in zip(self.weights, inputs, strict=False))
        return {"score": score, "features_used": min(len(inputs), len(self.weights))}

    def stop(self) -> None:
        self.weights = []
