"""Blocks of candidates, run in a few threads (the compiled kernels release the GIL)."""
from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["default_workers", "map_blocks"]

T = TypeVar("T")


def default_workers() -> int:
    """Threads used when not told: 2, or 1 on a single core (as the streaming pass)."""
    return min(2, os.cpu_count() or 1)


def map_blocks(fn: Callable[[slice], T], n: int, block: int, workers: int | None = None) -> list[T]:
    """``[fn(slice(s, s + block)) for s in range(0, n, block)]``, on ``workers`` threads, in order.

    Only ``workers`` blocks are in flight at a time, so memory stays ``O(workers · block)``.
    """
    slices = [slice(s, min(n, s + block)) for s in range(0, n, block)]
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(slices) <= 1:
        return [fn(sl) for sl in slices]
    with ThreadPoolExecutor(max_workers=min(workers, len(slices))) as pool:
        return list(pool.map(fn, slices))
