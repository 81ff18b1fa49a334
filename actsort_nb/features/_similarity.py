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

``d = n_t / 8`` (at most :data:`MAX_LOW`), so the bounds cost at most an eighth
of the full product; ``tol`` covers float32 rounding. On simulated recordings
(10,000 candidates × 8,192 frames) 1,443 of the 5·10⁷ pairs need the full
product. Where the slow part holds little of the power (white noise) most pairs
do, and the cost tends to 1.125× the plain product. Undecided pairs are computed
one by one when few and as dense block products when many.

Memory does not grow with the traces' length: the unit rows the exact check needs
are made block by block and held in memory up to :data:`EXACT_BYTES`, beyond that
in a temporary file read back in tiles of that size (:class:`_UnitRowStore`).
"""
from __future__ import annotations

import tempfile

import numpy as np
import scipy.fft
from numba import njit

from ._parallel import map_blocks
from ._trace_kernels import pow2_rows, unit_zscore

__all__ = ["bound_dims", "count_correlated", "slow_part", "unit_rows"]

#: Fraction of the time axis kept as the slow part (the bound's cost relative to the full product).
LOW_FRACTION = 8
#: Below this many slow coefficients the full product is cheaper than bounding it.
MIN_LOW = 64
#: At most this many slow coefficients (their memory, ``4 · MAX_LOW`` bytes per candidate, is flat in length).
MAX_LOW = 1024
#: Bytes of float32 unit rows the exact check holds at once (more go to a temporary file).
EXACT_BYTES = 2**27
#: Candidates per read of the traces when making unit rows.
READ_BLOCK = 256
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
def _pair_dots(za, zb, la, lb, ga, gb, threshold, counts):  # pragma: no cover - compiled
    """Exact dots of rows ``za[la[p]]``, ``zb[lb[p]]`` (float64 sums of float32); count those above ``threshold``.

    ``ga``/``gb`` are the pairs' candidate numbers, where ``counts`` is incremented.
    """
    n_t = za.shape[1]
    for p in range(la.shape[0]):
        i = la[p]
        j = lb[p]
        acc = 0.0
        for t in range(n_t):
            acc += np.float64(za[i, t]) * np.float64(zb[j, t])
        if acc > threshold:
            counts[ga[p]] += 1
            counts[gb[p]] += 1


def bound_dims(n_t: int) -> int:
    """Number of slow coordinates used to bound products of rows of length ``n_t`` (0: no bounds)."""
    d = min(n_t // LOW_FRACTION, MAX_LOW)
    return d if d >= MIN_LOW else 0


def unit_rows(x: np.ndarray) -> np.ndarray:
    """The unit rows ``z`` (float64) of traces ``x``: median-filtered, z-scored, divided by ``sqrt(n_t)``."""
    z = np.empty(x.shape)
    unit_zscore(pow2_rows(x)[0], z)
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


class _UnitRowStore:
    """float32 unit rows of ``x[rows]``, made block by block, read back as tiles of consecutive rows.

    Held in memory up to ``EXACT_BYTES``; beyond that written once to an anonymous
    temporary file (removed on close), so memory is one tile, whatever the length.
    """

    def __init__(self, x, rows: np.ndarray | None, workers: int | None):
        n_rows = x.shape[0] if rows is None else rows.size
        n_t = x.shape[1]
        self.shape = (n_rows, n_t)
        self.tile = max(1, EXACT_BYTES // (2 * 4 * n_t))  # rows per tile: two tiles in memory at once
        self._mem = None
        self._file = None
        if 4 * n_rows * n_t <= EXACT_BYTES:
            self._mem = np.empty(self.shape, np.float32)
        else:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close(), callers use try/finally
        n = x.shape[0]
        bounds = None if rows is None else np.searchsorted(rows, np.arange(0, n + READ_BLOCK, READ_BLOCK))

        def make(sl: slice) -> np.ndarray:  # the wanted rows of one block of candidates, read as a slice
            if rows is None:
                return unit_rows(x[sl]).astype(np.float32)
            want = rows[bounds[sl.start // READ_BLOCK] : bounds[sl.start // READ_BLOCK + 1]]
            if want.size == 0:
                return np.empty((0, n_t), np.float32)
            return unit_rows(x[sl][want - sl.start]).astype(np.float32)

        filled = 0
        for s in range(0, n, 2 * READ_BLOCK):  # two blocks at a time on the threads, stored in order
            for z in map_blocks(lambda sl, s=s: make(slice(s + sl.start, s + sl.stop)), min(2 * READ_BLOCK, n - s),
                                READ_BLOCK, workers):
                if self._mem is not None:
                    self._mem[filled : filled + z.shape[0]] = z
                else:
                    self._file.write(z.tobytes())
                filled += z.shape[0]

    def get(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` of the store (a view when in memory)."""
        if self._mem is not None:
            return self._mem[lo:hi]
        out = np.empty((hi - lo, self.shape[1]), np.float32)
        self._file.seek(4 * lo * self.shape[1])
        self._file.readinto(memoryview(out).cast("B"))
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _exact_pairs(x, pi: np.ndarray, pj: np.ndarray, threshold: float, counts: np.ndarray, workers: int | None) -> None:
    """Add to ``counts`` the listed pairs whose exact correlation is above ``threshold``, tile by tile."""
    rows, inv = np.unique(np.r_[pi, pj], return_inverse=True)
    store = _UnitRowStore(x, rows, workers)
    try:
        li, lj = inv[: pi.size], inv[pi.size :]
        lo, hi = np.minimum(li, lj), np.maximum(li, lj)
        ta, tb = lo // store.tile, hi // store.tile
        order = np.lexsort((tb, ta))
        lo, hi, ta, tb = lo[order], hi[order], ta[order], tb[order]
        starts = np.flatnonzero(np.r_[True, (ta[1:] != ta[:-1]) | (tb[1:] != tb[:-1])])
        n_rows = rows.size
        za, loaded = None, -1
        for s, e in zip(starts, np.r_[starts[1:], lo.size]):
            a, b = int(ta[s]), int(tb[s])
            if a != loaded:
                za, loaded = store.get(a * store.tile, min(n_rows, (a + 1) * store.tile)), a
            zb = za if b == a else store.get(b * store.tile, min(n_rows, (b + 1) * store.tile))
            _pair_dots(za, zb, lo[s:e] - a * store.tile, hi[s:e] - b * store.tile,
                       rows[lo[s:e]], rows[hi[s:e]], float(threshold), counts)
    finally:
        store.close()


