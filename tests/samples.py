"""Shared test samples: EICAR (built at run time), a minimal PDF, the contract's attr.json keys,
and the clamd the suite runs against."""

from __future__ import annotations

import base64
import os

import pytest

from tusingest.domain import CapacityStatus, ElementInfo, ElementMode

# The EICAR test string, decoded at run time so it never appears in the repository.
EICAR = base64.b64decode(
    "WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo="
)

PDF = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    b"xref\n0 3\n0000000000 65535 f \n0000000009 00000 n \n0000000058 00000 n \n"
    b"trailer\n<< /Size 3 /Root 1 0 R >>\nstartxref\n110\n%%EOF\n"
)

# attr.json keys in the order the storage element writes them.
ATTR_KEYS = [
    "file_id",
    "original_filename",
    "storage_filename",
    "file_size",
    "content_type",
    "created_at",
    "updated_at",
    "created_by_id",
    "created_by_username",
    "created_by_fullname",
    "description",
    "version",
    "storage_path",
    "checksum",
    "metadata",
]


def clamd_url() -> str:
    """CLAMD_URL from scripts/services; a missing clamd fails the test, never skips it."""
    url = os.environ.get("CLAMD_URL")
    if not url:
        pytest.fail("CLAMD_URL is not set: run scripts/services start clamd")
    return url


def element(
    element_id: str,
    priority: int = 10,
    mode: ElementMode = ElementMode.RW,
    status: CapacityStatus = CapacityStatus.OK,
    healthy: bool = True,
) -> ElementInfo:
    """A storage element as a registry lists it."""
    return ElementInfo(
        element_id=element_id,
        mode=mode,
        priority=priority,
        endpoint=f"http://{element_id}.example:8010",
        capacity_total=1000,
        capacity_used=250,
        capacity_free=750,
        status=status,
        healthy=healthy,
    )
