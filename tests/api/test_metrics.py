"""The seed's business metrics on /metrics, scraped after real uploads over HTTP: verdicts,
sizes and durations, durable operations, HTTP requests by route, method and status."""

from __future__ import annotations

import os
import re

import requests

from tests.conftest import Server


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


def test_uploads_operations_and_requests_are_counted(server: Server) -> None:
    data = os.urandom(100_000)
    url = server.create(len(data))
    assert server.patch(url, data, 0).headers["X-Upload-Status"] == "stored"
    rejected = server.request("POST", server.endpoint, headers={"Upload-Length": "0"})
    assert rejected.status_code == 422  # an empty file
    server.request("TRACE", server.endpoint)  # a method nobody serves: one "other" label

    text = requests.get(f"{server.url}/metrics", timeout=10).text
    assert _sample(text, "artstore_ingester_uploads_total", status="stored") >= 1
    assert _sample(text, "artstore_ingester_uploads_total", status="rejected") >= 1
    assert _sample(text, "artstore_ingester_upload_size_bytes_count") >= 1
    assert _sample(text, "artstore_ingester_upload_size_bytes_sum") >= len(data)
    assert _sample(text, "artstore_ingester_upload_duration_seconds_count") >= 1
    assert (
        _sample(text, "artstore_ingester_saga_transactions_total", kind="ingest", status="success")
        >= 2
    )
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
