"""JWT bearer authentication (RS256 family): verification into a Principal, once per request at
the edge of each protected sub-application."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from tusingest.domain import Principal, Role
from tusingest.errors import ConfigError, Unauthorized
from tusingest.logcontext import USER, loggable_user
from tusingest.settings.auth import AuthSettings

log = logging.getLogger(__name__)

_VERIFIED_TOKENS = 4096

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
        # Parsed once: PyJWT would parse a PEM on every request.
        self._key = _load_rsa_key(public_key) if public_key is not None else None
        # A token verifies the same way every time until it expires: skip the RSA check for
        # tokens seen recently (a client sends the same token with every request).
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

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
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
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
        principal = _principal(claims)
        self._remember(token, principal, float(claims["exp"]))
        return principal

    def _remember(self, token: str, principal: Principal, expires: float) -> None:
        self._verified[token] = (principal, expires)
        self._verified.move_to_end(token)
        while len(self._verified) > _VERIFIED_TOKENS:
            self._verified.popitem(last=False)


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
PRINCIPAL = web.RequestKey("principal", Principal)


def auth_middleware(exempt: Callable[[web.Request], bool] | None = None) -> Middleware:
    """Authenticate every request of the (sub-)application it guards, unless `exempt`; the
    handler finds the caller in `request[PRINCIPAL]`."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if exempt is None or not exempt(request):
            authenticator = request.config_dict[AUTHENTICATOR]
            principal = authenticator.authenticate(request.headers.get("Authorization"))
            request[PRINCIPAL] = principal
            USER.set(loggable_user(principal.sub))
        return await handler(request)

    return middleware


# The status page's session: an admin's token in an HttpOnly, SameSite=Strict cookie.
STATUS_COOKIE = "tusingest_status"


def authenticate_with_cookie(request: web.Request) -> Principal:
    """The caller by its bearer token, else by the status page's cookie (which holds one)."""
    authorization = request.headers.get("Authorization")
    cookie = request.cookies.get(STATUS_COOKIE)
    if not authorization and cookie:
        authorization = f"Bearer {cookie}"
    principal = request.config_dict[AUTHENTICATOR].authenticate(authorization)
    request[PRINCIPAL] = principal
    USER.set(loggable_user(principal.sub))
    return principal


def client_address(request: web.Request) -> str | None:
    """The peer's address as the audit trail records it (at most an IPv6 address long)."""
    return request.remote[:45] if request.remote else None


def _load_rsa_key(pem: bytes) -> RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise ConfigError("AUTH_PUBLIC_KEY_PATH", "not a readable PEM public key") from None
    if not isinstance(key, RSAPublicKey):
        raise ConfigError("AUTH_PUBLIC_KEY_PATH", "the public key must be an RSA key")
    return key


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
