"""Who and what a log line is about: the request id and the user of the current request, set at
the edge and inherited by the tasks a request starts (contextvars)."""

from __future__ import annotations

import contextvars
import re
import uuid

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
USER: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="-")

# A client's own X-Request-ID is kept when it is a plain token; anything else gets our own.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_SAFE_USER = re.compile(r"[^\x00-\x20\x7f]{1,64}")


def request_id(offered: str | None) -> str:
    """The id of a request: the client's `X-Request-ID` if it is safe to log, else a new one."""
    if offered is not None and _SAFE_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex[:16]


def loggable_user(sub: str) -> str:
    """A token's subject as a log field: control characters and spaces never reach a line."""
    return sub if _SAFE_USER.fullmatch(sub) else repr(sub)[:66]
