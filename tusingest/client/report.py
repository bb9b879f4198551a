"""The verdict line per file and the closing summary of a run."""

from __future__ import annotations

from collections.abc import Sequence

from tusingest.client.upload import UploadResult
from tusingest.sizes import format_size


def verdict_line(result: UploadResult) -> str:
    """`stored F → file_id ID on ELEMENT (SIZE)`, or `rejected F: CODE (MESSAGE)`."""
    if result.status == "stored":
        return (
            f"stored {result.file} → file_id {result.file_id} on {result.element_id} "
            f"({format_size(result.size)})"
        )
    reason = result.error or "unknown"
    detail = f" ({result.message})" if result.message and result.message != reason else ""
    return f"{result.status} {result.file}: {reason}{detail}"


def summary_line(results: Sequence[UploadResult]) -> str:
    counts = {
        status: sum(r.status == status for r in results)
        for status in ("stored", "rejected", "failed")
    }
    parts = ", ".join(f"{count} {status}" for status, count in counts.items() if count)
    sent = sum(r.bytes_sent for r in results)
    noun = "file" if len(results) == 1 else "files"
    return f"{len(results)} {noun}: {parts}; {format_size(sent)} sent"
