"""Rendering a grid of cells as aligned text or as a markdown table (first column left)."""

from __future__ import annotations

from collections.abc import Sequence

Rows = Sequence[Sequence[str]]


def text(rows: Rows, rule: bool = True) -> list[str]:
    """The rows as aligned columns; the first row is the header, ruled off when `rule`."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: Sequence[str]) -> str:
        first, *rest = row
        cells = [f"{first:<{widths[0]}}"] + [
            f"{c:>{w}}" for c, w in zip(rest, widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    lines = [line(rows[0])]
    if rule:
        lines.append("-" * len(line(["-" * w for w in widths])))
    lines += [line(row) for row in rows[1:]]
    return lines


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def markdown(rows: Rows) -> list[str]:
    """The rows as a GitHub-flavoured markdown table; the first row is the header."""
    if not rows:
        return []
    header, *body = rows
    lines = ["| " + " | ".join(_escape(c) for c in header) + " |"]
    lines.append("|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in body]
    return lines
