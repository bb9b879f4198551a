"""`GET /api/openapi.json` over real HTTP on SQLite and PostgreSQL: served without a token, a
valid OpenAPI 3.1 document, and true to the app.

True to the app means: every route of the root app and its sub-apps is documented with its
methods, and every documented operation is routed; the operations it calls public answer
without a token and the others ask for one; and real answers (successes and the errors cheap to
provoke) have a documented status, body schema (which names each error's code) and headers.

Paths are compared as routed, with one exception: the tus sub-app routes both `/files` and
`/files/` (the endpoint answers with and without its trailing slash); the document lists
`/files/`, the URL tus clients are given. A routed path whose slashed twin is routed with the
same methods is taken as that twin; any other difference of a slash fails.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, get_args

import jsonschema
import pytest
import requests
from aiohttp import web
from aiohttp.web_urldispatcher import PrefixedSubAppResource
from openapi_spec_validator import validate as validate_openapi

from tests.conftest import TUS, Server
from tusingest.api.openapi import OFFSET_CONTENT_TYPE, TUS_VERSION, document
from tusingest.app import create_app
from tusingest.domain import Role
from tusingest.pipeline.validate import RejectionCode
from tusingest.tus import protocol

Json = dict[str, Any]

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
HEX_ID = "0" * 32  # an upload id nobody has
UNKNOWN_UUID = str(uuid.UUID(int=1))
# A method no resource has: the tus edge answers it 405 with the resource's `Allow`.
PROBE_METHOD = "PROPFIND"
PUBLIC = {
    ("/health/live", "GET"),
    ("/health/ready", "GET"),
    ("/metrics", "GET"),
    ("/api/openapi.json", "GET"),
    ("/files/", "OPTIONS"),
    ("/files/{upload_id}", "OPTIONS"),
}
# The status page's routes need no bearer token: without a session they answer in HTML.
STATUS_PAGE = {
    ("/status", "GET"): 401,  # the sign-in form
    ("/status/login", "POST"): 400,  # no token in the form
    ("/status/logout", "POST"): 303,
}


@pytest.fixture(scope="module")
def doc() -> Json:
    return document()


def operations(doc: Json) -> dict[tuple[str, str], Json]:
    return {
        (path, method.upper()): item[method]
        for path, item in doc["paths"].items()
        for method in HTTP_METHODS
        if method in item
    }


# --- checking an answer against the document -------------------------------------------------


def _validate(instance: Any, schema: Json, doc: Json) -> None:
    # `#/components/...` references resolve against a root that carries the components.
    root = {"components": doc["components"], "allOf": [schema]}
    jsonschema.Draft202012Validator(root).validate(instance)


def check(doc: Json, response: requests.Response, template: str, method: str) -> None:
    """`response` to `method template` as the document describes it: status, body, headers."""
    operation = operations(doc)[(template, method)]
    status = str(response.status_code)
    documented = operation["responses"].get(status)
    assert documented is not None, (
        f"{method} {template} answered {status}, not documented: {response.text[:300]}"
    )
    if response.content and method != "HEAD":
        content = documented.get("content")
        assert content, f"{method} {template} {status} has a body, none documented"
        media = response.headers["Content-Type"].split(";")[0].strip()
        assert media in content, f"{method} {template} {status}: {media} not in {list(content)}"
        body = response.json() if media == "application/json" else response.text
        _validate(body, content[media]["schema"], doc)
    for name, header in documented.get("headers", {}).items():
        if header.get("required"):
            assert name in response.headers, f"{method} {template} {status}: no {name} header"


def concrete(template: str) -> str:
    """A path to send for `template`: every placeholder an id nobody has."""
    return (
        template.replace("{upload_id}", HEX_ID)
        .replace("{file_id}", UNKNOWN_UUID)
        .replace("{transfer_id}", UNKNOWN_UUID)
    )


def send(
    server: Server,
    method: str,
    path: str,
    auth: str | None = "user",
    *,
    tus: bool | None = None,
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    """`auth`: "user", "admin", None (no token) or an `Authorization` value; tus paths get
    `Tus-Resumable` unless `tus=False`."""
    merged: dict[str, str] = {}
    if tus if tus is not None else path.startswith("/files"):
        merged.update(TUS)
    if auth == "user":
        merged["Authorization"] = f"Bearer {server.keys.token('openapi-user')}"
    elif auth == "admin":
        merged["Authorization"] = f"Bearer {server.keys.token('openapi-admin', Role.ADMIN)}"
    elif auth is not None:
        merged["Authorization"] = auth
    merged.update(headers or {})
    return requests.request(
        method, f"{server.url}{path}", headers=merged, timeout=60, allow_redirects=False, **kwargs
    )


# --- the document ----------------------------------------------------------------------------


def test_served_without_a_token(server: Server, doc: Json) -> None:
    response = requests.get(f"{server.url}/api/openapi.json", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    served = response.json()
    assert served["openapi"].startswith("3.")
    assert served == json.loads(json.dumps(doc))
    check(doc, response, "/api/openapi.json", "GET")


def test_a_valid_openapi_31_document(doc: Json) -> None:
    validate_openapi(doc)
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] == "tusingest"
    assert doc["servers"] == [{"url": "/"}]
    ids = [op["operationId"] for op in operations(doc).values()]
    assert len(ids) == len(set(ids))
    for (path, method), op in operations(doc).items():
        assert op["responses"], (path, method)
        for status, response in op["responses"].items():
            media = response.get("content", {})
            # (`/health/ready` answers 503 with its own body.)
            if int(status) >= 400 and "application/json" in media and path != "/health/ready":
                schema = media["application/json"]["schema"]
                # Every JSON error is `{"error": code, "message": text}`, its codes listed.
                assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}, (path, status)
                assert schema["allOf"][1]["properties"]["error"]["enum"], (path, status)


def test_only_probes_discovery_the_document_and_the_status_page_are_public(doc: Json) -> None:
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    public = {
        key for key, op in operations(doc).items() if op.get("security", doc["security"]) == []
    }
    assert public == PUBLIC | set(STATUS_PAGE)
    for key, op in operations(doc).items():
        if key not in public:
            assert op.get("security", doc["security"]) == [{"bearerAuth": []}], key
            assert "401" in op["responses"], key


def test_the_tus_constants_are_the_surfaces(doc: Json) -> None:
    """The document spells out what `api` may not import from its sibling `tus`."""
    assert TUS_VERSION == protocol.TUS_VERSION
    assert OFFSET_CONTENT_TYPE == protocol.OFFSET_CONTENT_TYPE
    patch = operations(doc)[("/files/{upload_id}", "PATCH")]
    assert list(patch["requestBody"]["content"]) == [protocol.OFFSET_CONTENT_TYPE]
    rejected = patch["responses"]["422"]["content"]["application/json"]["schema"]
    assert rejected["allOf"][1]["properties"]["error"]["enum"] == list(get_args(RejectionCode))


# --- the routes ------------------------------------------------------------------------------


def routes(app: web.Application, methods_of: Callable[[str], set[str]]) -> dict[str, set[str]]:
    """Every routed path of `app` and its sub-apps with its methods. `add_subapp` has already
    prefixed a sub-app's resources, so their canonical paths are whole; a `*` route's methods
    come from `methods_of`; the HEAD that `add_get` adds beside a GET is left out."""
    found: dict[str, set[str]] = {}
    for resource in app.router.resources():
        if isinstance(resource, PrefixedSubAppResource):
            prefix = resource.get_info()["prefix"]
            for path, methods in routes(resource.get_info()["app"], methods_of).items():
                assert path.startswith(prefix), (path, prefix)
                found.setdefault(path, set()).update(methods)
            continue
        path = resource.canonical
        handlers = {route.method: route.handler for route in resource}
        methods = set(handlers)
        if "*" in methods:
            methods = (methods - {"*"}) | methods_of(path)
        if "GET" in handlers and handlers.get("HEAD") is handlers["GET"]:
            methods.discard("HEAD")
        found.setdefault(path, set()).update(methods)
    return found


def allowed_methods(server: Server) -> Callable[[str], set[str]]:
    """A `*` route's methods as the running server tells them: the tus edge answers a method
    the resource lacks with 405 and `Allow`."""

    def probe(template: str) -> set[str]:
        response = send(server, PROBE_METHOD, concrete(template))
        assert response.status_code == 405, (template, response.status_code, response.text)
        return {m.strip() for m in response.headers["Allow"].split(",") if m.strip()}

    return probe


def test_every_route_is_documented_and_every_operation_routed(server: Server, doc: Json) -> None:
    routed = routes(create_app(server.settings), allowed_methods(server))
    # `/files` is the slashless twin of `/files/`; any other twin would be collapsed too.
    twins = {path for path in routed if path + "/" in routed and routed[path] == routed[path + "/"]}
    assert twins == {"/files"}
    served = {
        (path + "/" if path in twins else path, method)
        for path, methods in routed.items()
        for method in methods
    }
    assert served == set(operations(doc))
    # The tus method tables, as routed.
    assert routed["/files/"] == {"OPTIONS", "POST"}
    assert routed["/files/{upload_id}"] == {"OPTIONS", "HEAD", "PATCH", "DELETE"}


# --- real answers ----------------------------------------------------------------------------


def test_public_operations_answer_without_a_token_the_others_ask_for_one(
    server: Server, doc: Json
) -> None:
    for template, method in sorted(operations(doc)):
        response = send(server, method, concrete(template), auth=None)
        if (template, method) in STATUS_PAGE:
            expected = STATUS_PAGE[(template, method)]
            assert response.status_code == expected, (template, method, response.status_code)
        elif (template, method) in PUBLIC:
            assert response.status_code < 300, (template, method, response.status_code)
        else:
            assert response.status_code == 401, (template, method, response.text)
            if method != "HEAD":
                assert "missing_token" in response.text
        check(doc, response, template, method)


FILE = "/api/files/{file_id}"
TRANSFER = "/api/files/{file_id}/transfer"
UPLOAD_FORM = "/api/files/upload"
TUS_UPLOAD = "/files/{upload_id}"
_TRANSFER_PATH = concrete(TRANSFER)

# (method, template, path, auth, request keywords, status, code); code None: no body (HEAD).
ERRORS: dict[str, tuple[str, str, str, str | None, Json, int, str | None]] = {
    "file id not a uuid": ("GET", FILE, "/api/files/not-a-uuid", "user", {}, 404, "file_not_found"),
    "unknown file": ("GET", FILE, concrete(FILE), "user", {}, 404, "file_not_found"),
    "delete unknown file": ("DELETE", FILE, "/api/files/x", "user", {}, 404, "file_not_found"),
    "limit 0": ("GET", "/api/files", "/api/files", "user", {"params": {"limit": "0"}}, 400,
                "invalid_limit"),
    "foreign cursor": ("GET", "/api/files", "/api/files", "user",
                       {"params": {"cursor": "bm90IGEgY3Vyc29y"}}, 400, "invalid_cursor"),
    "no token": ("GET", "/api/files", "/api/files", None, {}, 401, "missing_token"),
    "basic auth": ("GET", "/api/files", "/api/files", "Basic YTpi", {}, 401, "malformed_token"),
    "not a jwt": ("GET", "/api/files", "/api/files", "Bearer x.y.z", {}, 401, "invalid_token"),
    "audit as a user": ("GET", "/api/audit", "/api/audit", "user", {}, 403, "admin_required"),
    "audit since": ("GET", "/api/audit", "/api/audit", "admin",
                    {"params": {"since": "yesterday"}}, 400, "invalid_since"),
    "audit before": ("GET", "/api/audit", "/api/audit", "admin", {"params": {"before": "x"}},
                     400, "invalid_before"),
    "audit user": ("GET", "/api/audit", "/api/audit", "admin", {"params": {"user": "a\x07"}},
                   400, "invalid_user"),
    "audit limit": ("GET", "/api/audit", "/api/audit", "admin", {"params": {"limit": "1001"}},
                    400, "invalid_limit"),
    "unknown transfer": ("GET", "/api/files/transfer/{transfer_id}", "/api/files/transfer/x",
                         "user", {}, 404, "transfer_not_found"),
    "transfer body not an object": ("POST", TRANSFER, _TRANSFER_PATH, "user", {"data": b"[]"},
                                    400, "invalid_request"),
    "transfer without destination": ("POST", TRANSFER, _TRANSFER_PATH, "user", {"json": {}},
                                     400, "invalid_destination"),
    "transfer flag not a boolean": (
        "POST", TRANSFER, _TRANSFER_PATH, "user",
        {"json": {"destination_storage_element_id": "se-x", "delete_source": "yes"}},
        400, "invalid_request"),
    "transfer of an unknown file": (
        "POST", TRANSFER, _TRANSFER_PATH, "user",
        {"json": {"destination_storage_element_id": "se-x"}}, 404, "file_not_found"),
    "unknown session": ("GET", "/api/files/upload/session/{upload_id}",
                        "/api/files/upload/session/nope", "user", {}, 404, "upload_not_found"),
    "form not multipart": ("POST", UPLOAD_FORM, UPLOAD_FORM, "user", {"json": {}}, 415,
                           "unsupported_media_type"),
    "form resuming": ("POST", UPLOAD_FORM, UPLOAD_FORM, "user",
                      {"headers": {"X-Upload-Session-ID": HEX_ID},
                       "files": {"file": ("a.txt", b"a")}},
                      400, "resumable_multipart_unsupported"),
    "form without a file": ("POST", UPLOAD_FORM, UPLOAD_FORM, "user",
                            {"files": {"metadata": (None, "{}")}}, 400, "missing_file"),
    "form metadata not json": ("POST", UPLOAD_FORM, UPLOAD_FORM, "user",
                               {"files": {"metadata": (None, "nope")}}, 400, "invalid_metadata"),
    "form two files": ("POST", UPLOAD_FORM, UPLOAD_FORM, "user",
                       {"files": [("file", ("a.txt", b"a")), ("file", ("b.txt", b"b"))]},
                       413, "too_many_files"),
    "batch without files": ("POST", "/api/files/batch/upload", "/api/files/batch/upload", "user",
                            {"files": {"metadata": (None, "{}")}}, 400, "missing_file"),
    "tus without version": ("POST", "/files/", "/files/", "user",
                            {"tus": False, "headers": {"Upload-Length": "1"}}, 412,
                            "unsupported_version"),
    "tus without token": ("POST", "/files/", "/files/", None, {}, 401, "missing_token"),
    "tus without length": ("POST", "/files/", "/files/", "user", {}, 400, "invalid_length"),
    "tus bad length": ("POST", "/files/", "/files/", "user",
                       {"headers": {"Upload-Length": "-1"}}, 400, "invalid_upload_length"),
    "tus too large": ("POST", "/files/", "/files/", "user",
                      {"headers": {"Upload-Length": str(10**18)}}, 413, "too_large"),
    "tus checksum algorithm": ("POST", "/files/", "/files/", "user",
                               {"headers": {"Upload-Length": "1", "Upload-Checksum": "crc32 AA=="}},
                               400, "unsupported_checksum_algorithm"),
    "tus bad metadata": ("POST", "/files/", "/files/", "user",
                         {"headers": {"Upload-Length": "1", "Upload-Metadata": "name !!!"}},
                         400, "invalid_metadata"),
    "tus bad concat": ("POST", "/files/", "/files/", "user",
                       {"headers": {"Upload-Concat": "whole"}}, 400, "invalid_concat"),
    "tus final of nothing": ("POST", "/files/", "/files/", "user",
                             {"headers": {"Upload-Concat": f"final;/files/{HEX_ID}"}}, 400,
                             "invalid_concat_part"),
    "tus patch unknown": ("PATCH", TUS_UPLOAD, f"/files/{HEX_ID}", "user",
                          {"headers": {"Upload-Offset": "0", "Content-Type": OFFSET_CONTENT_TYPE}},
                          404, "upload_not_found"),
    "tus head unknown": ("HEAD", TUS_UPLOAD, f"/files/{HEX_ID}", "user", {}, 404, None),
    "tus delete unknown": ("DELETE", TUS_UPLOAD, f"/files/{HEX_ID}", "user", {}, 404,
                           "upload_not_found"),
}  # fmt: skip


def _code(response: requests.Response) -> str | None:
    if not response.content:
        return None
    if response.headers["Content-Type"].startswith("application/json"):
        code: str = response.json()["error"]
        return code
    return response.text.split(":", 1)[0]


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_documented(server: Server, doc: Json, case: str) -> None:
    method, template, path, auth, kwargs, status, code = ERRORS[case]
    response = send(server, method, path, auth, **kwargs)
    assert (response.status_code, _code(response)) == (status, code), response.text
    check(doc, response, template, method)


def _wait_stored(server: Server, upload_id: str) -> Json:
    deadline = time.monotonic() + 60
    while True:
        response = send(server, "GET", f"/api/files/upload/session/{upload_id}")
        body: Json = response.json()
        if body["status"] != "in_progress" or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_tus_answers_are_documented(server: Server, doc: Json) -> None:
    created = send(server, "POST", "/files/", headers={"Upload-Length": "10"})
    check(doc, created, "/files/", "POST")
    assert created.status_code == 201
    path = created.headers["Location"]
    upload_id = path.rsplit("/", 1)[-1]

    for method, concrete_path, template in (
        ("HEAD", path, TUS_UPLOAD),
        ("OPTIONS", path, TUS_UPLOAD),
        ("OPTIONS", "/files/", "/files/"),
    ):
        response = send(server, method, concrete_path, auth=None if method == "OPTIONS" else "user")
        assert response.status_code < 300, (method, concrete_path, response.status_code)
        check(doc, response, template, method)

    octets = {"Content-Type": OFFSET_CONTENT_TYPE}
    errors = {
        409: send(server, "PATCH", path, headers={**octets, "Upload-Offset": "5"}, data=b"x"),
        415: send(server, "PATCH", path, headers={"Upload-Offset": "0", "Content-Type": "a/b"}),
        400: send(server, "PATCH", path, headers=octets, data=b"x"),
        413: send(server, "PATCH", path, headers={**octets, "Upload-Offset": "0"}, data=b"x" * 11),
    }
    for status, response in errors.items():
        assert response.status_code == status, response.text
        check(doc, response, TUS_UPLOAD, "PATCH")

    done = send(server, "PATCH", path, headers={**octets, "Upload-Offset": "0"}, data=b"0123456789")
    assert done.status_code == 204, done.text
    check(doc, done, TUS_UPLOAD, "PATCH")
    session = send(server, "GET", f"/api/files/upload/session/{upload_id}")
    check(doc, session, "/api/files/upload/session/{upload_id}", "GET")
    assert _wait_stored(server, upload_id)["status"] == "completed"
    check(doc, send(server, "HEAD", path), TUS_UPLOAD, "HEAD")
    check(doc, send(server, "GET", f"/api/files/upload/session/{upload_id}"),
          "/api/files/upload/session/{upload_id}", "GET")  # fmt: skip

    terminated = send(server, "DELETE", path)
    assert terminated.status_code == 204, terminated.text
    check(doc, terminated, TUS_UPLOAD, "DELETE")
    gone = send(server, "HEAD", path)
    assert gone.status_code == 404
    check(doc, gone, TUS_UPLOAD, "HEAD")


def test_api_answers_are_documented(server: Server, doc: Json) -> None:
    form = {
        "file": ("notes.txt", b"openapi notes\n", "text/plain"),
        "metadata": (None, json.dumps({"retention_policy": "temporary"})),
    }
    uploaded = send(server, "POST", UPLOAD_FORM, files=form)
    assert uploaded.status_code in (201, 202), uploaded.text
    check(doc, uploaded, UPLOAD_FORM, "POST")
    upload_id = uploaded.json()["upload_session_id"]
    session = _wait_stored(server, upload_id)
    assert session["status"] == "completed", session
    file_id = session["file_id"]

    batch = send(
        server,
        "POST",
        "/api/files/batch/upload",
        files=[("files", ("a.txt", b"a\n", "text/plain")), ("files", ("b.txt", b"b\n"))],
    )
    assert batch.status_code == 207, batch.text
    assert batch.json()["summary"]["succeeded"] == 2, batch.text
    check(doc, batch, "/api/files/batch/upload", "POST")

    answers = [
        (send(server, "GET", f"/api/files/{file_id}"), FILE, "GET", 200),
        (send(server, "GET", "/api/files", params={"limit": "1"}), "/api/files", "GET", 200),
        (send(server, "GET", "/api/audit", "admin", params={"limit": "3"}), "/api/audit", "GET",
         200),
        (send(server, "GET", f"/api/files/upload/session/{upload_id}"),
         "/api/files/upload/session/{upload_id}", "GET", 200),
        (send(server, "POST", f"/api/files/{file_id}/transfer",
              json={"destination_storage_element_id": "se-nowhere"}), TRANSFER, "POST", 400),
        (send(server, "GET", "/health/ready", None), "/health/ready", "GET", 200),
        (send(server, "GET", "/health/live", None), "/health/live", "GET", 200),
        (send(server, "GET", "/metrics", None), "/metrics", "GET", 200),
    ]  # fmt: skip
    element = send(server, "GET", f"/api/files/{file_id}").json()["storage_element_id"]
    same = send(
        server,
        "POST",
        f"/api/files/{file_id}/transfer",
        json={"destination_storage_element_id": element},
    )
    answers.append((same, TRANSFER, "POST", 409))
    for response, template, method, status in answers:
        assert response.status_code == status, (template, response.text)
        check(doc, response, template, method)
    assert same.json()["error"] == "same_element"

    deleted = send(server, "DELETE", f"/api/files/{file_id}")
    assert deleted.status_code in (202, 204), deleted.text
    check(doc, deleted, FILE, "DELETE")
