"""Bearer-token authentication and per-owner isolation on tus routes (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import TUS, Server
from tusingest.domain import Role
from tusingest.keys import mint_token

# --- token builders -----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: Mapping[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "alice", "name": "alice", "role": "user", "iat": now}
    claims["exp"] = now + 3600
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(server: Server, claims: Mapping[str, Any]) -> str:
    """A token signed with the server's trusted private key."""
    return jwt.encode(dict(claims), server.keys.private.read_bytes(), algorithm="RS256")


def _other_key_token(_server: Server) -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return jwt.encode(_claims(), pem, algorithm="RS256")


def _alg_none_token(_server: Server) -> str:
    return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(_claims())}."


def _hs256_public_key_token(server: Server) -> str:
    """The classic key-confusion attack: HMAC-sign with the RSA public key PEM as the secret."""
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(_claims())}"
    secret = server.keys.public.read_bytes()
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


TokenFactory = Callable[[Server], str]

# (Authorization header value or None, expected body code)
BAD_CREDENTIALS: dict[str, tuple[Callable[[Server], str | None], str]] = {
    "missing": (lambda s: None, "missing_token"),
    "empty header": (lambda s: "", "missing_token"),
    "basic scheme": (lambda s: "Basic YWxpY2U6c2VjcmV0", "malformed_token"),
    "bearer without token": (lambda s: "Bearer ", "malformed_token"),
    "token without scheme": (lambda s: s.keys.token("alice"), "malformed_token"),
    "garbage": (lambda s: "Bearer not.a.jwt", "invalid_token"),
    "garbage single segment": (lambda s: "Bearer abcdef", "invalid_token"),
    "expired": (lambda s: f"Bearer {s.keys.token('alice', ttl=-120)}", "token_expired"),
    "other rsa key": (lambda s: f"Bearer {_other_key_token(s)}", "invalid_token"),
    "alg none": (lambda s: f"Bearer {_alg_none_token(s)}", "invalid_token"),
    "hs256 with public key": (lambda s: f"Bearer {_hs256_public_key_token(s)}", "invalid_token"),
    "no sub": (lambda s: f"Bearer {_signed(s, _claims(sub=None))}", "invalid_token"),
    "empty sub": (lambda s: f"Bearer {_signed(s, _claims(sub=''))}", "invalid_token"),
    "no exp": (lambda s: f"Bearer {_signed(s, _claims(exp=None))}", "invalid_token"),
    "not yet valid": (
        lambda s: f"Bearer {_signed(s, _claims(nbf=int(time.time()) + 3600))}",
        "invalid_token",
    ),
    "tampered payload": (
        lambda s: "Bearer " + _swap_payload(s.keys.token("alice"), _claims(role="admin")),
        "invalid_token",
    ),
}


