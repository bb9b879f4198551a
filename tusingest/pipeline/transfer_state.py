"""The `transfer` operation's typed, versioned state: the request (file, source, destination,
options, who asked), how far the saga got, and what the status endpoint shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tusingest.domain import ElementMode, Retention
from tusingest.pipeline import jobstate
from tusingest.pipeline.saga import Placement


@dataclass(frozen=True)
class TransferState:
    """The `transfer` operation's state: the request, where it got, what the status shows."""

    transfer_id: str
    file_id: str
    source_id: str
    source_endpoint: str
    source_mode: str
    destination_id: str
    destination_endpoint: str
    destination_mode: str
    delete_source: bool
    verify_checksum: bool
    actor: str
    address: str | None = None
    size: int = 0
    status: str = "queued"  # queued | in_progress | verifying | completed | failed
    bytes_transferred: int = 0
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    repointed: bool = False
    registered: bool = False
    source_deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        return jobstate.dump(self)

    @classmethod
    def from_json(cls, raw: Any) -> TransferState:
        return jobstate.load(cls, raw)

    @property
    def source(self) -> Placement:
        return Placement(
            self.source_id, self.source_endpoint, ElementMode(self.source_mode), self.file_id
        )

    @property
    def destination(self) -> Placement:
        return Placement(
            self.destination_id,
            self.destination_endpoint,
            ElementMode(self.destination_mode),
            self.file_id,
        )

    @property
    def retention(self) -> Retention:
        return Retention.TEMPORARY if self.destination_mode == "edit" else Retention.PERMANENT
