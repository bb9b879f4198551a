"""attr.json sizes are computed without encoding it in pure Python (`attr_length`), and a name's
check is answered once for all times (`check_name`)."""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime
from typing import Any

import pytest

from tusingest.artstore import attr_length, encode_attr
from tusingest.pipeline.validate import Rejection, check_name

_TEXT = string.printable + "éü漢\u2028\x00\U0001f600"


def _value(rng: random.Random, depth: int) -> Any:
    kinds = ["none", "bool", "int", "float", "text"] + (["dict", "list"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "dict":
        return {_text(rng): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {
        "none": None,
        "bool": rng.random() < 0.5,
        "int": rng.randint(-(10**12), 10**12),
        "float": rng.random() * 1e6,
        "text": _text(rng),
    }[kind]


def _text(rng: random.Random) -> str:
    return "".join(rng.choices(_TEXT, k=rng.randint(0, 24)))


def test_attr_length_is_the_length_of_the_indented_encoding() -> None:
    rng = random.Random(20261207)
    samples: list[dict[str, Any]] = [{}, {"a": {}}, {"a": []}, {"metadata": {"k": "v"}}]
    samples += [{_text(rng): _value(rng, 0) for _ in range(rng.randint(0, 15))} for _ in range(500)]
    for attr in samples:
        assert attr_length(attr) == len(encode_attr(attr)), attr


def test_a_name_is_judged_the_same_at_any_time() -> None:
    long_name = "x" * 5000 + ".bin"
    times = [datetime(2026, 12, 7, 0, 0, tzinfo=UTC), datetime(1999, 1, 1, 23, 59, 59, 999, UTC)]
    for when in times:
        check_name("report.pdf", "alice", when)  # fits at any time
        with pytest.raises(Rejection) as refused:
            check_name(long_name, "alice", when)
        assert refused.value.code == "attr_too_large"  # the original name alone is too long
    with pytest.raises(Rejection) as refused:
        check_name("a.bin", "u" * 4000, times[0])  # the owner alone overflows the name
    assert refused.value.code in ("filename_too_long", "attr_too_large")
