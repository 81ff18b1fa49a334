"""Compiled (numba) pixel-set kernels of :class:`.spatial._Pixels`.

Neighbour look-ups through its bounding-box table: the numpy formulation made ~10
passes over all footprint pixels per offset (and 16 offsets for the 4×4 box mean);
these make one, with the same table and the same order of additions. Connected
regions by union-find over those look-ups, in ``O(pixels)`` memory (scipy's
``connected_components`` needed the neighbour graph: ~350 MB for 1.9 million pixels).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["box_sums", "component_labels", "find_in_boxes", "union_pairs"]


@njit(inline="always")
def _lookup(ly, lx, bh, bw, slot0, table, i, dy, dx):  # pragma: no cover - compiled
    """Index of pixel ``i`` shifted by ``(dy, dx)`` in the set, or -1. Branch-free (several times faster)."""
    yq = ly[i] + dy
    xq = lx[i] + dx
    ok = (yq >= 0) & (yq < bh[i]) & (xq >= 0) & (xq < bw[i])
    j = table[slot0[i] + dy * bw[i] + dx if ok else 0]
    return j if ok else -1


@njit(nogil=True, cache=True)
def find_in_boxes(ly, lx, bh, bw, slot0, table, dy, dx, found, idx):  # pragma: no cover - compiled
    """``found[i]``: is pixel ``i`` shifted by ``(dy, dx)`` in the set, and ``idx[i]`` where (0 if not)."""
    for i in range(ly.shape[0]):
        j = _lookup(ly, lx, bh, bw, slot0, table, i, dy, dx)
        found[i] = j >= 0
        idx[i] = max(j, 0)


@njit(nogil=True, cache=True)
def box_sums(ly, lx, bh, bw, slot0, table, values, lo, hi, out):  # pragma: no cover - compiled
    """``out[i]``: sum of ``values`` over the set's pixels at offsets ``lo..hi`` (both axes) of pixel ``i``.

    Offsets are visited row by row (``dy`` outer, ``dx`` inner) and absent pixels add
    0.0, as the numpy code added them.
    """
    for i in range(ly.shape[0]):
        acc = 0.0
        for dy in range(lo, hi + 1):
            for dx in range(lo, hi + 1):
                j = _lookup(ly, lx, bh, bw, slot0, table, i, dy, dx)
                hit = j >= 0
                acc += values[j if hit else 0] * hit  # an absent pixel adds 0.0 (values are finite)
        out[i] = acc


@njit(nogil=True, cache=True)
def _root(parent, i):  # pragma: no cover - compiled
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@njit(nogil=True, cache=True)
def union_pairs(parent, found, idx):  # pragma: no cover - compiled
    """Join the sets of ``i`` and ``idx[i]`` wherever ``found[i]``; each set's root is its smallest member."""
    for i in range(found.shape[0]):
        if found[i]:
            a = _root(parent, i)
            b = _root(parent, idx[i])
            if a < b:
                parent[b] = a
            elif b < a:
                parent[a] = b


@njit(nogil=True, cache=True)
def component_labels(parent):  # pragma: no cover - compiled
    """0, 1, … per set, numbered in the order of their smallest members (as scipy's ``connected_components``)."""
    m = parent.shape[0]
    lab = np.empty(m, np.int64)
    n_lab = 0
    for i in range(m):
        r = _root(parent, i)
        if r == i:
            lab[i] = n_lab
            n_lab += 1
        else:
            lab[i] = lab[r]  # r < i: already labelled
    return lab
