"""Who and what a log line is about: the request id and the user of the current request, set at
the edge and inherited by the tasks a request starts, and the upload and file concerned, set by
the edge and by the operation at work (contextvars)."""

from __future__ import annotations

import contextvars
import re

from tusingest.randomids import token_hex

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
USER: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="-")
UPLOAD_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("upload_id", default=None)
FILE_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("file_id", default=None)

# A client's own X-Request-ID is kept when it is a plain token; anything else gets our own.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_SAFE_USER = re.compile(r"[^\x00-\x20\x7f]{1,64}")


def request_id(offered: str | None) -> str:
    """The id of a request: the client's `X-Request-ID` if it is safe to log, else a new one."""
    if offered is not None and _SAFE_ID.fullmatch(offered):
        return offered
    return token_hex(8)


def loggable_id(value: str | None) -> str | None:
    """An upload or file id from a path as a log field: None unless a plain token."""
    return value if value is not None and _SAFE_ID.fullmatch(value) else None


def about(upload_id: str | None = None, file_id: str | None = None) -> None:
    """Name the upload and the file the current task's log lines are about."""
    if upload_id is not None:
        UPLOAD_ID.set(loggable_id(upload_id))
    if file_id is not None:
        FILE_ID.set(loggable_id(file_id))


def loggable_user(sub: str) -> str:
    """A token's subject as a log field: control characters and spaces never reach a line."""
    return sub if _SAFE_USER.fullmatch(sub) else repr(sub)[:66]
