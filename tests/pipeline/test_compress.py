"""Compression: type and ratio gates, brotli/gzip round trips, recorded digests, flat memory."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import brotli
import magic
import pytest

from tusingest.errors import ConfigError
from tusingest.pipeline.compress import (
    Compressed,
    decompress_to,
    is_compressible,
    maybe_compress,
)
from tusingest.settings.env import Env
from tusingest.settings.pipeline import CompressionSettings, parse_compression


def _compression(env: dict[str, str]) -> CompressionSettings:
    return parse_compression(Env(env))


MiB = 1 << 20
BROTLI = _compression({})
GZIP = _compression({"COMPRESSION_ALGORITHM": "gzip"})
WORDS = [
    "".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=2 + i % 9))
    for i in range(4000)
]


def _write(path: Path, target: int, line: Callable[[random.Random, int], str]) -> Path:
    """Write generated lines until `target` bytes, in batches (never the whole file in memory)."""
    rng = random.Random(path.name)
    written, n = 0, 0
    with path.open("w", encoding="utf-8") as f:
        while written < target:
            batch = "".join(line(rng, n + i) for i in range(2000))
            n += 2000
            f.write(batch)
            written += len(batch.encode())
    return path


def _text_line(rng: random.Random, n: int) -> str:
    return f"{n:08d} INFO request {' '.join(rng.choices(WORDS, k=10))} took {rng.random():.4f}s\n"


def _csv_line(rng: random.Random, n: int) -> str:
    return (
        f"{n},{rng.choice(WORDS)},{rng.choice(WORDS)},{rng.randint(0, 10**6)},{rng.random():.6f}\n"
    )


def _json_line(rng: random.Random, n: int) -> str:
    item = {"id": n, "name": rng.choice(WORDS), "tags": rng.choices(WORDS, k=3), "score": n % 97}
    return json.dumps(item) + ",\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    return {
        "text/plain": _write(root / "log.txt", 12 * MiB, _text_line),
        "text/csv": _write(root / "table.csv", 12 * MiB, _csv_line),
        "application/json": _write(root / "items.json", 12 * MiB, _json_line),
    }


def _digests(path: Path) -> tuple[int, str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            sha256.update(chunk)
            md5.update(chunk)
    return path.stat().st_size, sha256.hexdigest(), md5.hexdigest()


def _compress(
    source: Path, content_type: str, settings: CompressionSettings, workdir: Path
) -> Compressed | None:
    size = source.stat().st_size
    return asyncio.run(maybe_compress(source, content_type, size, settings, workdir))


@pytest.mark.parametrize("settings", [BROTLI, GZIP], ids=["brotli", "gzip"])
@pytest.mark.parametrize("content_type", ["text/plain", "text/csv", "application/json"])
def test_round_trip_records_stored_size_and_digests(
    corpus: dict[str, Path], content_type: str, settings: CompressionSettings, tmp_path: Path
) -> None:
    source = corpus[content_type]
    result = _compress(source, content_type, settings, tmp_path / "out")

    assert result is not None
    suffix = {"brotli": ".br", "gzip": ".gz"}[settings.algorithm]
    assert result.path == tmp_path / "out" / f"{source.name}{suffix}"
    assert result.codec == settings.algorithm
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [result.path.name]
    assert (result.size, result.sha256, result.md5) == _digests(result.path)
    assert result.size * 1.5 < source.stat().st_size

    back = tmp_path / "back"
    assert asyncio.run(decompress_to(result.path, result.codec, back)) == source.stat().st_size
    assert _digests(back) == _digests(source)


def test_gzip_output_is_a_real_gzip_stream(corpus: dict[str, Path], tmp_path: Path) -> None:
    source = corpus["text/csv"]
    result = _compress(source, "text/csv; charset=utf-8", GZIP, tmp_path)
    assert result is not None
    digest = hashlib.sha256()
    with gzip.open(result.path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    assert digest.hexdigest() == _digests(source)[1]


def test_brotli_output_decodes_with_one_shot_decompress(tmp_path: Path) -> None:
    source = _write(tmp_path / "small.txt", 300_000, _text_line)
    result = _compress(source, "text/plain", replace(BROTLI, min_size=0), tmp_path / "out")
    assert result is not None
    assert brotli.decompress(result.path.read_bytes()) == source.read_bytes()


def test_pdf_compresses(tmp_path: Path) -> None:
    source = tmp_path / "report.pdf"
    with source.open("wb") as f:
        f.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Length 0 >>\nstream\n")
        rng = random.Random(7)
        for page in range(1200):
            lines = [
                f"BT /F1 12 Tf 72 {700 - i * 14} Td ({' '.join(rng.choices(WORDS, k=8))}) Tj ET"
                for i in range(100)
            ]
            f.write(f"% page {page}\n{chr(10).join(lines)}\n".encode())
        f.write(b"endstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n")
    assert source.stat().st_size > 10 * MiB
    result = _compress(source, "application/pdf", BROTLI, tmp_path / "out")
    assert result is not None
    assert result.size * 3 < source.stat().st_size
    asyncio.run(decompress_to(result.path, "brotli", tmp_path / "back.pdf"))
    assert _digests(tmp_path / "back.pdf") == _digests(source)


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)  # 2×2 RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00\x00\xff\x00" * 2)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_png_is_never_compressed_even_when_its_bytes_would_be(tmp_path: Path) -> None:
    png = _png()
    assert magic.from_buffer(png, mime=True) == "image/png"
    source = tmp_path / "image.png"
    source.write_bytes(png + b"\x00" * (11 * MiB))  # trailing bytes after IEND: very compressible
    assert _compress(source, "image/png", BROTLI, tmp_path / "out") is None
    assert not (tmp_path / "out").exists()


def test_random_bytes_declared_text_are_not_worth_it(tmp_path: Path) -> None:
    source = tmp_path / "noise.txt"
    with source.open("wb") as f:
        for _ in range(11):
            f.write(os.urandom(MiB))
    assert _compress(source, "text/plain", BROTLI, tmp_path / "out") is None
    assert _compress(source, "text/plain", GZIP, tmp_path / "out") is None
    assert not (tmp_path / "out").exists()


def test_unrepresentative_sample_leaves_nothing_behind(tmp_path: Path) -> None:
    source = _write(tmp_path / "mixed.txt", MiB, _text_line)
    with source.open("ab") as f:  # compressible first MiB, incompressible remainder
        for _ in range(11):
            f.write(os.urandom(MiB))
    assert _compress(source, "text/plain", GZIP, tmp_path / "out") is None
    assert list((tmp_path / "out").iterdir()) == []


def test_below_min_size_and_disabled_are_skipped(corpus: dict[str, Path], tmp_path: Path) -> None:
    source = corpus["text/plain"]
    assert _compress(source, "text/plain", replace(BROTLI, min_size=13 * MiB), tmp_path) is None
    assert _compress(source, "text/plain", replace(BROTLI, enabled=False), tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_failure_leaves_no_temp_file(corpus: dict[str, Path], tmp_path: Path) -> None:
    source = corpus["text/plain"]
    blocker = tmp_path / f"{source.name}.gz"
    (blocker / "occupied").mkdir(parents=True)  # the final name is taken by a non-empty directory
    with pytest.raises(IsADirectoryError):
        _compress(source, "text/plain", GZIP, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [blocker.name]


def test_cancellation_stops_the_worker_and_cleans_up(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    source = corpus["application/json"]

    async def run() -> None:
        task = asyncio.create_task(
            maybe_compress(source, "application/json", 12 * MiB, BROTLI, tmp_path)
        )
        for _ in range(10_000):  # cancel mid-stream, once the temp file exists
            if await asyncio.to_thread(lambda: any(tmp_path.glob("*.tmp"))):
                break
            await asyncio.sleep(0.001)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("codec", ["brotli", "gzip"])
def test_truncated_stream_is_an_error(codec: str, tmp_path: Path) -> None:
    rng = random.Random(1)
    data = "".join(_text_line(rng, i) for i in range(5000)).encode()
    packed = brotli.compress(data) if codec == "brotli" else gzip.compress(data)
    (tmp_path / "cut").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match="truncated"):
        asyncio.run(decompress_to(tmp_path / "cut", codec, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_event_loop_keeps_ticking_while_compressing(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    async def run() -> tuple[float, list[float]]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.02)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        for content_type, source in corpus.items():
            size = source.stat().st_size
            assert await maybe_compress(source, content_type, size, BROTLI, tmp_path) is not None
        elapsed = time.perf_counter() - started
        done.set()
        await tick
        return elapsed, gaps

    elapsed, gaps = asyncio.run(run())
    # Compression on the loop would leave about one tick per file; a loaded machine may
    # delay a tick now and then, which the bounds allow.
    assert max(gaps) < 0.3, f"longest gap {max(gaps):.3f}s during {elapsed:.2f}s"
    assert len(gaps) >= min(10, elapsed / 0.02 * 0.5), f"{len(gaps)} ticks in {elapsed:.2f}s"
    assert sorted(gaps)[len(gaps) // 2] < 0.05, f"median gap {sorted(gaps)[len(gaps) // 2]:.3f}s"


_MEMORY_PROBE = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from tusingest.pipeline.compress import decompress_to, maybe_compress
    from tusingest.settings.env import Env
    from tusingest.settings.pipeline import parse_compression

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    source, workdir, algorithm = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    settings = parse_compression(Env({"COMPRESSION_ALGORITHM": algorithm}))
    before = status("VmRSS")
    size = source.stat().st_size
    result = asyncio.run(maybe_compress(source, "text/plain", size, settings, workdir))
    assert result is not None
    compress_peak = status("VmHWM") - before
    before = status("VmRSS")
    try:  # reset VmHWM to the current RSS (Linux >= 4.0); otherwise the check is only stricter
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    asyncio.run(decompress_to(result.path, result.codec, workdir / "back"))
    print(compress_peak, status("VmHWM") - before, result.size)
    """
)


