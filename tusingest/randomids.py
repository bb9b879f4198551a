"""Random ids (uuid4, request ids) from the kernel's CSPRNG, read a block at a time: each
`getrandom` lets go of the interpreter lock, and the event loop then waits behind busy worker
threads to get it back, so one call serves many ids."""

from __future__ import annotations

import os
import threading
import uuid

_BLOCK = 4096


class RandomBytes:
    """Bytes of `os.urandom`, handed out in order from blocks of `block` bytes; never the same
    bytes twice, in this process or in a child forked from it."""

    def __init__(self, block: int = _BLOCK) -> None:
        self._block = block
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def take(self, n: int) -> bytes:
        if n > self._block:
            return os.urandom(n)
        with self._lock:
            if self._at + n > len(self._buffer):
                self._buffer = os.urandom(self._block)
                self._at = 0
            start, self._at = self._at, self._at + n
            return self._buffer[start : self._at]

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0


_RANDOM = RandomBytes()


def uuid4() -> uuid.UUID:
    """A version 4 UUID, as `uuid.uuid4()`."""
    return uuid.UUID(bytes=_RANDOM.take(16), version=4)


def token_hex(nbytes: int) -> str:
    """`nbytes` random bytes as hex, as `secrets.token_hex`."""
    return _RANDOM.take(nbytes).hex()
