"""The ``ui`` verb: serve the ORCHESTRATE web page."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import click

from keepwarm.cli.common import UserError, apps_path_option, say


def _announce(url: str) -> None:
    click.echo(url)
    sys.stdout.flush()
    say(f"ORCHESTRATE is served at {url} (127.0.0.1 only); Ctrl-C stops it")


@click.command()
@apps_path_option
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Port on 127.0.0.1 to serve on [default: a free one]."
)
def ui(apps_path: Path | None, port: int | None) -> None:
    """Serve the ORCHESTRATE web page on 127.0.0.1 and print its URL once it answers.

    The page shows the apps under --apps-path: their settings, install, distribution, runs, service
    mode with live health, and data; each action shows the equivalent Python and CLI command.
    """
    if importlib.util.find_spec("streamlit") is None:
        raise UserError("the web page needs Streamlit: pip install 'keepwarm[ui]'")
    if apps_path is not None and not apps_path.is_dir():
        raise UserError(f"--apps-path {apps_path}: not a folder")
    from keepwarm.ui.server import serve

    sys.exit(serve(apps_path, port, announce=_announce))
