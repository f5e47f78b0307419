"""The pipeline file, ``<app>/pipeline.toml``: the app's steps in order, each a snippet file of the
app folder with the ``[args]`` it was generated from; and whether a step has gone stale.

::

    [[steps]]
    file = "AGI_install.py"
    source = "orchestrate"          # saved from the page; "file": a file added as it was
    args_digest = "3f0c9a1b2d4e5f60"
    args = { x = 27, items = 2000, partitions = 8 }
    timeout_sec = 600                # optional: killed past 10 minutes (no limit when left out)

Steps are numbered from 1, in the file's order. Every change is written in one step (temp file and
rename): a reader never sees half a pipeline. Each change is one read-modify-write under an ``flock``
of the file (``_sys.locks``): two changes made at the same moment both land, one after the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.locks import locked_file
from keepwarm.env import Env
from keepwarm.errors import PipelineFileError, SettingsError, SnippetFileError, StepNotFound
from keepwarm.pipeline.snippet_file import SavedSnippet, args_digest, read_snippet, save_snippet
from keepwarm.settings import describe_error, load_settings

PIPELINE_FILE = "pipeline.toml"
HEADER = (
    "# keepwarm pipeline: its steps run in this order, each as `python <file>` in this folder.\n"
    "# Edit it here, on the PIPELINE page, or with `keepwarm pipeline add/remove`.\n"
)


class Step(BaseModel):
    """One step: a snippet file of the app folder and the ``[args]`` it was generated from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str = Field(description="the snippet file, relative to the app folder")
    source: Literal["orchestrate", "file"] = Field(
        "file", description="orchestrate: saved from the page; file: a file added as it was"
    )
    args_digest: str = Field("", description="the digest of args")
    args: dict[str, Any] = Field(default_factory=dict, description="[args] when the step was added")
    timeout_sec: float | None = Field(
        None, gt=0, description="seconds the step may run before it is killed (none: no limit)"
    )


class Pipeline(BaseModel):
    """The steps of one app's pipeline, in order."""

    model_config = ConfigDict(extra="forbid")

    steps: list[Step] = Field(default_factory=list)


@dataclass(frozen=True)
class Staleness:
    """Whether a step's ``[args]`` still match the app's; ``changed``: key -> (then, now)."""

    changed: dict[str, tuple[Any, Any]]

    @property
    def stale(self) -> bool:
        return bool(self.changed)

    def describe(self) -> str:
        """``items 2000 → 500, seed (unset) → 3``: what changed since the step was generated."""

        def shown(value: Any) -> str:
            return "(unset)" if value is _UNSET else repr(value)

        return ", ".join(f"{key} {shown(then)} → {shown(now)}" for key, (then, now) in self.changed.items())


_UNSET: Any = type("Unset", (), {"__repr__": lambda self: "(unset)"})()


def pipeline_path(env: Env) -> Path:
    return env.app_dir / PIPELINE_FILE


def load_pipeline(env: Env) -> Pipeline:
    """The app's pipeline (no steps when it has no ``pipeline.toml`` yet)."""
    path = pipeline_path(env)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Pipeline()
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineFileError(f"{path} cannot be read: {exc}") from None
    try:
        return Pipeline.model_validate(tomlkit.parse(text).unwrap())
    except tomlkit.exceptions.ParseError as exc:
        raise PipelineFileError(f"{path} is not valid TOML: {exc}; fix it or remove it") from None
    except ValidationError as exc:
        raise PipelineFileError(f"{path}: {describe_error(exc.errors()[0], Pipeline)}; fix it") from None


def save_pipeline(env: Env, pipeline: Pipeline) -> Path:
    """Write ``pipeline.toml`` in one step."""
    document = tomlkit.document()
    steps = tomlkit.aot()
    for step in pipeline.steps:
        table = tomlkit.table()
        table.update(step.model_dump(mode="json", exclude_none=True))
        table["args"] = tomlkit.inline_table()
        table["args"].update(step.args)
        steps.append(table)
    document["steps"] = steps
    path = pipeline_path(env)
    try:
        write_atomic(path, (HEADER + "\n" + tomlkit.dumps(document)).encode())
    except OSError as exc:
        raise PipelineFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def current_args(env: Env) -> dict[str, Any]:
    """The ``[args]`` the app's file says now (read again: the page may hold an older copy)."""
    try:
        return dict(load_settings(env.settings_path).args)
    except SettingsError as exc:
        raise PipelineFileError(f"cannot read the app's [args]: {exc}") from None


def relative_file(env: Env, file: str | Path) -> str:
    """``file`` (relative to the app folder, or absolute inside it) as the pipeline names it."""
    app_dir = env.app_dir.resolve()
    path = Path(file).expanduser()
    path = (path if path.is_absolute() else app_dir / path).resolve()
    if not path.is_relative_to(app_dir):
        raise SnippetFileError(
            f"{file} is outside the app folder {app_dir}: copy it there, then add it as a step"
        )
    if not path.is_file():
        raise SnippetFileError(f"snippet file {path} does not exist: save it from ORCHESTRATE, or write it")
    return path.relative_to(app_dir).as_posix()


