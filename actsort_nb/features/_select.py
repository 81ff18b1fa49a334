"""Exact order statistics (numba), for the quantiles and medians of the compiled kernels.

A histogram selection: one counting pass locates the bin holding each wanted
rank, one more gathers that bin's values, which are sorted (or selected again
the same way when many). It returns exactly the values ``np.partition`` would,
several times faster than quickselect, whose data-dependent branches are
mispredicted about every other comparison.
"""
# min/max are spelled as comparisons on purpose: numba's builtin min/max carry Python's
# NaN semantics and vectorise worse (as in actsort_nb/preprocess/_kernels.py).
# ruff: noqa: FURB136
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["N_BINS", "order_stats"]

#: Bins of the histogram selection, and the size below which a bin is simply sorted.
N_BINS = 1024
SMALL = 256


@njit(inline="always")
def _bin(v, lo, scale):  # pragma: no cover - compiled
    """Histogram bin of ``v`` (monotone in ``v``, so bins hold consecutive ranks)."""
    b = int((np.float64(v) - np.float64(lo)) * scale)
    return b if b < N_BINS else N_BINS - 1


@njit(nogil=True, cache=True)
def _rank_in(buf, m, k, counts):  # pragma: no cover - compiled
    """Value of rank ``k`` among ``buf[:m]`` (which is reordered): histogram, keep the bin of ``k``, repeat."""
    while m > SMALL:
        lo = buf[0]
        hi = buf[0]
        for j in range(1, m):
            lo = buf[j] if buf[j] < lo else lo
            hi = buf[j] if buf[j] > hi else hi
        if not hi > lo:
            return lo
        scale = N_BINS / (np.float64(hi) - np.float64(lo))
        if not (scale < np.inf and np.isfinite(lo) and np.isfinite(hi)):  # a range too small to scale, or inf: sort
            break
        counts[:] = 0
        for j in range(m):
            counts[_bin(buf[j], lo, scale)] += 1
        t = 0
        start = 0
        while start + counts[t] <= k:
            start += counts[t]
            t += 1
        w = 0
        for j in range(m):
            if _bin(buf[j], lo, scale) == t:
                buf[w] = buf[j]
                w += 1
        m = w
        k -= start
    return np.sort(buf[:m])[k]


@njit(nogil=True, cache=True)
def order_stats(a, lo, hi, ranks, out, counts, counts2, buf, buf2):  # pragma: no cover - compiled
    """Values of the ascending ``ranks`` (0-based, repeats allowed) of ``a`` (min ``lo``, max ``hi``) into ``out``.

    ``a`` is not modified. Scratch: ``counts``, ``counts2`` of ``N_BINS`` int64,
    ``buf``, ``buf2`` of ``len(a)`` and ``a``'s dtype.
    """
    n = a.shape[0]
    n_r = ranks.shape[0]
    if not hi > lo:
        for r in range(n_r):
            out[r] = lo
        return
    scale = N_BINS / (np.float64(hi) - np.float64(lo))
    if not (scale < np.inf and np.isfinite(lo) and np.isfinite(hi)):  # a range too small to scale, or inf: sort
        srt = np.sort(a)
        for r in range(n_r):
            out[r] = srt[ranks[r]]
        return
    counts[:] = 0
    for j in range(n):
        counts[_bin(a[j], lo, scale)] += 1
    r = 0
    start = 0
    for t in range(N_BINS):
        c = counts[t]
        if r < n_r and ranks[r] < start + c:
            m = 0
            for j in range(n):
                if _bin(a[j], lo, scale) == t:
                    buf[m] = a[j]
                    m += 1
            if m <= SMALL:
                srt = np.sort(buf[:m])
                while r < n_r and ranks[r] < start + c:
                    out[r] = srt[ranks[r] - start]
                    r += 1
            else:
                while r < n_r and ranks[r] < start + c:
                    buf2[:m] = buf[:m]
                    out[r] = _rank_in(buf2, m, ranks[r] - start, counts2)
                    r += 1
        start += c
        if r == n_r:
            break
