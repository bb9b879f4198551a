"""The seed's business metrics on /metrics, scraped after real uploads over HTTP: verdicts,
sizes and durations, durable operations, HTTP requests by route, method and status."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

import pytest
import requests

from tests.conftest import BACKENDS, Server


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if metric == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def scrape(server: Server) -> str:
    response = requests.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def delta(before: str, after: str, name: str, **labels: str) -> float:
    """How much `name{labels}` grew between two scrapes."""
    return _sample(after, name, **labels) - _sample(before, name, **labels)


def wait_for(server: Server, name: str, minimum: float, seconds: float = 15, **labels: str) -> str:
    """Scrape until `name{labels}` reads at least `minimum`; the last scrape."""
    deadline = time.monotonic() + seconds
    while True:
        text = scrape(server)
        if _sample(text, name, **labels) >= minimum:
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"{name}{labels} stayed below {minimum}: {_sample(text, name, **labels)}")
        time.sleep(0.05)


def test_uploads_operations_and_requests_are_counted(server: Server) -> None:
    data = os.urandom(100_000)
    url = server.create(len(data))
    assert server.patch(url, data, 0).headers["X-Upload-Status"] == "stored"
    rejected = server.request("POST", server.endpoint, headers={"Upload-Length": "0"})
    assert rejected.status_code == 422  # an empty file
    server.request("TRACE", server.endpoint)  # a method nobody serves: one "other" label

    # An operation ends (and is counted) a moment after its request has the verdict.
    text = wait_for(
        server, "artstore_ingester_saga_transactions_total", 2, kind="ingest", status="success"
    )
    assert _sample(text, "artstore_ingester_uploads_total", status="stored") >= 1
    assert _sample(text, "artstore_ingester_uploads_total", status="rejected") >= 1
    assert _sample(text, "artstore_ingester_upload_size_bytes_count") >= 1
    assert _sample(text, "artstore_ingester_upload_size_bytes_sum") >= len(data)
    assert _sample(text, "artstore_ingester_upload_duration_seconds_count") >= 1
    patches = _sample(
        text,
        "artstore_ingester_http_requests_total",
        route="/files/{upload_id}",
        method="PATCH",
        status="204",
    )
    assert patches >= 1
    assert (
        _sample(
            text,
            "artstore_ingester_http_request_duration_seconds_count",
            route="/files/{upload_id}",
            method="PATCH",
        )
        >= patches
    )
    assert _sample(text, "artstore_ingester_http_requests_total", method="other") >= 1
    assert 'method="TRACE"' not in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_bytes_selection_capacity_breakers_and_compression(
    backend: str, make_server: Callable[..., Server]
) -> None:
    server = make_server(backend, COMPRESSION_MIN_SIZE="1024")
    before = requests.get(f"{server.url}/metrics", timeout=10).text
    text_file = b"a line of text that compresses well\n" * 4096
    url = server.create(len(text_file))
    assert server.patch(url, text_file, 0).headers["X-Upload-Status"] == "stored"
    assert server.status(url)["file"]["codec"] == "brotli"

    after = requests.get(f"{server.url}/metrics", timeout=10).text
    received = _sample(after, "artstore_ingester_bytes_received_total") - _sample(
        before, "artstore_ingester_bytes_received_total"
    )
    assert received == len(text_file)
    assert _sample(after, "artstore_ingester_uploads_in_progress") == 0
    ratios = _sample(after, "artstore_ingester_compression_ratio_count")
    assert ratios - _sample(before, "artstore_ingester_compression_ratio_count") == 1
    assert 0 < _sample(after, "artstore_ingester_compression_ratio_sum") < ratios
    for name in (
        "artstore_ingester_storage_selection_duration_seconds_count",
        "storage_selection_duration_seconds_count",
    ):
        assert _sample(after, name, retention_policy="temporary") >= 1, name
    assert _sample(after, "ingester_capacity_latency_seconds_count", source="memory") >= 1
    assert _sample(after, "ingester_capacity_fallback_total") == 0  # one source: no fallback
    # The startup reload is observed, labelled with the registry that listed the elements.
    reloads = _sample(after, "ingester_se_config_reload_total", source="memory", status="success")
    assert reloads >= 1
    assert (
        _sample(after, "ingester_se_config_reload_duration_seconds_count", source="memory")
        == reloads
    )
    assert _sample(after, "ingester_se_config_reload_total", source="none") == 0
    assert "artstore_ingester_circuit_breaker_state" in after
    assert _sample(after, "artstore_ingester_circuit_breaker_state", element="se-local") == 0
    assert _sample(after, "storage_selection_total", status="failed") == 0
