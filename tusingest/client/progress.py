"""What a person sees while files upload: rich progress bars per file and a total on a terminal,
plain lines otherwise, nothing at all for scripts."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TextIO

from tusingest.sizes import format_size

if TYPE_CHECKING:
    from rich.progress import Progress as RichBars
    from rich.progress import TaskID


class Progress(Protocol):
    """Told about each file; a context manager around the whole run."""

    def __enter__(self) -> Progress: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def start(self, name: str, size: int, done: int) -> int:
        """A file begins (or resumes at `done`); returns its handle."""
        ...

    def advance(self, task: int, count: int) -> None: ...

    def rewind(self, task: int, done: int) -> None:
        """A request failed: the server holds `done` bytes, the rest goes again."""
        ...

    def finish(self, task: int, line: str | None) -> None:
        """The file's verdict; `line` shown when given."""
        ...

    def say(self, line: str) -> None:
        """A line of its own, such as the summary."""
        ...


def open_progress(stream: TextIO, total: int, *, verdicts: bool) -> Progress:
    """Bars on a terminal (rich), plain lines elsewhere; with `verdicts` off (JSON on stdout)
    bars only on a terminal's stderr and otherwise silence."""
    if verdicts:
        return RichProgress(stream, total) if stream.isatty() else PlainProgress(stream)
    return RichProgress(sys.stderr, total) if sys.stderr.isatty() else Silent()


class Silent:
    def __enter__(self) -> Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self, name: str, size: int, done: int) -> int:
        return 0

    def advance(self, task: int, count: int) -> None:
        return None

    def rewind(self, task: int, done: int) -> None:
        return None

    def finish(self, task: int, line: str | None) -> None:
        return None

    def say(self, line: str) -> None:
        return None


class PlainProgress:
    """One line when a file starts, one at each quarter, and its verdict."""

    STEPS = 4

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._files: list[tuple[str, int]] = []
        self._done: list[int] = []
        self._shown: list[int] = []

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self, name: str, size: int, done: int) -> int:
        self._files.append((name, size))
        self._done.append(done)
        self._shown.append(self._step(size, done))
        if done:
            self.say(f"resuming {name} at {format_size(done)} of {format_size(size)}")
        else:
            self.say(f"uploading {name} ({format_size(size)})")
        return len(self._files) - 1

    def advance(self, task: int, count: int) -> None:
        self._done[task] += count
        name, size = self._files[task]
        step = self._step(size, self._done[task])
        if step > self._shown[task] and step < self.STEPS:
            self._shown[task] = step
            self.say(f"  {name}: {step * 100 // self.STEPS}% of {format_size(size)}")

    def rewind(self, task: int, done: int) -> None:
        self._done[task] = done

    def finish(self, task: int, line: str | None) -> None:
        if line is not None:
            self.say(line)

    def say(self, line: str) -> None:
        print(line, file=self._stream, flush=True)

    def _step(self, size: int, done: int) -> int:
        return done * self.STEPS // size if size else self.STEPS


class RichProgress:
    """A bar per file and one for the total; verdict lines printed above the bars."""

    def __init__(self, stream: TextIO, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bars: RichBars = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream, highlight=False),
        )
        self._tasks: list[TaskID] = []
        self._total = self._bars.add_task("total", total=total)
        self._done: list[int] = []

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def start(self, name: str, size: int, done: int) -> int:
        self._tasks.append(self._bars.add_task(name, total=size, completed=done))
        self._done.append(done)
        self._bars.advance(self._total, done)
        return len(self._tasks) - 1

    def advance(self, task: int, count: int) -> None:
        self._done[task] += count
        self._bars.advance(self._tasks[task], count)
        self._bars.advance(self._total, count)

    def rewind(self, task: int, done: int) -> None:
        self._bars.advance(self._total, done - self._done[task])
        self._done[task] = done
        self._bars.update(self._tasks[task], completed=done)

    def finish(self, task: int, line: str | None) -> None:
        self._bars.update(self._tasks[task], visible=False)
        if line is not None:
            self.say(line)

    def say(self, line: str) -> None:
        self._bars.console.print(line, markup=False)
