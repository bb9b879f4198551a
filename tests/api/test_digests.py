"""UPLOAD_DIGESTS: with `sha256` alone no MD5 is computed or recorded, a declared MD5 is still
checked; the default records both."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.api.test_verdict import isolated_env, metadata
from tests.conftest import BACKENDS, Server

BODY = os.urandom(200_000)


@pytest.fixture(scope="module", params=BACKENDS)
def sha256_only(
    request: pytest.FixtureRequest,
    make_server: Callable[..., Server],
    new_pg_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Server:
    backend: str = request.param
    root: Path = tmp_path_factory.mktemp(f"digests-{backend}")
    return make_server(
        backend, UPLOAD_DIGESTS="sha256", **isolated_env(backend, root, new_pg_database)
    )


def _store(server: Server, data: bytes, **values: str) -> dict[str, object]:
    headers = {"Upload-Metadata": metadata(filename="x.bin", **values)} if values else {}
    url = server.create(len(data), **headers)
    response = server.patch(url, data, 0)
    assert response.status_code in (204, 422), response.text
    return server.status(url)


def test_sha256_only_records_no_md5(sha256_only: Server) -> None:
    status = _store(sha256_only, BODY)
    assert status["upload_status"] == "stored", status
    assert status["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert status["md5"] is None
    file = status["file"]
    assert isinstance(file, dict)
    assert file["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert file["md5"] is None


def test_sha256_only_still_checks_a_declared_md5(sha256_only: Server) -> None:
    good = _store(sha256_only, BODY, checksum=f"md5 {hashlib.md5(BODY).hexdigest()}")
    assert good["upload_status"] == "stored", good
    bad = _store(sha256_only, BODY, checksum=f"md5 {'0' * 32}")
    assert bad["upload_status"] == "rejected"
    verdict = bad["verdict"]
    assert isinstance(verdict, dict)
    assert verdict["error"] == "checksum_mismatch"


def test_the_default_records_both(server: Server) -> None:
    status = _store(server, BODY)
    assert status["upload_status"] == "stored", status
    assert status["md5"] == hashlib.md5(BODY).hexdigest()
    assert status["sha256"] == hashlib.sha256(BODY).hexdigest()
