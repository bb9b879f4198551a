"""A local element's index by file id: one relative symlink per file to its attr.json, so a file
is found without scanning a directory; and reading an attr.json found on disk."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tusingest.artstore import ATTR_SUFFIX, MAX_ATTR_BYTES, canonical_file_id
from tusingest.diskio import fsync_dir

# file id → its attr.json, as relative symlinks `{INDEX}/{id[:2]}/{id}`; BUILT marks an index
# that holds every file (one made before the element kept it is rebuilt once).
INDEX = ".by-id"
BUILT = ".built"


class IdIndex:
    """The index under `root`. Blocking: used from the element's worker threads."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._dir = root / INDEX
        self._built = False
        self._lock = threading.Lock()

    def lookup(self, file_id: str) -> Path | None:
        """The attr.json the index names for the canonical `file_id`, if any."""
        self.ensure()
        link = self._path(file_id)
        try:
            return Path(os.path.normpath(link.parent / os.readlink(link)))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def link(self, file_id: str, attr_path: Path) -> None:
        """Point the index at `attr_path`, atomically and durably."""
        link = self._path(file_id)
        target = os.path.relpath(attr_path, link.parent)
        try:
            os.symlink(target, link)  # a new file's entry: created whole or not at all
        except FileNotFoundError:  # the first entry under this prefix
            link.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(self._dir)
            self._replace(file_id, link, target)
        except FileExistsError:
            try:
                if os.readlink(link) == target:
                    return
            except OSError:
                pass
            self._replace(file_id, link, target)
        fsync_dir(link.parent)

    @staticmethod
    def _replace(file_id: str, link: Path, target: str) -> None:
        # A name of this thread's own: the index build may link the same file meanwhile.
        tmp = link.with_name(f".tmp_{file_id}.{os.getpid()}.{threading.get_ident()}")
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)

    def unlink(self, file_id: str) -> None:
        link = self._path(file_id)
        try:
            link.unlink()
        except FileNotFoundError:
            return
        fsync_dir(link.parent)

    def ensure(self) -> None:
        """Index every file once if the index was never completed (files kept before it)."""
        if self._built:
            return
        with self._lock:
            if self._built or (self._dir / BUILT).exists():
                self._built = True
                return
            self._dir.mkdir(parents=True, exist_ok=True)
            for attr_path, attr in walk_attrs(self._root):
                if canonical_file_id(str(attr.get("file_id"))):
                    self.link(attr["file_id"], attr_path)
            (self._dir / BUILT).touch()
            fsync_dir(self._dir)
            self._built = True

    def _path(self, file_id: str) -> Path:
        return self._dir / file_id[:2] / file_id


def walk_attrs(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every attr.json under `root` (hidden directories skipped), in no particular order."""
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in names:
            attr = load_attr(Path(dirpath), name)
            if attr is not None:
                yield Path(dirpath) / name, attr


def load_attr(directory: Path, name: str) -> dict[str, Any] | None:
    """The attr.json `name` in `directory`, if it is one (named after its storage_filename)."""
    if not name.endswith(ATTR_SUFFIX):
        return None
    try:
        with open(directory / name, "rb") as f:
            attr = json.loads(f.read(MAX_ATTR_BYTES + 1))
    except (OSError, ValueError):
        return None
    if isinstance(attr, dict) and attr.get("storage_filename", "") + ATTR_SUFFIX == name:
        return attr
    return None
