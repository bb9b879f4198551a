#!/usr/bin/env python3
"""Render deploy/nginx.conf for another place than compose.yaml's network, changing nothing
but where things are: the listen address, the upstream's servers, the pid, error log and temp
paths, the worker count. Every proxy setting stays the file's own, so the compose load balancer
and scripts/cluster's cannot drift apart. Standard library only; prints the result.

    # scripts/cluster: its nodes' local ports, its state dir
    deploy/render_nginx.py --listen 127.0.0.1:8080 --server 127.0.0.1:41001 \\
        --server 127.0.0.1:41002 --pid STATE/nginx.pid --error-log STATE/logs/nginx.log \\
        --temp-dir STATE/nginx --workers 2
    # scripts/check-deploy: the compose file itself, its host names mapped for `nginx -t`
    deploy/render_nginx.py --map-host ingester-1=127.0.0.1 --map-host ingester-2=127.0.0.1 ...

A directive to replace that is missing from the file, or found more than once, is an error:
the renderer fails rather than produce a config that silently differs.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

SOURCE = Path(__file__).resolve().with_name("nginx.conf")
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

_LISTEN = re.compile(r"^(?P<indent>\s*)listen\s+\S+;$")
_PID = re.compile(r"^pid\s+\S+;$")
_WORKERS = re.compile(r"^worker_processes\s+\S+;$")
_HTTP = re.compile(r"^http\s*\{$")
_UPSTREAM = re.compile(r"^\s*upstream\s+\S+\s*\{$")
_SERVER = re.compile(r"^(?P<indent>\s*)server\s+(?P<host>[^\s:;]+):(?P<port>\d+)(?P<rest>[^;]*);$")


class RenderError(Exception):
    pass


def render(
    text: str,
    *,
    listen: str | None = None,
    servers: Sequence[str] = (),
    hosts: Mapping[str, str] | None = None,
    pid: str | None = None,
    error_log: str | None = None,
    temp_dir: str | None = None,
    workers: int | None = None,
) -> str:
    """`text` (deploy/nginx.conf) with the given places swapped in."""
    lines = text.splitlines()
    upstream = _upstream_servers(lines)
    if servers:
        first = _SERVER.match(lines[upstream[0]])
        assert first is not None
        new = [f"{first['indent']}server {s}{first['rest']};" for s in servers]
        lines[upstream[0] : upstream[-1] + 1] = new
        upstream = list(range(upstream[0], upstream[0] + len(new)))
    for host, address in (hosts or {}).items():
        hits = 0
        for i in upstream:
            m = _SERVER.match(lines[i])
            if m is not None and m["host"] == host:
                lines[i] = f"{m['indent']}server {address}:{m['port']}{m['rest']};"
                hits += 1
        if not hits:
            raise RenderError(f"no upstream server {host}:PORT to map")
    if listen is not None:
        i = _one(lines, _LISTEN, "listen")
        m = _LISTEN.match(lines[i])
        assert m is not None
        lines[i] = f"{m['indent']}listen {listen};"
    if workers is not None:
        lines[_one(lines, _WORKERS, "worker_processes")] = f"worker_processes {workers};"
    if pid is not None or error_log is not None:
        i = _one(lines, _PID, "pid")
        if pid is not None:
            lines[i] = f"pid {pid};"
        if error_log is not None:
            lines.insert(i + 1, f"error_log {error_log} warn;")
    if temp_dir is not None:
        i = _one(lines, _HTTP, "http {")
        base = temp_dir.rstrip("/")
        lines[i + 1 : i + 1] = [f"    {kind}_temp_path {base}/{kind};" for kind in TEMP_PATHS]
    return "\n".join(lines) + "\n"


def _one(lines: Sequence[str], pattern: re.Pattern[str], what: str) -> int:
    found = [i for i, line in enumerate(lines) if pattern.match(line)]
    if len(found) != 1:
        raise RenderError(f"expected one `{what}` directive, found {len(found)}")
    return found[0]


def _upstream_servers(lines: Sequence[str]) -> list[int]:
    """The line numbers of the one upstream block's `server` lines (consecutive)."""
    start = _one(lines, _UPSTREAM, "upstream")
    found = []
    for i in range(start + 1, len(lines)):
        if lines[i].strip() == "}":
            break
        if _SERVER.match(lines[i]):
            found.append(i)
        elif lines[i].strip().startswith("server"):
            raise RenderError(f"an upstream server line not of the form HOST:PORT: {lines[i]!r}")
    if not found or found != list(range(found[0], found[-1] + 1)):
        raise RenderError("the upstream needs its server lines, one after another")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="default: deploy/nginx.conf")
    parser.add_argument("--listen", help="the listen directive's address, e.g. 127.0.0.1:8080")
    parser.add_argument(
        "--server", action="append", default=[], help="HOST:PORT of a node (repeat; replaces all)"
    )
    parser.add_argument(
        "--map-host", action="append", default=[], metavar="NAME=ADDR",
        help="an upstream host name to replace, keeping its port (repeat)",
    )  # fmt: skip
    parser.add_argument("--pid")
    parser.add_argument("--error-log")
    parser.add_argument("--temp-dir", help="client_body, proxy, ... temp paths under this dir")
    parser.add_argument("--workers", type=int)
    args = parser.parse_args(argv)
    hosts = {}
    for pair in args.map_host:
        name, sep, address = pair.partition("=")
        if not sep or not name or not address:
            parser.error(f"--map-host {pair!r}: expected NAME=ADDR")
        hosts[name] = address
    try:
        text = render(
            args.source.read_text(),
            listen=args.listen,
            servers=args.server,
            hosts=hosts,
            pid=args.pid,
            error_log=args.error_log,
            temp_dir=args.temp_dir,
            workers=args.workers,
        )
    except RenderError as exc:
        print(f"render_nginx: {args.source}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(f"# Rendered from {args.source} by deploy/render_nginx.py: edit that.\n")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
