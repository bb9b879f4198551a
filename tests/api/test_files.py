"""`/api/files` (one file, the caller's files, deletion), tus termination of a stored upload,
`/api/audit` and the session's seed fields, over real HTTP on SQLite and PostgreSQL with the
embedded local element (edit mode)."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.api.test_verdict import isolated_env, metadata
from tests.conftest import BACKENDS, Server
from tusingest.domain import Role

ADMIN = "root-admin"
LOCAL = "127.0.0.1"


@pytest.fixture(scope="module", params=BACKENDS)
def files_server(
    request: pytest.FixtureRequest,
    make_server: Callable[..., Server],
    new_pg_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Server:
    """A server of its own (on PostgreSQL a database, staging and storage of its own), so that
    what the admin sees and what runs the `delete` operations is this module's alone."""
    backend: str = request.param
    root = tmp_path_factory.mktemp(f"files-{backend}")
    return make_server(backend, **isolated_env(backend, root, new_pg_database))


@pytest.fixture
def user() -> str:
    """A user of this test alone: its listing holds only what the test stored."""
    return f"u-{uuid.uuid4().hex[:10]}"


def api(
    server: Server,
    method: str,
    path: str,
    *,
    sub: str,
    role: Role = Role.USER,
    params: dict[str, str] | None = None,
) -> requests.Response:
    return server.session.request(
        method,
        f"{server.url}{path}",
        headers={"Authorization": f"Bearer {server.keys.token(sub, role)}"},
        params=params,
        timeout=60,
    )


def as_admin(
    server: Server, method: str, path: str, params: dict[str, str] | None = None
) -> requests.Response:
    return api(server, method, path, sub=ADMIN, role=Role.ADMIN, params=params)


def body(response: requests.Response) -> dict[str, Any]:
    result: dict[str, Any] = response.json()
    return result


def store(
    server: Server, sub: str, data: bytes | None = None, filename: str = "a.bin", **meta: str
) -> tuple[str, str]:
    """Upload `data` as `sub` until stored; (the upload's URL, the file id)."""
    data = os.urandom(512) if data is None else data
    url = server.create(
        len(data), sub=sub, **{"Upload-Metadata": metadata(filename=filename, **meta)}
    )
    response = server.patch(url, data, 0, sub=sub)
    assert response.status_code == 204, response.text
    assert response.headers["X-Upload-Status"] == "stored", response.headers
    return url, response.headers["X-File-Id"]


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def stored_paths(server: Server, entry: dict[str, Any]) -> tuple[Path, Path]:
    """The data file and its attr.json on the embedded element."""
    root: Path = server.settings.storage.local_storage_dir
    data = root / str(entry["storage_path"]) / str(entry["storage_filename"])
    return data, data.with_name(data.name + ".attr.json")


