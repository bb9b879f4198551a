"""JWT bearer authentication (RS256 family): verification into a Principal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jwt

from tusingest.config import AuthSettings
from tusingest.domain import Principal, Role
from tusingest.errors import ConfigError, Unauthorized

log = logging.getLogger(__name__)

ANONYMOUS = Principal(sub="anonymous", name="anonymous", role=Role.ADMIN)


def _challenge(error: str, description: str) -> dict[str, str]:
    return {
        "WWW-Authenticate": (
            f'Bearer realm="tusingest", error="{error}", error_description="{description}"'
        )
    }


class Authenticator:
    """Turns an `Authorization` header into a Principal, or raises 401."""

    def __init__(self, settings: AuthSettings, public_key: bytes | None) -> None:
        self._enabled = settings.enabled
        self._algorithm = settings.algorithm
        self._key = public_key

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> Authenticator:
        if not settings.enabled:
            log.warning("AUTH_ENABLED=off: every request acts as an anonymous admin")
            return cls(settings, None)
        return cls(settings, read_public_key(settings.public_key_path))

    def authenticate(self, authorization: str | None) -> Principal:
        if not self._enabled:
            return ANONYMOUS
        assert self._key is not None
        if not authorization:
            raise Unauthorized(
                "missing bearer token",
                code="missing_token",
                headers={"WWW-Authenticate": 'Bearer realm="tusingest"'},
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "the Authorization header must be 'Bearer <token>'",
                code="malformed_token",
                headers=_challenge("invalid_request", "malformed Authorization header"),
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                options={"require": ["exp", "sub"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized(
                "the token has expired",
                code="token_expired",
                headers=_challenge("invalid_token", "token expired"),
            ) from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(
                f"invalid token: {exc}",
                code="invalid_token",
                headers=_challenge("invalid_token", "invalid token"),
            ) from None
        return _principal(claims)


def _principal(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized(
            "the token has no subject",
            code="invalid_token",
            headers=_challenge("invalid_token", "missing sub"),
        )
    roles = claims.get("roles")
    role_claim = claims.get("role")
    is_admin = role_claim == Role.ADMIN.value or (
        isinstance(roles, list) and Role.ADMIN.value in roles
    )
    name = claims.get("name") or claims.get("preferred_username") or sub
    return Principal(sub=sub, name=str(name), role=Role.ADMIN if is_admin else Role.USER)


def read_public_key(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("AUTH_PUBLIC_KEY_PATH", f"cannot read {path}: {exc.strerror}") from None
    if b"PUBLIC KEY" not in data:
        raise ConfigError("AUTH_PUBLIC_KEY_PATH", f"{path} is not a PEM public key")
    return data
