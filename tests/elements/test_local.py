"""Local storage element: ArtStore naming, hour layout, attr.json, idempotency, streaming."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from tests.samples import ATTR_KEYS
from tusingest.artstore import hour_path, storage_filename
from tusingest.domain import FileToStore, StoredFile
from tusingest.elements.local import LocalElement, _parents
from tusingest.errors import TusingestError
from tusingest.ports import StorageElement

T = TypeVar("T")
FID = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
WHEN = datetime(2025, 1, 2, 15, 30, 45, 123456, tzinfo=UTC)
MiB = 1 << 20


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def name(original: str, user: str = "ivanov", when: datetime = WHEN) -> str:
    return storage_filename(original, user, when, FID)


def write_source(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_item(source: Path, **changes: Any) -> FileToStore:
    data = source.read_bytes() if source.stat().st_size < 8 * MiB else None
    item = FileToStore(
        file_id=str(uuid.uuid4()),
        source=source,
        original_filename="report.pdf",
        content_type="application/pdf",
        size=source.stat().st_size,
        sha256=hashlib.sha256(data).hexdigest() if data is not None else _sha256_file(source),
        owner_sub="sa-ingester",
        owner_name="ivanov",
        uploaded_at=WHEN,
        metadata={},
    )
    return replace(item, **changes)


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.fixture
def element(tmp_path: Path) -> LocalElement:
    return LocalElement(tmp_path / "se", "se-local")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_source(tmp_path / "staged", b"%PDF-1.7 hello\n" * 1000)


# storage_filename: {stem}_{username}_{YYYYMMDDTHHMMSS}_{file_id}{ext}, as the SE names files


def test_contract_example() -> None:
    assert name("report.pdf") == f"report_ivanov_20250102T153045_{FID}.pdf"


def test_forbidden_characters_become_underscores() -> None:
    assert (
        name('a<b>c:d"e/f\\g|h?i*j.txt') == f"a_b_c_d_e_f_g_h_i_j_ivanov_20250102T153045_{FID}.txt"
    )


def test_control_characters_become_underscores() -> None:
    assert name("a\x00b\nc\x7fd\x85e\tf.txt").startswith("a_b_c_d_e_f_ivanov_")


def test_runs_collapsed_and_outer_underscores_stripped() -> None:
    assert name("__a___b__?.txt").startswith("a_b_ivanov_")


def test_unicode_and_spaces_kept() -> None:
    got = name("Отчёт за 2024 год.pdf", user="Иван Петров")
    assert got == f"Отчёт за 2024 год_Иван Петров_20250102T153045_{FID}.pdf"


def test_username_sanitised_like_the_stem() -> None:
    assert name("a.txt", user="dom\\ivan/../x").startswith("a_dom_ivan_.._x_2025")
    assert name("a.txt", user="??").startswith("a_file_2025")


def test_no_extension() -> None:
    assert name("README") == f"README_ivanov_20250102T153045_{FID}"
    assert name(".bashrc") == f".bashrc_ivanov_20250102T153045_{FID}"
    assert name("trailing.") == f"trailing._ivanov_20250102T153045_{FID}"


def test_only_the_last_suffix_is_the_extension() -> None:
    assert name("archive.tar.gz") == f"archive.tar_ivanov_20250102T153045_{FID}.gz"


def test_extension_is_not_sanitised() -> None:
    assert name("a.p?f") == f"a_ivanov_20250102T153045_{FID}.p?f"


def test_empty_stem_becomes_file() -> None:
    assert name("???.txt") == f"file_ivanov_20250102T153045_{FID}.txt"
    assert name("") == f"file_ivanov_20250102T153045_{FID}"


def test_long_name_cut_to_200_with_ellipsis() -> None:
    got = name("x" * 300 + ".pdf")
    rest = f"_ivanov_20250102T153045_{FID}.pdf"
    assert len(got) == 200
    assert got == "x" * (200 - len(rest) - 3) + "..." + rest


def test_long_unicode_name_also_fits_the_filesystem() -> None:
    got = name("я" * 150 + ".txt")
    assert len(got) <= 200
    assert len((got + ".attr.json").encode()) <= 255
    assert got.endswith(f"..._ivanov_20250102T153045_{FID}.txt")


def test_extension_too_long_for_any_name() -> None:
    with pytest.raises(TusingestError) as info:
        name("a." + "x" * 160)
    assert info.value.code == "filename_too_long"


def test_time_and_hour_are_utc() -> None:
    moscow = datetime(2025, 1, 2, 18, 30, 45, tzinfo=timezone(timedelta(hours=3)))
    assert name("report.pdf", when=moscow) == name("report.pdf")
    assert hour_path(moscow) == "2025/01/02/15/"


# store


def test_layout_by_utc_hour(element: LocalElement, source: Path) -> None:
    # 02:30 at +05:00 is 21:30 UTC the day before (and the year before).
    local = datetime(2025, 1, 1, 2, 30, 45, tzinfo=timezone(timedelta(hours=5)))
    item = make_item(source, uploaded_at=local)
    stored = run(element.store(item))
    assert stored.storage_path == "2024/12/31/21/"
    assert stored.storage_filename == f"report_ivanov_20241231T213045_{item.file_id}.pdf"
    directory = element.root / "2024/12/31/21"
    assert sorted(os.listdir(directory)) == [
        stored.storage_filename,
        stored.storage_filename + ".attr.json",
    ]


def test_attr_json_exact(element: LocalElement, source: Path) -> None:
    item = make_item(
        source,
        original_filename="Отчёт 2024.pdf",
        owner_name="Иван",
        metadata={"uploaded_by": "u-42", "tags": ["a", "b"]},
    )
    stored = run(element.store(item))
    directory = element.root / stored.storage_path
    raw = (directory / (stored.storage_filename + ".attr.json")).read_bytes()
    attr = json.loads(raw.decode("utf-8"))
    assert list(attr) == ATTR_KEYS
    assert attr == {
        "file_id": item.file_id,
        "original_filename": "Отчёт 2024.pdf",
        "storage_filename": f"Отчёт 2024_Иван_20250102T153045_{item.file_id}.pdf",
        "file_size": item.size,
        "content_type": "application/pdf",
        "created_at": "2025-01-02T15:30:45.123456+00:00",
        "updated_at": "2025-01-02T15:30:45.123456+00:00",
        "created_by_id": "sa-ingester",
        "created_by_username": "Иван",
        "created_by_fullname": None,
        "description": None,
        "version": None,
        "storage_path": "2025/01/02/15/",
        "checksum": item.sha256,
        "metadata": {"uploaded_by": "u-42", "tags": ["a", "b"]},
    }
    assert "Отчёт".encode() in raw  # raw UTF-8, as the SE writes it
    assert len(raw) <= 4096
    assert run(element.read_attr(item.file_id)) == attr


def test_whole_seconds_keep_microseconds_in_timestamps(element: LocalElement, source: Path) -> None:
    item = make_item(source, uploaded_at=datetime(2025, 1, 2, 15, 30, 45))  # naive = UTC
    run(element.store(item))
    attr = run(element.read_attr(item.file_id))
    assert attr is not None
    assert attr["created_at"] == "2025-01-02T15:30:45.000000+00:00"


def test_bytes_checksum_and_modes(element: LocalElement, source: Path) -> None:
    item = make_item(source)
    stored = run(element.store(item))
    assert isinstance(stored, StoredFile)
    data_path = element.root / stored.storage_path / stored.storage_filename
    attr_path = data_path.with_name(data_path.name + ".attr.json")
    assert data_path.read_bytes() == source.read_bytes()
    assert stored.sha256 == hashlib.sha256(data_path.read_bytes()).hexdigest() == item.sha256
    assert stored == StoredFile(
        item.file_id, "se-local", stored.storage_filename, "2025/01/02/15/", item.size, item.sha256
    )
    assert stat.S_IMODE(data_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(attr_path.stat().st_mode) == 0o600
    assert run(element.find(item.file_id)) == stored


def test_implements_the_port(element: LocalElement) -> None:
    port: StorageElement = element
    assert port.element_id == "se-local"


def test_second_store_is_idempotent(element: LocalElement, source: Path) -> None:
    item = make_item(source)
    first = run(element.store(item))
    data_path = element.root / first.storage_path / first.storage_filename
    attr_path = data_path.with_name(data_path.name + ".attr.json")
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (data_path, attr_path)]
    time.sleep(0.01)
    assert run(element.store(item)) == first
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (data_path, attr_path)] == before


def test_crash_leftovers_are_cleaned_and_the_store_redone(
    element: LocalElement, source: Path
) -> None:
    item = make_item(source)
    directory = element.root / "2025/01/02/15"
    directory.mkdir(parents=True)
    tmp_data = directory / f".tmp_{item.file_id}.data"
    tmp_attr = directory / f".tmp_{item.file_id}.attr"
    tmp_data.write_bytes(b"half a file")
    tmp_attr.write_bytes(b"{")
    # A data file renamed into place whose attr.json never got written.
    orphan = directory / name_for(item)
    orphan.write_bytes(b"stale")
    stored = run(element.store(item))
    assert not tmp_data.exists()
    assert not tmp_attr.exists()
    assert sorted(os.listdir(directory)) == [name_for(item), name_for(item) + ".attr.json"]
    assert orphan.read_bytes() == source.read_bytes()
    assert stored.sha256 == item.sha256


def name_for(item: FileToStore) -> str:
    return storage_filename(item.original_filename, item.owner_name, item.uploaded_at, item.file_id)


def test_different_content_under_the_same_id_is_replaced(
    element: LocalElement, source: Path, tmp_path: Path
) -> None:
    item = make_item(source)
    run(element.store(item))
    other = write_source(tmp_path / "other", b"other bytes")
    again = make_item(other, file_id=item.file_id)
    stored = run(element.store(again))
    assert stored.size == len(b"other bytes")
    assert (element.root / stored.storage_path / stored.storage_filename).read_bytes() == (
        b"other bytes"
    )
    assert run(element.find(item.file_id)) == stored


def test_an_hour_directory_removed_after_a_store_is_made_again(
    element: LocalElement, source: Path
) -> None:
    # The element remembers hour directories it made; one removed since is made again.
    first = run(element.store(make_item(source)))
    shutil.rmtree(element.root / first.storage_path)
    second = run(element.store(make_item(source)))
    assert second.storage_path == first.storage_path
    directory = element.root / second.storage_path
    assert sorted(os.listdir(directory)) == sorted(
        [second.storage_filename, second.storage_filename + ".attr.json"]
    )
    assert run(element.find(second.file_id)) == second
    assert run(element.find(first.file_id)) is None


def test_the_parents_synced_with_an_hours_first_store_hold_each_entry_of_its_path() -> None:
    root = Path("/srv/se")
    assert _parents(root, hour_path(WHEN)) == [
        root,
        root / "2025",
        root / "2025/01",
        root / "2025/01/02",
    ]
    assert hour_path(WHEN).strip("/") == "2025/01/02/15"


def test_a_file_stored_again_in_another_hour_is_found_there(
    element: LocalElement, source: Path
) -> None:
    # The id's index entry exists already: it is replaced, pointing at the new place.
    item = make_item(source)
    first = run(element.store(item))
    moved = run(element.store(replace(item, uploaded_at=WHEN + timedelta(hours=1))))
    assert moved.storage_path != first.storage_path
    assert run(element.find(item.file_id)) == moved
    assert not (element.root / first.storage_path / first.storage_filename).exists()
    index = element.root / ".by-id" / item.file_id[:2]
    assert sorted(os.listdir(index)) == [item.file_id]  # no temporary left beside it


def test_oversized_metadata_dropped_largest_first(element: LocalElement, source: Path) -> None:
    metadata = {"small": "x", "big": "y" * 3000, "mid": "z" * 1500, "also": "w" * 100}
    item = make_item(source, metadata=metadata)
    stored = run(element.store(item))
    path = element.root / stored.storage_path / (stored.storage_filename + ".attr.json")
    assert path.stat().st_size <= 4096
    attr = json.loads(path.read_bytes())
    assert attr["metadata"] == {
        "small": "x",
        "mid": "z" * 1500,
        "also": "w" * 100,
        "_truncated": True,
    }


def test_attr_too_large_even_without_metadata(element: LocalElement, source: Path) -> None:
    item = make_item(source, original_filename="ж" * 2100 + ".txt")
    with pytest.raises(TusingestError) as info:
        run(element.store(item))
    assert (info.value.code, info.value.status) == ("attr_too_large", 500)
    assert not element.root.exists() or not any(element.root.rglob("*"))


@pytest.fixture(params=["link", "copy"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the element takes a file: a hard link (same filesystem) or a copy (across
    filesystems, where linking fails with EXDEV)."""
    if request.param == "copy":

        def cross_device(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "link", cross_device)
    return str(request.param)


