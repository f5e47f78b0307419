"""The documentation's examples run, so the pages cannot drift from the code.

For every ``docs/*.md`` page:

- the fenced blocks whose info string is exactly ``python`` run in order, in one fresh interpreter
  (``sys.executable``, warnings as errors), from the repository root, with this test's isolated
  share and log dirs and the console script's folder first on PATH; a block that raises fails the
  test with the page, the block and the traceback, whose line numbers point into the page;
- every line of a ``console`` block that starts with ``$ keepwarm `` runs through the console script
  and must exit 0, unless it ends with ``#norun`` (not run) or ``#exit N`` (must exit ``N``: a
  documented refusal or gate verdict). Lines run in order, without a shell; a service a page's
  commands leave running is stopped afterwards;
- in a block whose info string is ``console checked``, the lines under a command (up to the next
  ``$ ``) are its documented output: each must appear, in order, in what it printed (stdout, then
  stderr; runs of whitespace are one space, ``…`` stands for anything). Plain ``console`` blocks may
  show illustrative output (ids, times) that is not checked;
- links to other pages, and their ``#anchors``, resolve.

So a claim a page makes about the CLI is checked by writing it as a ``console checked`` example, and
any other runnable claim by a ``python`` block that asserts it. Code that must not run uses another
info string: ``py`` for listings, ``pycon``, ``text``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from keepwarm.queue.state import read_supervisor_state
from keepwarm.service.liveness import pid_alive

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
KEEPWARM = BIN / "keepwarm"
NORUN = "#norun"
EXPECTED_EXIT = re.compile(r"#exit (\d+)\s*$")
CHECKED = "console checked"
GUIDES = ("concepts.md", "apps.md", "queue.md", "python-api.md")
PAGE_TIMEOUT_SEC = 240

# Runs inside the fresh interpreter: each block is compiled under the page's path, shifted to its
# line, so a traceback shows the page's own line.
RUNNER = """
import json, sys, traceback
page = sys.argv[1]
with open(sys.argv[2], encoding="utf-8") as payload:
    blocks = json.load(payload)
