"""Installing the peer tus servers on first use, pinned, into the git-ignored `benchmarks/.peers/`.

One virtualenv per Python peer (`python -m venv` with the interpreter running the benchmark,
so every Python server runs on the same Python, then `pip install` of the pins) and one npm
folder for the Node peer (`npm install` of the pins). Each folder gets a stamp file, written
last, with its pins and runtime: a folder whose stamp matches is reused, any other is removed
and installed anew (pins changed, another Python, an install cut short). A lock file keeps two
benchmarks from installing at once. Missing tools and failed installs raise `InstallError`,
with what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

PEERS_DIR = Path(__file__).with_name(".peers")
STAMP = ".benchmark-stamp.json"
NODE_MINIMUM = (20, 19)  # @tus/server 2.4.5 and @tus/file-store 2.1.1: engines node >= 20.19.0
_TIMEOUT_S = 900.0
_TAIL_LINES = 25


class InstallError(Exception):
    """A peer could not be installed: a tool is missing or its install failed."""


@dataclass(frozen=True)
class Pins:
    """One install folder: its name under `.peers/`, the tool, and the pinned packages."""

    folder: str
    tool: str  # "pip" | "npm"
    packages: tuple[str, ...]


TUSPYSERVER = Pins("tuspyserver", "pip", ("tuspyserver==4.4.3", "uvicorn"))
AIOHTTP_TUS = Pins("aiohttp-tus", "pip", ("aiohttp-tus==1.1.0",))
TUS_NODE = Pins("node", "npm", ("@tus/server@2.4.5", "@tus/file-store@2.1.1"))


@dataclass(frozen=True)
class Installed:
    """A ready install: where it is, the program that runs it, what got installed."""

    pins: Pins
    folder: Path
    program: Path  # the venv's python, or node
    versions: dict[str, str]  # package -> installed version (the pins and their dependencies)
    seconds: float | None  # how long installing took now; None: reused


def _tail(text: str) -> str:
    lines = [line for line in text.splitlines() if "is ignored: it is neither" not in line]
    return "\n".join(lines[-_TAIL_LINES:])


def _run(argv: Sequence[str], cwd: Path | None = None) -> str:
    """Run an install step; its stdout, or InstallError with its output."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise InstallError(f"{argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise InstallError(f"`{' '.join(argv)}` took longer than {_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        output = _tail(done.stdout + done.stderr)
        raise InstallError(f"`{' '.join(argv)}` failed (exit {done.returncode}):\n{output}")
    return done.stdout


def node_version() -> tuple[int, ...] | None:
    """The installed node's version, None without node."""
    node = shutil.which("node")
    if node is None:
        return None
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", _run([node, "--version"]).strip())
    if not found:
        raise InstallError("`node --version` printed no version")
    return tuple(int(x) for x in found.groups())


def check_tools(pins: Sequence[Pins]) -> None:
    """InstallError naming each missing tool and how to get it."""
    missing: list[str] = []
    if any(p.tool == "pip" for p in pins) and importlib.util.find_spec("ensurepip") is None:
        missing.append(
            f"pip: this Python ({sys.executable}) has no ensurepip, so `python -m venv` "
            "cannot install pip (Debian: apt-get install python3-venv)"
        )
    if any(p.tool == "npm" for p in pins):
        version = node_version()
        if version is None or shutil.which("npm") is None:
            missing.append(
                "node/npm: not found; install Node.js >= 20.19 with npm (scripts/js-deps "
                "installs Debian's nodejs and npm when node is missing)"
            )
        elif version[:2] < NODE_MINIMUM:
            shown = ".".join(map(str, version))
            missing.append(
                f"node: {shown} is too old for @tus/server 2.4.5 (needs >= 20.19); "
                "install a newer Node.js"
            )
    if missing:
        raise InstallError("missing tools for --peers:\n  " + "\n  ".join(missing))


def _runtime(pins: Pins) -> str:
    """What an install depends on besides its pins; another one means a reinstall."""
    if pins.tool == "pip":
        real = os.path.realpath(sys.executable)
        return f"{platform.python_implementation()} {platform.python_version()} {real}"
    return f"node {'.'.join(map(str, node_version() or ()))}"


def _read_stamp(folder: Path) -> dict[str, object] | None:
    try:
        data = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _program(pins: Pins, folder: Path) -> Path:
    if pins.tool == "pip":
        return folder / "bin" / "python"
    return Path(shutil.which("node") or "node")


def _pip_install(pins: Pins, folder: Path) -> dict[str, str]:
    _run([sys.executable, "-m", "venv", str(folder)])
    python = str(folder / "bin" / "python")
    _run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins.packages])
    listed = json.loads(_run([python, "-m", "pip", "list", "--format=json"]))
    return {str(p["name"]).lower(): str(p["version"]) for p in listed}


def _npm_install(pins: Pins, folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True)
    (folder / "package.json").write_text('{"private": true}\n')
    npm = shutil.which("npm") or "npm"
    flags = ["--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
    _run([npm, "install", *flags, *pins.packages], cwd=folder)
    versions: dict[str, str] = {}
    for manifest in sorted((folder / "node_modules").glob("@tus/*/package.json")):
        data = json.loads(manifest.read_text())
        versions[str(data["name"])] = str(data["version"])
    return versions


def _current_stamp(pins: Pins, folder: Path) -> dict[str, object] | None:
    """The folder's stamp when it is an install of exactly these pins on this runtime."""
    stamp = _read_stamp(folder)
    if (
        stamp is None
        or stamp.get("packages") != list(pins.packages)
        or stamp.get("runtime") != _runtime(pins)
        or not _program(pins, folder).exists()
    ):
        return None
    return stamp


def _ensure_one(pins: Pins, root: Path) -> Installed:
    folder = root / pins.folder
    program = _program(pins, folder)
    stamp = _current_stamp(pins, folder)
    if stamp is not None:
        versions = stamp.get("versions")
        known = {str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {}
        return Installed(pins, folder, program, known, None)
    started = time.monotonic()
    shutil.rmtree(folder, ignore_errors=True)
    try:
        versions = _pip_install(pins, folder) if pins.tool == "pip" else _npm_install(pins, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    stamp_data = {"packages": list(pins.packages), "runtime": _runtime(pins), "versions": versions}
    (folder / STAMP).write_text(json.dumps(stamp_data, indent=2) + "\n")
    return Installed(pins, folder, program, versions, time.monotonic() - started)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure(
    pins: Sequence[Pins], root: Path = PEERS_DIR, log: Callable[[str], None] = print
) -> dict[str, Installed]:
    """Every install of `pins` ready under `root` (installing in parallel what is missing)."""
    check_tools(pins)
    with _locked(root):
        stale = [p for p in pins if _current_stamp(p, root / p.folder) is None]
        if stale:
            names = ", ".join(f"{p.folder} ({' '.join(p.packages)})" for p in stale)
            log(f"installing the peers into {root} (first use or pins changed): {names}")
        with ThreadPoolExecutor(max_workers=max(1, len(pins))) as pool:
            done = list(pool.map(lambda p: _ensure_one(p, root), pins))
    for item in done:
        if item.seconds is not None:
            log(f"  installed {item.pins.folder} in {item.seconds:.1f} s")
    return {item.pins.folder: item for item in done}
