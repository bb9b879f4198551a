"""The seams of storage: storage elements, their registries and breakers, the token they are
called with, and the Admin Module's file registration."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tusingest.domain import (
    CatalogEntry,
    ElementInfo,
    ElementMode,
    FetchedFile,
    FileToStore,
    StoredFile,
)


class StorageElement(Protocol):
    """Where files end up. `store` is idempotent by `file_id`; `delete` of an absent file is
    not an error."""

    @property
    def element_id(self) -> str: ...

    async def store(self, item: FileToStore) -> StoredFile: ...

    async def delete(self, file_id: str) -> None: ...

    async def fetch(self, file_id: str, target: Path) -> FetchedFile | None:
        """Write the element's copy of `file_id` to `target` (streamed, durable); None when the
        element does not hold it. A copy whose bytes differ from what the element says they are
        raises."""
        ...


class Registry(Protocol):
    """Where the storage elements are and how full they are."""

    async def elements(self, mode: ElementMode) -> list[ElementInfo]:
        """The elements of `mode`, by ascending priority."""
        ...

    async def element(self, element_id: str) -> ElementInfo | None:
        """One element by id, whatever its mode and however full (an element listed under
        several modes: its `edit` entry); None when this source does not know it."""
        ...

    async def invalidate(self) -> None:
        """Forget anything cached: the next call reads the source again."""
        ...


class TokenSource(Protocol):
    """A service-account bearer token for the SEs and the Admin Module."""

    async def token(self, *, fresh: bool = False) -> str:
        """The cached token, renewed ahead of its expiry; `fresh` forces a new one (after
        a 401)."""
        ...


class FileRegistrar(Protocol):
    """The Admin Module's file registry."""

    async def register(self, entry: CatalogEntry, *, ttl_days: int | None) -> None:
        """Register a stored file; an existing registration of the same `file_id` counts as
        done. `ttl_days` is set for temporary files, None for permanent ones."""
        ...

    async def unregister(self, file_id: str) -> None:
        """Compensation: remove the registration (absent is not an error)."""
        ...

    async def relocate(self, entry: CatalogEntry, *, ttl_days: int | None) -> None:
        """The file moved to `entry.element_id` (a transfer): update its registration, or
        register it when there is none."""
        ...


class Breaker(Protocol):
    """One storage element's circuit breaker."""

    @property
    def state(self) -> str:
        """closed | open | half_open."""
        ...

    def allows(self) -> bool: ...

    def record_success(self) -> None: ...

    def record_failure(self) -> None: ...


class Elements(Protocol):
    """Storage elements by what the registry says about them, each with its breaker."""

    def element(self, info: ElementInfo) -> StorageElement:
        """A client for `info` (`file://` local disk or `http(s)://` SE), reused per id."""
        ...

    def breaker(self, element_id: str) -> Breaker: ...

    def open_ids(self) -> set[str]:
        """Elements whose breaker refuses calls now (placement skips them)."""
        ...

    def forget(self, element_id: str) -> None:
        """Drop the client and the breaker of an element that left the registry."""
        ...


class RegistryChain(Registry, Protocol):
    """A registry that falls back from one source to the next, and says which one answered."""

    last_errors: list[str]  # why each source gave nothing, for the last `elements` call

    @property
    def last_source(self) -> str:
        """The source of the last `elements` answer (redis | admin | memory | none)."""
        ...

    async def snapshot(self) -> dict[str, ElementInfo]:
        """Every element of the upload modes, by id."""
        ...
