"""tus concatenation extension and the inline upload digests, against SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from tests.conftest import BACKENDS, Server
from tests.protocol.support import (
    OCTET,
    chunks,
    content_as,
    offset_of,
    own_cluster,
    sha256,
    staged_names,
    staged_since,
    upload_id,
    upload_ids,
    upload_row,
    upload_status,
    wait_unstaged,
    wait_until,
)


def _partial(server: Server, data: bytes, *, sub: str = "alice", **headers: str) -> str:
    """A complete partial upload holding `data`; returns its absolute URL."""
    url = server.create(len(data), sub=sub, **{"Upload-Concat": "partial", **headers})
    if data:
        response = server.patch(url, data, 0, sub=sub)
        assert response.status_code == 204, response.text
    return url


def _path(url: str) -> str:
    return urlsplit(url).path


def _final(
    server: Server, urls: list[str], *, sub: str = "alice", **headers: str
) -> requests.Response:
    concat = "final;" + " ".join(urls)
    return server.request(
        "POST", server.endpoint, sub=sub, headers={"Upload-Concat": concat, **headers}
    )


def _location(server: Server, response: requests.Response) -> str:
    assert response.status_code == 201, (response.status_code, response.text)
    return urljoin(server.endpoint, response.headers["Location"])


def _assert_untouched(server: Server, url: str, data: bytes, *, sub: str = "alice") -> None:
    head = server.request("HEAD", url, sub=sub)
    assert head.status_code == 200
    assert head.headers["Upload-Concat"] == "partial"
    assert head.headers["Upload-Offset"] == str(len(data))
    # Partials are never processed: complete, their bytes still staged.
    assert upload_status(server, upload_id(url)) == "complete"
    assert "X-Upload-Status" not in head.headers
    assert server.staged(url).read_bytes() == data


# --- discovery and partials ------------------------------------------------------------------


def test_options_advertises_concatenation_but_not_unfinished(server: Server) -> None:
    response = server.request("OPTIONS", server.endpoint)
    extensions = [e.strip() for e in response.headers["Tus-Extension"].split(",")]
    assert "concatenation" in extensions
    assert "concatenation-unfinished" not in extensions


def test_partial_head_echoes_concat_and_offset(server: Server) -> None:
    url = server.create(10, **{"Upload-Concat": "partial"})
    head = server.request("HEAD", url)
    assert head.status_code == 200
    assert head.headers["Upload-Concat"] == "partial"
    assert head.headers["Upload-Offset"] == "0"
    assert head.headers["Upload-Length"] == "10"
    assert server.patch(url, b"abcd", 0).status_code == 204
    head = server.request("HEAD", url)
    assert head.headers["Upload-Concat"] == "partial"
    assert head.headers["Upload-Offset"] == "4"


def test_plain_upload_head_has_no_concat(server: Server) -> None:
    url = server.create(3)
    assert "Upload-Concat" not in server.request("HEAD", url).headers


@pytest.mark.parametrize("value", ["foo", "final", "final;", "final;   ", "partial;x", "Final;/a"])
def test_malformed_upload_concat_is_400(server: Server, value: str) -> None:
    before = staged_names(server)
    response = server.request(
        "POST", server.endpoint, headers={"Upload-Concat": value, "Upload-Length": "3"}
    )
    assert response.status_code == 400, (value, response.status_code)
    assert "Location" not in response.headers
    assert not staged_since(server, before)


# --- final uploads ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["absolute", "relative"])
def test_final_concatenates_in_list_order(server: Server, form: str) -> None:
    first, empty, last = os.urandom(70_000), b"", os.urandom(1_234)
    parts = [_partial(server, first), _partial(server, empty), _partial(server, last)]
    # A 0-byte partial is complete at creation.
    assert server.request("HEAD", parts[1]).headers["Upload-Offset"] == "0"
    # tus-js-client sends the absolute URLs it was given; relative paths are valid too.
    urls = parts if form == "absolute" else [_path(u) for u in parts]
    listed = [urls[2], urls[1], urls[0]]
    concat = "final;" + " ".join(listed)
    response = server.request("POST", server.endpoint, headers={"Upload-Concat": concat})
    final = _location(server, response)
    assert "Upload-Expires" not in response.headers
    head = server.request("HEAD", final)
    assert head.status_code == 200
    assert head.headers["Upload-Concat"] == concat
    assert head.headers["Upload-Length"] == str(len(first) + len(last))
    assert head.headers["Upload-Offset"] == str(len(first) + len(last))
    assert head.headers["Cache-Control"] == "no-store"
    assert sha256(server.content(final)) == sha256(last + empty + first)


def test_final_from_partials_uploaded_with_creation_with_upload(server: Server) -> None:
    response = server.request(
        "POST",
        server.endpoint,
        headers={"Upload-Concat": "partial", "Upload-Length": "5", "Content-Type": OCTET},
        data=b"hello",
    )
    first = _location(server, response)
    assert response.headers["Upload-Offset"] == "5"
    second = _partial(server, b" world")
    final = _location(server, _final(server, [first, second]))
    assert server.content(final) == b"hello world"


def test_same_partial_twice_in_one_final(server: Server) -> None:
    a, b = _partial(server, b"ab"), _partial(server, b"XYZ")
    final = _location(server, _final(server, [a, b, a]))
    assert server.request("HEAD", final).headers["Upload-Length"] == "7"
    assert server.content(final) == b"abXYZab"


def test_final_metadata_is_its_own(server: Server) -> None:
    partial_meta = "filename cGFydC5iaW4="
    a = _partial(server, b"abc", **{"Upload-Metadata": partial_meta})
    b = _partial(server, b"def", **{"Upload-Metadata": partial_meta})
    bare = _location(server, _final(server, [a, b]))
    assert "Upload-Metadata" not in server.request("HEAD", bare).headers

    raw = "filename d2hvbGUuYmlu,is_confidential"
    c = _partial(server, b"abc", **{"Upload-Metadata": partial_meta})
    final = _location(server, _final(server, [c], **{"Upload-Metadata": raw}))
    assert server.request("HEAD", final).headers["Upload-Metadata"] == raw


def test_final_with_malformed_metadata_is_400(server: Server) -> None:
    a = _partial(server, b"abc")
    response = _final(server, [a], **{"Upload-Metadata": "filename not*base64"})
    assert response.status_code == 400
    _assert_untouched(server, a, b"abc")


@pytest.mark.parametrize("header", [{"Upload-Length": "6"}, {"Upload-Defer-Length": "1"}])
def test_final_with_a_length_is_400(server: Server, header: dict[str, str]) -> None:
    a, b = _partial(server, b"abc"), _partial(server, b"def")
    response = _final(server, [a, b], **header)
    assert response.status_code == 400
    assert "Location" not in response.headers
    _assert_untouched(server, a, b"abc")
    _assert_untouched(server, b, b"def")


def test_final_with_an_unfinished_partial_is_400_naming_it(server: Server) -> None:
    done = _partial(server, b"abc")
    unfinished = server.create(10, **{"Upload-Concat": "partial"})
    assert server.patch(unfinished, b"defg", 0).status_code == 204
    response = _final(server, [done, unfinished])
    assert response.status_code == 400
    assert unfinished in response.text
    assert done not in response.text
    _assert_untouched(server, done, b"abc")
    # The unfinished partial can still be finished and used.
    assert server.patch(unfinished, b"hijklm", 4).status_code == 204
    final = _location(server, _final(server, [done, unfinished]))
    assert server.content(final) == b"abcdefghijklm"


def test_final_referencing_a_plain_upload_is_400(server: Server) -> None:
    done = _partial(server, b"abc")
    plain = server.create(3)
    assert server.patch(plain, b"xyz", 0).status_code == 204
    response = _final(server, [done, plain])
    assert response.status_code == 400
    assert plain in response.text
    assert offset_of(server, plain) == 3
    assert server.content(plain) == b"xyz"
    _assert_untouched(server, done, b"abc")


def test_final_referencing_another_final_is_400(server: Server) -> None:
    final = _location(server, _final(server, [_partial(server, b"abc")]))
    response = _final(server, [final])
    assert response.status_code == 400
    assert server.content(final) == b"abc"


@pytest.mark.parametrize("reference", ["/files/" + "0" * 32, "/files/nonsense", "/elsewhere/x"])
def test_final_referencing_an_unknown_upload_is_400(server: Server, reference: str) -> None:
    done = _partial(server, b"abc")
    response = _final(server, [done, reference])
    assert response.status_code == 400
    assert reference in response.text
    _assert_untouched(server, done, b"abc")


def test_final_referencing_someone_elses_partial_is_400(server: Server) -> None:
    theirs = _partial(server, b"secret", sub="bob")
    mine = _partial(server, b"abc")
    response = _final(server, [mine, theirs])
    assert response.status_code == 400
    assert theirs in response.text
    _assert_untouched(server, theirs, b"secret", sub="bob")
    _assert_untouched(server, mine, b"abc")
    # bob can still use it.
    final = _location(server, _final(server, [theirs], sub="bob"))
    assert content_as(server, final, "bob") == b"secret"


def test_final_with_a_body_is_403(server: Server) -> None:
    a = _partial(server, b"abc")
    before = staged_names(server)
    response = server.request(
        "POST",
        server.endpoint,
        headers={"Upload-Concat": f"final;{a}", "Content-Type": OCTET},
        data=b"smuggled",
    )
    assert response.status_code == 403
    assert "Location" not in response.headers
    assert not staged_since(server, before)
    _assert_untouched(server, a, b"abc")


def test_patch_on_a_final_is_403_and_modifies_nothing(server: Server) -> None:
    final = _location(server, _final(server, [_partial(server, b"abc"), _partial(server, b"de")]))
    for data, offset in [(b"xyz", 5), (b"", 5), (b"xyz", 0)]:
        response = server.patch(final, data, offset)
        assert response.status_code == 403, (data, offset, response.status_code)
        assert response.headers["Tus-Resumable"] == "1.0.0"
    head = server.request("HEAD", final)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == "5"
    assert server.content(final) == b"abcde"


def test_partials_stay_and_a_repeated_final_is_the_same_one(server: Server) -> None:
    a, b = _partial(server, b"abc"), _partial(server, b"def")
    first = _final(server, [a, b])
    final = _location(server, first)
    assert server.content(final) == b"abcdef"
    # The partials stay until their own expiry ...
    _assert_untouched(server, a, b"abc")
    _assert_untouched(server, b, b"def")
    # ... so a client whose answer was lost retries and gets the same final (one file).
    again = _final(server, [a, b])
    assert _location(server, again) == final
    assert again.headers["X-File-Id"] == first.headers["X-File-Id"]
    # Other parts, or the same in another order, make another final.
    swapped = _location(server, _final(server, [b, a]))
    assert swapped != final
    assert server.content(swapped) == b"defabc"
    # A deleted final is not given out again: the same parts make a new one.
    assert server.request("DELETE", final).status_code == 204
    renewed = _location(server, _final(server, [a, b]))
    assert renewed != final
    assert server.content(renewed) == b"abcdef"


def test_delete_of_a_final_is_204(server: Server) -> None:
    final = _location(server, _final(server, [_partial(server, b"abc")]))
    response = server.request("DELETE", final)
    assert response.status_code == 204
    assert server.request("HEAD", final).status_code == 404
    assert not server.staged(final).exists()


def test_delete_of_a_complete_partial_makes_it_unusable(server: Server) -> None:
    a = _partial(server, b"abc")
    assert server.request("DELETE", a).status_code == 204
    assert not server.staged(a).exists()
    response = _final(server, [a])
    assert response.status_code == 400
    assert a in response.text


def test_final_row_state(server: Server) -> None:
    a = _partial(server, b"abc")
    response = _final(server, [a, a])
    final = _location(server, response)
    assert response.headers["X-Upload-Status"] == "stored"
    row = upload_row(server, upload_id(final))
    assert row is not None
    assert row["status"] == "stored"
    assert row["file_id"] == response.headers["X-File-Id"]
    assert row["md5"] == hashlib.md5(b"abcabc").hexdigest()
    assert row["length"] == row["upload_offset"] == 6
    assert row["concat"] == f"final;{a} {a}"
    assert row["expires_at"] is None
    assert upload_status(server, upload_id(a)) == "complete"  # kept until it expires


def test_final_echoes_upload_concat_verbatim(server: Server) -> None:
    a, b = _partial(server, b"abc"), _partial(server, b"def")
    concat = f"final; {_path(a)}  {b}"
    response = server.request("POST", server.endpoint, headers={"Upload-Concat": concat})
    final = _location(server, response)
    assert server.request("HEAD", final).headers["Upload-Concat"] == concat
    assert server.content(final) == b"abcdef"


def test_final_of_empty_partials_is_rejected_as_empty(server: Server) -> None:
    parts = [_partial(server, b""), _partial(server, b"")]
    before = upload_ids(server)
    response = _final(server, parts)
    # Complete at zero bytes, so the pipeline judges it at once: an empty file is refused.
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "empty_file"
    assert response.headers["X-Upload-Status"] == "rejected"
    assert response.headers["X-Upload-Error"] == "empty_file"
    (final_id,) = upload_ids(server) - before
    row = upload_row(server, final_id)
    assert row is not None
    assert (row["status"], row["error"]) == ("rejected", "empty_file")
    assert row["length"] == row["upload_offset"] == 0
    assert row["concat"] == "final;" + " ".join(parts)
    head = server.request("HEAD", f"{server.endpoint}{final_id}")
    assert head.status_code == 422
    assert head.headers["X-Upload-Error"] == "empty_file"
    for part in parts:
        assert server.request("HEAD", part).status_code == 200  # kept until it expires


# --- races -------------------------------------------------------------------------------------


def _concurrently(*calls: Callable[[], requests.Response]) -> list[requests.Response]:
    """Run the calls at the same moment, each in its own thread (and HTTP connection)."""
    barrier = threading.Barrier(len(calls))
    results: list[requests.Response | None] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait(10)
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def _send(server: Server, method: str, url: str, **headers: str) -> Callable[[], requests.Response]:
    return lambda: requests.request(
        method, url, headers={**server.headers(), **headers}, timeout=60
    )


def test_delete_racing_a_final_is_serialised(server: Server) -> None:
    for _ in range(8):
        data = [os.urandom(1 << 20) for _ in range(3)]
        parts = [_partial(server, d) for d in data]
        before = staged_names(server)
        assert {upload_id(p) for p in parts} <= before
        final, delete = _concurrently(
            _send(server, "POST", server.endpoint, **{"Upload-Concat": "final;" + " ".join(parts)}),
            _send(server, "DELETE", parts[2]),
        )
        outcome = (final.status_code, delete.status_code)
        # Either the final took the partial first (the DELETE then removes the partial, the
        # final keeps its bytes) or the DELETE did (the final then names it); never a
        # half-built final or a 5xx.
        assert outcome in {(201, 204), (400, 204)}, (outcome, final.text)
        if outcome == (201, 204):
            url = _location(server, final)
            assert sha256(server.content(url)) == sha256(b"".join(data))
            # The final's bytes left staging once stored; the other partials stay.
            wait_unstaged(server, url)
            _assert_untouched(server, parts[0], data[0])
            _assert_untouched(server, parts[1], data[1])
        else:
            assert parts[2] in final.text
            _assert_untouched(server, parts[0], data[0])
            _assert_untouched(server, parts[1], data[1])
        assert not server.staged(parts[2]).exists()
        assert not staged_since(server, before)


def test_concurrent_finals_of_the_same_parts_make_one(server: Server) -> None:
    data = [os.urandom(1 << 20) for _ in range(3)]
    parts = [_partial(server, d) for d in data]
    concat = {"Upload-Concat": "final;" + " ".join(parts)}
    before = staged_names(server)
    responses = _concurrently(*[_send(server, "POST", server.endpoint, **concat)] * 4)
    assert [r.status_code for r in responses] == [201] * 4, [r.text for r in responses]
    (final,) = {_location(server, r) for r in responses}
    assert sha256(server.content(final)) == sha256(b"".join(data))
    # One final, its bytes gone from staging once stored; the partials stay until they expire.
    wait_unstaged(server, final)
    assert not staged_since(server, before)
    for part, part_data in zip(parts, data, strict=True):
        _assert_untouched(server, part, part_data)


# --- limits and expiry -------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def small(request: pytest.FixtureRequest, make_server: Callable[..., Server]) -> Server:
    """A server with a 1 MiB upload limit."""
    return make_server(request.param, MAX_FILE_SIZE_MB="1")


def test_final_above_the_size_limit_is_413(small: Server) -> None:
    assert small.settings.uploads.max_file_size == 1 << 20
    data_a, data_b = os.urandom(600 << 10), os.urandom(600 << 10)
    a, b = _partial(small, data_a), _partial(small, data_b)
    before = staged_names(small)
    response = _final(small, [a, b])
    assert response.status_code == 413
    assert "Location" not in response.headers
    assert not staged_since(small, before)
    _assert_untouched(small, a, data_a)
    _assert_untouched(small, b, data_b)
    # Each part on its own still fits.
    final = _location(small, _final(small, [a]))
    assert small.content(final) == data_a


@pytest.fixture(scope="module", params=BACKENDS)
def short_lived(
    request: pytest.FixtureRequest,
    make_server: Callable[..., Server],
    new_pg_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Server:
    """Sessions live 1 s, the reaper runs every 0.1 s."""
    env = {"UPLOAD_SESSION_TTL_HOURS": str(1 / 3600), "UPLOAD_REAPER_INTERVAL_SECONDS": "0.1"}
    if request.param == "postgres":
        # The server lives until the session ends: its reaper must not reach the shared
        # cluster's uploads (nor the cluster's reapers its own).
        env.update(own_cluster(new_pg_database, tmp_path_factory.mktemp("short-lived")))
    return make_server(request.param, **env)


def test_unused_complete_partial_expires(short_lived: Server) -> None:
    server = short_lived
    part = _partial(server, b"abc")
    plain = server.create(3)
    assert server.patch(plain, b"abc", 0).status_code == 204
    wait_until(lambda: not server.staged(part).exists(), timeout=15)
    head = server.request("HEAD", part)
    assert head.status_code == 410
    assert "Upload-Offset" not in head.headers
    assert upload_status(server, upload_id(part)) == "expired"
    response = _final(server, [part])
    assert response.status_code == 400
    assert part in response.text
    # A complete plain upload does not expire.
    assert offset_of(server, plain) == 3
    assert server.content(plain) == b"abc"


# --- inline digests of the whole upload ---------------------------------------------------------


def _assert_digests(server: Server, url: str, data: bytes) -> None:
    row = upload_row(server, upload_id(url))
    assert row is not None
    assert row["status"] == "stored"
    assert row["md5"] == hashlib.md5(data).hexdigest()
    assert row["sha256"] == hashlib.sha256(data).hexdigest()


def test_digests_of_an_upload_completed_in_several_patches(server: Server) -> None:
    data = os.urandom(300_000)
    url = server.create(len(data))
    cuts = [0, 1, 70_000, 70_001, 250_000, len(data)]
    for start, end in itertools.pairwise(cuts):
        row = upload_row(server, upload_id(url))
        assert row is not None
        assert row["md5"] is None
        assert row["sha256"] is None
        assert server.patch(url, data[start:end], start).status_code == 204
    _assert_digests(server, url, data)


def test_digests_of_an_upload_resumed_after_creation_with_upload(server: Server) -> None:
    data = os.urandom(50_000)
    response = server.request(
        "POST",
        server.endpoint,
        headers={"Upload-Length": str(len(data)), "Content-Type": OCTET},
        data=data[:20_000],
    )
    url = _location(server, response)
    assert response.headers["Upload-Offset"] == "20000"
    assert server.patch(url, data[20_000:], 20_000).status_code == 204
    _assert_digests(server, url, data)


def test_digests_of_an_upload_completed_by_creation_with_upload(server: Server) -> None:
    data = os.urandom(10_000)
    response = server.request(
        "POST",
        server.endpoint,
        headers={"Upload-Length": str(len(data)), "Content-Type": OCTET},
        data=data,
    )
    _assert_digests(server, _location(server, response), data)


def test_digests_survive_rejected_patches(server: Server) -> None:
    data = os.urandom(30_000)
    url = server.create(len(data))
    assert server.patch(url, data[:10_000], 0).status_code == 204
    assert server.patch(url, data[10_000:], 0).status_code == 409
    too_long = server.patch(url, data[10_000:] + b"overflow", 10_000)
    assert too_long.status_code == 413
    # Past the length only while streaming (no Content-Length): hashed, then thrown away.
    streamed = server.request(
        "PATCH",
        url,
        headers={"Content-Type": OCTET, "Upload-Offset": "10000"},
        data=chunks(data[10_000:] + b"overflow", 4096),
    )
    assert streamed.status_code == 413
    assert server.patch(url, data[10_000:], 10_000).status_code == 204
    _assert_digests(server, url, data)
