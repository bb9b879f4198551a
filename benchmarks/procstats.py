"""Watching a server process through /proc: CPU seconds (utime + stime of the process and its
descendants), resident memory (VmRSS sampled from a thread, VmHWM for the lifetime peak), and
which process listens on a port."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from types import TracebackType

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        # Fields after "(comm)"; comm may contain spaces and parentheses.
        return f.read().rpartition(")")[2].split()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its live descendants, plus children it has reaped."""
    fields = _stat_fields(pid)
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    for child in _descendants(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ticks += sum(int(x) for x in _stat_fields(child)[11:13])
    return ticks / _CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def hwm_bytes(pid: int) -> int | None:
    """VmHWM: the process's lifetime peak resident set."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples VmRSS of a process from a thread every `interval` seconds; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = 0
        self.samples = 0

    def _sample(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.peak = max(self.peak, rss_bytes(self._pid))
            self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.peak


def find_listening_pid(port: int) -> int | None:
    """The pid owning a listening TCP socket on `port` (our own user's processes only)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                        return int(entry)
    return None


class Meter:
    """Wall time, server and client CPU, and sampled server RSS over a `with` block."""

    def __init__(self, pid: int | None) -> None:
        self._pid = pid
        self._sampler = RssSampler(pid) if pid else None
        self._cpu0: float | None = None
        self._client0 = 0.0
        self._t0 = 0.0
        self.elapsed = 0.0
        self.client_cpu = 0.0
        self.server_cpu: float | None = None
        self.start_rss: int | None = None
        self.peak_rss: int | None = None
        self.samples = 0

    def __enter__(self) -> Meter:
        if self._pid:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self._cpu0 = cpu_seconds(self._pid)
                self.start_rss = rss_bytes(self._pid)
        if self._sampler:
            self._sampler.start()
        self._client0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.elapsed = time.perf_counter() - self._t0
        self.client_cpu = time.process_time() - self._client0
        if self._sampler:
            self.peak_rss = self._sampler.stop()
            self.samples = self._sampler.samples
        if self._pid and self._cpu0 is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.server_cpu = cpu_seconds(self._pid) - self._cpu0
