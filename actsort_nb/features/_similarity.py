"""Counting pairs of traces that correlate above a threshold, without every dot product.

Feature 35 asks, for every candidate, how many others have a correlation above
``threshold`` (0.7) with it. The correlations are the dot products of the unit-norm
rows ``z`` (median-filtered, z-scored traces): an ``n × n × n_t`` matrix product,
8·10¹¹ flops for 10,000 candidates × 8,192 frames — most of the feature engine's time.

Almost all pairs are far from the threshold, and that can be shown cheaply and
*exactly*. Split each row into its coordinates ``l`` on the first ``d`` vectors of
the orthonormal Fourier basis (the slow part, where calcium transients put most of
their power) and the rest, of norm ``r = sqrt(|z|² − |l|²)``. Then
``z_i·z_j = l_i·l_j + ρ`` with ``|ρ| ≤ r_i r_j`` (Cauchy–Schwarz on the
remainders), so a pair is

* above the threshold if ``l_i·l_j − r_i r_j > threshold + tol``,
* below it if ``l_i·l_j + r_i r_j ≤ threshold − tol``,
* and only otherwise is its full dot product computed (from the float32 unit rows).

``d = n_t / 8``, so the bounds cost an eighth of the full product; ``tol`` covers
float32 rounding. On simulated recordings (10,000 candidates × 8,192 frames)
1,443 of the 5·10⁷ pairs need the full product. Where the slow part holds little
of the power (white noise) most pairs do, and the cost tends to 1.125× the plain
product. Undecided pairs are computed one by one when few and as dense block
products when many (the only case that makes all unit rows at once).
"""
from __future__ import annotations

import numpy as np
import scipy.fft
from numba import njit

from ._parallel import map_blocks
from ._trace_kernels import unit_zscore

__all__ = ["bound_dims", "count_correlated", "slow_part", "unit_rows"]

#: Fraction of the time axis kept as the slow part (the bound's cost relative to the full product).
LOW_FRACTION = 8
#: Below this many slow coefficients the full product is cheaper than bounding it.
MIN_LOW = 64
#: Margin of the bounds for float32 rounding of the products.
TOL = 1e-4
#: Above this share of undecided pairs in a block, a dense product beats pair-by-pair dots.
DENSE_SHARE = 0.05


@njit(nogil=True, cache=True)
def _classify(cl, r_rows, r_cols, s, threshold, tol, counts, pi, pj):  # pragma: no cover - compiled
    """Count the sure pairs of ``cl`` (rows ``s + a``, columns ``s + b``, ``b > a``); list the undecided ones.

    Returns the number of undecided pairs written to ``pi``/``pj``, or -1 if they did
    not fit (the sure pairs are counted all the same).
    """
    m, k = cl.shape
    cap = pi.shape[0]
    n_maybe = 0
    for a in range(m):
        i = s + a
        for b in range(a + 1, k):
            bound = r_rows[a] * r_cols[b] + tol
            v = np.float64(cl[a, b])
            if v - bound > threshold:
                counts[i] += 1
                counts[s + b] += 1
            elif v + bound > threshold and n_maybe >= 0:
                if n_maybe == cap:
                    n_maybe = -1
                else:
                    pi[n_maybe] = i
                    pj[n_maybe] = s + b
                    n_maybe += 1
    return n_maybe


@njit(nogil=True, cache=True)
def _pair_dots(z, pi, pj, n_pairs, threshold, counts):  # pragma: no cover - compiled
    """Exact dot products of the listed pairs (float64 sums of the float32 rows); count those above ``threshold``."""
    n_t = z.shape[1]
    for p in range(n_pairs):
        i = pi[p]
        j = pj[p]
        acc = 0.0
        for t in range(n_t):
            acc += np.float64(z[i, t]) * np.float64(z[j, t])
        if acc > threshold:
            counts[i] += 1
            counts[j] += 1


def bound_dims(n_t: int) -> int:
    """Number of slow coordinates used to bound products of rows of length ``n_t`` (0: no bounds)."""
    d = n_t // LOW_FRACTION
    return d if d >= MIN_LOW else 0


def unit_rows(x: np.ndarray) -> np.ndarray:
    """The unit rows ``z`` (float64) of traces ``x``: median-filtered, z-scored, divided by ``sqrt(n_t)``."""
    z = np.empty(x.shape)
    unit_zscore(np.asarray(x, np.float64), z)
    return z


