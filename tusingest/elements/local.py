"""Local-disk storage element: files and their attr.json in the ArtStore hour layout."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tusingest.artstore import (
    ATTR_SUFFIX,
    MAX_ATTR_BYTES,
    build_attr,
    canonical_file_id,
    encode_attr,
    hour_path,
    storage_filename,
)
from tusingest.diskio import copy_range, fsync_dir
from tusingest.domain import FileToStore, StoredFile
from tusingest.errors import TusingestError

DATA_MODE = 0o644  # the modes an ArtStore SE gives its files
ATTR_MODE = 0o600


class LocalElement:
    """Implements `StorageElement` on a directory; idempotent by `file_id`."""

    def __init__(self, root: Path, element_id: str) -> None:
        self._root = root
        self._element_id = element_id

    @property
    def element_id(self) -> str:
        return self._element_id

    @property
    def root(self) -> Path:
        return self._root

    async def store(self, item: FileToStore) -> StoredFile:
        return await asyncio.to_thread(self._store, item)

    async def delete(self, file_id: str) -> None:
        await asyncio.to_thread(self._delete, file_id)

    async def find(self, file_id: str) -> StoredFile | None:
        """The complete copy (attr.json and data of the recorded size) of `file_id`."""
        return await asyncio.to_thread(self._find, file_id)

    async def read_attr(self, file_id: str) -> dict[str, Any] | None:
        found = await asyncio.to_thread(self._find_entry, file_id)
        return None if found is None else found[1]

    async def list_attrs(self) -> list[dict[str, Any]]:
        """Every attr.json under the root (in no particular order)."""
        return await asyncio.to_thread(self._list_attrs)

    async def update_attr(self, file_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Rewrite `file_id`'s attr.json (atomically) with `changes` merged in; None if the
        file is unknown. Callers serialise updates of one file."""
        return await asyncio.to_thread(self._update_attr, file_id, changes)

    # Blocking parts, run in a worker thread.

    def _store(self, item: FileToStore) -> StoredFile:
        file_id = canonical_file_id(item.file_id)
        if file_id is None:
            raise ValueError(f"file_id must be a 36-char UUID, got {item.file_id!r}")
        name = storage_filename(item.original_filename, item.owner_name, item.uploaded_at, file_id)
        rel = hour_path(item.uploaded_at)
        directory = self._root / rel
        attr = build_attr(item, file_id, name, rel)  # before any copy: fails on size early

        for entry_dir, found in _entries(directory, file_id):
            stored = self._complete(entry_dir, found)
            if stored and stored.size == item.size and stored.sha256 == item.sha256.lower():
                return stored
            _remove_entry(entry_dir, found)  # partial or different: store it again
        _remove_temporaries(directory, file_id)

        _make_dirs(self._root, rel)
        data_tmp = directory / _tmp_name(file_id, "data")
        checksum = _copy(item.source, data_tmp, item.size)
        target = directory / name
        try:
            os.replace(data_tmp, target)
            fsync_dir(directory)
            attr["checksum"] = checksum
            _write_attr(directory, file_id, name + ATTR_SUFFIX, encode_attr(attr))
        except BaseException:
            target.unlink(missing_ok=True)
            data_tmp.unlink(missing_ok=True)
            raise
        return StoredFile(file_id, self._element_id, name, rel, item.size, checksum)

    def _delete(self, file_id: str) -> None:
        canonical = canonical_file_id(file_id)
        if canonical is None or not self._root.is_dir():
            return
        for dirpath, _, _ in os.walk(self._root):
            directory = Path(dirpath)
            for entry_dir, found in _entries(directory, canonical):
                _remove_entry(entry_dir, found)
            _remove_temporaries(directory, canonical)

    def _find(self, file_id: str) -> StoredFile | None:
        found = self._find_entry(file_id)
        return None if found is None else self._complete(*found)

    def _find_entry(self, file_id: str) -> tuple[Path, dict[str, Any]] | None:
        canonical = canonical_file_id(file_id)
        if canonical is None or not self._root.is_dir():
            return None
        for dirpath, _, _ in os.walk(self._root):
            for found in _entries(Path(dirpath), canonical):
                return found
        return None

    def _list_attrs(self) -> list[dict[str, Any]]:
        if not self._root.is_dir():
            return []
        found = []
        for dirpath, _, names in os.walk(self._root):
            for name in names:
                attr = _load_attr(Path(dirpath), name)
                if attr is not None:
                    found.append(attr)
        return found

    def _update_attr(self, file_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        found = self._find_entry(file_id)
        if found is None:
            return None
        directory, attr = found
        attr = {**attr, **changes}
        body = encode_attr(attr)
        if len(body) > MAX_ATTR_BYTES:
            raise TusingestError(
                f"attr.json of {attr['file_id']} exceeds {MAX_ATTR_BYTES} bytes",
                code="attr_too_large",
                status=500,
            )
        _remove_temporaries(directory, attr["file_id"])
        _write_attr(directory, attr["file_id"], attr["storage_filename"] + ATTR_SUFFIX, body)
        return attr

    def _complete(self, directory: Path, attr: dict[str, Any]) -> StoredFile | None:
        checksum = attr.get("checksum")
        try:
            size = (directory / attr["storage_filename"]).stat().st_size
        except FileNotFoundError:
            return None
        if size != attr.get("file_size") or not isinstance(checksum, str):
            return None
        rel = directory.relative_to(self._root).as_posix() + "/"
        return StoredFile(
            attr["file_id"], self._element_id, attr["storage_filename"], rel, size, checksum
        )


def _tmp_name(file_id: str, kind: str) -> str:
    # Exact names: no storage_filename can equal one (those always hold `_{time}_{id}`).
    return f".tmp_{file_id}.{kind}"


def _entries(directory: Path, file_id: str) -> list[tuple[Path, dict[str, Any]]]:
    """attr.json files in `directory` that really are `file_id`'s (the name alone is not
    proof: an unsanitised extension may contain another file's id)."""
    needle = f"_{file_id}"
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        if needle not in name:
            continue
        attr = _load_attr(directory, name)
        if attr is not None and attr.get("file_id") == file_id:
            found.append((directory, attr))
    return found


def _load_attr(directory: Path, name: str) -> dict[str, Any] | None:
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


def _remove_entry(directory: Path, attr: dict[str, Any]) -> None:
    # Data first: a crash in between leaves an attr.json that finds (and deletes) it again.
    (directory / attr["storage_filename"]).unlink(missing_ok=True)
    (directory / (attr["storage_filename"] + ATTR_SUFFIX)).unlink(missing_ok=True)
    fsync_dir(directory)


def _remove_temporaries(directory: Path, file_id: str) -> None:
    for kind in ("data", "attr"):
        (directory / _tmp_name(file_id, kind)).unlink(missing_ok=True)


def _make_dirs(root: Path, rel: str) -> None:
    """Create root/YYYY/MM/DD/HH, fsyncing each parent that gained an entry."""
    root.mkdir(parents=True, exist_ok=True)
    current = root
    for part in rel.strip("/").split("/"):
        parent, current = current, current / part
        try:
            current.mkdir()
        except FileExistsError:
            continue
        fsync_dir(parent)


def _copy(source: Path, target: Path, size: int) -> str:
    """Copy `source` into a new `target` in the kernel, fsync, and return the SHA-256 of
    what landed; a size other than `size` removes `target` and raises."""
    dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DATA_MODE)
    try:
        os.fchmod(dst, DATA_MODE)
        with open(source, "rb") as src:
            copied = copy_range(src.fileno(), dst)
        os.fsync(dst)
        if copied != size:
            raise OSError(errno.EIO, f"copied {copied} bytes of {size} from {source}")
        with open(target, "rb") as stored:
            checksum = hashlib.file_digest(stored, "sha256").hexdigest()
            # Stored bytes are not read again soon: leave the page cache to others.
            os.posix_fadvise(stored.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    except BaseException:
        os.close(dst)
        target.unlink(missing_ok=True)
        raise
    os.close(dst)
    return checksum


def _write_attr(directory: Path, file_id: str, name: str, body: bytes) -> None:
    tmp = directory / _tmp_name(file_id, "attr")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, ATTR_MODE)
    try:
        os.fchmod(fd, ATTR_MODE)
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, directory / name)
    fsync_dir(directory)
