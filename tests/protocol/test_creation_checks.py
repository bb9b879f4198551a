"""What the pipeline would refuse once every byte had arrived is refused at creation: a name no
element could store, a declared checksum that is not one. Nothing is created."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import Server


def _meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ({"filename": "report." + "x" * 250}, "filename_too_long"),
        ({"filename": "a.txt", "checksum": "sha256 nothex"}, "invalid_checksum_metadata"),
        ({"filename": "a.txt", "checksum": "crc32 00000000"}, "invalid_checksum_metadata"),
    ],
)
def test_creation_refuses_what_completion_would(
    server: Server, values: dict[str, str], code: str
) -> None:
    staged_before = sorted(server.settings.uploads.staging_dir.glob("*"))
    response = server.request(
        "POST",
        server.endpoint,
        headers={"Upload-Length": "1000", "Upload-Metadata": _meta(**values)},
    )
    assert response.status_code == 400, response.text
    assert response.text.startswith(f"{code}:")
    assert "Location" not in response.headers
    assert sorted(server.settings.uploads.staging_dir.glob("*")) == staged_before


def test_a_fitting_name_and_checksum_are_taken(server: Server) -> None:
    url = server.create(
        1000,
        **{"Upload-Metadata": _meta(filename="ok.txt", checksum="sha256 " + "0" * 64)},
    )
    assert url.startswith(server.endpoint)
