"""The app's args, apart from the worker: submitting a task imports this module, never numpy."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Args(BaseModel):
    """``[args]`` size the table; a task's args name a row of it."""

    model_config = ConfigDict(extra="forbid")

    array_mb: float = Field(default=500, gt=0, le=65536, description="[args]: the table's size in MB")
    seed: int = Field(default=0, ge=0, description="[args]: the seed the table is drawn from")
    row: int = Field(default=0, ge=0, description="a task's row of the table (wraps around)")
