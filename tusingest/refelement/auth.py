"""Who calls the reference element: bearer tokens verified with RS256, roles and service
accounts recognised the way the real element does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from tusingest.refelement.replies import SEError
from tusingest.refelement.state import ELEMENT

_ROLES = frozenset({"admin", "operator", "user"})


@dataclass(frozen=True)
class Caller:
    """What the SE takes from a verified token: subject, name, role, service account or not."""

    sub: str
    name: str
    role: str  # admin | operator | user (any other claimed role counts as admin)
    service_account: bool


ANONYMOUS = Caller(sub="anonymous", name="anonymous", role="admin", service_account=True)


def load_public_key(pem: bytes) -> RSAPublicKey:
    """Parse an RSA public key PEM (ValueError if it is not one)."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the SE verifies RS256: the public key must be an RSA key")
    return key


def authenticate(request: web.Request) -> Caller:
    """The caller of `request`, or a 401 in the SE's words."""
    key = request.app[ELEMENT].key
    if key is None:
        return ANONYMOUS
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise SEError(401, "Not authenticated")
    invalid = SEError(401, "Invalid or expired token", {"WWW-Authenticate": "Bearer"})
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            options={"require": ["sub", "iat", "nbf", "exp"], "verify_aud": False},
        )
    except jwt.InvalidTokenError:
        raise invalid from None
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub:
        raise invalid
    role = str(claims.get("role", "admin")).lower()
    kind = claims.get("type")
    client_id = claims.get("client_id")
    service_account = kind == "service_account" or (
        kind in ("access", "refresh") and isinstance(client_id, str) and client_id.startswith("sa_")
    )
    return Caller(
        sub=sub,
        name=str(claims.get("name") or sub),
        role=role if role in _ROLES else "admin",
        service_account=service_account,
    )
