"""Generators shared by the fuzz tests (issue 6): JSON values, odd text, safe and unsafe ids."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

TASK_SCHEMA = "agi.service.task.v1"


# Strings a file or a terminal may choke on: NUL and other control characters, right-to-left
# text and overrides, combining marks, zero-width characters, a byte-order mark, astral-plane
# characters. (Lone surrogates cannot be UTF-8 encoded; they are generated only as JSON escapes.)
ODD_STRINGS = (
    "",
    "\x00",
    "a\x00b",
    "\x1b[31mred\x1b[0m",
    "\t\r\n",
    "\u202eevil.txt",  # RIGHT-TO-LEFT OVERRIDE
    "\u05e9\u05dc\u05d5\u05dd",  # Hebrew, right to left
    "\u0627\u0644\u0633\u0644\u0627\u0645",  # Arabic
    "e\u0301\u0301\u0301",  # combining acute accents
    "Z\u0351\u0308\u0316\u032d",  # stacked combining marks
    "\u200b\u200d\ufeff",  # zero-width space, joiner, byte-order mark
    "\U0001f600\U0001f469\u200d\U0001f4bb",  # emoji, with a ZWJ sequence
    "\uffff\ufffe",
    "\U0010ffff",
    "../../etc/passwd",
    "C:\\Windows\\System32",
)


def odd_text(max_size: int = 20) -> st.SearchStrategy[str]:
    """Any text (every code point but surrogates), leaning on the characters that cause trouble."""
    return st.one_of(
        st.sampled_from(ODD_STRINGS),
        st.text(max_size=max_size),
        st.text(st.characters(categories=("Cc", "Cf", "Mn", "Zl", "Zp", "Co")), max_size=max_size),
    )


def finite_floats() -> st.SearchStrategy[float]:
    """Every float JSON can carry: subnormals, -0.0, the largest doubles; no NaN or infinity."""
    return st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1e16]),
    )


def json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(10**40), max_value=10**40),  # past 64 bits
        finite_floats(),
        odd_text(),
    )


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value, nested a few levels (well within every parser's depth limit)."""
    return st.recursive(
        json_scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(odd_text(max_size=8), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def json_objects(max_leaves: int = 12) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(odd_text(max_size=8), json_values(max_leaves), max_size=5)


# Ids the queue must accept: 1-128 letters, digits, '_', '-', '.', starting with a letter or digit,
# no '..'. Generated short, so a unique suffix can be added without passing 128.
safe_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,40}\Z").filter(lambda s: ".." not in s)

# Ids the queue must refuse: separators, '..', a leading dot or dash, odd characters, too long.
UNSAFE_IDS = (
    "",
    ".",
    "..",
    "../x",
    "../../escape",
    "a/b",
    "/abs",
    "a\\b",
    "a..b",
    ".hidden",
    "-dash",
    "_under",
    "a b",
    "a\x00b",
    "a\nb",
    "abc\n",
    "\u202eabc",
    "e\u0301",
    "\U0001f600",
    "x" * 129,
)
unsafe_ids = st.one_of(
    st.sampled_from(UNSAFE_IDS),
    st.builds(str.__add__, safe_ids, st.sampled_from(["/", "/..", "\x00", " ", "\n", "é"])),
    st.builds(lambda head, tail: head + ".." + tail, safe_ids, safe_ids),
)


def valid_task_dict(task_id: str, **fields: Any) -> dict[str, Any]:
    return {"schema": TASK_SCHEMA, "task_id": task_id, "args": {}, **fields}


def nested_list(depth: int) -> list[Any]:
    """A list ``depth`` levels deep: ``[[[...]]]``."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value
