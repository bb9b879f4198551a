"""What the HTTP parser raised → (status, code, message): fixed messages, a duplicate header
named only when its name is a plain token, a server error for anything else."""

from __future__ import annotations

import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, LineTooLong

from tusingest.refusals import refusal


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (LineTooLong(b"k dg==,k dg==...", 8190), (431, "header_too_large")),
        (BadHttpMessage("Too many headers received"), (431, "too_many_headers")),
        (BadHttpMessage("Duplicate Content-Length:\n\n  b'CL: 3'\n  ^"), (400, "duplicate_header")),
        (BadHttpMessage("Duplicate 'Host' header found."), (400, "duplicate_header")),
        (BadStatusLine("\x16\x03\x01"), (400, "malformed_request")),
        (RuntimeError("a bug"), (500, "internal_error")),
        (None, (500, "internal_error")),
    ],
)
def test_each_refusal_has_its_status_and_code(
    exc: BaseException | None, expected: tuple[int, str]
) -> None:
    status, code, _message = refusal(exc)
    assert (status, code) == expected


def test_a_handler_that_timed_out_keeps_its_504() -> None:
    assert refusal(None, status=504)[:2] == (504, "timeout")


def test_messages_name_limits_and_plain_header_names_only() -> None:
    assert refusal(LineTooLong(b"x", 100), max_field_size=4096)[2].endswith("4096 bytes")
    assert refusal(BadHttpMessage("Too many headers received"), max_headers=64)[2] == (
        "more than 64 header fields"
    )
    named = refusal(BadHttpMessage("Duplicate Content-Length:\n\n  b'Content-Length: 30'"))
    assert named[2] == "Content-Length header is sent more than once"
    hostile = refusal(BadHttpMessage("Duplicate '<script>x' header found."))
    assert hostile[2] == "a header is sent more than once"
    assert "\\x16" not in refusal(BadStatusLine("\x16\x03\x01"))[2]