namespace = {"__name__": "__main__"}
for number, (line, source) in enumerate(blocks, start=1):
    try:
        exec(compile("\\n" * (line - 1) + source, page, "exec"), namespace)
    except BaseException:
        print(f"{page}: python block {number} (line {line}) raised:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


@dataclass(frozen=True)
class Block:
    info: str
    line: int  # 1-based line of the block's first content line
    source: str


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced code block of a CommonMark page, in order."""
    tokens = MarkdownIt("commonmark").parse(text)
    return [
        Block(token.info.strip(), token.map[0] + 2, token.content)
        for token in tokens
        if token.type == "fence" and token.map is not None
    ]


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to '-'."""
    tokens = MarkdownIt("commonmark").parse(text)
    return {
        re.sub(r"[^\w\- ]", "", tokens[index + 1].content.lower()).replace(" ", "-")
        for index, token in enumerate(tokens)
        if token.type == "heading_open"
    }


def relative_links(text: str) -> list[str]:
    tokens = MarkdownIt("commonmark").parse(text)
    hrefs = [
        str(child.attrs.get("href", ""))
        for token in tokens
        if token.type == "inline"
        for child in token.children or []
        if child.type == "link_open"
    ]
    return [href for href in hrefs if "://" not in href and not href.startswith("mailto:")]


def python_blocks(page: Path) -> list[Block]:
    return [b for b in fenced_blocks(page.read_text(encoding="utf-8")) if b.info == "python"]


@dataclass(frozen=True)
class Command:
    line: int
    command: str  # "keepwarm ...", without "$ " and without its "#exit N"
    exit_code: int
    output: tuple[str, ...]  # the documented output, checked in ``console checked`` blocks


def console_commands(page: Path) -> list[Command]:
    return console_commands_in(page.read_text(encoding="utf-8"))


def console_commands_in(text: str) -> list[Command]:
    """Each runnable ``$ keepwarm ...`` line of a page's console blocks, with what it must do."""
    commands: list[Command] = []
    for block in fenced_blocks(text):
        if block.info not in ("console", CHECKED):
            continue
        current: Command | None = None
        for offset, line in enumerate(block.source.splitlines()):
            if line.startswith("$ "):
                if current is not None:
                    commands.append(current)
                current = None
                if line.startswith("$ keepwarm ") and not line.rstrip().endswith(NORUN):
                    code = EXPECTED_EXIT.search(line)
                    text = line[2 : code.start()] if code else line[2:]
                    current = Command(block.line + offset, text.strip(), int(code[1]) if code else 0, ())
            elif current is not None and block.info == CHECKED and line.strip():
                current = Command(current.line, current.command, current.exit_code, (*current.output, line))
        if current is not None:
            commands.append(current)
    return commands


def output_problem(printed: str, expected: tuple[str, ...]) -> str | None:
    """Which documented output line is not in ``printed`` (in order), or None."""
    text = " ".join(printed.split())
    position = 0
    for line in expected:
        pattern = ".*?".join(re.escape(" ".join(part.split())) for part in line.split("…"))
        found = re.compile(pattern).search(text, position)
        if found is None:
            return f"documented output {line!r} not found in what it printed after that point"
        position = found.end()
    return None


def stop_leftover_services(share: Path) -> None:
    """Kill the supervisors a page's commands left running (their loops follow: parent-death signal)."""
    for state_file in share.glob("*/service/*/supervisor.json"):
        state = read_supervisor_state(state_file)
        if state is not None and pid_alive(state.pid):
            os.kill(state.pid, signal.SIGKILL)


def _pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def _example_env() -> dict[str, str]:
    # conftest's autouse fixture has already pointed KEEPWARM_SHARE and KEEPWARM_LOG_DIR at tmp_path.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.pop("PYTHONSTARTUP", None)
    return env


def test_the_guides_have_runnable_examples() -> None:
    for name in GUIDES:
        page = DOCS / name
        assert page.is_file(), f"{name} is missing"
        assert python_blocks(page), f"{name} has no runnable python block"


def test_the_app_guide_teaches_the_public_api_only() -> None:
    """docs/apps.md is what an app's author copies: its examples use ``keepwarm.<name>`` alone."""
    source = "".join(b.source for b in python_blocks(DOCS / "apps.md"))
    internal = sorted(set(re.findall(r"\bkeepwarm\.[a-z_]+\.\w+|from keepwarm\.\w+ import", source)))
    assert internal == [], f"apps.md reaches into keepwarm's modules: {internal}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_links_between_pages_resolve(page: Path) -> None:
    for href in relative_links(page.read_text(encoding="utf-8")):
        target_name, _, anchor = href.partition("#")
        target = (page.parent / target_name).resolve() if target_name else page
        assert target.is_file(), f"{page.name}: link {href!r} points to a missing page"
        if anchor and target.suffix == ".md":
            anchors = heading_anchors(target.read_text(encoding="utf-8"))
            assert anchor in anchors, f"{page.name}: link {href!r} points to a missing heading"


def test_block_selection_follows_the_info_string() -> None:
    text = (
        "```python\na = 1\n```\n\n```pycon\n>>> b = 2\n```\n\n```py\nc = 3\n```\n\n"
        "- a list item\n\n  ~~~python\n  d = 4\n  ~~~\n\n"
        "```console\n$ keepwarm tasks demo\noutput\n$ keepwarm result demo ID  #norun\n$ ls\n```\n"
    )
    blocks = fenced_blocks(text)
    assert [(b.info, b.line) for b in blocks] == [
        ("python", 2),
        ("pycon", 6),
        ("py", 10),
        ("python", 16),
        ("console", 20),
    ]
    assert [b.source for b in blocks if b.info == "python"] == ["a = 1\n", "d = 4\n"]


@pytest.mark.parametrize("page", [p for p in _pages() if python_blocks(p)], ids=lambda p: p.name)
def test_python_examples_run(page: Path, tmp_path: Path) -> None:
    blocks = python_blocks(page)
    source = "".join(b.source for b in blocks)
    if "spawn_loop(" in source:
        assert ".stop()" in source, f"{page.name} starts loops but never stops them"
    payload = tmp_path / "blocks.json"
    payload.write_text(json.dumps([[b.line, b.source] for b in blocks]), encoding="utf-8")
    relative = str(page.relative_to(ROOT))
    try:
        completed = subprocess.run(
            [sys.executable, "-W", "error", "-c", RUNNER, relative, str(payload)],
            check=False,
            cwd=ROOT,
            env=_example_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PAGE_TIMEOUT_SEC,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail(f"{relative}: python blocks still running after {PAGE_TIMEOUT_SEC}s\n{stderr}")
    if completed.returncode != 0:
        pytest.fail(
            f"{relative}: a python block failed (exit {completed.returncode})\n{completed.stderr}",
            pytrace=False,
        )


@pytest.mark.parametrize("page", [p for p in _pages() if console_commands(p)], ids=lambda p: p.name)
def test_console_examples_run(page: Path, isolated_dirs: Path) -> None:
    relative = page.relative_to(ROOT)
    try:
        for command in console_commands(page):
            argv = shlex.split(command.command, comments=True)
            completed = subprocess.run(
                [str(KEEPWARM), *argv[1:]],
                check=False,
                cwd=ROOT,
                env=_example_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=PAGE_TIMEOUT_SEC,
            )
            problem = output_problem(completed.stdout + completed.stderr, command.output)
            if completed.returncode != command.exit_code:
                problem = f"exited {completed.returncode}, not {command.exit_code}"
            if problem is not None:
                pytest.fail(
                    f"{relative} line {command.line}: `{command.command}` {problem}\n"
                    f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}",
                    pytrace=False,
                )
    finally:
        stop_leftover_services(isolated_dirs)


def test_console_examples_declare_exit_codes_and_checked_output() -> None:
    text = (
        "```console checked\n$ keepwarm stop demo\nservice demo … stopped\n"
        "$ keepwarm health demo --gate   #exit 3\n```\n\n"
        "```console\n$ keepwarm tasks demo\nan illustrative id\n$ keepwarm ui  #norun\n```\n"
    )
    commands = console_commands_in(text)
    assert [(c.command, c.exit_code, c.output) for c in commands] == [
        ("keepwarm stop demo", 0, ("service demo … stopped",)),
        ("keepwarm health demo --gate", 3, ()),
        ("keepwarm tasks demo", 0, ()),
    ]
    assert output_problem("service demo is already\n  stopped\n", ("service demo … stopped",)) is None
    assert output_problem("service demo started", ("service demo … stopped",)) is not None
