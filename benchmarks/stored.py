"""Where each server keeps an upload's bytes: the uploads made, and a locator per layout.

A locator maps an upload (its `/files/<id>` path, the file name it was given, whether it is
complete) to the file holding its bytes, so that `verify` can hash them:

- tusingest: `DATA_DIR/staging/<id>` while in progress; once stored, the local storage
  element's data file, found through the `upload_id` in its `*.attr.json` files;
- @tus/file-store and tuspyserver: `<dir>/<id>` (state beside it in `<id>.json` / `<id>.info`);
- aiohttp-tus: `<dir>/.resources/<id>` while in progress (preallocated to the full length),
  `<dir>/<filename from Upload-Metadata>` once complete (it then forgets the upload).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass
class Uploaded:
    """One upload as the client made it."""

    phase: int  # where its bytes start in the payload pattern
    length: int  # bytes sent
    path: str = ""  # /files/<id> once created
    name: str = ""  # file name, sent as Upload-Metadata to the servers that need one
    declared: int = 0  # Upload-Length; 0: the same as `length`

    def __post_init__(self) -> None:
        if not self.declared:
            self.declared = self.length

    @property
    def complete(self) -> bool:
        return self.length == self.declared


def upload_id(path: str) -> str:
    """The upload id: the last segment of its `/files/<id>` path."""
    return path.rstrip("/").rsplit("/", 1)[-1]


Resolve = Callable[[Uploaded], Path]


class Locator(Protocol):
    """How one server lays out the bytes of its uploads."""

    @property
    def description(self) -> str: ...

    def resolver(self) -> Resolve:
        """A function from upload to file; may scan the disk first (call it in a thread)."""
        ...


def _stored_index(root: Path) -> dict[str, Path]:
    """upload id → data file, from the local storage element's attr.json files."""
    index: dict[str, Path] = {}
    if not root.is_dir():
        return index
    for attr in root.rglob("*.attr.json"):
        found = json.loads(attr.read_text()).get("metadata", {}).get("upload_id")
        if found:
            index[found] = attr.with_name(attr.name.removesuffix(".attr.json"))
    return index


@dataclass(frozen=True)
class TusingestFiles:
    """tusingest: STAGING_DIR, or its local storage element (LOCAL_STORAGE_DIR) once stored."""

    staging_dir: Path
    storage_dir: Path

    @property
    def description(self) -> str:
        return "STAGING_DIR/<id>, or the local storage element's file once stored"

    def resolver(self) -> Resolve:
        stored = _stored_index(self.storage_dir)

        def resolve(upload: Uploaded) -> Path:
            key = upload_id(upload.path)
            return stored.get(key, self.staging_dir / key)

        return resolve


@dataclass(frozen=True)
class FilesById:
    """One file per upload, named by its id (@tus/file-store, tuspyserver)."""

    directory: Path

    @property
    def description(self) -> str:
        return "<upload dir>/<id>"

    def resolver(self) -> Resolve:
        return lambda upload: self.directory / upload_id(upload.path)


@dataclass(frozen=True)
class AiohttpTusFiles:
    """aiohttp-tus: `.resources/<id>` in progress; the file's own name once complete."""

    directory: Path

    @property
    def description(self) -> str:
        return "<upload dir>/.resources/<id> in progress, <upload dir>/<filename> once complete"

    def resolver(self) -> Resolve:
        def resolve(upload: Uploaded) -> Path:
            if upload.complete:
                return self.directory / upload.name
            return self.directory / ".resources" / upload_id(upload.path)

        return resolve
