"""The ``keepwarm`` command line. Each verb calls one core function and renders its result.

Verbs live in modules by area (``service``, and later ones for run mode, fleets, the page and MCP) and are
imported only when invoked: ``keepwarm status`` loads neither Dask, Streamlit nor Rich, which keeps the
read-only verbs within a few hundred milliseconds of interpreter start.
"""

from __future__ import annotations

import gc
import importlib
import sys
from typing import Any

import click

from keepwarm.cli.common import UserError, fail

# A command's life is mostly imports, and the cyclic collector would scan their objects again and again:
# it stays off until the verb is known, and comes back on unless the verb is one of these short reads.
gc.disable()
QUICK_VERBS = frozenset(
    {"status", "health", "tasks", "snapshot", "submit", "cancel", "retry", "scale", "drain"}
)

# verb -> "module:function" under keepwarm.cli; the order is the order of `keepwarm --help` and docs/cli.md.
VERBS: dict[str, str] = {
    "init": "run:init",
    "install": "run:install",
    "distribute": "run:distribute",
    "run": "run:run",
    "data": "run:data",
    "export": "run:export",
    "start": "service:start",
    "status": "service:status",
    "health": "service:health",
    "stop": "service:stop",
    "submit": "tasks:submit",
    "result": "tasks:result",
    "tasks": "tasks:tasks",
    "cancel": "tasks:cancel",
    "retry": "tasks:retry",
    "scale": "service:scale",
    "drain": "service:drain",
    "restart": "service:restart",
    "snapshot": "service:snapshot",
    "logs": "service:logs",
    "demo": "demo:demo",
    "up": "fleet:up",
    "down": "fleet:down",
    "ps": "fleet:ps",
    "workflow": "fleet:workflow",
    "mcp": "mcp:mcp",
    "http": "http:http",
    "ui": "ui:ui",
    "pipeline": "pipeline:pipeline",
}


class LazyGroup(click.Group):
    """A group whose verbs are imported on first use (the pattern of click's documentation)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = VERBS.get(cmd_name)
        if target is None:
            return None
        if cmd_name not in QUICK_VERBS:
            gc.enable()
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(f"keepwarm.cli.{module_name}"), attribute)
        assert isinstance(command, click.Command), target
        return command


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from keepwarm import __version__

        click.echo(f"keepwarm {__version__}")
        ctx.exit(0)


@click.group(
    name="keepwarm",
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print keepwarm's version and exit.",
)
def cli() -> None:
    """Keep an application's workers warm: persistent loops fed through a file queue."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one clear message and exit 1, never a traceback.

    A verb asked for JSON (``--json``, or ``--format json``) also prints the error as its one JSON
    document, ``{"error": ..., "kind": ...}``, on stdout: usage errors included.
    """
    from keepwarm.errors import KeepwarmError

    args = sys.argv[1:] if argv is None else argv
    try:
        code: Any = cli.main(args=args, prog_name="keepwarm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message())
        sys.exit(0)
    except click.Abort:
        fail("aborted", "Abort", as_json=asks_for_json(args))
    except click.ClickException as exc:  # usage errors: bad option, missing argument, bad value
        ctx = getattr(exc, "ctx", None)
        hint = f"\nsee: {ctx.command_path} --help" if ctx is not None else ""
        kind = "UsageError" if isinstance(exc, click.UsageError) else type(exc).__name__
        fail(f"{exc.format_message()}{hint}", kind, as_json=asks_for_json(args))
    except (KeepwarmError, UserError) as exc:
        fail(str(exc), type(exc).__name__, as_json=asks_for_json(args))
    except KeyboardInterrupt:
        fail("interrupted", "KeyboardInterrupt", as_json=asks_for_json(args))
    finally:
        # The interpreter's last collection at exit takes ~80 ms over pydantic's objects; nothing
        # left then needs it.
        gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)


def asks_for_json(args: list[str]) -> bool:
    """Whether a command line asks for JSON output (``--json``, or ``--format json``).

    Read again leniently, the way click reads it, so that a line that failed (even to parse) is
    answered the way it asked. keepwarm's groups take flags only: their verb is their first word.
    """
    command: click.Command = cli
    ctx: click.Context | None = None
    rest = list(args)
    while isinstance(command, click.Group):
        words = [index for index, word in enumerate(rest) if not word.startswith("-")]
        if not words:
            return False
        ctx = click.Context(command, info_name=command.name, parent=ctx)
        verb = command.get_command(ctx, rest[words[0]])
        if verb is None:
            return False
        command, rest = verb, rest[words[0] + 1 :]
    try:
        parsed = command.make_context(
            command.name, rest, parent=ctx, resilient_parsing=True, ignore_unknown_options=True
        )
    except click.ClickException:
        return False
    return bool(parsed.params.get("as_json")) or parsed.params.get("output_format") == "json"