def add_step(env: Env, file: str | Path, *, source: Literal["orchestrate", "file"] = "file") -> Pipeline:
    """Append the snippet file ``file`` as the last step. The ``[args]`` it was generated from are
    those its header records, else the app's ``[args]`` now."""
    name = relative_file(env, file)
    recorded = read_snippet(env.app_dir / name).args
    args = recorded if recorded is not None else current_args(env)
    step = Step(file=name, source=source, args_digest=args_digest(args), args=args)

    def appended(steps: list[Step]) -> list[Step]:
        files = [existing.file for existing in steps]
        if name in files:
            raise SnippetFileError(
                f"{name} is already step {files.index(name) + 1} of {env.app_target}'s pipeline"
            )
        return [*steps, step]

    return _changed(env, appended)


def save_as_step(
    env: Env, name: str, code: str, *, args: dict[str, Any], title: str
) -> tuple[SavedSnippet, int]:
    """Save a snippet from the page as ``<app>/<name>`` and make it a step: the last one, or, when the
    file is a step already, the same step with its ``[args]`` renewed. The file, and its step number."""
    saved: list[SavedSnippet] = []
    step = Step(file=name, source="orchestrate", args_digest=args_digest(args), args=args)

    def renewed(steps: list[Step]) -> list[Step]:
        # called once the pipeline was read: a broken pipeline.toml refuses before the file is written
        saved.append(save_snippet(env.app_dir, name, code, args=args, title=title))
        files = [existing.file for existing in steps]
        if name not in files:
            return [*steps, step]
        index = files.index(name)  # the same step, its [args] renewed (its timeout kept)
        renewed = steps[index].model_copy(update=step.model_dump(exclude={"timeout_sec"}))
        return [*steps[:index], renewed, *steps[index + 1 :]]

    updated = _changed(env, renewed)
    return saved[0], [existing.file for existing in updated.steps].index(name) + 1


def step_number(pipeline: Pipeline, env: Env, number: int) -> int:
    """``number`` checked against the pipeline (1 is the first step); its index."""
    count = len(pipeline.steps)
    if not 1 <= number <= count:
        have = f"steps 1 to {count}" if count else "no steps yet"
        raise StepNotFound(f"{env.app_target}'s pipeline has no step {number}: it has {have}")
    return number - 1


def remove_step(env: Env, number: int) -> Pipeline:
    """Remove step ``number`` (its file stays in the app folder)."""

    def removed(steps: list[Step]) -> list[Step]:
        index = step_number(Pipeline(steps=steps), env, number)
        return steps[:index] + steps[index + 1 :]

    return _changed(env, removed, create=False)


def move_step(env: Env, number: int, offset: int) -> Pipeline:
    """Move step ``number`` up (``offset < 0``) or down, within the first and last places."""

    def moved(steps: list[Step]) -> list[Step]:
        index = step_number(Pipeline(steps=steps), env, number)
        target = min(max(index + offset, 0), len(steps) - 1)
        steps.insert(target, steps.pop(index))
        return steps

    return _changed(env, moved, create=False)


def _changed(env: Env, change: Callable[[list[Step]], list[Step]], *, create: bool = True) -> Pipeline:
    """One locked read-modify-write of ``pipeline.toml``: the file is read, ``change`` makes the new
    steps from its steps (or refuses, raising), and the result is written, while the file is locked,
    so that a change made at the same moment by the page, the CLI or a script is never lost.

    ``create``: a change that needs no file to refuse (remove, move) does not make an empty one.
    """
    path = pipeline_path(env)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked_file(path, create=create))
        except FileNotFoundError:
            pass  # no pipeline yet (and not to be made): no steps, the change refuses
        except OSError as exc:
            raise PipelineFileError(f"cannot lock {path}: {exc.strerror or exc}") from None
        updated = Pipeline(steps=change(list(load_pipeline(env).steps)))
        save_pipeline(env, updated)
    return updated


def generated_from(env: Env, step: Step) -> dict[str, Any]:
    """The ``[args]`` a step was generated from: its file's header when it has one (regenerating the
    file renews it), else what the pipeline recorded when the step was added."""
    try:
        recorded = read_snippet(env.app_dir / step.file).args
    except SnippetFileError:
        recorded = None
    return step.args if recorded is None else recorded


def stale(env: Env, step: Step, args: dict[str, Any] | None = None) -> Staleness:
    """Which ``[args]`` keys differ between what ``step`` was generated from and the app's file now
    (``args``: the file's ``[args]``, when the caller read them already)."""
    then = generated_from(env, step)
    now = current_args(env) if args is None else args
    keys = sorted(set(then) | set(now))
    return Staleness(
        {
            key: (then.get(key, _UNSET), now.get(key, _UNSET))
            for key in keys
            if then.get(key, _UNSET) != now.get(key, _UNSET)
        }
    )
