"""The app contract: loading an app's worker, manager and args model from ``app_settings.toml``.

A worker has ``work(item)`` or ``work_batch(items) -> list`` (or both), and optionally ``start()``
and ``stop()`` (a worker with nothing to open or close leaves them out), each plain or ``async def``,
and ``preload()``: run once in a template process that loops are forked from (``runtime/template.py``);
a manager has
``build_distribution(workers) -> WorkPlan``. Entry points are ``module:attribute`` strings resolved
against the app folder (and its ``src/`` when there is one).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keepwarm.env import Env
from keepwarm.errors import AppError, SettingsError
from keepwarm.settings import describe_error

WORKER_METHODS = ("preload", "start", "work", "work_batch", "stop")
OPTIONAL_METHODS = ("preload", "start", "stop")


class Partition(BaseModel):
    """One unit of a work plan: a name, a weight, and the data the worker needs for it."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    name: str
    weight: float = Field(default=1.0, ge=0)
    data: Any = None


class WorkPlan(BaseModel):
    """Run mode's distribution: per worker, a list of partitions with weights."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    workers: dict[str, list[Partition]]
    partition_key: str = "partition"
    weights_key: str = "weight"
    unit: str = "items"


@dataclass(frozen=True)
class App:
    """An app's loaded code: the worker class, the optional manager class and args model."""

    env: Env
    worker_class: type
    manager_class: type | None
    args_model: type[BaseModel] | None

    @property
    def batching(self) -> bool:
        """Whether the worker defines ``work_batch(items)`` (dynamic batching in service mode)."""
        return callable(getattr(self.worker_class, "work_batch", None))

    @property
    def async_methods(self) -> set[str]:
        return {
            name
            for name in WORKER_METHODS
            if inspect.iscoroutinefunction(getattr(self.worker_class, name, None))
        }

    def validate_args(self, args: dict[str, Any]) -> Any:
        """The task's args as the app's ``args_model`` instance (or the dict when there is none)."""
        if self.args_model is None:
            return args
        return self.args_model.model_validate(args)

    def settings_args(self) -> Any:
        """``[args]`` of ``app_settings.toml``, validated; errors name the file and key."""
        try:
            return self.validate_args(self.env.settings.args)
        except ValidationError as exc:
            problems = "; ".join(describe_error({**e, "loc": ("args", *e["loc"])}) for e in exc.errors())
            raise SettingsError(f"{self.env.settings_path}: {problems}") from None

    def new_worker(self, args: dict[str, Any] | None = None) -> Any:
        """A worker instance; its constructor gets ``args`` (default ``[args]``), validated, if it
        takes ``args``."""
        validated = self.settings_args if args is None else lambda: self.validate_args(args)
        try:
            return _construct(self.worker_class, validated)
        except Exception as exc:
            raise AppError(f"app {self.env.app_target}: creating the worker failed: {exc!r}") from exc


def worker_method(worker: Any, name: str) -> Callable[..., Any]:
    """The worker's ``start``, ``work`` or ``stop``; a ``start`` or ``stop`` it leaves out does nothing,
    and the ``work`` of a worker that has only ``work_batch`` is a batch of one."""
    method: Callable[..., Any] | None = getattr(worker, name, None)
    if method is None and name == "work" and callable(getattr(worker, "work_batch", None)):
        return _one_of_batch(worker.work_batch)
    return method or _nothing


