"""The app's arguments: [args] in app_settings.toml and each task's args."""

from pydantic import BaseModel, ConfigDict, Field


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: int = Field(default=27, ge=1, le=10**15, description="the number a task studies")
    items: int = Field(default=2000, ge=1, description="run mode: numbers to process")
    partitions: int = Field(default=8, ge=1, description="run mode: partitions of those numbers")
