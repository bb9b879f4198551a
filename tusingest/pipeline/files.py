"""A stored file as a caller may see it: the one lookup behind reading, deleting and moving it."""

from __future__ import annotations

from tusingest.artstore import canonical_file_id
from tusingest.domain import CatalogEntry, Principal
from tusingest.errors import NotFound
from tusingest.ports import Catalog


async def find_live(catalog: Catalog, principal: Principal, file_id: str) -> CatalogEntry:
    """The live file as `principal` may see it; 404 when unknown, deleted or foreign (never
    telling which)."""
    canonical = canonical_file_id(file_id)
    entry = await catalog.by_file(canonical) if canonical else None
    if entry is None or entry.deleted_at is not None or not principal.may_access(entry.owner):
        raise NotFound("file not found", code="file_not_found")
    return entry
