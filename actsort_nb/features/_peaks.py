"""Compiled (numba) ports of :mod:`scipy.signal`'s peak finding, one trace at a time.

:func:`scipy.signal.find_peaks` and :func:`scipy.signal.peak_widths` are called once
per trace from Python, which costs far more than the work itself; these are the same
loops (``scipy/signal/_peak_finding_utils.pyx``: ``_local_maxima_1d`` and
``_peak_widths`` statement by statement; ``_peak_prominences`` with no window
recast in linear time, :func:`peak_bases`), so they give the same peaks, prominences,
bases and widths, and run inside a compiled per-trace kernel
(:mod:`._trace_kernels`) that releases the GIL.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["local_maxima", "peak_bases", "peak_width"]


@njit(nogil=True, cache=True)
def local_maxima(x, mid):  # pragma: no cover - compiled
    """Write the midpoints of the local maxima of ``x`` (plateaus included) to ``mid``; return their number.

    ``mid`` needs room for ``len(x) // 2`` entries (there cannot be more maxima).
    """
    m = 0
    i = 1
    i_max = x.shape[0] - 1
    while i < i_max:
        if x[i - 1] < x[i]:
            i_ahead = i + 1
            while i_ahead < i_max and x[i_ahead] == x[i]:
                i_ahead += 1
            if x[i_ahead] < x[i]:
                mid[m] = (i + i_ahead - 1) // 2
                m += 1
                i = i_ahead
        i += 1
    return m


@njit(nogil=True, cache=True)
def peak_bases(x, peaks, k, prominence, left_base, right_base, scratch):  # pragma: no cover - compiled
    """Prominence and bases of the ``k`` local maxima ``peaks[:k]`` of ``x`` (ascending), in linear time.

    scipy's ``_peak_prominences`` walks left and right from each peak until a
    higher sample, keeping the minimum (the base: the walk's first strict
    minimum) — ``O(len(x))`` per peak, so quadratic for a drifting trace, whose
    peaks all walk back to its start. Between two consecutive local maxima the
    signal falls, then rises, so the minimum a walk collects is the lowest of
    the valleys it crosses, and the walk from a peak crosses exactly the valleys
    back to the previous higher peak (or the trace's end sample, if higher). A
    monotonic stack over the peaks, each entry carrying the lowest valley it
    covers, answers all walks in ``O(len(x))``. Ties resolve as scipy's walks do:
    the minimum nearest the peak. ``scratch`` is an ``(6, len(x) // 2 + 2)``
    float64 array. Writes ``prominence``, ``left_base``, ``right_base`` ``[:k]``.
    """
    n = x.shape[0]
    # valley j lies between peak j - 1 and peak j (valley 0 from sample 0, valley k to the end):
    # its minimum and the minimum's first and last positions
    v_min = scratch[0]
    v_first = scratch[1]
    v_last = scratch[2]
    stack_val = scratch[3]
    stack_min = scratch[4]
    stack_arg = scratch[5]
    lo = 0
    for v in range(k + 1):
        hi = peaks[v] if v < k else n
        mn = x[lo]
        first = lo
        last = lo
        for i in range(lo + 1, hi):  # selects, not branches: the comparisons are unpredictable
            xi = x[i]
            lt = xi < mn
            first = i if lt else first
            last = i if xi <= mn else last
            mn = xi if lt else mn
        v_min[v] = mn
        v_first[v] = first
        v_last[v] = last
        lo = hi
    # left walks, peaks in order; the bottom entry is sample 0 (the walk stops there if it is higher)
    stack_val[0] = x[0]
    stack_min[0] = np.inf
    stack_arg[0] = 0
    top = 1
    for c in range(k):
        p = peaks[c]
        h = x[p]
        mn = v_min[c]
        arg = v_last[c]
        while top > 0 and stack_val[top - 1] <= h:
            top -= 1
            if stack_min[top] < mn:  # ties keep the minimum nearer the peak
                mn = stack_min[top]
                arg = stack_arg[top]
        stack_val[top] = h
        stack_min[top] = mn
        stack_arg[top] = arg
        top += 1
        prominence[c] = mn  # the left minimum for now
        left_base[c] = np.int64(arg)
    # right walks, peaks in reverse order; the bottom entry is the last sample
    stack_val[0] = x[n - 1]
    stack_min[0] = np.inf
    stack_arg[0] = n - 1
    top = 1
    for c in range(k - 1, -1, -1):
        p = peaks[c]
        h = x[p]
        mn = v_min[c + 1]
        arg = v_first[c + 1]
        while top > 0 and stack_val[top - 1] <= h:
            top -= 1
            if stack_min[top] < mn:
                mn = stack_min[top]
                arg = stack_arg[top]
        stack_val[top] = h
        stack_min[top] = mn
        stack_arg[top] = arg
        top += 1
        right_base[c] = np.int64(arg)
        prominence[c] = h - max(prominence[c], mn)


@njit(nogil=True, cache=True)
def peak_width(x, peak, prominence, left_base, right_base, rel_height):  # pragma: no cover - compiled
    """Width of the peak at ``rel_height`` of ``prominence`` below its top, bounded by its bases.

    scipy walks from the peak towards each base until the signal drops to that
    height. When the base itself is above it, the walk ends at the base; with
    bases from :func:`peak_bases` (of ``x`` or of any increasing function of ``x``)
    every sample between a base and the peak is at least as high as the base, so
    that case is answered without walking — otherwise the walk would cross the
    whole stretch to the base, e.g. for every small peak of a trace whose
    minimum lies far below its baseline.
    """
    height = x[peak] - prominence * rel_height
    if x[left_base] > height:
        left_ip = np.float64(left_base)
    else:
        i = peak
        while left_base < i and height < x[i]:
            i -= 1
        left_ip = np.float64(i)
        if x[i] < height and x[i + 1] != x[i]:
            left_ip += (height - x[i]) / (x[i + 1] - x[i])
    if x[right_base] > height:
        right_ip = np.float64(right_base)
    else:
        i = peak
        while i < right_base and height < x[i]:
            i += 1
        right_ip = np.float64(i)
        if x[i] < height and x[i - 1] != x[i]:
            right_ip -= (height - x[i]) / (x[i - 1] - x[i])
    return right_ip - left_ip
