"""For tests of blocks computed block by block (batch_channel_blocks/run_blocks): run a call
with a given block size, every array shared between two threads."""

from __future__ import annotations

from typing import Any, Callable

import npattn.backend as backend


def one_block(monkeypatch: Any, fn: Callable[[], Any]) -> Any:
    """``fn()`` with the whole array as one block."""
    monkeypatch.setattr(backend, "ELEMENTWISE_BLOCK_BYTES", 10**9)
    return fn()


def in_blocks(monkeypatch: Any, block_bytes: int, fn: Callable[[], Any], x: Any,
              blocks: int) -> Any:
    """``fn()`` with blocks of about ``block_bytes`` of ``x`` (``blocks`` of them, checked) on
    two threads, at any size."""
    monkeypatch.setattr(backend, "ELEMENTWISE_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(backend, "PARALLEL_MIN_ELEMENTS", 0)
    previous = backend.set_threads(2)
    try:
        assert len(backend.batch_channel_blocks(x)) == blocks
        return fn()
    finally:
        backend.set_threads(previous)
