"""The peer tus servers (--peers): what the harness must know of each, and starting them.

Each peer runs as one process on 127.0.0.1, from its install in `benchmarks/.peers/`
(`peer_install`), through our launcher in `benchmarks/peers/`, with its own empty upload
directory under the run's temporary directory. What each needs from the client, and where it
keeps the bytes, was read from its installed source:

- @tus/server 2.4.5 + @tus/file-store 2.1.1: bytes in `<dir>/<id>`, no Upload-Metadata needed,
  keeps completed uploads; absolute Location; no fsync.
- tuspyserver 4.4.3: bytes in `<dir>/<id>`; its HEAD answers 400 unless the upload has
  `filename` and `filetype` metadata; absolute Location; flushes the bytes without fsync,
  fsyncs its `<id>.info` state on every change.
- aiohttp-tus 1.1.0: creation needs a `filename` in Upload-Metadata (409 when a file of that name
  exists); it reads each PATCH whole; once complete it moves the bytes to `<dir>/<filename>` and
  forgets the upload (HEAD 404, DELETE 404); no fsync.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.peer_install import AIOHTTP_TUS, TUS_NODE, TUSPYSERVER, Installed, Pins
from benchmarks.servers import Server, free_port, spawn, started
from benchmarks.stored import AiohttpTusFiles, FilesById, Locator

LAUNCHERS = Path(__file__).with_name("peers")
# Variables that would let a peer's Python see packages other than its own venv's.
_PYTHON_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE")


@dataclass(frozen=True)
class Peer:
    """A tus server a user could run instead of tusingest."""

    name: str  # its column in the report
    pins: Pins
    launcher: str  # file in benchmarks/peers/
    shown: tuple[str, ...]  # packages whose installed versions the settings show
    serving: str  # how it serves HTTP
    durability: str
    locator: Callable[[Path], Locator]
    sends_metadata: bool = False
    forgets_completed: bool = False
    python: bool = True  # Python (the Python peers' best is a target) or not


TUS_NODE_SERVER = Peer(
    name="@tus/server",
    pins=TUS_NODE,
    launcher="tus_node_server.mjs",
    shown=("@tus/server", "@tus/file-store", "@tus/utils"),
    serving="Node http.createServer, one process, FileStore, in-memory locker",
    durability="no fsync (the file store streams each PATCH into the file)",
    locator=FilesById,
    python=False,
)
TUSPYSERVER_PEER = Peer(
    name="tuspyserver",
    pins=TUSPYSERVER,
    launcher="tuspyserver_app.py",
    shown=("tuspyserver", "fastapi", "starlette", "uvicorn", "h11"),
    serving="FastAPI router on uvicorn (h11, asyncio), one process",
    durability="the bytes are flushed, not fsynced; its <id>.info state is fsynced on each change",
    locator=FilesById,
    sends_metadata=True,
)
AIOHTTP_TUS_PEER = Peer(
    name="aiohttp-tus",
    pins=AIOHTTP_TUS,
    launcher="aiohttp_tus_app.py",
    shown=("aiohttp-tus", "aiohttp"),
    serving="aiohttp web.run_app, one process, client_max_size raised to the largest upload",
    durability="no fsync",
    locator=AiohttpTusFiles,
    sends_metadata=True,
    forgets_completed=True,
)
PEERS = (TUS_NODE_SERVER, TUSPYSERVER_PEER, AIOHTTP_TUS_PEER)


def versions(peer: Peer, installed: Installed) -> str:
    """`name version` of the packages the settings show, as installed."""
    found = {k.lower(): v for k, v in installed.versions.items()}
    return ", ".join(f"{p} {found[p.lower()]}" for p in peer.shown if p.lower() in found)


def argv(peer: Peer, installed: Installed, port: int, directory: Path, max_size: int) -> list[str]:
    common = ["--port", str(port), "--dir", str(directory), "--max-size", str(max_size)]
    command = [str(installed.program), str(LAUNCHERS / peer.launcher), *common]
    if peer.pins.tool == "npm":
        command += ["--modules", str(installed.folder)]
    return command


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


async def start_peer(peer: Peer, installed: Installed, work_dir: Path, max_size: int) -> Server:
    """Start `peer` in its own upload directory under `work_dir`; ready, or StartupError."""
    slug = _slug(peer.name)
    directory = work_dir / "peers" / slug
    directory.mkdir(parents=True)
    port = free_port()
    log_path = work_dir / f"{slug}.log"
    env = {k: v for k, v in os.environ.items() if k not in _PYTHON_VARIABLES}
    process = spawn(argv(peer, installed, port, directory, max_size), env, log_path)
    server = Server(
        name=peer.name,
        host="127.0.0.1",
        port=port,
        pid=process.pid,
        headers={"Tus-Resumable": "1.0.0"},
        stored=peer.locator(directory),
        description=f"{versions(peer, installed)}; {peer.serving}; uploads in {directory}",
        process=process,
        log_path=log_path,
        sends_metadata=peer.sends_metadata,
        forgets_completed=peer.forgets_completed,
    )
    return await started(server)
