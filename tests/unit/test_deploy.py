"""The container image and the compose cluster hold what the running product reads: the image
copies the package, the migrations and the status page's templates (every COPY source exists
and reaches the build context), libmagic is in every stage that imports the package, and the
healthcheck probes /health/live on the port the server listens on (APP_PORT); every compose
service with a healthcheck probes a port it listens on, the one-shot services have none; the
nodes share staging and keys and sit behind the load balancer, which streams uploads through
with the settings of deploy/nginx.conf, the one copy scripts/cluster renders too.

Static checks only (no Docker here); `scripts/check-deploy` adds `docker-compose config` and
`nginx -t`."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.nodes import free_port
from tusingest.settings.app import Settings
from tusingest.status import TEMPLATES
from tusingest.store.schema import MIGRATIONS

ROOT = Path(__file__).resolve().parents[2]
NGINX = ROOT / "deploy" / "nginx.conf"
RENDER = ROOT / "deploy" / "render_nginx.py"


@dataclass
class Stage:
    base: str  # the image or the stage it is FROM
    name: str | None
    instructions: list[tuple[str, str]]  # (KEYWORD, arguments)


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """Each Dockerfile instruction with its continuation lines joined, comments dropped."""
    current = ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        keyword, _, args = current.strip().partition(" ")
        yield keyword.upper(), args.strip()
        current = ""


def _stages() -> list[Stage]:
    stages: list[Stage] = []
    for keyword, args in _instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def _lineage(stages: list[Stage], stage: Stage) -> list[Stage]:
    """`stage` and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in stages if s.name}
    chain = [stage]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def _env(stages: list[Stage]) -> dict[str, str]:
    """The final stage's ENV (with its bases')."""
    env: dict[str, str] = {}
    for stage in reversed(_lineage(stages, stages[-1])):
        for keyword, args in stage.instructions:
            if keyword == "ENV":
                env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def _healthcheck(stages: list[Stage]) -> list[str]:
    found = [a for k, a in stages[-1].instructions if k == "HEALTHCHECK"]
    assert len(found) == 1, found
    _, _, command = found[0].partition(" CMD ")
    argv: list[str] = json.loads(command)
    return argv


def _dockerignored(path: str) -> bool:
    patterns = [
        line.strip().lstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(prefix.split("/")[-1], pattern[3:])
            ):
                return True
    return False


def test_the_image_copies_what_the_server_reads() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\S*$", dockerfile, re.MULTILINE))
    for needed in (TEMPLATES, MIGRATIONS, ROOT / "tusingest"):
        assert needed.relative_to(ROOT).as_posix() in copied, needed
    assert "alembic.ini" in dockerfile
    assert re.search(r"^USER tusingest$", dockerfile, re.MULTILINE)
    assert "/health/live" in dockerfile.split("HEALTHCHECK", 1)[1]
    assert re.search(r'^ENTRYPOINT \["tusingest"\]$', dockerfile, re.MULTILINE)
    assert re.search(r'^CMD \["serve"\]$', dockerfile, re.MULTILINE)
    assert "libmagic1" in dockerfile


