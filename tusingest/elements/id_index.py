"""A local element's index by file id: one hard link per file to its attr.json, so a file is
found without scanning a directory; and reading an attr.json found on disk."""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tusingest.artstore import ATTR_SUFFIX, MAX_ATTR_BYTES, canonical_file_id
from tusingest.diskio import fsync_dir

# file id → its attr.json, as hard links `{INDEX}/{id[:2]}/{id}` (an entry is the attr.json
# itself: its storage_path and storage_filename say where the file lives). A hard link costs
# no inode: on ext4, after many deletions, a new inode cost ~25 times the CPU of a link. A
# relative symlink to the attr.json (where hard links are refused, or made by an earlier
# version) reads the same, since opening it follows it. BUILT marks an index that holds every
# file (one made before the element kept it is rebuilt once).
INDEX = ".by-id"
_NO_HARD_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK})
BUILT = ".built"


class IdIndex:
    """The index under `root`. Blocking: used from the element's worker threads."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._dir = root / INDEX
        self._built = False
        self._lock = threading.Lock()

    def lookup(self, file_id: str) -> Path | None:
        """The attr.json the index names for the canonical `file_id`, if any (whether it is
        still there is for the caller to see)."""
        self.ensure()
        entry = self._path(file_id)
        attr = _read_attr(entry)
        if attr is None:
            return None
        where, name = attr.get("storage_path"), attr.get("storage_filename")
        if not isinstance(where, str) or not isinstance(name, str) or "/" in name:
            return None
        path = Path(os.path.normpath(self._root / where.strip("/") / (name + ATTR_SUFFIX)))
        inside = path.is_relative_to(self._root) and not path.is_relative_to(self._dir)
        return path if inside else None

    def link(self, file_id: str, attr_path: Path) -> None:
        """Make the index entry of `file_id` the attr.json at `attr_path`, atomically and
        durably (again after the attr.json was replaced)."""
        entry = self._path(file_id)
        try:
            _make(attr_path, entry)  # a new file's entry: created whole or not at all
        except FileNotFoundError:
            if not attr_path.exists():
                raise
            entry.parent.mkdir(parents=True, exist_ok=True)  # the first under this prefix
            fsync_dir(self._dir)
            self._replace(file_id, entry, attr_path)
        except FileExistsError:
            if _same_file(entry, attr_path):
                return
            self._replace(file_id, entry, attr_path)
        fsync_dir(entry.parent)

    @staticmethod
    def _replace(file_id: str, entry: Path, attr_path: Path) -> None:
        # A name of this thread's own: the index build may link the same file meanwhile.
        tmp = entry.with_name(f".tmp_{file_id}.{os.getpid()}.{threading.get_ident()}")
        tmp.unlink(missing_ok=True)
        _make(attr_path, tmp)
        os.replace(tmp, entry)

    def unlink(self, file_id: str) -> None:
        entry = self._path(file_id)
        try:
            entry.unlink()
        except FileNotFoundError:
            return
        fsync_dir(entry.parent)

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
                    try:
                        self.link(attr["file_id"], attr_path)
                    except FileNotFoundError:  # deleted since it was listed
                        continue
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
    attr = _read_attr(directory / name)
    if attr is not None and attr.get("storage_filename", "") + ATTR_SUFFIX == name:
        return attr
    return None


def _make(attr_path: Path, entry: Path) -> None:
    """`entry` as a hard link to `attr_path`, or a relative symlink where the filesystem
    refuses hard links."""
    try:
        os.link(attr_path, entry)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINK:
            raise
        os.symlink(os.path.relpath(attr_path, entry.parent), entry)


def _read_attr(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            attr = json.loads(f.read(MAX_ATTR_BYTES + 1))
    except (OSError, ValueError):
        return None
    return attr if isinstance(attr, dict) else None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
