"""Run mode's work plan: built by the app's manager, saved next to the app's logs, edited, rendered.

``distribute`` calls the manager's ``build_distribution(workers)`` and saves the plan as
``<log_dir>/work_plan.json`` (schema ``keepwarm.workplan.v1``): per worker, its partitions with their
weights, plus ``partition_key``, ``weights_key`` and ``unit``, the ``[args]`` it was built from, the
partitions' names in natural order (``p2`` before ``p10``: the order of a run's output table, whatever
worker made each part), and the moves made since. ``move_partition`` reassigns a partition to
another worker and saves the plan again; ``run`` executes the saved plan. A plan whose heaviest
worker carries more than ``IMBALANCE_LIMIT`` times the mean load is flagged as unbalanced.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keepwarm._sys.atomic import write_atomic
from keepwarm._sys.dirs import ensure_private_dir
from keepwarm.app import App, Partition, WorkPlan, describe_args_error, load_app
from keepwarm.env import Env
from keepwarm.errors import AppError, PlanError
from keepwarm.queue.task import utc_now
from keepwarm.settings import describe_error

PLAN_FILE = "work_plan.json"
PLAN_SCHEMA = "keepwarm.workplan.v1"
IMBALANCE_LIMIT = 1.25


class Move(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partition: str
    from_worker: str
    to_worker: str
    at: str


class SavedPlan(BaseModel):
    """The work plan as saved and executed: the manager's plan plus where it came from."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str = Field(default=PLAN_SCHEMA, alias="schema")
    app: str
    created_at: str
    args: dict[str, Any]
    workers: dict[str, list[Partition]]
    partition_key: str
    weights_key: str
    unit: str
    order: list[str]
    moves: list[Move] = []

    @property
    def partition_count(self) -> int:
        """How many partitions the plan holds."""
        return sum(len(partitions) for partitions in self.workers.values())

    def loads(self) -> dict[str, float]:
        """Each worker's total weight."""
        return {worker: sum(p.weight for p in partitions) for worker, partitions in self.workers.items()}

    def imbalance(self) -> float:
        """The heaviest worker's load over the mean load: 1.0 is a perfect balance."""
        loads = list(self.loads().values())
        mean = sum(loads) / len(loads) if loads else 0.0
        return round(max(loads) / mean, 4) if mean > 0 else 1.0

    @property
    def balanced(self) -> bool:
        """Whether the imbalance is within ``IMBALANCE_LIMIT``."""
        return self.imbalance() <= IMBALANCE_LIMIT

    def index_of(self, partition: str) -> int:
        """The partition's place in the manager's order."""
        return self.order.index(partition)

    def worker_of(self, partition: str) -> str:
        """The plan worker that holds ``partition``; an unknown one is a ``PlanError``."""
        for worker, partitions in self.workers.items():
            if any(p.name == partition for p in partitions):
                return worker
        raise PlanError(f"no partition {partition!r} in the work plan; partitions: {', '.join(self.order)}")

    def jobs(self) -> list[tuple[str, int, Partition]]:
        """(worker, manager's index, partition) for every partition, worker by worker."""
        return [
            (worker, self.index_of(p.name), p)
            for worker, partitions in self.workers.items()
            for p in partitions
        ]

    def to_json_dict(self) -> dict[str, Any]:
        """The plan as saved, with each worker's load, the imbalance and whether it is balanced."""
        document = self.model_dump(mode="json", by_alias=True)
        document["loads"] = self.loads()
        document["imbalance"] = self.imbalance()
        document["balanced"] = self.balanced
        return document


def worker_names(count: int) -> list[str]:
    """The names of ``count`` plan workers: ``worker-0``, ``worker-1``, ..."""
    return [f"worker-{index}" for index in range(count)]


def plan_path(env: Env) -> Path:
    """Where the app's saved work plan lives."""
    return env.log_dir / PLAN_FILE