def _one_of_batch(work_batch: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(work_batch):

        async def work_async(item: Any) -> Any:
            return only_result(await work_batch([item]))

        return work_async
    return lambda item: only_result(work_batch([item]))


def only_result(results: Any) -> Any:
    """The one result of a batch of one, raised when it is an exception object."""
    if not isinstance(results, list) or len(results) != 1:
        raise AppError(f"work_batch() returned {describe_results(results)} for 1 item: expected a list of 1")
    if isinstance(results[0], BaseException):
        raise results[0]
    return results[0]


def describe_results(results: Any) -> str:
    """What ``work_batch`` returned, for an error: a list of how many, or which type."""
    return f"a list of {len(results)}" if isinstance(results, list) else f"a {type(results).__name__}"


def _nothing() -> None:
    """A ``start()`` or ``stop()`` the worker leaves out."""


def _construct(cls: type, args: Callable[[], Any]) -> Any:
    try:
        takes_args = "args" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        takes_args = False
    return cls(args=args()) if takes_args else cls()


def load_app(env: Env) -> App:
    """Import the app's entry points; errors name the settings file, the key and what is expected."""
    section = env.settings.app
    _add_to_path(env.app_dir)
    worker_class = _resolve(env, "worker", section.worker)
    if not any(callable(getattr(worker_class, name, None)) for name in ("work", "work_batch")):
        raise AppError(
            f"{env.settings_path}: [app] worker = {section.worker!r} has no work method; "
            "a worker defines work(item) or work_batch(items), and optionally start() and stop()"
        )
    for name in OPTIONAL_METHODS:
        if not callable(getattr(worker_class, name, _nothing)):
            raise AppError(
                f"{env.settings_path}: [app] worker = {section.worker!r}: {name} is not a method; "
                f"define {name}(self), or leave it out"
            )
    manager_class = _resolve(env, "manager", section.manager) if section.manager else None
    if manager_class is not None and not callable(getattr(manager_class, "build_distribution", None)):
        raise AppError(
            f"{env.settings_path}: [app] manager = {section.manager!r} has no "
            "build_distribution(workers) method"
        )
    app = App(env, worker_class, manager_class, load_args_model(env))
    app.settings_args()
    return app


def preload_enabled(env: Env) -> bool:
    """``[cluster] preload``, or when unset, whether the worker class defines ``preload``."""
    wanted = env.settings.cluster.preload
    return defines_preload(env) if wanted is None else wanted


def defines_preload(env: Env) -> bool:
    """Whether the worker class defines ``preload`` in its own body, read from its source without
    importing it (the supervisor never imports app code); an inherited one needs ``preload = true``."""
    module_name, _, attribute = env.settings.app.worker.partition(":")
    relative = Path(*module_name.split("."))
    for folder in (env.app_dir / "src", env.app_dir):
        for path in (folder / relative.with_suffix(".py"), folder / relative / "__init__.py"):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (OSError, SyntaxError, ValueError):
                continue
            return any(
                isinstance(node, ast.ClassDef)
                and node.name == attribute
                and any(
                    isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == "preload"
                    for item in node.body
                )
                for node in tree.body
            )
    return False


SOURCE_SUFFIXES = (".py", ".toml")


def source_stamp(app_dir: Path, share_root: Path | None = None) -> tuple[int, float]:
    """How many ``.py`` and ``.toml`` files the app folder holds and their latest mtime (hidden
    folders, ``__pycache__`` and a share inside the app folder left out): a change of the app's code
    or settings changes it."""
    count, latest = 0, 0.0
    for folder, names, files in os.walk(app_dir):
        names[:] = [
            name
            for name in names
            if not name.startswith(".") and name != "__pycache__" and Path(folder, name) != share_root
        ]
        for name in files:
            if name.endswith(SOURCE_SUFFIXES):
                try:
                    latest = max(latest, os.stat(os.path.join(folder, name)).st_mtime)
                except OSError:
                    continue
                count += 1
    return count, latest


def load_args_model(env: Env) -> type[BaseModel] | None:
    """Only the app's ``args_model`` (None when it declares none), for checking args at submit."""
    spec = env.settings.app.args_model
    if spec is None:
        return None
    _add_to_path(env.app_dir)
    model = _resolve(env, "args_model", spec)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise AppError(f"{env.settings_path}: [app] args_model = {spec!r} is not a pydantic model")
    return model


def describe_args_error(exc: ValidationError) -> str:
    return "invalid args: " + "; ".join(describe_error(e) for e in exc.errors())


def _add_to_path(app_dir: Path) -> None:
    for folder in (app_dir / "src", app_dir):
        if folder.is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def _resolve(env: Env, key: str, spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    where = f"{env.settings_path}: [app] {key} = {spec!r}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppError(
                f"{where}: module {module_name!r} not found in {env.app_dir}; "
                "expected 'package.module:Name' relative to the app folder"
            ) from None
        raise AppError(f"{where}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise AppError(f"{where}: importing {module_name!r} failed: {exc!r}") from exc
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise AppError(f"{where}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target
