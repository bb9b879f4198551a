"""Service-account bearer tokens for the storage elements and the Admin Module: minted with our
key, or fetched from the Admin Module with client credentials; renewed ahead of expiry."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from tusingest.errors import TransientError, TusingestError
from tusingest.replies import detail, failure, read_reply
from tusingest.settings.storage import service_account_id

log = logging.getLogger(__name__)

# Minted tokens are dated back this much: the SE verifies `iat` and `nbf` without leeway, and a
# verifier whose clock runs a little behind ours would otherwise refuse a brand-new token.
_CLOCK_SKEW = 30


class ServiceAccountRejected(TusingestError):
    """The Admin Module refuses our service-account credentials (unknown, inactive, secret
    expired): a configuration error that retrying will not fix."""

    status = 502
    code = "service_account_rejected"


class _Cached:
    """A token renewed when `fresh` or due. Callers that waited on the lock while another one
    renewed take its outcome, so a burst of callers (or of 401s) costs one request. A renewal
    ahead of expiry that fails transiently keeps the current token while it is still valid."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = asyncio.Lock()
        self._value: str | None = None
        self._renew_at = 0.0
        self._expires_at = 0.0
        self._attempts = 0
        self._error: Exception | None = None

    async def token(self, *, fresh: bool = False) -> str:
        seen = self._attempts
        async with self._lock:
            if self._attempts == seen:  # nobody renewed while this caller waited
                if self._value is not None and not fresh and self._clock() < self._renew_at:
                    return self._value
                await self._attempt()
            if self._error is None and self._value is not None:
                return self._value
            if self._value is not None and not fresh and self._usable():
                log.warning("keeping the current token, renewal failed: %s", self._error)
                return self._value
            assert self._error is not None
            raise self._error

    async def _attempt(self) -> None:
        started = self._clock()  # the lifetime counts from before the request
        # Counted once it has an outcome, which the callers that arrived meanwhile then share
        # (a cancelled attempt has none: they make their own).
        try:
            value, lifetime, margin = await self._renew()
        except Exception as exc:
            self._attempts += 1
            self._error = exc
            return
        self._attempts += 1
        self._value, self._error = value, None
        self._renew_at = started + lifetime - margin
        self._expires_at = started + lifetime

    def _usable(self) -> bool:
        """The current token outlives the next request (with a margin for clock skew)."""
        return (
            isinstance(self._error, TransientError)
            and self._clock() < self._expires_at - _CLOCK_SKEW
        )

    async def _renew(self) -> tuple[str, float, float]:
        """A new token, its lifetime and how long before its end to renew it (seconds)."""
        raise NotImplementedError


class MintedToken(_Cached):
    """Implements `TokenSource` by signing tokens as the Admin Module issues them for a service
    account, with the private key whose public half the SEs hold. `sub` is the account's UUID
    (ArtStore records it as `created_by_id`), `subject` or else derived from `name`."""

    def __init__(
        self,
        private_key_path: Path,
        *,
        name: str,
        subject: str | None = None,
        ttl_seconds: int = 1800,
        algorithm: str = "RS256",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        super().__init__(clock)
        self._path = private_key_path
        self._name = name
        self._subject = subject or service_account_id(name)
        self._ttl = ttl_seconds
        self._algorithm = algorithm
        self._key: _SigningKey | None = None

    async def _renew(self) -> tuple[str, float, float]:
        if self._key is None:
            self._key = await asyncio.to_thread(_load_key, self._path)
        now = int(self._clock())
        claims: dict[str, Any] = {
            "sub": self._subject,
            "name": self._name,
            "type": "service_account",
            "role": "admin",  # admin: DELETE on edit SEs and file registration
            "client_id": f"sa_{self._name}",
            "jti": uuid.uuid4().hex,
            "iat": now - _CLOCK_SKEW,
            "nbf": now - _CLOCK_SKEW,
            "exp": now + self._ttl,
        }
        value = jwt.encode(claims, self._key, algorithm=self._algorithm)
        return value, self._ttl, max(60.0, self._ttl / 6)


def token_name(token: str) -> str | None:
    """The `name` claim of a JWT (`sub` when it has none, as the SE takes it), read without
    verifying it: what the SE will write into names; None for a token that is no JWT."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    name = claims.get("name") or claims.get("sub")
    return name if isinstance(name, str) and name else None


_SigningKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


def _load_key(path: Path) -> _SigningKey:
    # Parsed once: parsing an RSA key costs far more than signing with it.
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, _SigningKey):
        raise ValueError(f"{path}: {type(key).__name__} cannot sign JWTs")
    return key


class AdminToken(_Cached):
    """Implements `TokenSource` with the Admin Module's client-credentials endpoint."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self._url = base_url.rstrip("/") + "/api/v1/auth/token"
        self._session = session
        self._client_id = client_id
        self._secret = client_secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _renew(self) -> tuple[str, float, float]:
        body = {
            "client_id": self._client_id,
            "client_secret": self._secret,
            "grant_type": "client_credentials",
        }
        try:
            async with self._session.post(self._url, json=body, timeout=self._timeout) as response:
                status, answer = await read_reply(response)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(
                f"Admin Module token endpoint unreachable: {failure(exc)}"
            ) from None
        if status == 200 and isinstance(answer, dict):
            value, lifetime = answer.get("access_token"), answer.get("expires_in")
            if isinstance(value, str) and value and isinstance(lifetime, int | float):
                return value, float(lifetime), min(300.0, lifetime / 2)
            raise TransientError("the Admin Module's token answer lacks access_token/expires_in")
        why = _without_secret(answer, self._secret)
        if status >= 500 or status in (200, 408, 429):
            raise TransientError(f"Admin Module token endpoint answered {status}: {why}")
        # 401 unknown client or wrong secret, 403 inactive or expired account, 422 a body the
        # Admin Module does not understand: all need an operator, not a retry.
        raise ServiceAccountRejected(
            f"the Admin Module rejects service account {self._client_id!r} ({status}): {why}"
        )


def _without_secret(answer: Any, secret: str) -> str:
    """The detail of the token endpoint's error, never with our secret: a FastAPI 422 echoes
    the request body (each error's `input`), and any answer might quote it."""
    if isinstance(answer, dict) and isinstance(answer.get("detail"), list):
        errors = answer["detail"]
        answer = {
            "detail": [
                {k: v for k, v in e.items() if k != "input"} if isinstance(e, dict) else e
                for e in errors
            ]
        }
    text = detail(answer)
    return text.replace(secret, "***") if secret else text
