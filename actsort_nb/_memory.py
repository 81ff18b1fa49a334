"""Give freed memory back to the operating system between the big phases.

glibc keeps the memory that numpy frees inside its heaps (and raises its mmap
threshold after large frees), so a process's resident size stays at the high-water
mark of the phase before. ``malloc_trim(0)`` returns the free pages; dask.distributed
does the same for its workers ("Memory not released back to the OS"). Elsewhere
(macOS, Windows, musl) this is a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["release_free_memory"]

_TRIM = None
if sys.platform.startswith("linux"):
    try:
        _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        _TRIM.argtypes = [ctypes.c_size_t]
        _TRIM.restype = ctypes.c_int
    except (OSError, AttributeError):  # not glibc
        _TRIM = None


def release_free_memory() -> bool:
    """Return free heap memory to the OS (glibc ``malloc_trim(0)``); True if any was released."""
    return bool(_TRIM(0)) if _TRIM is not None else False