def run_args(app: App, overrides: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """``[args]`` with ``overrides`` on top, validated by the app's args model: (value, JSON dict)."""
    merged = {**app.env.settings.args, **(overrides or {})}
    if not overrides:
        value = app.settings_args()
    else:
        try:
            value = app.validate_args(merged)
        except ValidationError as exc:
            raise PlanError(
                f"{describe_args_error(exc)} (given on top of [args] of {app.env.settings_path})"
            ) from None
    document = value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else merged
    return value, json.loads(json.dumps(document, default=str))


def build_plan(env: Env, *, workers: int | None = None, args: dict[str, Any] | None = None) -> SavedPlan:
    """Call the manager's ``build_distribution`` for ``workers`` plan workers (default ``[cluster]
    slots``) and check what it returns. Imports the app in this process, and forgets it afterwards."""
    from keepwarm.runmode.appcode import borrowed_imports, describe_app_exception, use_app_code

    count = workers or env.settings.cluster.slots
    names = worker_names(count)
    # The manager's prints go to stderr: stdout belongs to the verb's result (``--json``).
    with borrowed_imports(env.app_dir), contextlib.redirect_stdout(sys.stderr):
        use_app_code(env.app_dir)
        app = load_app(env)
        manager_class = require_manager(app)
        args_value, args_json = run_args(app, args)
        where = f"{env.settings_path}: [app] manager = {env.settings.app.manager!r}"
        try:
            manager = _construct(manager_class, args_value)
            result = manager.build_distribution(list(names))
        except Exception as exc:
            raise AppError(
                f"{where}: build_distribution(workers) raised {describe_app_exception(exc, env.app_dir)}"
            ) from exc
    plan = _checked(result, names, where)
    return SavedPlan(
        app=env.app_target,
        created_at=utc_now(),
        args=args_json,
        workers={name: plan.workers.get(name, []) for name in names},
        partition_key=plan.partition_key,
        weights_key=plan.weights_key,
        unit=plan.unit,
        order=sorted((p.name for ps in plan.workers.values() for p in ps), key=natural_key),
    )


def natural_key(name: str) -> list[tuple[int, int | str]]:
    """Sorts ``p2`` before ``p10``: the order of a run's table is its partitions' names in this order."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]


def require_manager(app: App) -> type:
    """The app's manager class; an app without one is an ``AppError`` that says how to add it."""
    if app.manager_class is None:
        raise AppError(
            f"{app.env.settings_path}: [app] manager is not set; run mode needs a manager class with "
            'build_distribution(workers) -> keepwarm.WorkPlan: add manager = "<package>.manager:Manager" '
            "under [app] (keepwarm init NAME shows one)"
        )
    return app.manager_class


def _construct(cls: type, args: Any) -> Any:
    try:
        takes_args = "args" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        takes_args = False
    return cls(args=args) if takes_args else cls()


def _checked(result: Any, names: list[str], where: str) -> WorkPlan:
    if isinstance(result, dict):
        try:
            result = WorkPlan.model_validate(result)
        except ValidationError as exc:
            problems = "; ".join(describe_error(error) for error in exc.errors())
            raise AppError(
                f"{where}: build_distribution returned a dict that is not a work plan: {problems}"
            ) from None
    if not isinstance(result, WorkPlan):
        raise AppError(
            f"{where}: build_distribution returned {type(result).__name__}; expected a keepwarm.WorkPlan "
            "(per worker, a list of keepwarm.Partition)"
        )
    unknown = sorted(set(result.workers) - set(names))
    if unknown:
        raise AppError(
            f"{where}: build_distribution used workers {', '.join(unknown)} it was not given; "
            f"it must assign partitions to the workers it receives: {', '.join(names)}"
        )
    seen: set[str] = set()
    for partitions in result.workers.values():
        for partition in partitions:
            if partition.name in seen:
                raise AppError(f"{where}: two partitions are named {partition.name!r}; names must be unique")
            seen.add(partition.name)
            try:
                json.dumps(partition.data, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise AppError(
                    f"{where}: partition {partition.name!r} carries data that is not JSON ({exc}); "
                    "the plan is saved as JSON and sent to other processes"
                ) from None
    if not seen:
        raise AppError(f"{where}: build_distribution returned no partition; nothing would run")
    return result


def save_plan(env: Env, plan: SavedPlan) -> Path:
    """Save ``plan`` as the app's work plan; returns its path."""
    path = plan_path(env)
    ensure_private_dir(path.parent)
    write_atomic(path, (json.dumps(plan.to_json_dict(), indent=2) + "\n").encode())
    return path


def load_plan(env: Env) -> SavedPlan | None:
    """The saved plan, or None when there is none."""
    path = plan_path(env)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PlanError(
            f"{path}: cannot be read ({exc}); rebuild it: keepwarm distribute {env.app_target}"
        ) from None
    try:
        return plan_from_json(document)
    except ValidationError as exc:
        raise PlanError(
            f"{path}: not a work plan ({exc.errors()[0]['msg']}); "
            f"rebuild it: keepwarm distribute {env.app_target}"
        ) from None


def plan_from_json(document: Any) -> SavedPlan:
    """A saved plan from its JSON document (``loads``, ``imbalance`` and ``balanced`` are derived)."""
    if isinstance(document, dict):
        document = {k: v for k, v in document.items() if k not in ("loads", "imbalance", "balanced")}
    return SavedPlan.model_validate(document)


def distribute(env: Env, *, workers: int | None = None, args: dict[str, Any] | None = None) -> SavedPlan:
    """Build the work plan with the app's manager and save it; ``run`` executes the saved plan.
    ``contained.distribute_in_child`` does the same in a child process, the caller untouched."""
    plan = build_plan(env, workers=workers, args=args)
    save_plan(env, plan)
    return plan


@dataclass(frozen=True)
class MoveOutcome:
    """What ``move`` did: the plan after it, and whether the partition changed worker."""

    plan: SavedPlan
    partition: str
    from_worker: str
    to_worker: str

    @property
    def moved(self) -> bool:
        """Whether the partition changed worker."""
        return self.from_worker != self.to_worker

    @property
    def message(self) -> str:
        """What the move did, in a sentence."""
        if not self.moved:
            return f"{self.partition} is already on {self.to_worker}: nothing moved, the plan is unchanged"
        return (
            f"moved {self.partition} from {self.from_worker} to {self.to_worker}; "
            f"imbalance {self.plan.imbalance():.2f}"
        )


def move(env: Env, partition: str, to_worker: str) -> MoveOutcome:
    """Reassign ``partition`` to ``to_worker`` in the saved plan (built first if there is none) and
    save it; a partition already on ``to_worker`` stays, and the plan is not saved again."""
    plan = load_plan(env) or distribute(env)
    source = plan.worker_of(partition)
    if to_worker not in plan.workers:
        raise PlanError(f"no worker {to_worker!r} in the work plan; workers: {', '.join(plan.workers)}")
    if source != to_worker:
        moved = next(p for p in plan.workers[source] if p.name == partition)
        plan.workers[source] = [p for p in plan.workers[source] if p.name != partition]
        plan.workers[to_worker] = sorted(
            [*plan.workers[to_worker], moved], key=lambda p: plan.index_of(p.name)
        )
        plan.moves.append(Move(partition=partition, from_worker=source, to_worker=to_worker, at=utc_now()))
        save_plan(env, plan)
        plan = load_plan(env) or plan  # what the message says is what the file says
    return MoveOutcome(plan, partition, source, to_worker)


def move_partition(env: Env, partition: str, to_worker: str) -> SavedPlan:
    """``move``, returning the plan after it."""
    return move(env, partition, to_worker).plan


def render_tree(plan: SavedPlan) -> str:
    """The plan as a tree: workers with their load and share, partitions with weight and data."""
    total = sum(plan.loads().values())
    verdict = "balanced" if plan.balanced else f"UNBALANCED (over {IMBALANCE_LIMIT})"
    lines = [
        f"{plan.app}: {plan.partition_count} partitions over {len(plan.workers)} workers, "
        f"{_number(total)} {plan.unit}, imbalance {plan.imbalance():.2f} ({verdict})"
    ]
    workers = list(plan.workers.items())
    for w_index, (worker, partitions) in enumerate(workers):
        last_worker = w_index == len(workers) - 1
        load = sum(p.weight for p in partitions)
        share = f"{100 * load / total:.1f}%" if total else "-"
        lines.append(
            f"{'└──' if last_worker else '├──'} {worker}  {_number(load)} {plan.unit} ({share}), "
            f"{len(partitions)} partitions"
        )
        for p_index, partition in enumerate(partitions):
            branch = "    " if last_worker else "│   "
            twig = "└──" if p_index == len(partitions) - 1 else "├──"
            data = json.dumps(partition.data) if partition.data is not None else ""
            if len(data) > 60:
                data = data[:57] + "..."
            shown = f"  {plan.partition_key}={data}" if data else ""
            lines.append(
                f"{branch}{twig} {partition.name}  {plan.weights_key}={_number(partition.weight)}{shown}"
            )
    return "\n".join(lines)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"
