"""CORS for browser clients: preflights, headers on every response, origins."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import requests

from tests.conftest import TUS, Server

ORIGIN = "http://app.example"

ALLOWED_METHODS = {"POST", "HEAD", "PATCH", "OPTIONS", "GET", "DELETE"}
TUS_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Checksum",
    "X-HTTP-Method-Override",
    "X-Requested-With",
    "X-Request-ID",
    "Upload-Complete",
    "Upload-Incomplete",
    "Upload-Draft-Interop-Version",
]
TUS_RESPONSE_HEADERS = [
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Expires",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
]


def _tokens(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",") if part.strip()}


def _preflight(
    server: Server, path: str, method: str = "PATCH", origin: str = ORIGIN
) -> requests.Response:
    return requests.options(
        f"{server.url}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,tus-resumable,upload-offset",
        },
        timeout=30,
    )


def _assert_cors(response: requests.Response, origin: str = ORIGIN) -> None:
    """What every actual response to an allowed origin carries, errors included."""
    assert response.headers.get("Access-Control-Allow-Origin") == origin, response.headers
    assert "origin" in _tokens(response.headers.get("Vary", ""))
    exposed = _tokens(response.headers.get("Access-Control-Expose-Headers", ""))
    missing = {h.lower() for h in TUS_RESPONSE_HEADERS} - exposed
    assert not missing, f"not exposed: {missing}"
    assert "Access-Control-Allow-Credentials" not in response.headers


# --- preflight ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upload_path(server: Server) -> str:
    url = server.create(10)
    return url.removeprefix(server.url)


@pytest.mark.parametrize(
    ("target", "method"),
    [("collection", "POST"), ("resource", "PATCH"), ("resource", "HEAD"), ("resource", "DELETE")],
)
def test_preflight(server: Server, upload_path: str, target: str, method: str) -> None:
    path = "/files/" if target == "collection" else upload_path
    response = _preflight(server, path, method)
    assert response.status_code == 204, response.text
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "origin" in _tokens(response.headers["Vary"])
    assert _tokens(response.headers["Access-Control-Allow-Methods"]) >= {
        m.lower() for m in ALLOWED_METHODS
    }
    allowed_headers = _tokens(response.headers["Access-Control-Allow-Headers"])
    missing = {h.lower() for h in TUS_REQUEST_HEADERS} - allowed_headers
    assert not missing, f"not allowed: {missing}"
    assert response.headers["Access-Control-Max-Age"] == "86400"
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_preflight_for_an_unknown_upload_still_succeeds(server: Server) -> None:
    """The browser preflights before it knows whether the upload exists; no token either."""
    response = _preflight(server, f"/files/{'0' * 32}", "HEAD")
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_preflight_does_not_touch_the_upload(server: Server, upload_path: str) -> None:
    response = _preflight(server, upload_path, "DELETE")
    assert response.status_code == 204
    head = server.request("HEAD", upload_path)
    assert head.status_code == 200


def test_plain_options_is_the_tus_discovery_answer(server: Server) -> None:
    """OPTIONS with Origin but no Access-Control-Request-Method is an actual request."""
    response = requests.options(f"{server.url}/files/", headers={"Origin": ORIGIN}, timeout=30)
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    _assert_cors(response)


# --- actual responses -----------------------------------------------------------------------


def _with_origin(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"Origin": ORIGIN, **(extra or {})}


def test_creation_patch_and_head_carry_cors_headers(server: Server) -> None:
    created = server.request("POST", server.endpoint, headers=_with_origin({"Upload-Length": "5"}))
    assert created.status_code == 201
    _assert_cors(created)
    url = f"{server.url}{created.headers['Location']}"

    patched = server.patch(url, b"hello", 0, Origin=ORIGIN)
    assert patched.status_code == 204
    _assert_cors(patched)

    head = server.request("HEAD", url, headers=_with_origin())
    assert head.status_code == 200
    _assert_cors(head)

    deleted = server.request("DELETE", url, headers=_with_origin())
    assert deleted.status_code == 204
    _assert_cors(deleted)


ErrorCase = Callable[[Server], requests.Response]

ERRORS: dict[str, tuple[int, ErrorCase]] = {
    "404 unknown upload": (
        404,
        lambda s: s.request("HEAD", f"{s.endpoint}{'0' * 32}", headers=_with_origin()),
    ),
    "404 unknown upload (PATCH)": (
        404,
        lambda s: s.patch(f"{s.endpoint}{'0' * 32}", b"x", 0, Origin=ORIGIN),
    ),
    "412 missing Tus-Resumable": (
        412,
        lambda s: requests.post(
            s.endpoint,
            headers={
                "Origin": ORIGIN,
                "Upload-Length": "5",
                "Authorization": f"Bearer {s.keys.token()}",
            },
            timeout=30,
        ),
    ),
    "401 missing token": (
        401,
        lambda s: requests.post(
            s.endpoint, headers={**TUS, "Origin": ORIGIN, "Upload-Length": "5"}, timeout=30
        ),
    ),
    "401 bad token": (
        401,
        lambda s: requests.head(
            f"{s.endpoint}{'0' * 32}",
            headers={**TUS, "Origin": ORIGIN, "Authorization": "Bearer nope"},
            timeout=30,
        ),
    ),
    "400 bad Upload-Length": (
        400,
        lambda s: s.request("POST", s.endpoint, headers=_with_origin({"Upload-Length": "-1"})),
    ),
    "409 offset mismatch": (
        409,
        lambda s: s.patch(s.create(10), b"x", 3, Origin=ORIGIN),
    ),
    "404 unknown route": (
        404,
        lambda s: requests.get(f"{s.url}/nowhere", headers={"Origin": ORIGIN}, timeout=30),
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_error_responses_carry_cors_headers(server: Server, case: str) -> None:
    status, send = ERRORS[case]
    response = send(server)
    assert response.status_code == status, response.text
    _assert_cors(response)


def test_health_answers_cross_origin_too(server: Server) -> None:
    response = requests.get(f"{server.url}/health/ready", headers={"Origin": ORIGIN}, timeout=30)
    assert response.status_code == 200
    _assert_cors(response)


def test_no_cors_headers_without_origin(server: Server) -> None:
    response = server.request("POST", server.endpoint, headers={"Upload-Length": "1"})
    assert response.status_code == 201
    assert "Access-Control-Allow-Origin" not in response.headers


# --- restricted origins ---------------------------------------------------------------------

ALLOWED = "http://a.example"


@pytest.fixture(scope="module")
def restricted(server: Server, make_server: Callable[..., Server]) -> Server:
    # Capitals and a trailing slash in the configuration still match the browser's origin.
    return make_server(server.backend, CORS_ALLOWED_ORIGINS="HTTP://A.Example/, https://b.example")


def test_allowed_origin_is_echoed(restricted: Server) -> None:
    preflight = _preflight(restricted, "/files/", "POST", origin=ALLOWED)
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED

    created = restricted.request(
        "POST", restricted.endpoint, headers={"Origin": ALLOWED, "Upload-Length": "3"}
    )
    assert created.status_code == 201
    _assert_cors(created, ALLOWED)

    second = _preflight(restricted, "/files/", "POST", origin="https://b.example")
    assert second.headers["Access-Control-Allow-Origin"] == "https://b.example"


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "https://a.example", "http://a.example:8080", "http://a.example.evil"],
)
def test_disallowed_origin_is_refused(restricted: Server, origin: str) -> None:
    preflight = _preflight(restricted, "/files/", "POST", origin=origin)
    assert preflight.status_code == 403
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert "Access-Control-Allow-Methods" not in preflight.headers

    before = restricted.request("POST", restricted.endpoint, headers={"Upload-Length": "3"})
    assert before.status_code == 201  # same request without Origin: fine

    refused = restricted.request(
        "POST", restricted.endpoint, headers={"Origin": origin, "Upload-Length": "3"}
    )
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert "Location" not in refused.headers
    assert refused.json()["error"] == "origin_not_allowed"