@pytest.fixture(scope="module")
def big_text(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("big") / "big.txt"
    block = "".join(_text_line(random.Random(3), i) for i in range(60_000)).encode()
    with path.open("wb") as f:
        for i in range(64 * MiB // len(block) + 1):
            f.write(block[i % 997 :] + block[: i % 997])  # rotate so blocks are not identical
    yield path
    path.unlink()


@pytest.mark.parametrize("algorithm", ["brotli", "gzip"])
def test_memory_stays_flat_on_a_64_mib_file(big_text: Path, algorithm: str, tmp_path: Path) -> None:
    assert big_text.stat().st_size >= 64 * MiB
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(big_text), str(tmp_path), algorithm],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    compress_growth, decompress_growth, stored = (int(v) for v in out.split())
    assert compress_growth < 32 * MiB, f"compression peak RSS grew {compress_growth / MiB:.1f} MiB"
    assert decompress_growth < 32 * MiB, (
        f"decompression peak grew {decompress_growth / MiB:.1f} MiB"
    )
    assert _digests(tmp_path / "back") == _digests(big_text)
    assert stored < big_text.stat().st_size


def test_settings_defaults() -> None:
    assert CompressionSettings(True, "brotli", 5, 10 * MiB, 1.2) == BROTLI
    assert GZIP.level == 6
    parsed = _compression(
        {
            "COMPRESSION_ENABLED": "off",
            "COMPRESSION_ALGORITHM": "GZIP",
            "COMPRESSION_LEVEL": "9",
            "COMPRESSION_MIN_SIZE": "1048576",
        }
    )
    assert parsed == CompressionSettings(False, "gzip", 9, MiB)
    assert _compression({"COMPRESSION_LEVEL": "0"}).level == 0
    assert _compression({"COMPRESSION_LEVEL": "11"}).level == 11


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"COMPRESSION_ENABLED": "maybe"}, "COMPRESSION_ENABLED"),
        ({"COMPRESSION_ALGORITHM": "zstd"}, "COMPRESSION_ALGORITHM"),
        ({"COMPRESSION_LEVEL": "12"}, "COMPRESSION_LEVEL"),
        ({"COMPRESSION_LEVEL": "-1"}, "COMPRESSION_LEVEL"),
        ({"COMPRESSION_LEVEL": "high"}, "COMPRESSION_LEVEL"),
        ({"COMPRESSION_ALGORITHM": "gzip", "COMPRESSION_LEVEL": "0"}, "COMPRESSION_LEVEL"),
        ({"COMPRESSION_ALGORITHM": "gzip", "COMPRESSION_LEVEL": "10"}, "COMPRESSION_LEVEL"),
        ({"COMPRESSION_MIN_SIZE": "-1"}, "COMPRESSION_MIN_SIZE"),
        ({"COMPRESSION_MIN_SIZE": "10MB"}, "COMPRESSION_MIN_SIZE"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _compression(env)
    assert caught.value.variable == variable
    assert variable in str(caught.value)


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/plain", True),
        ("text/csv", True),
        ("text/html; charset=utf-8", True),
        ("application/json", True),
        ("application/xml", True),
        ("image/svg+xml", True),
        ("application/pdf", True),
        ("application/msword", True),
        ("application/vnd.ms-excel", True),
        ("application/rtf", True),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", True),
        ("application/vnd.oasis.opendocument.spreadsheet", True),
        ("Text/Plain", True),
        ("image/png", False),
        ("image/jpeg", False),
        ("video/mp4", False),
        ("audio/mpeg", False),
        ("application/zip", False),
        ("application/gzip", False),
        ("application/x-7z-compressed", False),
        ("application/x-rar-compressed", False),
        ("application/x-bzip2", False),
        ("application/x-xz", False),
        ("application/zstd", False),
        ("application/octet-stream", False),
        ("", False),
    ],
)
def test_is_compressible(content_type: str, expected: bool) -> None:
    assert is_compressible(content_type) is expected
