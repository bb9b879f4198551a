"""The container image and the compose cluster hold what the running product reads: the image
copies the package, the migrations and the status page's templates and probes /health/live;
the compose file's nodes share staging and keys, sit behind the load balancer, and the load
balancer streams uploads through (its config is the one the README documents)."""

from __future__ import annotations

import re
from pathlib import Path

from tusingest.status import TEMPLATES
from tusingest.store.schema import MIGRATIONS

ROOT = Path(__file__).resolve().parents[2]


def test_the_image_copies_what_the_server_reads() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\S*$", dockerfile, re.MULTILINE))
    for needed in (TEMPLATES, MIGRATIONS, ROOT / "tusingest"):
        assert needed.relative_to(ROOT).as_posix() in copied, needed
    assert "alembic.ini" in dockerfile
    assert re.search(r"^USER tusingest$", dockerfile, re.MULTILINE)
    assert "/health/live" in dockerfile.split("HEALTHCHECK", 1)[1]
    assert re.search(r'^ENTRYPOINT \["tusingest"\]$', dockerfile, re.MULTILINE)
    assert "libmagic1" in dockerfile


def test_the_compose_nodes_and_their_load_balancer() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    for service in ("postgres", "redis", "clamd", "migrate", "ingester-1", "ingester-2", "lb",
                    "se-edit", "se-rw", "register"):  # fmt: skip
        assert re.search(rf"^  {re.escape(service)}:", compose, re.MULTILINE), service
    assert "staging:/staging" in compose
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "server ingester-1:8020" in nginx
    assert "server ingester-2:8020" in nginx
    assert "proxy_request_buffering off;" in nginx
    assert "client_max_body_size 0;" in nginx
