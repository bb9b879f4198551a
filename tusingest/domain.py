"""Domain values: uploads, their status, and the authenticated principal."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

PARTIAL = "partial"
FINAL_PREFIX = "final;"


@dataclass(frozen=True)
class Checksum:
    """A client-declared digest of one request body (`Upload-Checksum`)."""

    algorithm: str
    digest: bytes


class UploadStatus(enum.StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    PROCESSING = "processing"
    STORED = "stored"
    REJECTED = "rejected"
    FAILED = "failed"
    TERMINATED = "terminated"
    EXPIRED = "expired"


class Role(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the JWT `sub`, display name and role."""

    sub: str
    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_access(self, owner: str) -> bool:
        return self.is_admin or owner == self.sub


@dataclass(frozen=True)
class Upload:
    """One tus upload session as stored."""

    id: str
    owner: str
    length: int | None
    offset: int
    metadata_raw: str | None
    status: UploadStatus
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    concat: str | None = None
    error: str | None = None
    file_id: str | None = None
    md5: str | None = None
    sha256: str | None = None

    @property
    def is_partial(self) -> bool:
        return self.concat == PARTIAL

    @property
    def is_final(self) -> bool:
        return self.concat is not None and self.concat.startswith(FINAL_PREFIX)

    @property
    def is_complete(self) -> bool:
        return self.length is not None and self.offset == self.length

    @property
    def remaining(self) -> int | None:
        return None if self.length is None else self.length - self.offset
