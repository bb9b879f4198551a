"""The TLS client context of the element session: built from the storage settings, refused with
the variable named when a file is unusable, and used by the wiring's probe of an element (the
`tusingest elements add` path) against reference elements served over HTTPS in the test."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from tests.tlscerts import TestCA
from tusingest.domain import ElementInfo, ElementMode
from tusingest.elements.tls import client_context
from tusingest.errors import ConfigError
from tusingest.refelement.app import create_element_app
from tusingest.refelement.state import ElementServerSettings
from tusingest.registry.configs import ElementConfig
from tusingest.services import open_element_admin
from tusingest.settings.app import Settings
from tusingest.settings.storage import TlsSettings


def test_the_context_verifies_with_the_ca_file_and_the_minimum_version(tmp_path: Path) -> None:
    ca = TestCA(tmp_path, "test-ca")
    context = client_context(TlsSettings(ca_file=ca.cert, min_version=ssl.TLSVersion.TLSv1_3))
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]


def test_unusable_files_name_their_variable(tmp_path: Path) -> None:
    ca = TestCA(tmp_path, "test-ca")
    client = ca.issue("ingester", client=True)
    other = ca.issue("other", client=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as caught:
        client_context(TlsSettings(ca_file=garbage))
    assert caught.value.variable == "STORAGE_ELEMENT_CA_FILE"
    with pytest.raises(ConfigError) as caught:  # a key of another certificate
        client_context(TlsSettings(client_cert_file=client.cert, client_key_file=other.key))
    assert caught.value.variable == "STORAGE_ELEMENT_CLIENT_CERT_FILE"
    key = serialization.load_pem_private_key(client.key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError) as caught:  # never a prompt on the terminal
        client_context(TlsSettings(client_cert_file=client.cert, client_key_file=encrypted))
    assert caught.value.variable == "STORAGE_ELEMENT_CLIENT_KEY_FILE"
    with_key = client_context(TlsSettings(client_cert_file=client.cert, client_key_file=client.key))
    assert with_key.verify_mode is ssl.CERT_REQUIRED


async def _probe(
    tmp_path: Path, env: dict[str, str], served: ssl.SSLContext | None
) -> tuple[ElementInfo, str | None]:
    """Serve a reference element (over HTTPS with `served`) and probe it through the wiring's
    element session built from `env`: what the element looked like and the probe's error."""
    element = ElementServerSettings(
        "se-tls", ElementMode.EDIT, tmp_path / "se-tls", 1 << 20, 1, None
    )
    runner = web.AppRunner(create_element_app(element))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served).start()
    host, port = runner.addresses[0][:2]
    endpoint = f"{'http' if served is None else 'https'}://{host}:{port}"
    # Redis is never reached by a probe.
    settings = Settings.from_env(
        {"DATA_DIR": str(tmp_path / "node"), "REDIS_URL": "redis://127.0.0.1:9/0", **env}
    )
    try:
        async with open_element_admin(settings) as (_, monitor):
            config = ElementConfig("se-tls", ElementMode.EDIT, endpoint, 1)
            info = await monitor.probe(config)
            return info, monitor.last_errors.get("se-tls")
    finally:
        await runner.cleanup()


def test_a_tls13_minimum_refuses_an_element_limited_to_tls12(tmp_path: Path) -> None:
    ca = TestCA(tmp_path, "test-ca")
    tls12 = ca.server_context("se-tls", maximum=ssl.TLSVersion.TLSv1_2)
    trust = {"STORAGE_ELEMENT_CA_FILE": str(ca.cert)}

    info, error = asyncio.run(_probe(tmp_path, trust, tls12))
    assert info.healthy, error
    assert error is None

    strict = {**trust, "STORAGE_ELEMENT_TLS_MIN_VERSION": "1.3"}
    info, error = asyncio.run(_probe(tmp_path, strict, tls12))
    # The element ends the handshake offering no TLS 1.3: the connection is reset.
    assert not info.healthy
    assert error is not None
    assert "Cannot connect to host 127.0.0.1" in error, error


def test_a_tls13_minimum_reaches_an_element_speaking_tls13(tmp_path: Path) -> None:
    ca = TestCA(tmp_path, "test-ca")
    # The element speaks nothing older than TLS 1.3: a probe that gets an answer spoke 1.3.
    tls13 = ca.server_context("se-tls", minimum=ssl.TLSVersion.TLSv1_3)
    strict = {"STORAGE_ELEMENT_CA_FILE": str(ca.cert), "STORAGE_ELEMENT_TLS_MIN_VERSION": "1.3"}

    info, error = asyncio.run(_probe(tmp_path, strict, tls13))
    assert error is None
    assert info.healthy
    assert (info.element_id, info.capacity_total) == ("se-tls", 1 << 20)


def test_the_system_store_refuses_a_test_ca_and_http_needs_no_tls(tmp_path: Path) -> None:
    ca = TestCA(tmp_path, "test-ca")
    info, error = asyncio.run(_probe(tmp_path, {}, ca.server_context("se-tls")))
    assert not info.healthy
    assert error is not None
    assert "TLS to 127.0.0.1" in error
    assert "CERTIFICATE_VERIFY_FAILED" in error

    info, error = asyncio.run(_probe(tmp_path, {"STORAGE_ELEMENT_CA_FILE": str(ca.cert)}, None))
    assert info.healthy, error