def test_short_source_fails_and_leaves_nothing(
    element: LocalElement, source: Path, way: str
) -> None:
    item = make_item(source, size=source.stat().st_size + 1)
    with pytest.raises(OSError, match=r"holds 15000 bytes|copied 15000 bytes"):
        run(element.store(item))
    # Only the (complete, empty) index's marker: no data, attr.json or temporary.
    left = [p.relative_to(element.root) for p in element.root.rglob("*") if p.is_file()]
    assert left == [Path(".by-id/.built")]
    assert run(element.find(item.file_id)) is None


def test_same_filesystem_takes_the_file_without_copying(
    element: LocalElement, source: Path
) -> None:
    item = make_item(source, sha256="f" * 64)  # trusted: the bytes are not read again
    stored = run(element.store(item))
    data = element.root / stored.storage_path / stored.storage_filename
    assert data.stat().st_ino == source.stat().st_ino
    assert stat.S_IMODE(data.stat().st_mode) == 0o644
    assert stored.sha256 == "f" * 64
    source.unlink()  # the upload's staging copy goes; the stored file stays
    assert data.read_bytes() == b"%PDF-1.7 hello\n" * 1000


def test_across_filesystems_the_copy_is_checked(
    element: LocalElement, source: Path, way: str
) -> None:
    item = make_item(source)
    stored = run(element.store(item))
    data = element.root / stored.storage_path / stored.storage_filename
    assert (data.stat().st_ino == source.stat().st_ino) == (way == "link")
    assert data.read_bytes() == source.read_bytes()
    assert stored.sha256 == _sha256_file(data) == item.sha256