def _swap_payload(token: str, claims: Mapping[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{_segment(claims)}.{signature}"


# --- helpers ------------------------------------------------------------------------------


def _send(
    server: Server,
    method: str,
    url: str,
    authorization: str | None,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
) -> requests.Response:
    sent: dict[str, str] = dict(TUS)
    sent.update(headers or {})
    if authorization is not None:
        sent["Authorization"] = authorization
    full = url if url.startswith("http") else f"{server.url}{url}"
    return requests.request(method, full, headers=sent, data=data, timeout=30)


def _body_code(response: requests.Response) -> str:
    """tus errors are plain text `code: message`."""
    code, sep, _ = response.text.partition(":")
    assert sep, f"no machine-readable code in {response.text!r}"
    return code.strip()


def _assert_unauthorized(response: requests.Response, code: str | None) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer"), challenge
    if code is not None:
        assert _body_code(response) == code


def _offset(server: Server, url: str, sub: str = "alice") -> int:
    head = server.request("HEAD", url, sub=sub)
    assert head.status_code == 200
    return int(head.headers["Upload-Offset"])


# --- rejected credentials -------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_CREDENTIALS))
def test_bad_credentials_are_rejected_on_creation(server: Server, case: str) -> None:
    make_auth, code = BAD_CREDENTIALS[case]
    response = _send(server, "POST", "/files/", make_auth(server), {"Upload-Length": "5"})
    _assert_unauthorized(response, code)
    assert "Location" not in response.headers


@pytest.mark.parametrize("case", list(BAD_CREDENTIALS))
def test_bad_credentials_are_rejected_on_an_existing_upload(server: Server, case: str) -> None:
    make_auth, code = BAD_CREDENTIALS[case]
    url = server.create(10)
    auth = make_auth(server)

    head = _send(server, "HEAD", url, auth)
    _assert_unauthorized(head, None)  # HEAD has no body to carry a code

    patch = _send(
        server,
        "PATCH",
        url,
        auth,
        {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"},
        b"12345",
    )
    _assert_unauthorized(patch, code)

    delete = _send(server, "DELETE", url, auth)
    _assert_unauthorized(delete, code)

    # Nothing happened to the upload.
    assert _offset(server, url) == 0
    assert server.content(url) == b""


def test_the_same_request_with_a_valid_token_succeeds(server: Server) -> None:
    """Control for the rejections above: the headers they use are otherwise fine."""
    response = _send(
        server, "POST", "/files/", f"Bearer {server.keys.token('alice')}", {"Upload-Length": "5"}
    )
    assert response.status_code == 201, response.text


def test_scheme_is_case_insensitive(server: Server) -> None:
    response = _send(
        server, "POST", "/files/", f"bearer {server.keys.token('alice')}", {"Upload-Length": "5"}
    )
    assert response.status_code == 201, response.text


# --- what needs no token --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/files/", "/files/0123456789abcdef"])
def test_options_needs_no_token(server: Server, path: str) -> None:
    response = requests.options(f"{server.url}{path}", timeout=30)
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert "creation" in response.headers["Tus-Extension"].split(",")


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_health_needs_no_token(server: Server, path: str) -> None:
    response = requests.get(f"{server.url}{path}", timeout=30)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_health_ignores_a_bad_token(server: Server, path: str) -> None:
    response = requests.get(
        f"{server.url}{path}", headers={"Authorization": "Bearer garbage"}, timeout=30
    )
    assert response.status_code == 200


# --- ownership ------------------------------------------------------------------------------


def _alice_upload(server: Server) -> str:
    url = server.create(10, sub="alice")
    assert server.patch(url, b"abcd", 0, sub="alice").status_code == 204
    return url


def test_another_user_gets_404_and_cannot_touch_the_upload(server: Server) -> None:
    url = _alice_upload(server)
    unknown = f"{server.endpoint}{'f' * 32}"

    head = server.request("HEAD", url, sub="bob")
    assert head.status_code == 404
    assert "Upload-Offset" not in head.headers

    patch = server.patch(url, b"XYZ", 4, sub="bob")
    assert patch.status_code == 404
    # Indistinguishable from an upload that does not exist: no existence oracle.
    assert patch.text == server.patch(unknown, b"XYZ", 4, sub="bob").text

    delete = server.request("DELETE", url, sub="bob")
    assert delete.status_code == 404

    head = server.request("HEAD", url, sub="alice")
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "4"
    assert head.headers["Upload-Length"] == "10"
    assert server.content(url) == b"abcd"

    # Alice can still finish her upload.
    done = server.patch(url, b"efghij", 4, sub="alice")
    assert done.status_code == 204
    assert done.headers["Upload-Offset"] == "10"
    assert server.content(url) == b"abcdefghij"


def test_another_user_cannot_patch_at_a_wrong_offset_either(server: Server) -> None:
    """Ownership is checked before the offset: a 409 would leak that the upload exists."""
    url = _alice_upload(server)
    assert server.patch(url, b"XYZ", 0, sub="bob").status_code == 404


def test_admin_can_head_patch_and_delete_any_upload(server: Server) -> None:
    url = _alice_upload(server)
    admin = {"Authorization": f"Bearer {server.keys.token('root', Role.ADMIN)}"}

    head = server.request("HEAD", url, headers=admin)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "4"

    patch = server.patch(url, b"ef", 4, **admin)
    assert patch.status_code == 204
    assert patch.headers["Upload-Offset"] == "6"
    assert _offset(server, url, sub="alice") == 6

    delete = server.request("DELETE", url, headers=admin)
    assert delete.status_code == 204
    assert server.request("HEAD", url, sub="alice").status_code == 404
    assert not server.staged(url).exists()


def test_user_role_claim_is_not_admin(server: Server) -> None:
    url = _alice_upload(server)
    user = {"Authorization": f"Bearer {server.keys.token('mallory', Role.USER)}"}
    assert server.request("HEAD", url, headers=user).status_code == 404


# --- AUTH_ENABLED=off -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_server(server: Server, make_server: Callable[..., Server]) -> Server:
    return make_server(server.backend, AUTH_ENABLED="off")


def test_auth_disabled_accepts_requests_without_a_token(open_server: Server) -> None:
    created = _send(open_server, "POST", "/files/", None, {"Upload-Length": "5"})
    assert created.status_code == 201, created.text
    url = f"{open_server.url}{created.headers['Location']}"

    patch = _send(
        open_server,
        "PATCH",
        url,
        None,
        {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"},
        b"hello",
    )
    assert patch.status_code == 204, patch.text
    assert patch.headers["Upload-Offset"] == "5"

    head = _send(open_server, "HEAD", url, None)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "5"
    assert open_server.content(url) == b"hello"

    assert _send(open_server, "DELETE", url, None).status_code == 204


def test_auth_enabled_server_still_refuses_the_same_request(server: Server) -> None:
    """Control: the default (AUTH_ENABLED unset) is on."""
    assert server.settings.auth.enabled
    response = _send(server, "POST", "/files/", None, {"Upload-Length": "5"})
    _assert_unauthorized(response, "missing_token")


def test_a_token_that_worked_is_refused_once_it_expires(server: Server) -> None:
    token = mint_token(server.keys.private, sub="alice", ttl_seconds=2)  # fresh, not cached
    headers = {**TUS, "Authorization": f"Bearer {token}", "Upload-Length": "1"}
    assert requests.post(server.endpoint, headers=headers, timeout=10).status_code == 201
    time.sleep(2.2)
    late = requests.post(server.endpoint, headers=headers, timeout=10)
    assert late.status_code == 401
    assert late.text.startswith("token_expired")


def test_another_user_cannot_interrupt_a_streaming_upload(server: Server) -> None:
    url = server.create(2048)
    streaming, go_on = threading.Event(), threading.Event()
    result: dict[str, requests.Response] = {}

    def body() -> Iterator[bytes]:
        yield b"a" * 1024
        streaming.set()
        go_on.wait(10)
        yield b"b" * 1024

    def send() -> None:
        result["alice"] = requests.patch(
            url,
            headers=server.headers(
                "alice",
                **{"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"},
            ),
            data=body(),
            timeout=30,
        )

    alice = threading.Thread(target=send)
    alice.start()
    assert streaming.wait(10)
    time.sleep(0.2)
    bob = server.patch(url, b"x", 0, sub="bob")
    assert bob.status_code == 404
    go_on.set()
    alice.join(30)
    assert result["alice"].status_code == 204, result["alice"].text
    assert result["alice"].headers["Upload-Offset"] == "2048"
