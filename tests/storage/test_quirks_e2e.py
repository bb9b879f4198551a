"""The real storage element's quirks end to end: an ingester process storing on a
reference SE process. A compressed file is self-describing on the element (the codec's suffix
and type, the original name and type in attr.json), a long ASCII name reaches the element whole,
and the service account is recorded by its UUID."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import uuid
from pathlib import Path
from typing import Any

import brotli
import pytest
import requests

from tests.storage.conftest import Cluster
from tests.storage.rig import SEProcess
from tusingest.settings.storage import SERVICE_ACCOUNT_NAMESPACE

# The ingester's service account in these tests: SERVICE_ACCOUNT_NAME left at its default.
ACCOUNT_ID = str(uuid.uuid5(SERVICE_ACCOUNT_NAMESPACE, "tusingest"))


def _text(size: int) -> bytes:
    rng = random.Random(7)
    words = ["storage", "element", "upload", "ingest", "quirk", "budget", "codec", "name"]
    text = ""
    while len(text) < size:
        text += " ".join(rng.choice(words) for _ in range(12)) + "\n"
    return text.encode()[:size]


def _get(cluster: Cluster, se: SEProcess, path: str) -> requests.Response:
    return requests.get(
        f"{se.url}/api/v1{path}",
        headers={"Authorization": f"Bearer {cluster.keys.token('reader')}"},
        timeout=10,
    )


def _attr(se: SEProcess, file_id: str) -> dict[str, Any]:
    for path in Path(se.root).rglob("*.attr.json"):
        attr: dict[str, Any] = json.loads(path.read_text("utf-8"))
        if attr["file_id"] == file_id:
            return attr
    pytest.fail(f"{se.element_id} holds no attr.json of {file_id}")


@pytest.mark.parametrize(
    ("codec", "suffix", "media_type"),
    [("brotli", ".br", "application/x-brotli"), ("gzip", ".gz", "application/gzip")],
)
def test_a_compressed_file_is_labelled_with_its_codec(
    cluster: Cluster, codec: str, suffix: str, media_type: str
) -> None:
    se = cluster.element("se-1", priority=1)
    node = cluster.node(COMPRESSION_ALGORITHM=codec, COMPRESSION_MIN_SIZE="1024")
    data = _text(200_000)
    upload_id, response = node.upload(data, filename="notes.txt", filetype="text/plain")
    assert response.status_code == 204, response.text
    info = node.settled(upload_id)
    assert info["upload_status"] == "stored", info
    file = info["file"]
    file_id = file["file_id"]
    # The catalog keeps what the user uploaded, and where the element put it.
    assert file["codec"] == codec
    assert (file["original_filename"], file["content_type"]) == ("notes.txt", "text/plain")
    assert (file["size"], file["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert file["stored_size"] < len(data)
    assert file["storage_filename"].endswith(f"_{file_id}{suffix}")

    # Any other reader of the element sees compressed bytes labelled as such.
    meta = _get(cluster, se, f"/files/{file_id}").json()
    assert meta["original_filename"] == f"notes.txt{suffix}"
    assert meta["content_type"] == media_type
    assert meta["storage_filename"] == file["storage_filename"]
    download = _get(cluster, se, f"/files/{file_id}/download")
    assert download.status_code == 200, download.text
    assert download.headers["Content-Type"] == media_type
    assert download.headers["Content-Disposition"] == f'attachment; filename="notes.txt{suffix}"'
    unpacked = (
        bytes(brotli.decompress(download.content))
        if codec == "brotli"
        else gzip.decompress(download.content)
    )
    assert unpacked == data

    # The name and type the user uploaded travel with the file, beside the codec.
    attr = _attr(se, file_id)
    assert attr["metadata"]["codec"] == codec
    assert attr["metadata"]["original_filename"] == "notes.txt"
    assert attr["metadata"]["original_content_type"] == "text/plain"
    assert attr["created_by_id"] == ACCOUNT_ID
    assert attr["created_by_username"] == "tusingest"


def test_a_300_byte_ascii_name_reaches_the_element_whole(cluster: Cluster) -> None:
    se = cluster.element("se-1", priority=1)
    node = cluster.node()
    name = "annual-statement-" + "x" * 273 + "-final.pdf"
    assert len(name.encode()) == 300
    data = random.Random(3).randbytes(50_000)
    upload_id, response = node.upload(data, filename=name)
    assert response.status_code == 204, response.text
    info = node.settled(upload_id)
    assert info["upload_status"] == "stored", info
    file = info["file"]
    assert file["codec"] is None
    assert file["original_filename"] == name
    meta = _get(cluster, se, f"/files/{file['file_id']}").json()
    assert meta["original_filename"] == name  # not cut on the way
    assert len(meta["storage_filename"]) == 200  # the element cuts its own name
    assert "original_filename" not in _attr(se, file["file_id"])["metadata"]
