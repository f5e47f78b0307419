"""Pipelines: an app's saved snippets run as steps, in order (the PIPELINE page, ``keepwarm pipeline``).

``snippet_file`` saves a snippet next to its app with the ``[args]`` it was generated from;
``steps`` keeps ``<app>/pipeline.toml`` (add, remove, move a step) and says when a step is stale;
``runner`` runs the steps as child processes and keeps each one's log and outcome.
"""

from __future__ import annotations

from keepwarm.pipeline.runner import PipelineRun, StepOutcome, last_outcome, run_pipeline, step_log
from keepwarm.pipeline.snippet_file import (
    SavedSnippet,
    args_digest,
    read_snippet,
    save_snippet,
    snippet_file_name,
)
from keepwarm.pipeline.steps import (
    PIPELINE_FILE,
    Pipeline,
    Staleness,
    Step,
    add_step,
    load_pipeline,
    move_step,
    pipeline_path,
    remove_step,
    save_pipeline,
    stale,
)

__all__ = [
    "PIPELINE_FILE",
    "Pipeline",
    "PipelineRun",
    "SavedSnippet",
    "Staleness",
    "Step",
    "StepOutcome",
    "add_step",
    "args_digest",
    "last_outcome",
    "load_pipeline",
    "move_step",
    "pipeline_path",
    "read_snippet",
    "remove_step",
    "run_pipeline",
    "save_pipeline",
    "save_snippet",
    "snippet_file_name",
    "stale",
    "step_log",
]