def test_every_copy_source_is_in_the_build_context() -> None:
    sources = []
    for stage in _stages():
        for keyword, args in stage.instructions:
            if keyword in ("COPY", "ADD") and not args.startswith("--from="):
                words = [w for w in args.split() if not w.startswith("--")]
                sources += words[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not _dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    # pyproject.toml's `readme` is read by the build backend at `pip install`.
    assert "README.md" in sources


def test_libmagic_is_in_every_stage_that_imports_the_package() -> None:
    """python-magic loads libmagic when `tusingest.app` is imported (the validator's module):
    a stage that imports or runs the package without libmagic fails the build."""
    stages = _stages()
    for stage in stages:
        runs = " ".join(a for k, a in stage.instructions if k == "RUN")
        if stage is stages[-1] or re.search(r"import tusingest|bin/tusingest\b", runs):
            lineage = _lineage(stages, stage)
            installs = " ".join(a for s in lineage for k, a in s.instructions if k == "RUN")
            assert re.search(r"apt-get install\b[^&;]*\blibmagic1\b", installs), (
                f"stage {stage.name or stage.base} uses the package without libmagic1"
            )


def test_the_non_root_user_owns_the_data_and_volume_dirs() -> None:
    stages = _stages()
    env = _env(stages)
    runs = " ".join(
        a for s in _lineage(stages, stages[-1]) for k, a in s.instructions if k == "RUN"
    )
    chown = re.search(r"chown tusingest:tusingest ([^&;]+)", runs)
    assert chown is not None
    owned = set(chown[1].split())
    assert env["DATA_DIR"] in owned
    assert {"/staging", "/keys", "/data"} <= owned  # compose.yaml's volume mount points
    final = [k for k, _ in stages[-1].instructions]
    assert final.index("USER") > max(i for i, k in enumerate(final) if k in ("COPY", "RUN"))


@pytest.fixture
def health_stub() -> Iterator[tuple[int, list[str]]]:
    """An HTTP server answering 200 on any path; the paths it was asked for."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()


def test_the_healthcheck_probes_the_port_of_app_port(
    health_stub: tuple[int, list[str]],
) -> None:
    """Run as it is in the image: it follows APP_PORT, the variable `tusingest serve` listens
    on, and fails when nothing answers there."""
    port, asked = health_stub
    stages = _stages()
    env = _env(stages)
    default = Settings.from_env({}).server.port
    assert env["APP_PORT"] == str(default)
    assert Settings.from_env({"APP_PORT": str(port)}).server.port == port
    assert [a for k, a in stages[-1].instructions if k == "EXPOSE"] == [env["APP_PORT"]]
    argv = _healthcheck(stages)
    assert argv[0] == "python"
    assert str(default) not in " ".join(argv).replace(f"or '{default}'", "")  # only a fallback
    command = [sys.executable, *argv[1:]]
    answered = subprocess.run(command, env={"APP_PORT": str(port)}, timeout=30, check=False)
    assert answered.returncode == 0
    assert asked == ["/health/live"]
    closed = subprocess.run(
        command, env={"APP_PORT": str(free_port())}, capture_output=True, timeout=30, check=False
    )
    assert closed.returncode != 0


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return compose


def _ours(service: dict[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("tusingest:")


def _listens(name: str, service: dict[str, Any], image_env: dict[str, str]) -> int | None:
    """The port the service's process listens on, None for a one-shot command."""
    if not _ours(service):
        if str(service.get("image", "")).startswith("nginx:"):
            return _nginx_listen(NGINX.read_text())
        raise AssertionError(f"{name}: a third-party image: add its port to this test")
    if "entrypoint" in service:
        return None  # python -c / sh -c one-shots
    command = service.get("command", ["serve"])
    if command[0] == "serve":
        env = {**image_env, **{k: str(v) for k, v in service.get("environment", {}).items()}}
        return int(env["APP_PORT"])
    if command[:2] == ["element", "serve"]:
        return int(command[command.index("--port") + 1])
    return None  # migrate, token, elements ...: they end


def _probes(service: dict[str, Any], image_env: dict[str, str]) -> int | None:
    """The port the effective healthcheck probes, None when there is none."""
    check = service.get("healthcheck") or {}
    if check.get("disable") or check.get("test") in (["NONE"], "NONE"):
        return None
    if "test" not in check:  # inherited: the image's HEALTHCHECK probes APP_PORT
        if _ours(service):
            env = {**image_env, **{k: str(v) for k, v in service.get("environment", {}).items()}}
            return int(env["APP_PORT"])
        return None
    test = check["test"]
    text = test if isinstance(test, str) else " ".join(test)
    found = re.findall(r"(?:127\.0\.0\.1|localhost):(\d+)", text)
    assert len(set(found)) == 1, text
    return int(found[0])


def _nginx_listen(text: str) -> int:
    found = re.findall(r"^\s*listen\s+(?:\S+:)?(\d+);$", text, re.MULTILINE)
    assert len(found) == 1, found
    return int(found[0])


def test_every_compose_healthcheck_probes_a_port_its_service_listens_on() -> None:
    services = _compose()["services"]
    image_env = _env(_stages())
    checked = 0
    for name, service in services.items():
        if name in ("postgres", "redis", "clamd"):  # their images' own tools, their own ports
            assert "healthcheck" in service, name
            continue
        listens = _listens(name, service, image_env)
        probes = _probes(service, image_env)
        if listens is None:
            assert probes is None, f"{name} listens nowhere but has a healthcheck on {probes}"
            assert service.get("restart") == "no", name
        else:
            assert probes == listens, (
                f"{name} listens on {listens}, its healthcheck probes {probes}"
            )
            checked += 1
    assert checked >= 5  # se-edit, se-rw, ingester-1, ingester-2, lb
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            target = services[dependency]
            if rule["condition"] == "service_healthy":
                has = (
                    _probes(target, image_env) is not None
                    if _ours(target)
                    else ("healthcheck" in target)
                )
                assert has, f"{name} waits for {dependency} to be healthy; it has no healthcheck"
            elif rule["condition"] == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} is no one-shot"


