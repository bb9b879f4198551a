"""What the client uploads: deterministic pseudo-random bytes, different for every upload.

One pattern of `PATTERN_BYTES` seeded pseudo-random bytes is generated once; upload *k* is the
pattern read cyclically from a phase derived from *k*'s key. Bodies are zero-copy `memoryview`
slices of one preallocated buffer (the pattern followed by its first `max_chunk` bytes, so any
slice up to `max_chunk` long is contiguous): sending costs the client no generation and no copy.
The period is not a multiple of any PATCH size, so neither two uploads nor two PATCHes of one
upload carry the same bytes at the same alignment — a server cannot win by deduplicating.

The expected SHA-256 is recomputed from the same slices after the measured part.
"""

from __future__ import annotations

import hashlib
import random

MiB = 1 << 20
PATTERN_BYTES = 16 * MiB + 1021
_SEED = 0x7E5_1A6E


class Payload:
    """The pattern buffer and the per-upload byte streams read from it."""

    def __init__(self, max_chunk: int) -> None:
        if max_chunk <= 0:
            raise ValueError("max_chunk must be > 0")
        pattern = random.Random(_SEED).randbytes(PATTERN_BYTES)
        # Repeat the pattern until any slice of max_chunk bytes from any phase is contiguous.
        repeats = 1 + -(-max_chunk // PATTERN_BYTES)
        self._view = memoryview(pattern * repeats)
        self.max_chunk = max_chunk

    @staticmethod
    def phase(key: str) -> int:
        """Where upload `key` starts reading the pattern."""
        digest = hashlib.sha256(key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % PATTERN_BYTES

    def chunk(self, phase: int, offset: int, length: int) -> memoryview:
        """Bytes `offset .. offset + length` of the upload starting at `phase` (no copy)."""
        if not 0 <= length <= self.max_chunk:
            raise ValueError(f"chunk of {length} bytes exceeds max_chunk {self.max_chunk}")
        start = (phase + offset) % PATTERN_BYTES
        return self._view[start : start + length]

    def sha256(self, phase: int, length: int) -> str:
        """SHA-256 of the whole upload of `length` bytes starting at `phase`."""
        digest = hashlib.sha256()
        offset = 0
        while offset < length:
            n = min(self.max_chunk, length - offset)
            digest.update(self.chunk(phase, offset, n))
            offset += n
        return digest.hexdigest()