def test_sendfile_fallback(
    element: LocalElement, source: Path, way: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: object) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", unsupported)
    item = make_item(source)
    stored = run(element.store(item))
    path = element.root / stored.storage_path / stored.storage_filename
    assert path.read_bytes() == source.read_bytes()
    assert stored.sha256 == item.sha256


# finding by id


def _no_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("a directory was listed")

    for fn in ("listdir", "scandir", "walk"):
        monkeypatch.setattr(os, fn, refused)


def test_finding_storing_and_deleting_by_id_never_lists_a_directory(
    element: LocalElement, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run(element.store(make_item(source)))
    assert run(element.find(first.file_id)) == first  # the index is complete from here on
    _no_listing(monkeypatch)
    items = [make_item(source) for _ in range(20)]
    stored = [run(element.store(item)) for item in items]
    assert [run(element.find(item.file_id)) for item in items] == stored
    assert run(element.store(items[3])) == stored[3]  # idempotent, found by name
    run(element.delete(items[5].file_id))
    assert run(element.find(items[5].file_id)) is None
    assert run(element.read_attr(items[6].file_id)) is not None


def test_files_kept_before_the_index_are_found(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "se"
    old = run(LocalElement(root, "se").store(make_item(source)))
    shutil.rmtree(root / ".by-id")
    again = LocalElement(root, "se")
    assert run(again.find(old.file_id)) == old
    run(again.delete(old.file_id))
    assert run(LocalElement(root, "se").find(old.file_id)) is None


def _index_entry(element: LocalElement, file_id: str) -> Path:
    return element.root / ".by-id" / file_id[:2] / file_id


def _attr_path(element: LocalElement, stored: StoredFile) -> Path:
    return element.root / stored.storage_path / (stored.storage_filename + ".attr.json")


def test_the_index_entry_is_the_attr_json_itself_no_inode_of_its_own(
    element: LocalElement, source: Path
) -> None:
    stored = run(element.store(make_item(source)))
    entry = _index_entry(element, stored.file_id)
    assert not entry.is_symlink()
    assert entry.stat().st_ino == _attr_path(element, stored).stat().st_ino
    assert entry.stat().st_nlink == 2


def test_an_update_points_the_index_at_the_new_attr_json(
    element: LocalElement, source: Path
) -> None:
    stored = run(element.store(make_item(source)))
    run(element.update_attr(stored.file_id, {"description": "moved on"}))
    entry = _index_entry(element, stored.file_id)
    assert entry.stat().st_ino == _attr_path(element, stored).stat().st_ino
    assert json.loads(entry.read_bytes())["description"] == "moved on"
    assert sorted(os.listdir(entry.parent)) == [stored.file_id]  # the old inode gone
    run(element.delete(stored.file_id))
    assert not entry.exists()
    assert run(element.find(stored.file_id)) is None


def test_an_index_of_symlinks_from_an_earlier_version_still_finds_files(
    element: LocalElement, source: Path
) -> None:
    stored = run(element.store(make_item(source)))
    entry = _index_entry(element, stored.file_id)
    entry.unlink()
    os.symlink(os.path.relpath(_attr_path(element, stored), entry.parent), entry)
    again = LocalElement(element.root, "se-local")
    assert run(again.find(stored.file_id)) == stored
    assert run(again.store(make_item(source, file_id=stored.file_id))) == stored
    assert entry.is_symlink()  # the entry already names that attr.json: left as it is
    run(again.delete(stored.file_id))
    assert not os.path.lexists(entry)
    assert run(again.find(stored.file_id)) is None


def test_where_hard_links_are_refused_the_index_holds_symlinks(
    element: LocalElement, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refused)
    stored = run(element.store(make_item(source)))
    entry = _index_entry(element, stored.file_id)
    assert entry.is_symlink()
    assert run(LocalElement(element.root, "se-local").find(stored.file_id)) == stored


def test_an_index_entry_naming_a_place_outside_the_element_is_not_followed(
    element: LocalElement, source: Path, tmp_path: Path
) -> None:
    stored = run(element.store(make_item(source)))
    entry = _index_entry(element, stored.file_id)
    outside = tmp_path / "outside"
    outside.mkdir()
    forged = {**json.loads(entry.read_bytes()), "storage_path": "../outside/"}
    (outside / (stored.storage_filename + ".attr.json")).write_text(json.dumps(forged))
    (outside / stored.storage_filename).write_bytes(b"x" * stored.size)
    entry.unlink()
    entry.write_text(json.dumps(forged))
    run(element.delete(stored.file_id))
    assert (outside / stored.storage_filename).exists()
    assert run(element.find(stored.file_id)) is None


async def _fill(element: LocalElement, source: Path, count: int) -> None:
    items = [make_item(source, file_id=str(uuid.uuid4())) for _ in range(count)]
    for start in range(0, count, 64):
        await asyncio.gather(*(element.store(i) for i in items[start : start + 64]))


async def _timed_store(element: LocalElement, source: Path) -> float:
    item = make_item(source, file_id=str(uuid.uuid4()))
    started = time.process_time()  # CPU, all threads: waits for the disk do not count
    await element.store(item)
    return time.process_time() - started


def test_storing_costs_the_same_per_file_with_10_or_5000_in_the_hour(
    tmp_path: Path, source: Path
) -> None:
    few = LocalElement(tmp_path / "few", "se")
    many = LocalElement(tmp_path / "many", "se")

    async def scenario() -> tuple[float, float]:
        await _fill(few, source, 10)
        await _fill(many, source, 5000)
        # Alternately, so that whatever else the machine does weighs on both alike.
        timings: tuple[list[float], list[float]] = ([], [])
        for _ in range(21):
            timings[0].append(await _timed_store(few, source))
            timings[1].append(await _timed_store(many, source))
        return sorted(timings[0])[10], sorted(timings[1])[10]

    few_s, many_s = run(scenario())
    assert len(os.listdir(tmp_path / "many" / hour_path(WHEN))) == 2 * 5021
    # Listing the hour (what finding by name would take) grows 500-fold and would cost ~6×
    # the CPU of a store here; the store must not grow.
    assert many_s < 3 * few_s, (few_s, many_s)


# delete


def test_delete_removes_both_and_is_idempotent(element: LocalElement, source: Path) -> None:
    keep = run(element.store(make_item(source)))
    item = make_item(source, uploaded_at=WHEN + timedelta(days=40))
    stored = run(element.store(item))
    directory = element.root / stored.storage_path
    run(element.delete(item.file_id))
    assert os.listdir(directory) == []
    assert run(element.find(item.file_id)) is None
    assert run(element.read_attr(item.file_id)) is None
    run(element.delete(item.file_id))
    run(element.delete(str(uuid.uuid4())))
    run(element.delete("../../etc"))
    assert run(element.find(keep.file_id)) == keep


def test_delete_on_an_empty_element(tmp_path: Path) -> None:
    run(LocalElement(tmp_path / "missing", "se").delete(str(uuid.uuid4())))


def test_an_id_inside_another_files_name_is_not_that_file(
    element: LocalElement, source: Path
) -> None:
    victim = str(uuid.uuid4())
    # The extension is not sanitised, so another file's name can end in `_{victim}`.
    decoy = run(
        element.store(make_item(source, original_filename=f"x.y_u_20250101T000000_{victim}"))
    )
    assert decoy.storage_filename.endswith(f"_{victim}")
    assert run(element.find(victim)) is None
    real = run(element.store(make_item(source, file_id=victim)))
    run(element.delete(victim))
    assert run(element.find(victim)) is None
    assert run(element.find(decoy.file_id)) == decoy
    assert real.storage_filename != decoy.storage_filename


# streaming


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "staged"
    chunk = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(64):
            f.write(chunk[i:] + chunk[:i])
    return path


async def _store_sampling(
    element: LocalElement, item: FileToStore
) -> tuple[StoredFile, float, int, int]:
    """Store `item` while a 1 ms ticker samples RSS: (stored, largest tick gap, ticks, peak
    RSS)."""
    process = psutil.Process()
    peak = process.memory_info().rss
    largest_gap = 0.0
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal peak, largest_gap, ticks
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            largest_gap = max(largest_gap, now - last)
            last = now
            ticks += 1
            peak = max(peak, process.memory_info().rss)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    try:
        stored = await element.store(item)
    finally:
        done.set()
        await task
    return stored, largest_gap, ticks, peak


def test_large_store_keeps_memory_flat(tmp_path: Path, big_source: Path) -> None:
    element = LocalElement(tmp_path / "se", "se")
    small = write_source(tmp_path / "small", b"warm-up")

    async def scenario() -> tuple[StoredFile, int, int]:
        await element.store(make_item(small))  # the worker thread and imports, warm
        baseline = psutil.Process().memory_info().rss
        stored, _, _, peak = await _store_sampling(element, make_item(big_source))
        return stored, baseline, peak

    stored, baseline, peak = run(scenario())
    assert stored.size == 64 * MiB
    assert stored.sha256 == _sha256_file(big_source)
    assert peak - baseline <= 16 * MiB


def test_large_store_does_not_block_the_event_loop(tmp_path: Path, big_source: Path) -> None:
    element = LocalElement(tmp_path / "se", "se")
    start = time.perf_counter()
    stored, largest_gap, ticks, _ = run(_store_sampling(element, make_item(big_source)))
    assert stored.size == 64 * MiB
    assert largest_gap < 0.1
    # Hashing 64 MiB alone takes tens of milliseconds: the ticker ran meanwhile.
    assert ticks >= 5, (ticks, time.perf_counter() - start)
