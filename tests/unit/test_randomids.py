"""Random ids from buffered CSPRNG reads: well-formed, never repeated, apart after a fork."""

from __future__ import annotations

import os
import threading
import uuid

from tusingest.logcontext import request_id
from tusingest.randomids import RandomBytes, token_hex, uuid4


def test_uuid4_is_a_version_4_rfc_4122_uuid() -> None:
    ids = [uuid4() for _ in range(10_000)]
    assert {u.version for u in ids} == {4}
    assert {u.variant for u in ids} == {uuid.RFC_4122}
    assert len(set(ids)) == len(ids)


def test_bytes_are_never_handed_out_twice_across_blocks() -> None:
    random = RandomBytes(block=64)
    pieces = [random.take(24) for _ in range(1_000)]  # 24 does not divide 64: blocks end early
    assert {len(p) for p in pieces} == {24}
    assert len(set(pieces)) == len(pieces)
    assert len(random.take(100)) == 100  # more than a block: read directly


def test_threads_taking_at_once_get_distinct_ids() -> None:
    random = RandomBytes(block=256)
    taken: list[list[bytes]] = [[] for _ in range(4)]

    def worker(into: list[bytes]) -> None:
        for _ in range(5_000):
            into.append(random.take(16))

    threads = [threading.Thread(target=worker, args=(t,)) for t in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [p for t in taken for p in t]
    assert len(set(every)) == len(every) == 20_000


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    token_hex(1)  # a block is buffered in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, token_hex(16).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 32
    assert child != token_hex(16)


def test_request_ids_are_16_hex_digits_unless_the_client_offers_a_safe_one() -> None:
    ours = request_id(None)
    assert len(ours) == 16
    assert set(ours) <= set("0123456789abcdef")
    assert request_id(None) != ours
    assert request_id("abc-123") == "abc-123"
    assert len(request_id("bad id\n")) == 16
