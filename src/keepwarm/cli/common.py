"""What every verb shares: the common options, output helpers and the one way to fail."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from keepwarm.api import Service

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A bad argument found by a verb itself (not by the parser)."""


def fail(message: str, kind: str, *, as_json: bool = False) -> NoReturn:
    """The one way a verb fails: ``error: message`` on stderr and exit 1; with ``as_json``, stdout also
    gets the one JSON document ``{"error": message, "kind": kind}`` (kind: the exception's class)."""
    if as_json:
        emit_json({"error": message, "kind": kind})
    click.echo(click.style("error:", fg="red", bold=True) + f" {message}", err=True)
    sys.exit(1)


def app_argument(function: F) -> F:
    return click.argument("app", metavar="APP", help="The app: a folder under --apps-path, or a path to it.")(
        function
    )


def apps_path_option(function: F) -> F:
    return click.option(
        "--apps-path",
        type=click.Path(path_type=Path),
        envvar="KEEPWARM_APPS_PATH",
        help="Folder holding the apps [default: $KEEPWARM_APPS_PATH, else .].",
    )(function)


def json_option(function: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document on stdout, nothing else."
    )(function)


def namespace_option(function: F) -> F:
    return click.option(
        "--namespace",
        help="The namespace [default: $KEEPWARM_NAMESPACE, else [cluster] namespace, else your login name].",
    )(function)


def app_verb(function: F) -> F:
    """APP, --apps-path and --json: the parameters of every verb that works on one app."""
    return app_argument(apps_path_option(json_option(function)))


def service_verb(function: F) -> F:
    """APP, --apps-path, --namespace and --json: the parameters of every verb on one app's service."""
    return app_verb(namespace_option(function))


def finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A callback for float options: FloatRange(min=0) lets nan, inf and 1e400 through."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"expected a finite number, got {value}")
    return value


def timeout_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--timeout", type=click.FloatRange(min=0), default=None, callback=finite, help=help_text
    )


def number_option(
    *names: str, type: click.ParamType[Any, Any], default: float, help: str
) -> Callable[[F], F]:
    """A numeric option whose default ``--help`` shows (``[default: 40]``)."""
    return click.option(*names, type=type, default=default, show_default=True, help=help)


def service_of(app_name: str, apps_path: Path | None, namespace: str | None) -> Service:
    from keepwarm.api import Service
    from keepwarm.env import Env

    return Service(Env(app_name, apps_path, namespace=namespace))


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def say(message: str, **style: Any) -> None:
    """A message for the operator, on stderr (stdout stays for results)."""
    click.echo(click.style(message, **style) if style else message, err=True)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    colours: Sequence[str | None] | None = None,
) -> None:
    """Print aligned columns on stdout, each row in its colour on a terminal (plain text in a pipe).

    Hand-rolled rather than Rich: Rich's import alone costs ~70 ms, a quarter of `keepwarm status`.
    """
    text_rows = [[cell(value) for value in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in text_rows)]) for i, c in enumerate(columns)]
    if title:
        click.echo(click.style(title, bold=True))
    click.echo(click.style("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), bold=True))
    for index, row in enumerate(text_rows):
        line = "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        colour = colours[index] if colours else None
        click.echo(click.style(line, fg=colour) if colour else line)


def read_text(file: Path) -> str:
    try:
        return sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: cannot be read: {exc}") from None


def json_object(text: str, where: str) -> dict[str, Any]:
    from keepwarm.queue.task import parse_json_object

    try:
        return parse_json_object(text, where)
    except ValueError as exc:
        raise UserError(str(exc)) from None