def test_the_compose_nodes_and_their_load_balancer() -> None:
    compose = _compose()
    services = compose["services"]
    for service in ("postgres", "redis", "clamd", "keys", "migrate", "ingester-1", "ingester-2",
                    "lb", "se-edit", "se-rw", "register"):  # fmt: skip
        assert service in services, service
    nodes = [
        n for n, s in services.items() if _ours(s) and s.get("command", ["serve"]) == ["serve"]
    ]
    assert sorted(nodes) == ["ingester-1", "ingester-2"]
    image_env = _env(_stages())
    for node in nodes:
        assert "staging:/staging" in services[node]["volumes"]
        assert "keys:/keys" in services[node]["volumes"]
        needs = services[node]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["register"]["condition"] == "service_completed_successfully"
    register = services["register"]["depends_on"]
    assert register["se-edit"]["condition"] == register["se-rw"]["condition"] == "service_healthy"
    # The load balancer: its upstream is the nodes on their port, its listen port is published.
    nginx = NGINX.read_text()
    upstream = re.findall(r"^\s*server\s+([\w.-]+):(\d+)\b", nginx, re.MULTILINE)
    assert sorted(upstream) == sorted((n, image_env["APP_PORT"]) for n in nodes)
    lb = services["lb"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    assert [p.rsplit(":", 1)[1] for p in lb["ports"]] == [str(_nginx_listen(nginx))]
    assert set(lb["depends_on"]) == set(nodes)


def test_the_load_balancer_streams_uploads_through() -> None:
    nginx = NGINX.read_text()
    for directive in (
        "proxy_request_buffering off;",  # a PATCH body reaches a node as it arrives
        "proxy_buffering off;",
        "client_max_body_size 0;",  # tusingest enforces Tus-Max-Size (413) itself
        "proxy_http_version 1.1;",
        "proxy_next_upstream error timeout;",  # never `non_idempotent`: no PATCH replayed
    ):
        assert directive in nginx, directive
    timeouts = dict(re.findall(r"^\s*(\w+_timeout)\s+(\d+)s;$", nginx, re.MULTILINE))
    assert int(timeouts["proxy_read_timeout"]) >= 600  # the completing PATCH waits for a verdict
    assert int(timeouts["proxy_send_timeout"]) >= 600
    assert int(timeouts["client_body_timeout"]) >= 60


def _render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RENDER), *args], capture_output=True, text=True, check=False
    )


def _directives(text: str) -> list[str]:
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def test_scripts_cluster_renders_the_one_nginx_config(tmp_path: Path) -> None:
    """scripts/cluster holds no nginx settings of its own: it renders deploy/nginx.conf, and the
    rendering changes the places (listen, servers, pid, log, temp paths, workers) only."""
    cluster = (ROOT / "scripts" / "cluster").read_text()
    assert "deploy/render_nginx.py" in cluster
    assert not re.search(r"proxy_\w+ |upstream \w+ \{|client_max_body_size", cluster)
    rendered = _render(
        *("--listen", "127.0.0.1:18080", "--server", "127.0.0.1:18021"),
        *("--server", "127.0.0.1:18022", "--workers", "2", "--pid", str(tmp_path / "nginx.pid")),
        *("--error-log", str(tmp_path / "error.log"), "--temp-dir", str(tmp_path / "tmp")),
    )
    assert rendered.returncode == 0, rendered.stderr
    source, out = _directives(NGINX.read_text()), _directives(rendered.stdout)
    places = re.compile(
        r"^(listen|server [\w.-]+:\d+|pid|error_log|worker_processes|\w+_temp_path)\b"
    )
    assert [d for d in source if not places.match(d)] == [d for d in out if not places.match(d)]
    assert "listen 127.0.0.1:18080;" in out
    assert "server 127.0.0.1:18021 max_fails=1 fail_timeout=5s;" in out
    assert "server 127.0.0.1:18022 max_fails=1 fail_timeout=5s;" in out
    assert f"pid {tmp_path / 'nginx.pid'};" in out
    assert f"client_body_temp_path {tmp_path / 'tmp'}/client_body;" in out
    assert not any("ingester-" in d for d in out)


def test_the_renderer_refuses_a_config_it_cannot_render(tmp_path: Path) -> None:
    broken = tmp_path / "nginx.conf"
    broken.write_text(re.sub(r"^\s*listen .*\n", "", NGINX.read_text(), flags=re.MULTILINE))
    refused = _render("--source", str(broken), "--listen", "127.0.0.1:1")
    assert refused.returncode == 1
    assert "expected one `listen` directive, found 0" in refused.stderr
    unknown = _render("--map-host", "no-such-node=127.0.0.1")
    assert unknown.returncode == 1
    assert "no upstream server no-such-node:PORT" in unknown.stderr