def slow_part(z: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """``(low, rest)``: the rows' first ``d`` orthonormal Fourier coordinates (float32) and the remainder's norm.

    ``rfft(norm="ortho")`` bin ``k ≥ 1`` holds two coordinates, ``√2·Re`` and ``√2·Im``,
    the DC bin one; ``d < n_t`` so that the Nyquist bin (weight 1) is never used.
    Computed from the float64 rows: their float32 rounding moves a product by < 1e-6 ≪ ``TOL``.
    """
    nb = d // 2 + 1
    spec = scipy.fft.rfft(z, axis=1, norm="ortho")[:, :nb]
    low = np.empty((z.shape[0], d), np.float32)
    low[:, 0] = spec[:, 0].real
    odd, even = low[:, 1::2], low[:, 2::2]
    odd[:] = np.sqrt(2.0) * spec[:, 1 : 1 + odd.shape[1]].real
    even[:] = np.sqrt(2.0) * spec[:, 1 : 1 + even.shape[1]].imag
    total = np.einsum("ij,ij->i", z, z)
    head = np.einsum("ij,ij->i", low, low, dtype=np.float64)
    return low, np.sqrt(np.maximum(total - head, 0.0))


def _upper(m: int, k: int) -> np.ndarray:
    """``(m, k)`` mask of the entries ``b > a``."""
    return np.arange(k)[None, :] > np.arange(m)[:, None]


def _unit_rows32(x: np.ndarray, rows: np.ndarray | None = None, workers: int | None = None) -> np.ndarray:
    """float32 unit rows of ``x`` (or of ``x[rows]``), computed block by block."""
    src = x if rows is None else x[rows]
    z = np.empty(src.shape, np.float32)

    def fill(sl: slice) -> None:
        z[sl] = unit_rows(src[sl])

    map_blocks(fill, src.shape[0], 512, workers)
    return z


def count_correlated(
    x: np.ndarray,
    threshold: float,
    block: int = 512,
    workers: int | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Number of other rows whose median-filtered trace correlates with each row's above ``threshold``.

    Parameters
    ----------
    x : numpy.ndarray
        ``(candidate, time)`` finite traces.
    threshold : float
        Pearson correlation threshold.
    block : int
        Rows per block (memory is ``O(block · n)``).
    workers : int, optional
        Threads for the per-row work (default: up to 2).
    bounds : (numpy.ndarray, numpy.ndarray), optional
        :func:`slow_part` of the unit rows, with :func:`bound_dims` coordinates, if
        already computed (the temporal pass does).

    Returns
    -------
    numpy.ndarray
        ``(candidate,)`` int64 counts.

    Notes
    -----
    The full unit rows (as large as the traces, in float32) are only made when many
    pairs are undecided; otherwise only those of the rows in undecided pairs.
    """
    n, n_t = x.shape
    counts = np.zeros(n, np.int64)
    if n < 2:
        return counts
    thr32 = np.float32(threshold)
    d = bound_dims(n_t)
    if d == 0:  # short traces: the full product is cheap
        z = _unit_rows32(x, workers=workers)
        for s in range(0, n, block):
            e = min(n, s + block)
            hit = (z[s:e] @ z[s:].T > thr32) & _upper(e - s, n - s)
            counts[s:e] += hit.sum(axis=1)
            counts[s:] += hit.sum(axis=0)
        return counts
    if bounds is None:
        low = np.empty((n, d), np.float32)
        rest = np.empty(n)

        def fill(sl: slice) -> None:
            low[sl], rest[sl] = slow_part(unit_rows(x[sl]), d)

        map_blocks(fill, n, block, workers)
    else:
        low, rest = bounds
    cap = max(1024, int(DENSE_SHARE * block * n))
    pi = np.empty(cap, np.int64)
    pj = np.empty(cap, np.int64)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    dense: list[int] = []  # row blocks with too many undecided pairs
    for s in range(0, n, block):
        e = min(n, s + block)
        n_maybe = _classify(low[s:e] @ low[s:].T, rest[s:e], rest[s:], s, float(threshold), TOL, counts, pi, pj)
        if n_maybe > 0:
            pairs.append((pi[:n_maybe].copy(), pj[:n_maybe].copy()))
        elif n_maybe < 0:
            dense.append(s)
    if dense:  # many undecided pairs: the full unit rows, and dense products over their columns
        z = _unit_rows32(x, workers=workers)
        for s in dense:
            e = min(n, s + block)
            cl = (low[s:e] @ low[s:].T).astype(np.float64)
            bound = rest[s:e, None] * rest[None, s:] + TOL
            maybe = (cl - bound <= threshold) & (cl + bound > threshold) & _upper(e - s, n - s)
            cols = np.flatnonzero(maybe.any(axis=0))
            hit = (z[s:e] @ z[s + cols].T > thr32) & maybe[:, cols]
            counts[s:e] += hit.sum(axis=1)
            counts[s + cols] += hit.sum(axis=0)
    else:
        z = None
    if pairs:
        pi_all = np.concatenate([p[0] for p in pairs])
        pj_all = np.concatenate([p[1] for p in pairs])
        if z is None:  # the unit rows of the candidates in undecided pairs only
            rows, inv = np.unique(np.r_[pi_all, pj_all], return_inverse=True)
            z = _unit_rows32(x, rows, workers)
            local = np.zeros(rows.size, np.int64)
            _pair_dots(z, inv[: pi_all.size], inv[pi_all.size :], pi_all.size, float(threshold), local)
            counts[rows] += local
        else:
            _pair_dots(z, pi_all, pj_all, pi_all.size, float(threshold), counts)
    return counts
