"""Token sources: minted service-account tokens, and the Admin Module's
client-credentials endpoint on the stand-in over real HTTP."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
import uuid
from pathlib import Path

import aiohttp
import jwt
import pytest

from tests.adminmodule import serve_admin_module
from tests.conftest import Keys
from tusingest.elements.token import AdminToken, MintedToken, ServiceAccountRejected
from tusingest.errors import TransientError
from tusingest.settings.storage import SERVICE_ACCOUNT_NAMESPACE

TOKEN_PATH = "/api/v1/auth/token"


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def decode(token: str, keys: Keys) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(
        token,
        keys.public.read_bytes(),
        algorithms=["RS256"],
        options={"require": ["sub", "iat", "nbf", "exp"]},
    )
    return claims


def jti(token: str) -> object:
    """The `jti` of a token minted on a simulated clock (its times are not now)."""
    return jwt.decode(token, options={"verify_signature": False})["jti"]


def test_minted_token_carries_the_service_account_claims(keys: Keys) -> None:
    before = int(time.time())
    token = asyncio.run(MintedToken(keys.private, name="ingest", ttl_seconds=600).token())
    claims = decode(token, keys)
    assert {k: claims[k] for k in ("sub", "name", "type", "role", "client_id")} == {
        # ArtStore's `sub` is the account's UUID (attr.json `created_by_id`): stable, from the name
        "sub": str(uuid.uuid5(SERVICE_ACCOUNT_NAMESPACE, "ingest")),
        "name": "ingest",
        "type": "service_account",
        "role": "admin",
        "client_id": "sa_ingest",
    }
    assert isinstance(claims["jti"], str)
    assert claims["jti"]
    iat, nbf, exp = claims["iat"], claims["nbf"], claims["exp"]
    assert isinstance(iat, int)
    assert isinstance(nbf, int)
    assert isinstance(exp, int)
    assert iat == nbf <= before  # valid at once, even for a verifier whose clock lags a little
    assert before + 600 <= exp <= int(time.time()) + 600


def test_minted_token_is_cached_and_renewed_ahead_of_expiry(keys: Keys) -> None:
    clock = Clock(time.time())
    # 1200 s: renewed when less than max(60, 1200 / 6) = 200 s remain.
    source = MintedToken(keys.private, name="ingest", ttl_seconds=1200, clock=clock)

    async def scenario() -> None:
        first = await source.token()
        clock.now += 999
        assert await source.token() == first
        clock.now += 2
        second = await source.token()
        assert second != first
        assert jti(second) != jti(first)
        assert await source.token() == second
        third = await source.token(fresh=True)
        assert third not in (first, second)
        assert await source.token() == third

    asyncio.run(scenario())


def test_short_lived_minted_tokens_keep_a_minute_of_margin(keys: Keys) -> None:
    clock = Clock(time.time())
    source = MintedToken(keys.private, name="ingest", ttl_seconds=120, clock=clock)

    async def scenario() -> None:
        first = await source.token()
        clock.now += 59
        assert await source.token() == first
        clock.now += 2  # 59 s left: under the 60 s floor
        assert await source.token() != first

    asyncio.run(scenario())


def test_the_key_is_read_once(keys: Keys, tmp_path: Path) -> None:
    private = tmp_path / "sa.pem"
    shutil.copy(keys.private, private)
    source = MintedToken(private, name="ingest")

    async def scenario() -> None:
        first = await source.token()
        private.unlink()
        second = await source.token(fresh=True)
        assert second != first
        assert decode(second, keys)["name"] == "ingest"

    asyncio.run(scenario())


def test_concurrent_first_callers_share_one_token(keys: Keys) -> None:
    source = MintedToken(keys.private, name="ingest")

    async def scenario() -> None:
        tokens = await asyncio.gather(*(source.token() for _ in range(8)))
        assert len(set(tokens)) == 1

    asyncio.run(scenario())


def test_admin_token_is_fetched_with_a_json_body_and_cached(keys: Keys) -> None:
    async def scenario() -> None:
        async with serve_admin_module(keys.private) as admin, aiohttp.ClientSession() as session:
            # The stand-in answers 422 to a form body, as the Admin Module does.
            form = {"client_id": "sa_ingest", "client_secret": "secret"}
            async with session.post(admin.url + TOKEN_PATH, data=form) as response:
                assert response.status == 422
                assert isinstance((await response.json())["detail"], list)

            source = AdminToken(admin.url, session, "sa_ingest", "secret")
            first = await source.token()
            claims = decode(first, keys)
            assert (claims["type"], claims["role"], claims["client_id"]) == (
                "service_account",
                "admin",
                "sa_ingest",
            )
            assert await source.token() == first
            assert admin.count("POST", TOKEN_PATH) == 2  # the form probe, then one fetch
            renewed = await source.token(fresh=True)
            assert renewed != first
            assert admin.count("POST", TOKEN_PATH) == 3

    asyncio.run(scenario())


def test_admin_token_is_renewed_ahead_of_expiry(keys: Keys) -> None:
    clock = Clock(500.0)

    async def scenario() -> None:
        # expires_in 600: renewed when less than min(300, 600 / 2) = 300 s remain.
        async with (
            serve_admin_module(keys.private, expires_in=600) as admin,
            aiohttp.ClientSession() as session,
        ):
            source = AdminToken(admin.url, session, "sa_ingest", "secret", clock=clock)
            first = await source.token()
            clock.now += 299
            assert await source.token() == first
            assert admin.count("POST", TOKEN_PATH) == 1
            clock.now += 2
            assert await source.token() != first
            assert admin.count("POST", TOKEN_PATH) == 2

    asyncio.run(scenario())


def test_concurrent_callers_share_one_request(keys: Keys) -> None:
    async def scenario() -> None:
        async with serve_admin_module(keys.private) as admin, aiohttp.ClientSession() as session:
            source = AdminToken(admin.url, session, "sa_ingest", "secret")
            tokens = await asyncio.gather(*(source.token() for _ in range(10)))
            assert len(set(tokens)) == 1
            assert admin.count("POST", TOKEN_PATH) == 1
            # A burst of 401s: every caller asks for a fresh token, one request serves them.
            fresh = await asyncio.gather(*(source.token(fresh=True) for _ in range(10)))
            assert len(set(fresh)) == 1
            assert fresh[0] != tokens[0]
            assert admin.count("POST", TOKEN_PATH) == 2

    asyncio.run(scenario())


def test_rejected_credentials_are_not_transient(keys: Keys) -> None:
    async def scenario() -> None:
        async with serve_admin_module(keys.private) as admin, aiohttp.ClientSession() as session:
            with pytest.raises(ServiceAccountRejected) as caught:
                await AdminToken(admin.url, session, "sa_ingest", "wrong").token()
            assert not isinstance(caught.value, TransientError)
            assert (caught.value.status, caught.value.code) == (502, "service_account_rejected")
            assert "Invalid client_id or client_secret" in caught.value.message

            admin.inactive.add("sa_ingest")
            with pytest.raises(ServiceAccountRejected, match="not active"):
                await AdminToken(admin.url, session, "sa_ingest", "secret").token()

    asyncio.run(scenario())


def test_admin_module_down_or_unreachable_is_transient(keys: Keys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    async def scenario() -> None:
        async with serve_admin_module(keys.private) as admin, aiohttp.ClientSession() as session:
            source = AdminToken(admin.url, session, "sa_ingest", "secret")
            admin.down = True
            with pytest.raises(TransientError, match="503"):
                await source.token()
            admin.down = False
            assert decode(await source.token(), keys)["client_id"] == "sa_ingest"

            gone = AdminToken(f"http://127.0.0.1:{port}", session, "sa_ingest", "secret")
            with pytest.raises(TransientError, match="unreachable"):
                await gone.token()

    asyncio.run(scenario())


def test_a_failed_renewal_keeps_the_token_while_it_is_valid(keys: Keys) -> None:
    clock = Clock(500.0)

    async def scenario() -> None:
        async with (
            serve_admin_module(keys.private, expires_in=600) as admin,
            aiohttp.ClientSession() as session,
        ):
            source = AdminToken(admin.url, session, "sa_ingest", "secret", clock=clock)
            first = await source.token()
            admin.down = True
            clock.now += 301  # due for renewal, 299 s still valid
            assert await source.token() == first
            assert admin.count("POST", TOKEN_PATH) == 2  # it did try
            with pytest.raises(TransientError):
                await source.token(fresh=True)  # the current one was refused: no use
            clock.now += 299 - 29  # under half a minute left: too close to expiry
            with pytest.raises(TransientError):
                await source.token()
            admin.down = False
            assert await source.token() != first

    asyncio.run(scenario())


def test_concurrent_callers_share_one_failure(keys: Keys) -> None:
    async def scenario() -> None:
        async with serve_admin_module(keys.private) as admin, aiohttp.ClientSession() as session:
            source = AdminToken(admin.url, session, "sa_ingest", "wrong")
            outcomes = await asyncio.gather(
                *(source.token() for _ in range(6)), return_exceptions=True
            )
            assert all(isinstance(o, ServiceAccountRejected) for o in outcomes), outcomes
            assert admin.count("POST", TOKEN_PATH) == 1

    asyncio.run(scenario())
