"""The edge under hostile clients, against a real `tusingest serve` process: idle and
slow-header connections are closed after HTTP_IDLE_TIMEOUT_SECONDS while others are served, a
body that goes silent is ended after BODY_TIMEOUT_SECONDS keeping what arrived, connections
past the cap get a 503 at once (also with 1,100 sockets under a 1,024 open-file limit),
malformed requests are logged as one counted line, never a traceback each, and answered with
the JSON of every refusal (431 for oversized headers)."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Keys
from tests.nodes import Node


@contextlib.contextmanager
def _node(tmp_path: Path, keys: Keys, **env: str) -> Iterator[Node]:
    node = Node(tmp_path / "data", keys, tmp_path / "node.log", **env)
    try:
        yield node.wait_ready()
    finally:
        node.stop()


def _connect(node: Node) -> socket.socket:
    return socket.create_connection(("127.0.0.1", node.port), timeout=10)


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_idle_and_slow_header_connections_are_closed(tmp_path: Path, keys: Keys) -> None:
    with _node(tmp_path, keys, HTTP_IDLE_TIMEOUT_SECONDS="1") as node:
        idle = [_connect(node) for _ in range(50)]
        slow = [_connect(node) for _ in range(4)]
        for sock in slow:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        # Others are served meanwhile; the slow ones keep trickling header bytes.
        for _ in range(3):
            assert requests.get(f"{node.url}/health/live", timeout=5).status_code == 200
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.2)
        assert all(_closed_by_peer(sock, 5) for sock in idle + slow)
        assert time.monotonic() - started < 6
        assert requests.get(f"{node.url}/health/live", timeout=5).status_code == 200
        for sock in idle + slow:
            sock.close()


def test_a_silent_body_is_ended_keeping_what_arrived(tmp_path: Path, keys: Keys) -> None:
    with _node(tmp_path, keys, BODY_TIMEOUT_SECONDS="1") as node:
        upload_id = node.create(1000)
        sock = _connect(node)
        head = (
            f"PATCH /files/{upload_id} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {keys.token('alice')}\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            "Content-Length: 1000\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * 300)
        sock.settimeout(10)
        started = time.monotonic()
        reply = sock.recv(4096).decode("latin-1")
        assert reply.startswith("HTTP/1.1 400"), reply
        assert "body_timeout" in reply
        assert time.monotonic() - started < 5
        assert _closed_by_peer(sock, 5)
        sock.close()
        response = node.head(upload_id)
        assert response.headers["Upload-Offset"] == "300"


def test_connections_over_the_cap_get_a_503_at_once(tmp_path: Path, keys: Keys) -> None:
    with _node(tmp_path, keys, MAX_CONNECTIONS="20", HTTP_IDLE_TIMEOUT_SECONDS="60") as node:
        held = [_connect(node) for _ in range(20)]
        time.sleep(0.3)  # accepted by the server
        response = requests.get(f"{node.url}/health/live", timeout=5)
        assert response.status_code == 503
        assert response.text.startswith("server_busy")
        assert response.headers["Retry-After"] == "1"
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 5
        while requests.get(f"{node.url}/health/live", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "never served again"
            time.sleep(0.1)


def test_1100_sockets_under_a_1024_file_limit_do_not_stop_the_server(
    tmp_path: Path, keys: Keys
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1500:
        pytest.fail(f"this test opens 1,100 sockets; the hard open-file limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1500), hard))
    node = Node(
        tmp_path / "data",
        keys,
        tmp_path / "node.log",
        open_files=1024,
        HTTP_IDLE_TIMEOUT_SECONDS="120",
        LOG_LEVEL="INFO",
    ).wait_ready()
    sockets: list[socket.socket] = []
    try:
        for _ in range(1100):
            sockets.append(_connect(node))
        # Over the cap: a quick, clear answer (a 503 to retry) rather than silence or a
        # descriptor error; while the flood is being refused a client may be reset and retry.
        deadline = time.monotonic() + 5
        while True:
            try:
                response = requests.get(f"{node.url}/health/live", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "no answer within 5 s"
                time.sleep(0.1)
        assert response.status_code in (200, 503), response.text
        for sock in sockets:
            sock.close()
        sockets.clear()
        deadline = time.monotonic() + 10
        while requests.get(f"{node.url}/health/live", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "never served again"
            time.sleep(0.1)
        log = node.log_text()
        assert "Too many open files" not in log
        assert "Traceback" not in log
    finally:
        for sock in sockets:
            sock.close()
        node.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_malformed_requests_are_logged_as_one_counted_line(tmp_path: Path, keys: Keys) -> None:
    with _node(tmp_path, keys, LOG_LEVEL="INFO") as node:
        for i in range(200):
            sock = _connect(node)
            sock.sendall(b"GARBAGE %d\r\n\r\n" % i if i % 2 else b"GET / HTTP/1.1\r\nBad\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.")  # answered 400
            sock.close()
        assert requests.get(f"{node.url}/health/live", timeout=5).status_code == 200
        log = node.log_text()
        assert "Traceback" not in log
        lines = [line for line in log.splitlines() if "malformed requests" in line]
        assert 1 <= len(lines) <= 3, lines
        assert all(" WARNING " in line for line in lines)


def _exchange(node: Node, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw` on a new connection; the answer's status, headers (lower-case) and body,
    read until the server closes the connection (it must, within the socket's timeout)."""
    with _connect(node) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        pytest.param(
            b"POST /files/ HTTP/1.1\r\nHost: x\r\nUpload-Metadata: "
            + b"k dg==," * 2000
            + b"\r\n\r\n",
            431,
            "header_too_large",
            id="a 14 KB Upload-Metadata",
        ),
        pytest.param(
            b"HEAD /files/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            431,
            "header_too_large",
            id="a 9 KB request line",
        ),
        pytest.param(
            b"POST /files/ HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: v\r\n" % i for i in range(200))
            + b"\r\n",
            431,
            "too_many_headers",
            id="200 header fields",
        ),
        pytest.param(
            b"PATCH /files/x HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 3\r\nContent-Length: 30\r\n\r\n",
            400,
            "duplicate_header",
            id="two Content-Lengths",
        ),
        pytest.param(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            400,
            "malformed_request",
            id="TLS to the HTTP port",
        ),
    ],
)
def test_requests_the_http_parser_refuses_get_a_json_reason(
    tmp_path: Path, keys: Keys, raw: bytes, status: int, code: str
) -> None:
    """aiohttp refuses these before any handler runs, in plain text quoting the client's
    bytes; the answer is the JSON of every other refusal, with a fixed message, and the
    node serves on."""
    with _node(tmp_path, keys) as node:
        answered, headers, body = _exchange(node, raw)
        assert (answered, json.loads(body)["error"]) == (status, code), body
        assert headers["content-type"].startswith("application/json")
        assert headers["tus-resumable"] == "1.0.0"
        # None of the request is echoed (aiohttp's text quoted up to 100 bytes of it).
        assert b"dg==" not in body
        assert b"aaaa" not in body
        assert requests.get(f"{node.url}/health/live", timeout=5).status_code == 200
