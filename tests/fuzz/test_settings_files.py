"""Generated ``app_settings.toml`` files: a clear SettingsError naming the file, or valid settings.

Random sections, keys, values and types (TOML's dates and times, NaN and infinities, integers past
64 bits, inline tables, arrays of tables included), then TOML syntax errors, duplicate keys and
tables, bytes that are not UTF-8. ``load_settings`` either returns settings or raises SettingsError
whose message starts with the file's path; never another exception. ``keepwarm status APP`` says
the same in one "error: ..." line, exit code 1, no traceback.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from hypothesis import HealthCheck, assume, event, example, given
from hypothesis import strategies as st

from keepwarm.errors import SettingsError
from keepwarm.settings import SETTINGS_FILE, AppSection, ClusterSettings, load_settings
from keepwarm.settings_sections import ServiceHealthSettings

from .strategies import odd_text
from .support import assert_clean_failure, fuzz_settings, run_cli

SECTIONS: dict[str, list[str]] = {
    "app": sorted(AppSection.model_fields),
    "args": ["x", "items", "partitions"],
    "cluster": sorted(set(ClusterSettings.model_fields) - {"service_health"}),
    "cluster.service_health": sorted(ServiceHealthSettings.model_fields),
}
VALID_APP = {"worker": "pkg.worker:Worker"}

toml_scalars = st.one_of(
    odd_text(),
    st.sampled_from(["local", "dask", "pkg.worker:Worker", "a:b", "not an entry point", "1", "true"]),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(min_value=2**63),  # past TOML's 64-bit integers
    st.sampled_from([0, 1, -1, 1024, 1025, 2]),
    st.floats(),  # NaN and infinities included: TOML has nan and inf
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(odd_text(8), children, max_size=3),  # an inline table
    ),
    max_leaves=6,
)


MODELS = {"app": AppSection, "cluster": ClusterSettings, "cluster.service_health": ServiceHealthSettings}


def plausible_values(section: str, key: str) -> st.SearchStrategy[Any]:
    """Values of about the right type for a known key: its bounds are what gets tested."""
    field = MODELS[section].model_fields[key] if section in MODELS else None
    default = field.get_default(call_default_factory=True) if field is not None else None
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-2, 2000)
    if isinstance(default, float):
        return st.one_of(st.floats(-1, 1e6), st.integers(-1, 100), st.sampled_from([0.0, float("inf")]))
    if isinstance(default, dict):
        return st.dictionaries(odd_text(8), st.integers(-1, 9), max_size=2)
    return st.one_of(odd_text(), st.sampled_from(["local", "dask", "pkg.mod:Name", "team-a", "/tmp/x"]))


@st.composite
def settings_documents(draw: st.DrawFn) -> dict[str, dict[str, Any]]:
    """Sections of known and unknown names holding known and unknown keys of any TOML type, or
    (half the time) only known keys with values of about the right type."""
    document: dict[str, dict[str, Any]] = {}
    if draw(st.booleans()):
        document["app"] = dict(VALID_APP)  # most files get past [app] to the other sections
    if draw(st.booleans()):
        for section in draw(st.lists(st.sampled_from(sorted(MODELS)), max_size=3)):
            for key in draw(st.lists(st.sampled_from(SECTIONS[section]), max_size=4)):
                document.setdefault(section, {})[key] = draw(plausible_values(section, key))
        return document
    for section in draw(
        st.lists(st.one_of(st.sampled_from(sorted(SECTIONS)), odd_text(10).filter(bool)), max_size=4)
    ):
        table = document.setdefault(section, {})
        known = SECTIONS.get(section, [])
        keys = st.one_of(st.sampled_from(known), odd_text(10)) if known else odd_text(10)
        for key in draw(st.lists(keys, max_size=4)):
            table[key] = draw(toml_values)
    return document


def render(document: dict[str, dict[str, Any]]) -> str:
    """The document as TOML text, dotted section names as nested tables."""
    root = tomlkit.document()
    for section, values in document.items():
        parts = section.split(".") if section in SECTIONS else [section]
        table: Any = root
        for part in parts:
            if part not in table:
                table[part] = tomlkit.table()
            table = table[part]
        for key, value in values.items():
            table[key] = value
    return tomlkit.dumps(root)


TOML_BREAKERS = (
    "=",
    "[",
    "]",
    "[[app]]\n",
    "[app]\n",
    "[cluster]\n",
    '"',
    "'''",
    '"""',
    "#",
    ",",
    "{",
    "}",
    "\n",
    "\x00",
    "\x7f",
    "\u2028",
    "\ufeff",
    "worker = 1\n",
    "slots = 2\n",
    "1979-05-27T07:32:00Z",
    "inf",
    "nan",
    "0x",
    "1_",
)


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few edits that TOML may or may not survive: lines repeated (duplicate keys and
    tables), characters cut out or put in."""
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        lines = text.splitlines(keepends=True)
        edit = draw(st.sampled_from(["repeat-line", "cut", "insert"]))
        if edit == "repeat-line" and lines:
            at = draw(st.integers(0, len(lines) - 1))
            lines.insert(draw(st.integers(0, len(lines))), lines[at] if lines[at].endswith("\n") else "\n")
            text = "".join(lines)
        elif edit == "cut" and text:
            start = draw(st.integers(0, len(text) - 1))
            text = text[:start] + text[start + draw(st.integers(1, 8)) :]
        else:
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.one_of(st.sampled_from(TOML_BREAKERS), odd_text(4))) + text[at:]
    return text


@st.composite
def settings_files(draw: st.DrawFn) -> bytes:
    """The bytes of an app_settings.toml: generated, maybe broken, maybe not UTF-8."""
    try:
        text = render(draw(settings_documents()))
    except (ValueError, TypeError) as exc:  # a value tomlkit cannot write: not keepwarm's concern
        event(f"tomlkit cannot render: {type(exc).__name__}")
        assume(False)
    text = draw(mutated(text))
    data = text.encode()
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "latin-1", "utf-16", "bytes"]))
    if encoding == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + data[at:]
    elif encoding != "utf-8":
        data = text.encode(encoding, "replace")
    return data


DUPLICATES = (
    b'[app]\nworker = "a:B"\nworker = "c:D"\n',
    b'[app]\nworker = "a:B"\n[app]\nworker = "c:D"\n',
    b'[app]\nworker = "a:B"\n[cluster]\nslots = 1\n[cluster.service_health]\n[cluster]\nslots = 2\n',
    b'[app]\nworker = "a:B"\n[args]\nx = {a = 1, a = 2}\n',
    b'[app]\nworker = "a:B"\n[[args.x]]\n[args.x]\n',
    b'[app]\nworker = "a:B"\ncluster.slots = 1\n[cluster]\nslots = 2\n',
    b"a.b.c = 1\na.b = 2\n",
)


def load_outcome(path: Path) -> SettingsError | None:
    """None for valid settings; the SettingsError otherwise (any other exception escapes)."""
    try:
        load_settings(path)
    except SettingsError as exc:
        return exc
    return None


@given(data=settings_files())
@example(data=b"")
@example(data=b"\x00")
@example(data=b'[app]\nworker = "a:B"\n[cluster]\nslots = 1979-13-45\n')  # an impossible date
@example(data=b'[app]\nworker = "a:B"\n[cluster]\nheartbeat_timeout_sec = nan\n')
@example(data=b'[app]\nworker = "a:B"\n[cluster]\nslots = 99999999999999999999999999\n')
@example(data=b'[[app]]\nworker = "a:B"\n')
@example(data=DUPLICATES[0])
@example(data=DUPLICATES[1])
@example(data=DUPLICATES[2])
@example(data=DUPLICATES[3])
@example(data=DUPLICATES[4])
@example(data=DUPLICATES[5])
@example(data=DUPLICATES[6])
# function-scoped fixture: every example overwrites the same one file in tmp_path, nothing else.
@fuzz_settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_generated_settings_file_loads_or_fails_naming_the_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / SETTINGS_FILE
    path.write_bytes(data)
    problem = load_outcome(path)
    event("SettingsError" if problem else "valid")
    if problem is not None:
        assert str(problem).startswith(f"{path}: "), problem


@pytest.fixture
def app_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "apps" / "fuzzed"
    folder.mkdir(parents=True)
    return folder


# Known bug, kept until fixed (see the report of issue 6): a key is quoted into the message as it is,
# so a key holding a line break ("a\nb" is a valid TOML key) splits the one "error:" line in two.
KEY_WITH_A_LINE_BREAK = b'[app]\nworker = "a:B"\n"bad\\nkey" = 1\n'


@fuzz_settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=settings_files())
@example(data=b'[app]\nworker = "a:B"\nworker = "c:D"\n')
@example(data=b'[app]\nworker = "a:B"\n[cluster]\nslots = "many"\n')
@example(data=b"\xff\xfe")
@example(data=KEY_WITH_A_LINE_BREAK)  # once a bug: the key's line break split the error line
# function-scoped fixtures: every example rewrites the one settings file, and capsys is read after
# each command.
def test_status_with_a_generated_settings_file_fails_in_one_error_line(
    app_folder: Path, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    path = app_folder / SETTINGS_FILE
    path.write_bytes(data)
    problem = load_outcome(path)
    result = run_cli(["status", "fuzzed", "--apps-path", str(app_folder.parent)], capsys)
    if problem is None:
        assert result.code == 0, result
        return
    line = assert_clean_failure(result)
    assert line == f"error: {problem}", result
    assert result.stderr == line + "\n", result