def _exact_dense(x, dense: list[int], block: int, low, rest, threshold: float, counts: np.ndarray,
                 workers: int | None) -> None:
    """Add to ``counts`` the undecided pairs of the row blocks ``dense`` (many each), as tiled block products.

    Without bounds (``low`` None) every pair of the upper triangle is undecided.
    """
    n = x.shape[0]
    thr32 = np.float32(threshold)
    store = _UnitRowStore(x, None, workers)
    try:
        width = max(block, store.tile)
        for s in dense:
            e = min(n, s + block)
            zs = store.get(s, e)
            maybe = _upper(e - s, n - s)
            if low is not None:
                cl = (low[s:e] @ low[s:].T).astype(np.float64)
                bound = rest[s:e, None] * rest[None, s:] + TOL
                maybe &= (cl - bound <= threshold) & (cl + bound > threshold)
            for c in range(s, n, width):
                m = maybe[:, c - s : min(n, c + width) - s]
                cols = np.flatnonzero(m.any(axis=0))
                if cols.size == 0:
                    continue
                zc = store.get(c, c + int(cols[-1]) + 1)
                hit = (zs @ zc[cols].T > thr32) & m[:, cols]
                counts[s:e] += hit.sum(axis=1)
                counts[c + cols] += hit.sum(axis=0)
    finally:
        store.close()


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
    The unit rows of every candidate are only made when many pairs are undecided;
    otherwise only those of the rows in undecided pairs. Either way at most
    :data:`EXACT_BYTES` of them are in memory (:class:`_UnitRowStore`).
    """
    n, n_t = x.shape
    counts = np.zeros(n, np.int64)
    if n < 2:
        return counts
    d = bound_dims(n_t)
    if d == 0:  # short traces: the full product is cheap
        _exact_dense(x, list(range(0, n, block)), block, None, None, threshold, counts, workers)
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
    if dense:  # many undecided pairs: dense products over the unit rows of every candidate
        _exact_dense(x, dense, block, low, rest, threshold, counts, workers)
    if pairs:
        _exact_pairs(x, np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]),
                     threshold, counts, workers)
    return counts
