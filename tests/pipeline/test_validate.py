"""Validation on real files: MIME sniffing (with zip refinement), digests, checksum, rejections."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import magic
import psutil
import pytest

from tusingest.errors import ConfigError, TusingestError
from tusingest.pipeline.validate import (
    SNIFF_BYTES,
    Rejection,
    RejectionCode,
    Validated,
    detect_mime,
    file_digests,
    mime_allowed,
    parse_declared_checksum,
    validate,
)
from tusingest.settings.env import Env
from tusingest.settings.pipeline import (
    DEFAULT_ALLOWED_MIME_TYPES,
    ValidationSettings,
    parse_validation,
)


def _validation(env: dict[str, str], max_size: int) -> ValidationSettings:
    return parse_validation(Env(env), max_size)


DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ODT = "application/vnd.oasis.opendocument.text"
MiB = 1 << 20


# --- real samples -----------------------------------------------------------------------------


def pdf_bytes() -> bytes:
    text = b"BT /F1 24 Tf 72 720 Td (Hello, ArtStore) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def png_bytes(width: int = 16, height: int = 16) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 16, y * 16, 128)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _content_types(main: str, content_type: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/{main}" ContentType="{content_type}"/></Types>'
    )


def _rels(main: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        f'relationships/officeDocument" Target="{main}"/></Relationships>'
    )


def _zip(entries: list[tuple[str, bytes | str]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            # The filler is stored uncompressed so it really pushes the parts past the sniff.
            method = zipfile.ZIP_STORED if name.endswith(".bin") else zipfile.ZIP_DEFLATED
            archive.writestr(name, data, compress_type=method)
    return buffer.getvalue()


def _filler() -> tuple[str, bytes]:
    return "docProps/thumbnail.bin", random.Random(7).randbytes(2 * SNIFF_BYTES)


def docx_bytes() -> bytes:
    main = "word/document.xml"
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body><w:p><w:r><w:t>Hello, ArtStore</w:t></w:r></w:p></w:body></w:document>"
    )
    return _zip(
        [
            _filler(),
            ("[Content_Types].xml", _content_types(main, DOCX[:-8] + "document.main+xml")),
            ("_rels/.rels", _rels(main)),
            (main, document),
        ]
    )


def xlsx_bytes() -> bytes:
    main = "xl/workbook.xml"
    workbook = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<sheets><sheet name="Sheet1" sheetId="1"/></sheets></workbook>'
    )
    return _zip(
        [
            ("[Content_Types].xml", _content_types(main, XLSX[:-5] + "sheet.main+xml")),
            _filler(),
            ("_rels/.rels", _rels(main)),
            (main, workbook),
        ]
    )


def odt_bytes() -> bytes:
    # ODF wants `mimetype` first; here it is last, so only the entry names can tell.
    return _zip([_filler(), ("content.xml", "<office:document-content/>"), ("mimetype", ODT)])


def elf_bytes() -> bytes:
    ident = b"\x7fELF" + bytes((2, 1, 1, 0)) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0x1000, 64, 0, 0, 64, 56, 0, 64, 0, 0)
    return header + bytes(4096 - len(header))


TEXT = "Grüße aus dem Archiv.\nThe quick brown fox jumps over the lazy dog.\n".encode() * 20
CSV_LIKE = b"lorem ipsum, dolor sit amet, consectetur adipiscing elit\n" * 40
RANDOM = random.Random(1).randbytes(64 << 10)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def settings(**overrides: object) -> ValidationSettings:
    base = _validation({}, max_size=100 * MiB)
    values = {
        "max_size": base.max_size,
        "mime_validation": base.mime_validation,
        "allowed_mime_types": base.allowed_mime_types,
    }
    values.update(overrides)
    return ValidationSettings(**values)  # type: ignore[arg-type]


def run_validate(path: Path, **kwargs: object) -> Validated:
    args: dict[str, object] = {
        "declared_type": None,
        "declared_checksum": None,
        "known_digests": None,
        "settings": settings(),
    }
    args.update(kwargs)
    return asyncio.run(validate(path, **args))  # type: ignore[arg-type]


def rejection(path: Path, **kwargs: object) -> Rejection:
    with pytest.raises(Rejection) as caught:
        run_validate(path, **kwargs)
    return caught.value


# --- mime_allowed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mime", "patterns", "allowed"),
    [
        ("application/pdf", ["application/pdf"], True),
        ("APPLICATION/PDF", ["application/pdf"], True),
        ("application/pdf", ["Application/PDF"], True),
        ("text/plain; charset=utf-8", ["text/plain"], True),
        ("text/csv", ["text/*"], True),
        ("text/csv", ["image/*"], False),
        ("textual/plain", ["text/*"], False),
        ("application/x-sharedlib", ["*"], True),
        ("application/x-sharedlib", ["*/*"], True),
        (DOCX, ["application/vnd.openxmlformats-officedocument.*"], True),
        (ODT, ["application/vnd.openxmlformats-officedocument.*"], False),
        (ODT, ["application/pdf", "application/vnd.oasis.opendocument.*"], True),
        ("application/pdfx", ["application/pdf"], False),
        ("application/pdf", [], False),
    ],
)
def test_mime_allowed(mime: str, patterns: list[str], allowed: bool) -> None:
    assert mime_allowed(mime, patterns) is allowed


# --- detect_mime -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (pdf_bytes, "application/pdf"),
        (png_bytes, "image/png"),
        (docx_bytes, DOCX),
        (xlsx_bytes, XLSX),
        (odt_bytes, ODT),
        (lambda: _zip([("a.txt", "hello"), ("b.txt", "world")]), "application/zip"),
        (lambda: TEXT, "text/plain"),
        (lambda: RANDOM, "application/octet-stream"),
    ],
)
def test_detect_mime(tmp_path: Path, sample: Callable[[], bytes], expected: str) -> None:
    path = write(tmp_path, "sample", sample())
    assert asyncio.run(detect_mime(path)) == expected


@pytest.mark.parametrize("sample", [docx_bytes, xlsx_bytes, odt_bytes])
def test_office_types_come_from_the_entry_names(
    tmp_path: Path, sample: Callable[[], bytes]
) -> None:
    data = sample()
    # libmagic alone sees a plain zip in the sniffed head: the refinement is what names it.
    assert magic.from_buffer(data[:SNIFF_BYTES], mime=True) == "application/zip"
    assert asyncio.run(detect_mime(write(tmp_path, "office", data))) != "application/zip"


def test_text_with_commas_is_allowed_as_text(tmp_path: Path) -> None:
    detected = asyncio.run(detect_mime(write(tmp_path, "notes.txt", CSV_LIKE)))
    assert detected in ("text/csv", "text/plain")
    assert mime_allowed(detected, DEFAULT_ALLOWED_MIME_TYPES)
    assert run_validate(tmp_path / "notes.txt").detected_type == detected


def test_elf_is_detected_and_refused_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, "lib.so", elf_bytes())
    assert asyncio.run(detect_mime(path)) in ("application/x-sharedlib", "application/x-executable")
    assert rejection(path).code == "mime_type_not_allowed"


def test_detect_mime_from_many_threads(tmp_path: Path) -> None:
    samples = {
        write(tmp_path, "a.pdf", pdf_bytes()): "application/pdf",
        write(tmp_path, "a.png", png_bytes()): "image/png",
        write(tmp_path, "a.docx", docx_bytes()): DOCX,
    }

    async def detect_all() -> list[tuple[str, str]]:
        paths = list(samples) * 20
        found = await asyncio.gather(*(detect_mime(p) for p in paths))
        return [(samples[p], f) for p, f in zip(paths, found, strict=True)]

    for expected, found in asyncio.run(detect_all()):
        assert found == expected


# --- digests and declared checksums ------------------------------------------------------------


def test_file_digests_equal_hashlib(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(3 * MiB + 12345)
    path = write(tmp_path, "blob", data)
    assert asyncio.run(file_digests(path)) == (
        hashlib.md5(data).hexdigest(),
        hashlib.sha256(data).hexdigest(),
    )


def test_parse_declared_checksum() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    md5 = hashlib.md5(b"x").hexdigest()
    assert parse_declared_checksum(f"sha256 {sha}") == ("sha256", sha)
    assert parse_declared_checksum(f"SHA256 {sha.upper()}") == ("sha256", sha)
    assert parse_declared_checksum(f"  md5\t{md5} ") == ("md5", md5)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256",
        "sha1 " + "0" * 40,
        "sha256 " + "0" * 63,
        "md5 " + "0" * 64,
        "md5 " + "g" * 32,
        "sha256:" + "0" * 64,
        "sha256 " + "0" * 64 + " extra",
    ],
)
def test_malformed_declared_checksum(value: str) -> None:
    with pytest.raises(Rejection) as caught:
        parse_declared_checksum(value)
    assert caught.value.code == "invalid_checksum_metadata"
    assert caught.value.status == 422


# --- validate -----------------------------------------------------------------------------------


def test_validate_happy_path(tmp_path: Path) -> None:
    data = pdf_bytes()
    path = write(tmp_path, "doc.pdf", data)
    result = run_validate(path, declared_type="image/png")
    assert result == Validated(
        size=len(data),
        detected_type="application/pdf",
        declared_type="image/png",  # recorded as declared, never trusted
        md5=hashlib.md5(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
    )


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_declared_checksum_matches(tmp_path: Path, algorithm: str) -> None:
    data = png_bytes()
    path = write(tmp_path, "img.png", data)
    digest = hashlib.new(algorithm, data).hexdigest().upper()
    result = run_validate(path, declared_checksum=f"{algorithm.upper()} {digest}")
    assert result.detected_type == "image/png"


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_declared_checksum_mismatch(tmp_path: Path, algorithm: str) -> None:
    path = write(tmp_path, "img.png", png_bytes())
    wrong = hashlib.new(algorithm, b"something else").hexdigest()
    error = rejection(path, declared_checksum=f"{algorithm} {wrong}")
    assert (error.code, error.status) == ("checksum_mismatch", 422)


def test_malformed_checksum_metadata_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "img.png", png_bytes())
    assert rejection(path, declared_checksum="crc32 deadbeef").code == "invalid_checksum_metadata"


def test_known_digests_spare_the_second_pass(tmp_path: Path) -> None:
    path = write(tmp_path, "doc.pdf", pdf_bytes())
    known = ("0" * 32, "1" * 64)  # not the file's digests: only passes if they are not recomputed
    result = run_validate(path, known_digests=known, declared_checksum="sha256 " + "1" * 64)
    assert (result.md5, result.sha256) == known


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "empty", b"")
    # Size comes first: not even a malformed checksum gets a say.
    error = rejection(path, declared_checksum="nonsense")
    assert (error.code, error.status) == ("empty_file", 422)


def test_file_too_large(tmp_path: Path) -> None:
    data = pdf_bytes()
    path = write(tmp_path, "doc.pdf", data)
    error = rejection(path, settings=settings(max_size=len(data) - 1), declared_checksum="x")
    assert error.code == "file_too_large"
    assert run_validate(path, settings=settings(max_size=len(data))).size == len(data)


def test_mime_type_not_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "blob", RANDOM)
    error = rejection(path, declared_type="application/pdf")
    assert error.code == "mime_type_not_allowed"
    assert "application/octet-stream" in error.message
    allowed = run_validate(path, settings=settings(allowed_mime_types=("*",)))
    assert allowed.detected_type == "application/octet-stream"


def test_checksum_is_checked_before_mime(tmp_path: Path) -> None:
    path = write(tmp_path, "blob", RANDOM)
    assert rejection(path, declared_checksum="md5 " + "0" * 32).code == "checksum_mismatch"


def test_mime_validation_off_records_the_type(tmp_path: Path) -> None:
    path = write(tmp_path, "lib.so", elf_bytes())
    result = run_validate(path, settings=settings(mime_validation=False))
    assert result.detected_type.startswith("application/x-")


def test_rejection_codes() -> None:
    codes: tuple[RejectionCode, ...] = ("file_too_large", "virus_detected", "empty_file")
    for code in codes:
        error = Rejection(code, "no")
        assert isinstance(error, TusingestError)
        assert (error.code, error.status, error.message) == (code, 422, "no")
    with pytest.raises(ValueError, match="unknown rejection code"):
        Rejection("nope", "no")  # type: ignore[arg-type]


def test_validate_64_mib_keeps_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    line = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod\n"
    block = line * (MiB // len(line))
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with path.open("wb") as f:
        while f.tell() + len(block) <= 64 * MiB:
            f.write(block)
            md5.update(block)
            sha256.update(block)
    process = psutil.Process()
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.002):
            peak = max(peak, process.memory_info().rss)

    async def scenario() -> Validated:
        # Warm up the worker thread (its libmagic instance maps the magic database once).
        await validate(
            write(tmp_path, "small.txt", line),
            declared_type=None,
            declared_checksum=None,
            known_digests=None,
            settings=settings(),
        )
        nonlocal peak
        peak = baseline = process.memory_info().rss
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = await validate(
                path,
                declared_type="text/plain",
                declared_checksum=f"sha256 {sha256.hexdigest()}",
                known_digests=None,
                settings=settings(),
            )
        finally:
            done.set()
            sampler.join()
        assert peak - baseline < 16 * MiB, f"RSS grew by {(peak - baseline) / MiB:.1f} MiB"
        return result

    result = asyncio.run(scenario())
    assert result.size == path.stat().st_size > 60 * MiB
    assert (result.md5, result.sha256) == (md5.hexdigest(), sha256.hexdigest())
    assert result.detected_type == "text/plain"


# --- settings -----------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    parsed = _validation({}, max_size=5 * MiB)
    assert parsed == ValidationSettings(5 * MiB, True, DEFAULT_ALLOWED_MIME_TYPES)
    assert _validation(
        {"MIME_TYPE_VALIDATION": " ", "ALLOWED_MIME_TYPES": ""}, 1
    ) == ValidationSettings(1, True, DEFAULT_ALLOWED_MIME_TYPES)
    assert not mime_allowed("application/octet-stream", DEFAULT_ALLOWED_MIME_TYPES)
    for mime in ("application/pdf", "image/png", "text/plain", "text/csv", DOCX, XLSX, ODT):
        assert mime_allowed(mime, DEFAULT_ALLOWED_MIME_TYPES)


@pytest.mark.parametrize(
    ("raw", "enabled"), [("on", True), ("OFF", False), ("true", True), ("0", False)]
)
def test_settings_mime_validation_flag(raw: str, enabled: bool) -> None:
    assert _validation({"MIME_TYPE_VALIDATION": raw}, 1).mime_validation is enabled


def test_settings_allowed_types() -> None:
    env = {"ALLOWED_MIME_TYPES": " Application/PDF , image/* ,,application/vnd.oasis.* "}
    parsed = _validation(env, 1)
    assert parsed.allowed_mime_types == ("application/pdf", "image/*", "application/vnd.oasis.*")
    assert _validation({"ALLOWED_MIME_TYPES": "*"}, 1).allowed_mime_types == ("*",)
    assert _validation({"ALLOWED_MIME_TYPES": "*/*"}, 1).allowed_mime_types == ("*/*",)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MIME_TYPE_VALIDATION": "maybe"}, "MIME_TYPE_VALIDATION"),
        ({"ALLOWED_MIME_TYPES": "pdf"}, "ALLOWED_MIME_TYPES"),
        ({"ALLOWED_MIME_TYPES": "image/"}, "ALLOWED_MIME_TYPES"),
        ({"ALLOWED_MIME_TYPES": "application/pdf, */png"}, "ALLOWED_MIME_TYPES"),
        ({"ALLOWED_MIME_TYPES": "im*ge/png"}, "ALLOWED_MIME_TYPES"),
        ({"ALLOWED_MIME_TYPES": "text/plain/x"}, "ALLOWED_MIME_TYPES"),
        ({"ALLOWED_MIME_TYPES": ",,"}, "ALLOWED_MIME_TYPES"),
    ],
)
def test_settings_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _validation(env, 1)
    assert caught.value.variable == variable
    assert variable in str(caught.value)


def test_no_sample_is_left_open(tmp_path: Path) -> None:
    # The zip refinement opens the file itself; it must not leak descriptors.
    path = write(tmp_path, "a.docx", docx_bytes())
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        asyncio.run(detect_mime(path))
    assert len(os.listdir("/proc/self/fd")) <= before + 2
