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
    "submit": "service:submit",
    "result": "service:result",
    "tasks": "service:tasks",
    "cancel": "service:cancel",
    "retry": "service:retry",
    "scale": "service:scale",
    "drain": "service:drain",
    "restart": "service:restart",
    "snapshot": "service:snapshot",
    "logs": "service:logs",
    "demo": "service:demo",
    "up": "fleet:up",
    "down": "fleet:down",
    "ps": "fleet:ps",
    "workflow": "fleet:workflow",
    "mcp": "mcp:mcp",
    "ui": "ui:ui",
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
    """Entry point: user errors print one clear message and exit 1, never a traceback."""
    from keepwarm.errors import KeepwarmError

    try:
        code: Any = cli.main(args=argv, prog_name="keepwarm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message())
        sys.exit(0)
    except click.Abort:
        fail("aborted")
    except click.ClickException as exc:  # usage errors: bad option, missing argument, bad value
        ctx = getattr(exc, "ctx", None)
        hint = f"\nsee: {ctx.command_path} --help" if ctx is not None else ""
        fail(f"{exc.format_message()}{hint}")
    except (KeepwarmError, UserError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted")
    finally:
        # The interpreter's last collection at exit takes ~80 ms over pydantic's objects; nothing
        # left then needs it.
        gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)
