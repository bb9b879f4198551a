"""Byte counts for people: 512 B, 1.5 KiB, 3.2 GiB."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_size(count: int) -> str:
    """`count` bytes in binary units, one decimal past bytes."""
    size, index = float(count), 0
    while size >= 1024 and index < len(_UNITS) - 1:
        size, index = size / 1024, index + 1
    return f"{count} B" if index == 0 else f"{size:.1f} {_UNITS[index]}"
