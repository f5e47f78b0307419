"""keepwarm's own child processes (``python -m keepwarm.<module>``): how a parent builds a child's
command line, how the child reads it, and the one line protocol for what a child reports back.

A child's command line is ``[python, "-m", module, *env.child_args(), *options]``: ``--app``,
``--apps-path``, ``--share-dir`` and ``--namespace`` make the child resolve the parent's app, share
and namespace (``Env.of_child`` builds that Env from the parsed options).

A report is one JSON object on a line of its own, ``{"keepwarm": "<kind>", ...fields}``, written with
``report`` and read with ``parse_report`` (one line) or ``reports_in`` / ``last_report`` (a child's
whole output). Other lines (what an app or a library prints) are never taken for a report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

REPORT_KEY = "keepwarm"


class ChildEnv(Protocol):
    """What a child's command line needs of an Env (``keepwarm.env.Env``)."""

    def child_args(self) -> list[str]:
        """The options that make a child resolve the same app, share and namespace."""
        ...


def child_command(
    module: str,
    *options: str,
    env: ChildEnv | None = None,
    python: str | os.PathLike[str] | None = None,
) -> list[str]:
    """``[python, "-m", module, *env.child_args(), *options]``; ``python`` defaults to this interpreter."""
    return [str(python or sys.executable), "-m", module, *(env.child_args() if env else []), *options]


def flag(name: str, value: object | None) -> list[str]:
    """``[name, str(value)]`` when a value is given, else nothing: an optional option of a command line."""
    return [] if value is None else [name, str(value)]


def child_parser(module: str, description: str | None = None, *, env: bool = True) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``; with ``env``, it takes the options of ``child_command``'s
    ``env`` (``--app`` required; ``--apps-path``, ``--share-dir``, ``--namespace``)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    if env:
        parser.add_argument("--app", required=True)
        parser.add_argument("--apps-path")
        parser.add_argument("--share-dir")
        parser.add_argument("--namespace")
    return parser


@dataclass(frozen=True)
class ChildReport:
    """One line a child reported: its kind and the fields that came with it."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


def report_line(kind: str, **fields: Any) -> str:
    """The line (without its newline) that reports ``kind`` with ``fields``."""
    return json.dumps({REPORT_KEY: kind, **fields}, separators=(",", ":"))


def report(kind: str, *, stream: IO[str] | None = None, **fields: Any) -> None:
    """Write one report to ``stream`` (default stdout) and flush it, so the parent sees it at once."""
    out = sys.stdout if stream is None else stream
    out.write(report_line(kind, **fields) + "\n")
    out.flush()


def keep_stdout_for_reports() -> IO[str]:
    """A child's stdout, kept for its reports, while file descriptor 1 goes to stderr from now on:
    what the app (or a library) writes to fd 1 lands among its other output, never among the reports."""
    reports = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return reports


def parse_report(line: str) -> ChildReport | None:
    """The report on ``line``, or None when the line is not one."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get(REPORT_KEY), str):
        return None
    kind = document.pop(REPORT_KEY)
    return ChildReport(kind, document)


def reports_in(output: str) -> list[ChildReport]:
    """Every report in a child's output, in order."""
    return [found for line in output.splitlines() if (found := parse_report(line)) is not None]


def last_report(output: str, *kinds: str) -> ChildReport | None:
    """The last report in ``output`` (of one of ``kinds``, when given), or None."""
    for found in reversed(reports_in(output)):
        if not kinds or found.kind in kinds:
            return found
    return None
