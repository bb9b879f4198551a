"""A `TokenSource` test double: one fixed token, the same every time (it cannot be renewed)."""

from __future__ import annotations


class StaticToken:
    """Implements `TokenSource`."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self, *, fresh: bool = False) -> str:
        return self._token
