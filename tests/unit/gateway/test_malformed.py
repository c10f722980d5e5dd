"""The byte-level checks of gateway.api.malformed: depth counted without a parser, NUL and lone
surrogates found and named, ordinary bodies untouched."""

from __future__ import annotations

import json

import pytest

from gateway.api.malformed import MAX_DEPTH, body_problems, query_problems


def _alternating(depth: int) -> bytes:
    """[{"a": [{"a": ... }]}]: arrays and objects in turn (a count of one kind would halve it)."""
    levels = range(depth - 1, -1, -1)  # outermost first
    opening = "".join("[" if level % 2 else '{"a": ' for level in levels)
    closing = "".join("]" if level % 2 else "}" for level in reversed(levels))
    return (opening + "1" + closing).encode()


@pytest.mark.parametrize("depth", [1, 2, MAX_DEPTH - 1, MAX_DEPTH])
def test_up_to_32_levels_pass(depth: int) -> None:
    assert body_problems(_alternating(depth)) == []


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 64, 1000, 100_000])
def test_deeper_is_refused(depth: int) -> None:
    assert body_problems(_alternating(depth)) == [
        (["body"], "JSON nested deeper than 32 levels", "json_too_deep")
    ]


def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"note": "[[[[{{{{" * 50, "escaped": '\\"[[[[' * 50, "list": ["]]]}}}"] * 40})
    assert body_problems(body.encode()) == []


def test_a_wide_shallow_body_passes() -> None:
    records = [{"terminal_seq": i, "items": [[i, i + 1]]} for i in range(500)]
    assert body_problems(json.dumps({"records": records}).encode()) == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"a": "x\\u0000"}', ["body", "a"]),
        (b'{"records": [{}, {"store_id": "\\u0000"}]}', ["body", "records", 1, "store_id"]),
        (b'{"k\\u0000": 1}', ["body", "k\x00"]),
        (b'{"d": "\\udfff"}', ["body", "d"]),
    ],
)
def test_nul_and_lone_surrogates_are_named(body: bytes, loc: list[object]) -> None:
    assert [p[0] for p in body_problems(body)] == [loc]


@pytest.mark.parametrize(
    "body",
    [
        b'{"emoji": "\\ud83d\\ude00", "chinese": "\\u98df\\u5802"}',  # a surrogate pair is text
        b'{"backslash": "\\\\u0000"}',  # an escaped backslash, then the letters u0000
        '{"text": "caf\u00e9 \u98df\u5802"}'.encode(),
        b"",
    ],
)
def test_ordinary_text_passes(body: bytes) -> None:
    assert body_problems(body) == []


@pytest.mark.parametrize("body", [b'{"a": "\xff"}', "{}".encode("utf-16"), b'{"a": "caf\xe9"}'])
def test_not_utf8_is_refused(body: bytes) -> None:
    assert body_problems(body)[0][2] == "utf8_invalid"


def test_query_nul_is_named_and_a_literal_percent_00_is_not() -> None:
    assert [p[0] for p in query_problems(b"a=1&merchant_order_id=x%00")] == [["query", "merchant_order_id"]]
    assert query_problems(b"note=100%2500") == []
