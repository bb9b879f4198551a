"""The settings block: the conditions of a run (servers, durability, client, machine, runs)."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from benchmarks.peer_install import Installed, node_version
from benchmarks.peer_servers import Peer
from benchmarks.servers import Server

TUSINGEST_DURABILITY = "fsyncs each PATCH before advancing the offset (not configurable)"


@dataclass(frozen=True)
class PeerState:
    """A peer as the run has it: started (server), or not (why)."""

    peer: Peer
    installed: Installed
    server: Server | None
    failure: str = ""


def machine(with_node: bool) -> str:
    """CPUs, load average now, and the versions of the runtimes involved."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    line = (
        f"{os.cpu_count()} CPUs, load average {load} at start; Python "
        f"{platform.python_version()}, aiohttp {aiohttp.__version__}"
    )
    if with_node:
        version = node_version()
        line += f", Node {'.'.join(map(str, version)) if version else '?'}"
    return line


def _server(server: Server) -> str:
    return f"{server.url} (pid {server.pid or '?'}): {server.description}"


def settings(
    *,
    tus: Server,
    storage: str,
    base: Server,
    peers: Sequence[PeerState],
    extra_env: Mapping[str, str],
    full_sizes: bool,
    repeat: int,
) -> dict[str, str]:
    """The settings block, keyed by what it describes (a server's entry is under its name)."""
    block = {"tusingest": _server(tus), "sessions": storage}
    if extra_env:
        block["tusingest env"] = " ".join(f"{k}={v}" for k, v in extra_env.items())
    for state in peers:
        name = state.peer.name
        if state.server is not None:
            block[name] = _server(state.server)
        else:
            reason = " ".join(line.strip() for line in state.failure.splitlines())
            block[name] = f"FAILED to start: {reason[:300]}"
    block["baseline"] = _server(base)
    if peers:
        lines = [f"tusingest: {TUSINGEST_DURABILITY}"]
        lines += [f"{s.peer.name}: {s.peer.durability}" for s in peers]
        block["durability"] = "; ".join(lines)
    else:
        block["durability"] = f"fsync on: tusingest {TUSINGEST_DURABILITY}"
    block["client"] = (
        "benchmarks/client.py: raw-socket HTTP/1.1 keep-alive, Content-Length bodies sent "
        "zero-copy from a preallocated pseudo-random pattern, distinct per upload"
    )
    metadata = [s.peer.name for s in peers if s.peer.sends_metadata]
    if metadata:
        block["client"] += (
            f"; Upload-Metadata (filename, filetype) sent to {', '.join(metadata)} only "
            "(tuspyserver's HEAD answers 400 without it; aiohttp-tus names the stored file "
            "after it)"
        )
    forgetful = [s.peer.name for s in peers if s.peer.forgets_completed]
    if forgetful:
        block["client"] += (
            f"; W3 seeds on {', '.join(forgetful)} are declared one byte longer than sent "
            "(it forgets completed uploads: HEAD 404)"
        )
    block["host"] = machine(with_node=bool(peers))
    block["sizes"] = "the issue's" if full_sizes else "smaller than the issue's: indicative only"
    order = ", the order rotated each repeat" if repeat > 1 else ""
    per = f"median of {repeat}" if repeat > 1 else "one run"
    block["runs"] = (
        f"{per} per workload and server; the servers one after the other{order}; sync(2) "
        "between runs"
    )
    block["metrics"] = (
        "server CPU = utime+stime from /proc/<pid>/stat (+ descendants); RSS = VmRSS sampled "
        "every 10 ms during the measured part"
    )
    if peers:
        servers = [tus, *(s.server for s in peers if s.server is not None)]
        block["verified by"] = "; ".join(
            f"{s.name}: SHA-256 of {s.stored.description}" if s.stored else f"{s.name}: offsets"
            for s in servers
        )
    return block


def render(block: Mapping[str, str]) -> str:
    width = max(len(k) for k in block) + 2
    return "settings:\n" + "\n".join(f"  {k + ':':<{width}}{v}" for k, v in block.items())
