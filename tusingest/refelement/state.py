"""The reference element's configuration and the state its handlers share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from tusingest.domain import ElementMode
from tusingest.elements.local import LocalElement


@dataclass(frozen=True)
class ElementServerSettings:
    element_id: str
    mode: ElementMode
    root: Path
    capacity: int  # bytes: `capacity_bytes` / `capacity.total`
    priority: int
    public_key: bytes | None  # RS256 PEM; None disables authentication
    tls: ElementTls | None = None  # None: plain HTTP


@dataclass(frozen=True)
class ElementTls:
    """HTTPS for the reference element: its certificate chain and key (PEM), and the CA bundle
    client certificates must chain to (None: none asked for)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass
class ElementState:
    settings: ElementServerSettings
    element: LocalElement
    key: RSAPublicKey | None
    busy: set[str] = field(default_factory=set)  # file_ids being uploaded
    attr_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # A quirk tests switch on: endpoint (`metadata`, `download`, `delete`, `gc_delete`,
    # `gc_exists`) → seconds it stalls before it reports the file absent without touching it,
    # as a real SE does while its database pool is exhausted.
    stalls: dict[str, float] = field(default_factory=dict)

    @property
    def incoming(self) -> Path:
        """Where upload bodies are spooled: inside the root, so storing them is a copy
        within one filesystem."""
        return self.settings.root / ".incoming"


ELEMENT = web.AppKey("element", ElementState)


ELEMENT = web.AppKey("element", ElementState)


def now() -> datetime:
    return datetime.now(UTC)