def listing(server: Server, sub: str, role: Role = Role.USER, limit: int = 1000) -> list[str]:
    """Every file id the caller's listing gives, page after page."""
    found: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        params = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
        response = api(server, "GET", "/api/files", sub=sub, role=role, params=params)
        assert response.status_code == 200, response.text
        page = body(response)
        found.extend(f["file_id"] for f in page["files"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found
    raise AssertionError("the listing never ended")


def events(server: Server, **params: str) -> list[dict[str, Any]]:
    response = as_admin(server, "GET", "/api/audit", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = body(response)["events"]
    return found


def moment(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None, text
    return value


# GET /api/files/{file_id}


def test_get_describes_the_stored_file(files_server: Server, user: str) -> None:
    data = os.urandom(1000)
    before = datetime.now(UTC)
    url, file_id = store(files_server, user, data, filename="notes.bin")
    response = api(files_server, "GET", f"/api/files/{file_id}", sub=user)
    assert response.status_code == 200, response.text
    entry = body(response)
    assert entry["file_id"] == file_id
    assert entry["upload_id"] == upload_id(url)
    assert entry["storage_element_id"] == files_server.settings.storage.local_element_id
    assert entry["original_filename"] == "notes.bin"
    assert entry["size_bytes"] == len(data)
    assert entry["sha256_hash"] == hashlib.sha256(data).hexdigest()
    assert entry["md5_hash"] == hashlib.md5(data).hexdigest()
    assert entry["owner"] == user
    assert entry["retention_policy"] == "temporary"
    assert before - timedelta(seconds=5) <= moment(entry["uploaded_at"]) <= datetime.now(UTC)
    stored, attr = stored_paths(files_server, entry)
    assert stored.is_file()
    assert attr.is_file()
    # The session's file and the catalog entry are the same file.
    assert files_server.status(url, user)["file"]["storage_filename"] == entry["storage_filename"]
    # An upper-case id names the same file.
    upper = api(files_server, "GET", f"/api/files/{file_id.upper()}", sub=user)
    assert upper.status_code == 200, upper.text
    assert body(upper)["file_id"] == file_id


@pytest.mark.parametrize("file_id", [str(uuid.uuid4()), "not-a-file-id", "0" * 36])
def test_get_unknown_file_is_404(files_server: Server, user: str, file_id: str) -> None:
    response = api(files_server, "GET", f"/api/files/{file_id}", sub=user)
    assert response.status_code == 404, response.text
    assert body(response)["error"] == "file_not_found"
    assert as_admin(files_server, "GET", f"/api/files/{file_id}").status_code == 404


def test_another_users_file_is_not_found_but_admins_see_it(files_server: Server, user: str) -> None:
    _, file_id = store(files_server, user)
    other = api(files_server, "GET", f"/api/files/{file_id}", sub=f"{user}-other")
    assert other.status_code == 404, other.text
    assert body(other)["error"] == "file_not_found"
    admin = as_admin(files_server, "GET", f"/api/files/{file_id}")
    assert admin.status_code == 200, admin.text
    assert body(admin)["owner"] == user


def test_without_a_token_is_401(files_server: Server) -> None:
    response = files_server.session.get(f"{files_server.url}/api/files", timeout=30)
    assert response.status_code == 401, response.text


# GET /api/files


def test_list_pages_newest_first(files_server: Server, user: str) -> None:
    stored = [store(files_server, user, filename=f"f{n}.bin")[1] for n in range(5)]
    newest_first = list(reversed(stored))

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        response = api(files_server, "GET", "/api/files", sub=user, params=params)
        assert response.status_code == 200, response.text
        page = body(response)
        pages.append([f["file_id"] for f in page["files"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 5, pages
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]

    # A page that ends exactly at the last file says so: no cursor to an empty page.
    whole = body(api(files_server, "GET", "/api/files", sub=user, params={"limit": "5"}))
    assert [f["file_id"] for f in whole["files"]] == newest_first
    assert whole["next_cursor"] is None
    # The default limit holds them all; every entry is described as GET describes it.
    default = body(api(files_server, "GET", "/api/files", sub=user))
    assert [f["file_id"] for f in default["files"]] == newest_first
    single = body(api(files_server, "GET", f"/api/files/{stored[0]}", sub=user))
    assert default["files"][-1] == single


def test_users_see_only_their_own_files_and_admins_all(files_server: Server, user: str) -> None:
    other = f"{user}-b"
    mine = {store(files_server, user)[1] for _ in range(2)}
    theirs = {store(files_server, other)[1] for _ in range(2)}
    assert set(listing(files_server, user)) == mine
    assert set(listing(files_server, other)) == theirs
    assert listing(files_server, f"{user}-nobody") == []

    everyone = listing(files_server, ADMIN, Role.ADMIN)
    assert mine | theirs <= set(everyone)
    assert len(everyone) == len(set(everyone))
    # Paged by one, the admin's listing is the same list.
    assert listing(files_server, ADMIN, Role.ADMIN, limit=1)[: len(everyone)] == everyone


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc", "", "1.5", "٣"])
def test_list_rejects_a_bad_limit(files_server: Server, user: str, limit: str) -> None:
    response = api(files_server, "GET", "/api/files", sub=user, params={"limit": limit})
    assert response.status_code == 400, response.text
    assert body(response)["error"] == "invalid_limit"


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!not-base64!!",
        _b64("no separator"),
        _b64("yesterday|" + str(uuid.uuid4())),
        _b64("2026-01-01T00:00:00|" + str(uuid.uuid4())),  # no zone
        base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),
    ],
)
def test_list_rejects_a_bad_cursor(files_server: Server, user: str, cursor: str) -> None:
    response = api(files_server, "GET", "/api/files", sub=user, params={"cursor": cursor})
    assert response.status_code == 400, response.text
    assert body(response)["error"] == "invalid_cursor"


# DELETE /api/files/{file_id}


def test_delete_removes_the_stored_file(files_server: Server, user: str) -> None:
    url, file_id = store(files_server, user)
    entry = body(api(files_server, "GET", f"/api/files/{file_id}", sub=user))
    stored, attr = stored_paths(files_server, entry)
    assert stored.is_file()
    assert attr.is_file()

    response = api(files_server, "DELETE", f"/api/files/{file_id}", sub=user)
    assert response.status_code == 204, response.text
    assert not stored.exists()
    assert not attr.exists()

    gone = api(files_server, "GET", f"/api/files/{file_id}", sub=user)
    assert gone.status_code == 404, gone.text
    assert body(gone)["error"] == "file_not_found"
    assert as_admin(files_server, "GET", f"/api/files/{file_id}").status_code == 404
    assert file_id not in listing(files_server, user)
    assert file_id not in listing(files_server, ADMIN, Role.ADMIN)
    again = api(files_server, "DELETE", f"/api/files/{file_id}", sub=user)
    assert again.status_code == 404, again.text
    assert body(again)["error"] == "file_not_found"
    # The upload is still stored, but its file is gone.
    status = files_server.status(url, user)
    assert status["upload_status"] == "stored"
    assert status["file"] is None


def test_another_users_delete_is_404_and_the_file_stays(files_server: Server, user: str) -> None:
    _, file_id = store(files_server, user)
    entry = body(api(files_server, "GET", f"/api/files/{file_id}", sub=user))
    stored, attr = stored_paths(files_server, entry)
    response = api(files_server, "DELETE", f"/api/files/{file_id}", sub=f"{user}-intruder")
    assert response.status_code == 404, response.text
    assert body(response)["error"] == "file_not_found"
    assert stored.is_file()
    assert attr.is_file()
    assert api(files_server, "GET", f"/api/files/{file_id}", sub=user).status_code == 200
    assert not [e for e in events(files_server, file_id=file_id) if e["action"] == "file_deleted"]


def test_delete_of_an_unknown_file_is_404(files_server: Server, user: str) -> None:
    for file_id in (str(uuid.uuid4()), "nope"):
        response = api(files_server, "DELETE", f"/api/files/{file_id}", sub=user)
        assert response.status_code == 404, response.text
        assert body(response)["error"] == "file_not_found"


def test_an_admin_deletes_anyones_file(files_server: Server, user: str) -> None:
    _, file_id = store(files_server, user)
    entry = body(api(files_server, "GET", f"/api/files/{file_id}", sub=user))
    stored, _ = stored_paths(files_server, entry)
    response = as_admin(files_server, "DELETE", f"/api/files/{file_id}")
    assert response.status_code == 204, response.text
    assert not stored.exists()
    assert api(files_server, "GET", f"/api/files/{file_id}", sub=user).status_code == 404
    deleted = [e for e in events(files_server, file_id=file_id) if e["action"] == "file_deleted"]
    assert [(e["user"], e["outcome"]) for e in deleted] == [(ADMIN, "success")]


# tus DELETE /files/{upload_id}


def test_terminating_a_stored_upload_deletes_its_file(files_server: Server, user: str) -> None:
    url, file_id = store(files_server, user)
    entry = body(api(files_server, "GET", f"/api/files/{file_id}", sub=user))
    stored, attr = stored_paths(files_server, entry)
    assert stored.is_file()

    response = files_server.request("DELETE", url, sub=user)
    assert response.status_code == 204, response.text
    assert not stored.exists()
    assert not attr.exists()
    assert api(files_server, "GET", f"/api/files/{file_id}", sub=user).status_code == 404
    assert file_id not in listing(files_server, user)
    assert files_server.request("HEAD", url, sub=user).status_code == 404
    deleted = [e for e in events(files_server, file_id=file_id) if e["action"] == "file_deleted"]
    assert [(e["user"], e["address"]) for e in deleted] == [(user, LOCAL)]


def test_terminating_after_the_api_deleted_the_file(files_server: Server, user: str) -> None:
    url, file_id = store(files_server, user)
    assert api(files_server, "DELETE", f"/api/files/{file_id}", sub=user).status_code == 204
    response = files_server.request("DELETE", url, sub=user)
    assert response.status_code == 204, response.text
    assert files_server.request("HEAD", url, sub=user).status_code == 404


def test_terminating_someone_elses_stored_upload_is_404(files_server: Server, user: str) -> None:
    url, file_id = store(files_server, user)
    response = files_server.request("DELETE", url, sub=f"{user}-intruder")
    assert response.status_code == 404, response.text
    assert api(files_server, "GET", f"/api/files/{file_id}", sub=user).status_code == 200


# GET /api/audit


def test_audit_is_for_admins_only(files_server: Server, user: str) -> None:
    response = api(files_server, "GET", "/api/audit", sub=user)
    assert response.status_code == 403, response.text
    assert body(response)["error"] == "admin_required"
    assert as_admin(files_server, "GET", "/api/audit").status_code == 200


def test_audit_records_a_stored_then_deleted_file(files_server: Server, user: str) -> None:
    data = os.urandom(300)
    url, file_id = store(files_server, user, data, filename="audited.bin")
    [stored] = events(files_server, file_id=file_id)
    assert stored["action"] == "file_stored"
    assert stored["subject"] == file_id
    assert stored["user"] == user
    assert stored["address"] == LOCAL  # from the tus creation request
    assert stored["outcome"] == "success"
    assert stored["detail"]["upload_id"] == upload_id(url)
    assert stored["detail"]["size"] == len(data)
    assert stored["detail"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored["detail"]["filename"] == "audited.bin"
    assert isinstance(stored["id"], int)
    assert datetime.now(UTC) - moment(stored["at"]) < timedelta(minutes=1)

    assert api(files_server, "DELETE", f"/api/files/{file_id}", sub=user).status_code == 204
    deleted, again = events(files_server, file_id=file_id)  # newest first
    assert again == stored
    assert deleted["action"] == "file_deleted"
    assert (deleted["subject"], deleted["user"], deleted["outcome"]) == (file_id, user, "success")
    assert deleted["address"] == LOCAL
    assert deleted["detail"]["element_id"] == files_server.settings.storage.local_element_id
    assert deleted["id"] > stored["id"]


def test_audit_filters_by_user(files_server: Server, user: str) -> None:
    _, mine = store(files_server, user)
    _, theirs = store(files_server, f"{user}-b")
    found = events(files_server, user=user)
    assert [(e["action"], e["subject"]) for e in found] == [("file_stored", mine)]
    assert all(e["user"] == user for e in found)
    assert theirs not in {e["subject"] for e in found}
    assert events(files_server, user=f"{user}-nobody") == []
    assert [e["subject"] for e in events(files_server, user=user, file_id=theirs)] == []


def test_audit_filters_by_since(files_server: Server, user: str) -> None:
    _, first = store(files_server, user)
    [event] = events(files_server, file_id=first)
    at = moment(event["at"])
    _, second = store(files_server, user)

    def subjects(since: str) -> list[str]:
        return [e["subject"] for e in events(files_server, user=user, since=since)]

    assert subjects(at.isoformat()) == [second, first]
    # The same instant in another zone, and in the `Z` form.
    assert subjects(at.astimezone(timezone(timedelta(hours=5))).isoformat()) == [second, first]
    zulu = at.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
    assert subjects(zulu) == [second, first]
    assert subjects((at + timedelta(microseconds=1)).isoformat()) == [second]
    assert subjects((datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []


@pytest.mark.parametrize(
    "since", ["yesterday", "2026-12-06T10:00:00", "2026-13-01T00:00:00Z", "1733479200", ""]
)
def test_audit_rejects_a_bad_since(files_server: Server, since: str) -> None:
    response = as_admin(files_server, "GET", "/api/audit", params={"since": since})
    assert response.status_code == 400, response.text
    assert body(response)["error"] == "invalid_since"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "x"}, "invalid_limit"),
        ({"before": "-3"}, "invalid_before"),
        ({"before": "abc"}, "invalid_before"),
    ],
)
def test_audit_rejects_bad_paging(files_server: Server, params: dict[str, str], code: str) -> None:
    response = as_admin(files_server, "GET", "/api/audit", params=params)
    assert response.status_code == 400, response.text
    assert body(response)["error"] == code


def test_audit_pages_with_before(files_server: Server, user: str) -> None:
    _, file_id = store(files_server, user)
    assert api(files_server, "DELETE", f"/api/files/{file_id}", sub=user).status_code == 204
    first = as_admin(files_server, "GET", "/api/audit", {"file_id": file_id, "limit": "1"})
    assert first.status_code == 200, first.text
    page = body(first)
    assert [e["action"] for e in page["events"]] == ["file_deleted"]
    assert page["next_before"] == page["events"][0]["id"]
    params = {"file_id": file_id, "limit": "1", "before": str(page["next_before"])}
    second = body(as_admin(files_server, "GET", "/api/audit", params))
    assert [e["action"] for e in second["events"]] == ["file_stored"]
    assert second["next_before"] is None


def test_audit_records_a_rejected_upload(files_server: Server, user: str) -> None:
    data = os.urandom(200)
    wrong = hashlib.sha256(data + b"x").hexdigest()
    url = files_server.create(
        len(data),
        sub=user,
        **{"Upload-Metadata": metadata(filename="r.bin", checksum=f"sha256 {wrong}")},
    )
    response = files_server.patch(url, data, 0, sub=user)
    assert response.status_code == 422, response.text
    [event] = events(files_server, file_id=upload_id(url))
    assert event["action"] == "upload_rejected"
    assert event["subject"] == upload_id(url)
    assert event["user"] == user
    assert event["outcome"] == "rejected"
    assert event["address"] == LOCAL
    assert event["detail"]["code"] == "checksum_mismatch"
    assert [e["action"] for e in events(files_server, user=user)] == ["upload_rejected"]


# GET /api/files/upload/session/{id}


def test_session_seed_fields_while_receiving(files_server: Server, user: str) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    url = files_server.create(10, sub=user)
    assert files_server.patch(url, b"abcd", 0, sub=user).status_code == 204
    info = files_server.status(url, user)
    assert info["session_id"] == info["upload_id"] == upload_id(url)
    assert info["status"] == "in_progress"
    assert info["upload_status"] == "receiving"
    assert (info["bytes_uploaded"], info["bytes_total"]) == (4, 10)
    created = moment(info["created_at"])
    active = moment(info["last_activity_at"])
    expires = moment(info["expires_at"])
    assert before <= created <= active <= datetime.now(UTC)
    assert expires > active
    assert expires - active == timedelta(seconds=files_server.settings.uploads.session_ttl_seconds)

    # Activity moves last_activity_at on.
    assert files_server.patch(url, b"ef", 4, sub=user).status_code == 204
    later = files_server.status(url, user)
    assert later["bytes_uploaded"] == 6
    assert moment(later["last_activity_at"]) >= active
    assert later["status"] == "in_progress"


def test_session_seed_fields_with_a_deferred_length(files_server: Server, user: str) -> None:
    url = files_server.create(None, sub=user)
    info = files_server.status(url, user)
    assert (info["status"], info["bytes_uploaded"], info["bytes_total"]) == ("in_progress", 0, None)


def test_session_seed_fields_once_completed(files_server: Server, user: str) -> None:
    data = os.urandom(321)
    url, file_id = store(files_server, user, data)
    info = files_server.status(url, user)
    assert info["status"] == "completed"
    assert info["upload_status"] == "stored"
    assert (info["bytes_uploaded"], info["bytes_total"]) == (len(data), len(data))
    assert info["file_id"] == file_id
    assert info["file"]["file_id"] == file_id
    assert moment(info["created_at"]) <= moment(info["last_activity_at"])


def test_session_seed_fields_when_rejected(files_server: Server, user: str) -> None:
    data = os.urandom(64)
    url = files_server.create(
        len(data), sub=user, **{"Upload-Metadata": metadata(checksum=f"md5 {'0' * 32}")}
    )
    assert files_server.patch(url, data, 0, sub=user).status_code == 422
    info = files_server.status(url, user)
    assert info["status"] == "failed"
    assert info["upload_status"] == "rejected"
    assert info["verdict"]["error"] == "checksum_mismatch"
    assert info["bytes_uploaded"] == info["bytes_total"] == len(data)


def test_session_of_another_user_is_404(files_server: Server, user: str) -> None:
    url = files_server.create(10, sub=user)
    response = files_server.session_http(
        f"/api/files/upload/session/{upload_id(url)}", f"{user}-other"
    )
    assert response.status_code == 404, response.text
