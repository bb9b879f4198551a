"""Local-disk storage element: files and their attr.json in the ArtStore hour layout, found by
id through an index of hard links to their attr.json (never a directory scan)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from pathlib import Path
from typing import Any

from tusingest.artstore import (
    ATTR_SUFFIX,
    MAX_ATTR_BYTES,
    build_attr,
    canonical_file_id,
    created_at,
    encode_attr,
    hour_path,
    storage_filename,
)
from tusingest.diskio import copy_range, fsync_dir
from tusingest.domain import FetchedFile, FileToStore, StoredFile
from tusingest.elements.id_index import IdIndex, load_attr, walk_attrs
from tusingest.errors import TusingestError

DATA_MODE = 0o644  # the modes an ArtStore SE gives its files
ATTR_MODE = 0o600
# Linking fails across filesystems (EXDEV) or where hard links are not allowed: copy instead.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK})
_KNOWN_HOURS = 64

Entry = tuple[Path, dict[str, Any]]  # the directory of a stored file, its attr.json


class LocalElement:
    """Implements `StorageElement` on a directory; idempotent by `file_id`.

    A file on the same filesystem is taken by a hard link (no copy; the caller's SHA-256 is
    trusted), one elsewhere is copied in the kernel and its SHA-256 checked.
    """

    def __init__(self, root: Path, element_id: str) -> None:
        # Normalised: paths found through the index are compared and made relative to it.
        self._root = Path(os.path.normpath(root))
        self._element_id = element_id
        self._index = IdIndex(self._root)
        # Hour directories this element has stored into, with their parents synced (their
        # mkdirs and those syncs are skipped).
        self._hours: set[str] = set()

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

    async def fetch(self, file_id: str, target: Path) -> FetchedFile | None:
        return await asyncio.to_thread(self._fetch, file_id, target)

    async def find(self, file_id: str) -> StoredFile | None:
        """The complete copy (attr.json and data of the recorded size) of `file_id`."""
        return await asyncio.to_thread(self._find, file_id)

    async def read_attr(self, file_id: str) -> dict[str, Any] | None:
        found = await asyncio.to_thread(self._entry, file_id)
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
        attr = build_attr(item, file_id, name, rel)  # before any bytes move: fails on size early
        # The index is complete before any file is added (an index build walking the root
        # while files arrive would race their own linking).
        self._index.ensure()

        existing = self._indexed(file_id) or _entry_at(directory, name)
        if existing is not None:
            stored = self._complete(*existing)
            same_place = existing[0] == directory and existing[1]["storage_filename"] == name
            if same_place and stored and (stored.size, stored.sha256) == (item.size, item.sha256):
                self._index.link(file_id, directory / (name + ATTR_SUFFIX))
                return stored
            self._remove(*existing)  # partial, different or elsewhere: store it again
        _remove_temporaries(directory, file_id)

        first_here = rel not in self._hours
        if first_here:
            directory.mkdir(parents=True, exist_ok=True)
        target = directory / name
        tmp_data = directory / _tmp_name(file_id, "data")
        try:
            try:
                checksum = _take(item, target, tmp_data)
            except FileNotFoundError:
                if first_here:
                    raise
                # The hour directory was removed since: make it again.
                self._hours.discard(rel)
                first_here = True
                directory.mkdir(parents=True, exist_ok=True)
                checksum = _take(item, target, tmp_data)
            attr["checksum"] = checksum
            _write_attr(directory, file_id, name + ATTR_SUFFIX, encode_attr(attr), sync_dir=False)
            self._index.link(file_id, directory / (name + ATTR_SUFFIX))
            fsync_dir(directory)  # the data, attr.json and (when new) the directory itself
            if first_here:
                # Each directory's entry in its parent, whoever made it (a store that made it
                # and then failed, or a node that crashed, may have synced none of them).
                for parent in _parents(self._root, rel):
                    fsync_dir(parent)
            if len(self._hours) >= _KNOWN_HOURS:
                self._hours.clear()
            self._hours.add(rel)
        except BaseException:
            target.unlink(missing_ok=True)
            (directory / (name + ATTR_SUFFIX)).unlink(missing_ok=True)
            _remove_temporaries(directory, file_id)
            raise
        return StoredFile(file_id, self._element_id, name, rel, item.size, checksum)

    def _delete(self, file_id: str) -> None:
        found = self._entry(file_id)
        if found is not None:
            self._remove(*found)

    def _fetch(self, file_id: str, target: Path) -> FetchedFile | None:
        """Link the stored bytes at `target` (copy them across filesystems, checking their
        SHA-256 on the way)."""
        found = self._entry(file_id)
        stored = None if found is None else self._complete(*found)
        if found is None or stored is None:
            return None
        directory, attr = found
        source = directory / stored.storage_filename
        target.unlink(missing_ok=True)
        checksum = stored.sha256.lower()
        try:
            os.link(source, target)
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            copied = _copy(source, target.with_name(target.name + ".tmp"), target, stored.size)
            if copied != checksum:
                target.unlink(missing_ok=True)
                raise OSError(
                    errno.EIO, f"{source} holds other bytes than its attr.json says"
                ) from None
        fsync_dir(target.parent)
        return FetchedFile(
            file_id=stored.file_id,
            original_filename=str(attr.get("original_filename") or stored.storage_filename),
            content_type=str(attr.get("content_type") or "application/octet-stream"),
            size=stored.size,
            sha256=checksum,
            created_at=created_at(attr.get("created_at")),
        )

    def _find(self, file_id: str) -> StoredFile | None:
        found = self._entry(file_id)
        return None if found is None else self._complete(*found)

    def _entry(self, file_id: str) -> Entry | None:
        """`file_id`'s directory and attr.json, from the index."""
        canonical = canonical_file_id(file_id)
        if canonical is None or not self._root.is_dir():
            return None
        return self._indexed(canonical)

    def _indexed(self, canonical: str) -> Entry | None:
        target = self._index.lookup(canonical)
        if target is None:
            return None
        attr = load_attr(target.parent, target.name)
        if attr is None or attr.get("file_id") != canonical:
            return None
        return target.parent, attr

    def _remove(self, directory: Path, attr: dict[str, Any]) -> None:
        # Data first: a crash in between leaves an attr.json that finds (and deletes) it again.
        (directory / attr["storage_filename"]).unlink(missing_ok=True)
        (directory / (attr["storage_filename"] + ATTR_SUFFIX)).unlink(missing_ok=True)
        _remove_temporaries(directory, attr["file_id"])
        fsync_dir(directory)
        self._index.unlink(attr["file_id"])

    def _list_attrs(self) -> list[dict[str, Any]]:
        if not self._root.is_dir():
            return []
        return [attr for _, attr in walk_attrs(self._root)]

    def _update_attr(self, file_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        found = self._entry(file_id)
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
        name = attr["storage_filename"] + ATTR_SUFFIX
        _write_attr(directory, attr["file_id"], name, body)
        self._index.link(attr["file_id"], directory / name)  # the new attr.json's inode
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


def _take(item: FileToStore, target: Path, tmp: Path) -> str:
    """Put `item.source`'s bytes at `target` (durably, `tmp` for a copy); returns their
    SHA-256."""
    try:
        os.link(item.source, target)
    except FileExistsError:
        target.unlink()  # a partial store's data: this one replaces it
        return _take(item, target, tmp)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        return _copy(item.source, tmp, target, item.size)
    try:
        fd = os.open(target, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size != item.size:
                raise OSError(errno.EIO, f"{item.source} holds {size} bytes, expected {item.size}")
            os.fchmod(fd, DATA_MODE)
            os.fsync(fd)  # nothing left to write when the source was synced already
        finally:
            os.close(fd)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return item.sha256.lower()


def _entry_at(directory: Path, name: str) -> Entry | None:
    """The attr.json a store of `name` in `directory` would have written (an index entry may
    be missing after a crash)."""
    attr = load_attr(directory, name + ATTR_SUFFIX)
    return None if attr is None else (directory, attr)


def _tmp_name(file_id: str, kind: str) -> str:
    # Exact names: no storage_filename can equal one (those always hold `_{time}_{id}`).
    return f".tmp_{file_id}.{kind}"


def _remove_temporaries(directory: Path, file_id: str) -> None:
    for kind in ("data", "attr"):
        (directory / _tmp_name(file_id, kind)).unlink(missing_ok=True)


def _parents(root: Path, rel: str) -> list[Path]:
    """root, root/YYYY, root/YYYY/MM, root/YYYY/MM/DD: each holds an entry of the next."""
    parents = [root]
    for part in rel.strip("/").split("/")[:-1]:
        parents.append(parents[-1] / part)
    return parents


def _copy(source: Path, tmp: Path, target: Path, size: int) -> str:
    """Copy `source` to `target` through `tmp` in the kernel, fsync, and return the SHA-256 of
    what landed; a size other than `size` leaves nothing and raises."""
    dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, DATA_MODE)
    try:
        os.fchmod(dst, DATA_MODE)
        with open(source, "rb") as src:
            copied = copy_range(src.fileno(), dst)
        os.fsync(dst)
        if copied != size:
            raise OSError(errno.EIO, f"copied {copied} bytes of {size} from {source}")
        with open(tmp, "rb") as stored:
            checksum = hashlib.file_digest(stored, "sha256").hexdigest()
            # Stored bytes are not read again soon: leave the page cache to others.
            os.posix_fadvise(stored.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        os.replace(tmp, target)
    except BaseException:
        os.close(dst)
        tmp.unlink(missing_ok=True)
        raise
    os.close(dst)
    return checksum


def _write_attr(
    directory: Path, file_id: str, name: str, body: bytes, *, sync_dir: bool = True
) -> None:
    tmp = directory / _tmp_name(file_id, "attr")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, ATTR_MODE)
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
    if sync_dir:
        fsync_dir(directory)
