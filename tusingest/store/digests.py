"""Whole-upload MD5 and SHA-256 computed inline while receiving, kept per upload on this node."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass
class UploadDigest:
    """Running digests of an upload's bytes [0, offset): SHA-256, and MD5 unless it is off."""

    offset: int
    md5: Any
    sha256: Any

    @classmethod
    def new(cls, *, md5: bool = True) -> UploadDigest:
        return cls(0, hashlib.md5(usedforsecurity=False) if md5 else None, hashlib.sha256())

    def copy(self) -> UploadDigest:
        md5 = None if self.md5 is None else self.md5.copy()
        return UploadDigest(self.offset, md5, self.sha256.copy())

    def hashers(self) -> list[Any]:
        return [h for h in (self.md5, self.sha256) if h is not None]

    def hexdigests(self) -> tuple[str | None, str]:
        return (None if self.md5 is None else self.md5.hexdigest()), self.sha256.hexdigest()


class InlineDigests:
    """Running digests by upload id. Lost on restart or when the next PATCH lands on another
    node; completion then hashes the staged file in one streaming pass instead."""

    def __init__(self, capacity: int = 4096, *, md5: bool = True) -> None:
        self._capacity = capacity
        self._md5 = md5
        self._digests: OrderedDict[str, UploadDigest] = OrderedDict()

    def take(self, upload_id: str, offset: int) -> UploadDigest | None:
        """The digest that continues at `offset` (a fresh one at 0), or None if unknown here."""
        digest = self._digests.pop(upload_id, None)
        if digest is not None and digest.offset == offset:
            return digest
        return UploadDigest.new(md5=self._md5) if offset == 0 else None

    def put(self, upload_id: str, digest: UploadDigest) -> None:
        self._digests[upload_id] = digest
        self._digests.move_to_end(upload_id)
        while len(self._digests) > self._capacity:
            self._digests.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        self._digests.pop(upload_id, None)
