"""Compiled (numba) inner loops of the streaming pass, bit-identical to the numpy reference.

numba comes with ``sparse`` (a core dependency). The kernels release the GIL, so the
pass's worker threads run them truly in parallel, and they are cached on disk
(``cache=True``), so only the first run after an install pays the compilation.

* :func:`requantise` — the per-candidate re-quantisation of
  :func:`actsort_nb.preprocess.stream.quantise_snapshots`, in place, same arithmetic,
  with the candidate's noise estimate (:func:`_clip_noise`) setting the coarsest step.
* :func:`chunk_moments` — a time chunk's summary moments, band by band in cache, and
  the records' crops: each band's share copied while the band is there, then each
  crop quantised to uint8 with its own range in one pass instead of numpy's gather,
  float copy, min, max, subtract, scale, round, clip and scatter (each a full pass);
  same float32/float64 operations in the same order as
  :func:`actsort_nb.preprocess.stream._quantise_records`, so the bytes are equal.
* :func:`top_events_traces` — :func:`actsort_nb.preprocess.events.top_events`: each
  trace prepared in a row buffer, then its peaks visited highest first; the frames of
  ``scipy.signal.find_peaks`` + ActSort's separation rule (:func:`top_events_block`
  is the search alone, which the tests hold to scipy). Its s.d. is summed in order,
  not pairwise as numpy does (last-bit differences in the prominence threshold).

No ``fastmath`` except in :func:`chunk_moments`: the other kernels' float rounding must
match numpy's exactly (no FMA contraction, no re-association).
"""
# The loops spell min/max as comparisons on purpose: numba's builtin min/max carry
# Python's NaN semantics and vectorise worse (measured).
# ruff: noqa: FURB136, PLR1730
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["chunk_moments", "merge_moments", "requantise", "top_events_block", "top_events_traces"]


_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23: adding and subtracting it rounds half to even


@njit(inline="always")
def _round_clip(x):  # pragma: no cover - compiled
    """``uint8(clip(rint(x), 0, 255))`` for a float32 (clipping first gives the same result).

    The magic-number rounding is exact for ``0 <= x <= 255`` and, unlike a call
    to ``rint``, vectorises. NaN gives 0.
    """
    x = x if x > 0 else np.float32(0)
    x = x if x < 255 else np.float32(255)
    return np.uint8(np.int32((x + _MAGIC) - _MAGIC))


@njit(inline="always")
def _gather_rows(block, r0, r1, frame, origin, size, stage):  # pragma: no cover - compiled
    """Copy the rows ``[r0, r1)`` of every record's crop from ``block`` into ``stage``."""
    for r in range(frame.shape[0]):
        y0 = origin[r, 0]
        a = y0 if y0 > r0 else r0
        b = y0 + size if y0 + size < r1 else r1
        if a >= b:
            continue
        t = frame[r]
        x0 = origin[r, 1]
        for y in range(a, b):
            src = block[t, y, x0 : x0 + size]
            dst = stage[r, y - y0]
            for j in range(size):
                dst[j] = src[j]


@njit(nogil=True, cache=True)
def _quantise_staged(stage, dest, dest_row, lo_out, scale_out, check_nan):  # pragma: no cover - compiled
    m, size, _ = stage.shape
    for r in range(m):
        crop = stage[r]
        mn = crop[0, 0]
        mx = mn
        for i in range(size):
            for j in range(size):
                v = crop[i, j]
                mn = v if v < mn else mn
                mx = v if v > mx else mx
        mn = np.float32(mn)
        mx = np.float32(mx)
        if check_nan:  # min/max skip NaN; numpy's propagate it
            for i in range(size):
                for j in range(size):
                    if np.isnan(crop[i, j]):
                        mn = np.float32(np.nan)
                        mx = np.float32(np.nan)
        a = np.float64(mn)
        sc = (np.float64(mx) - a) / 255.0
        inv = np.float32(1.0 / (sc if sc > 0 else 1.0))
        a32 = np.float32(a)
        d = dest_row[r]
        for i in range(size):
            dst = dest[d, i]
            for j in range(size):
                dst[j] = _round_clip((np.float32(crop[i, j]) - a32) * inv)
        lo_out[d] = a
        scale_out[d] = sc


def _native_dtype(dtype) -> np.dtype:
    """The dtype the kernels take for ``dtype``: native-endian ints/floats, half floats and bools as float32."""
    dt = np.dtype(dtype)
    if not dt.isnative or dt.kind not in "iuf" or (dt.kind == "f" and dt.itemsize < 4):
        return np.dtype(np.float32) if dt.kind in "fb" else dt.newbyteorder("=")
    return dt


def _native(block: np.ndarray) -> np.ndarray:
    """``block`` in :func:`_native_dtype` and C order."""
    return np.ascontiguousarray(block, dtype=_native_dtype(block.dtype))


def _records(frame, t0, origin, dest_row):
    return (np.ascontiguousarray(np.asarray(frame, dtype=np.int64) - np.int64(t0)),
            np.ascontiguousarray(origin, dtype=np.int64), np.ascontiguousarray(dest_row, dtype=np.int64))


#: 1 / (Φ⁻¹(3/4) · √2): turns the median absolute difference of two independent
#: Gaussian samples into their standard deviation.
_MAD_DIFF_TO_SD = 1.0 / (0.6744897501960817 * np.sqrt(2.0))
#: Consecutive-frame differences sampled per candidate for its noise estimate.
NOISE_SAMPLES = 2048


@njit(nogil=True, cache=True)
def _clip_noise(clips, lo, scale, present, c, buf):  # pragma: no cover - compiled
    """Robust noise s.d. of candidate ``c``'s clips: MAD of consecutive-frame differences.

    Samples about ``len(buf)`` pixel differences spread evenly (a fixed stride through
    every present event's frame pairs and pixels, so the sampled pixels move from one
    pair to the next) and returns ``median(|diff|) / (0.6745·√2)``; 0 if there is none.
    """
    n_ev = clips.shape[1]
    n_f = clips.shape[2]
    sy = clips.shape[3]
    sx = clips.shape[4]
    npx = sy * sx
    pairs = 0
    for e in range(n_ev):
        if present[c, e]:
            pairs += n_f - 1
    total = pairs * npx
    if total <= 0:
        return 0.0
    stride = (total + buf.shape[0] - 1) // buf.shape[0]
    m = 0
    g = 0
    for e in range(n_ev):
        if not present[c, e]:
            continue
        for f in range(n_f - 1):
            a0 = lo[c, e, f]
            s0 = scale[c, e, f]
            a1 = lo[c, e, f + 1]
            s1 = scale[c, e, f + 1]
            p = (stride - g % stride) % stride
            while p < npx and m < buf.shape[0]:
                i = p // sx
                j = p - i * sx
                v0 = np.float64(clips[c, e, f, i, j]) * s0 + a0
                v1 = np.float64(clips[c, e, f + 1, i, j]) * s1 + a1
                buf[m] = abs(v1 - v0)
                m += 1
                p += stride
            g += npx
    if m == 0:
        return 0.0
    return np.median(buf[:m]) * _MAD_DIFF_TO_SD


@njit(nogil=True, cache=True)
def _requantise(clips, lo, scale, present, c0, c1, scale_out, offset_out, noise_step, noise_out):  # pragma: no cover - compiled
    n_ev = clips.shape[1]
    n_f = clips.shape[2]
    sy = clips.shape[3]
    sx = clips.shape[4]
    buf = np.empty(NOISE_SAMPLES)
    for c in range(c0, c1):
        low = np.inf
        high = -np.inf
        for e in range(n_ev):
            if present[c, e]:
                for f in range(n_f):
                    a = lo[c, e, f]
                    b = a + 255.0 * scale[c, e, f]
                    if a < low:
                        low = a
                    if b > high:
                        high = b
        has = np.isfinite(low)
        if not has:
            low = 0.0
        sc = (high - low) / 255.0 if (has and high > low) else 1.0
        sigma = 0.0
        if has and high > low and noise_step > 0:
            sigma = _clip_noise(clips, lo, scale, present, c, buf)
            floor = noise_step * sigma
            if floor > sc:  # steps finer than the noise only encode noise
                sc = floor
        noise_out[c] = sigma
        for e in range(n_ev):
            ok = present[c, e]
            for f in range(n_f):
                if ok:
                    gain = np.float32(scale[c, e, f] / sc)
                    shift = np.float32((lo[c, e, f] - low) / sc)
                else:
                    gain = np.float32(0.0)
                    shift = np.float32(0.0)
                for i in range(sy):
                    row = clips[c, e, f, i]
                    for j in range(sx):
                        x = np.float32(row[j]) * gain
                        row[j] = _round_clip(x + shift)
        scale_out[c] = np.float32(sc)
        offset_out[c] = np.float32(low)


def requantise(clips, lo, scale, present, c0, c1, scale_out, offset_out, noise_step: float = 0.0, noise_out=None) -> None:
    """Re-quantise candidates ``c0 .. c1`` of ``clips`` in place to one scale each (see ``quantise_snapshots``).

    The scale is ``max(range / 255, noise_step · σ)`` with ``σ`` the candidate's noise
    estimated from its clips (:func:`_clip_noise`), written to ``noise_out[c]`` when
    given; ``noise_step=0`` skips the estimate (pure range quantisation).
    """
    if noise_out is None:
        noise_out = np.zeros(clips.shape[0])
    _requantise(clips, lo, scale, np.ascontiguousarray(present, dtype=np.bool_), np.int64(c0), np.int64(c1), scale_out,
                offset_out, float(noise_step), noise_out)


@njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def _band_moments(block, r0, r1, mx, mean, m2, c0, c1, c2, c3):  # pragma: no cover - compiled
    n_t, h, w = block.shape
    re = min(h, r1 + 1)  # one halo row below the band, for the downward neighbours
    nr = re - r0
    k = r1 - r0
    s = np.zeros((nr, w), np.float64)
    m = block[0, r0:re].copy()
    for t in range(n_t):
        for i in range(nr):
            src = block[t, r0 + i]
            si = s[i]
            mi = m[i]
            for j in range(w):
                si[j] += src[j]
            for j in range(w):
                mi[j] = np.maximum(mi[j], src[j])  # NaN propagates; vectorises (an ``if`` does not)
    mu = np.empty((nr, w), np.float32)
    for i in range(nr):
        for j in range(w):
            mm = s[i, j] / n_t
            mu[i, j] = np.float32(mm)
            if i < k:
                mean[r0 + i, j] = mm
                mx[r0 + i, j] = m[i, j]
    a2 = np.zeros((nr, w), np.float32)
    a0 = np.zeros((nr, w), np.float32)
    a1 = np.zeros((nr, w), np.float32)
    ad = np.zeros((nr, w), np.float32)
    aa = np.zeros((nr, w), np.float32)
    d = np.empty((nr, w), np.float32)
    # One accumulator per loop: with several, LLVM's alias checks give up and the
    # loop stays scalar (3x slower, measured).
    for t in range(n_t):
        for i in range(nr):
            src = block[t, r0 + i]
            di = d[i]
            mui = mu[i]
            for j in range(w):
                di[j] = np.float32(src[j]) - mui[j]
            if i < k:
                x2 = a2[i]
                for j in range(w):
                    x2[j] += di[j] * di[j]
                x0 = a0[i]
                for j in range(w - 1):
                    x0[j] += di[j] * di[j + 1]
            if i > 0:
                up = d[i - 1]
                y1 = a1[i - 1]
                for j in range(w):
                    y1[j] += up[j] * di[j]
                y2 = ad[i - 1]
                for j in range(w - 1):
                    y2[j] += up[j] * di[j + 1]
                y3 = aa[i - 1]
                for j in range(w - 1):
                    y3[j] += up[j + 1] * di[j]
    for i in range(k):
        m2[r0 + i] = a2[i]
        c0[r0 + i] = a0[i, : w - 1]
        if r0 + i < h - 1:
            c1[r0 + i] = a1[i]
            c2[r0 + i] = ad[i, : w - 1]
            c3[r0 + i] = aa[i, : w - 1]


@njit(nogil=True, cache=True)
def _chunk_moments(block, rows, mx, mean, m2, c0, c1, c2, c3, frame, origin, size, stage):  # pragma: no cover - compiled
    h = block.shape[1]
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        _band_moments(block, r0, r1, mx, mean, m2, c0, c1, c2, c3)
        _gather_rows(block, r0, r1, frame, origin, size, stage)  # the band is still in cache


def chunk_moments(block: np.ndarray, rows: int, records: tuple | None = None, stage: np.ndarray | None = None) -> dict:
    """A time chunk's per-pixel max, mean, centred squares and forward co-moments.

    Works through bands of ``rows`` image rows (plus one halo row) so each band's
    frames stay in the CPU cache across its two passes: the per-pixel sum and max
    (float64, exact for integer movies), then, with ``d = float32(x) − float32(mean)``,
    the float32 sums over time of ``d²`` and of ``d`` times its right, down,
    down-right and down-left neighbour — the numpy form (``einsum``) up to float32
    rounding (``fastmath={"contract"}``: FMA; NaN semantics kept), ~3.5× faster.

    Parameters
    ----------
    block : numpy.ndarray
        ``(time, y, x)`` frames.
    rows : int
        Image rows per band.
    records : tuple, optional
        ``(t0, frame, origin, size, dest, dest_row, lo_out, scale_out)``: also quantise
        the crops of records ``r`` (movie ``frame[r]``, origin ``origin[r]``) into
        ``dest[dest_row[r]]`` (uint8, distinct rows: threads may fill disjoint records
        of one ``dest``) with ``lo_out``/``scale_out`` (value ≈ q · scale + lo), copying
        each band's share of the crops while the band is in cache (4 → ~2.5 ns per crop
        pixel on the benchmark: crops cut straight from a 32 MB chunk wait on memory).
    stage : numpy.ndarray, optional
        A reusable buffer for the records' raw crops (at least ``(record, size, size)``
        of the block's dtype after :func:`_native_dtype`; allocated per call otherwise).

    Returns
    -------
    dict
        ``n``, ``max`` (the block's dtype, or float32 for non-native/half/bool input),
        ``mean`` (float64), ``m2`` and ``co``: the centred squares and the 4 co-moment
        arrays (right, down, down-right, down-left; float32, as summed) as in
        :class:`..stream.Moments`.
    """
    block = _native(block)
    n_t, h, w = block.shape
    mean = np.empty((h, w))
    f4 = np.float32  # the band loop sums these in float32: storing them wider would only cost the merge
    m2 = np.empty((h, w), f4)
    co = (np.empty((h, w - 1), f4), np.empty((h - 1, w), f4), np.empty((h - 1, w - 1), f4), np.empty((h - 1, w - 1), f4))
    mx = np.empty((h, w), block.dtype)
    if records is not None and len(records[1]):
        t0, frame, origin, size, dest, dest_row, lo_out, scale_out = records
        frame, origin, dest_row = _records(frame, t0, origin, dest_row)
        if stage is None or stage.dtype != block.dtype or stage.shape[1:] != (size, size) or len(stage) < len(frame):
            stage = np.empty((len(frame), size, size), block.dtype)
        stage = stage[: len(frame)]
    else:
        size, frame, origin, stage = 1, np.zeros(0, np.int64), np.zeros((0, 2), np.int64), np.zeros((0, 1, 1), block.dtype)
    if n_t:
        _chunk_moments(block, np.int64(max(1, rows)), mx, mean, m2, *co, frame, origin, np.int64(size), stage)
    if len(stage):
        _quantise_staged(stage, dest, dest_row, lo_out, scale_out, block.dtype.kind == "f")
    return {"n": n_t, "max": mx, "mean": mean, "m2": m2, "co": co}


@njit(nogil=True, cache=True)
def _merge_moments(mean, m2, c0, c1, c2, c3, pmean, pm2, p0, p1, p2, p3, f, w):  # pragma: no cover - compiled
    h, wd = mean.shape
    delta = pmean - mean
    for i in range(h):
        for j in range(wd):
            d = delta[i, j]
            mean[i, j] += d * f
            m2[i, j] += pm2[i, j] + d * d * w
    for i in range(h):
        for j in range(wd - 1):
            c0[i, j] += p0[i, j] + delta[i, j] * delta[i, j + 1] * w
    for i in range(h - 1):
        for j in range(wd):
            c1[i, j] += p1[i, j] + delta[i, j] * delta[i + 1, j] * w
        for j in range(wd - 1):
            c2[i, j] += p2[i, j] + delta[i, j] * delta[i + 1, j + 1] * w
            c3[i, j] += p3[i, j] + delta[i, j + 1] * delta[i + 1, j] * w


def merge_moments(mean, m2, co, part_mean, part_m2, part_co, f: float, w: float) -> None:
    """Chan et al.'s pairwise merge in place, fused (same operations as the numpy form).

    ``mean += δ·f``, ``m2 += m2_b + δ²·w`` and, for each forward neighbour pair
    ``(p, q)``, ``co += co_b + δ_p·δ_q·w`` with ``δ = mean_b − mean`` (old mean).
    """
    _merge_moments(mean, m2, *co, part_mean, part_m2, *part_co, float(f), float(w))


@njit(inline="always")
def _before(height, peaks, a, b):  # pragma: no cover - compiled
    """Peak ``a`` comes before peak ``b``: higher, or as high and earlier."""
    return height[a] > height[b] or (height[a] == height[b] and peaks[a] < peaks[b])


@njit(inline="always")
def _prominent(row, peak, thr):  # pragma: no cover - compiled
    """scipy's ``_peak_prominences`` (no ``wlen``) ``>= thr``, as a test.

    ``thr <= top - max(left_min, right_min)`` holds iff each side (within the peak's
    basin, up to the first higher sample) has a value ``v`` with ``thr <= top - v``
    (``fl(top - v)`` is monotone in ``v``), so each scan stops at the first such ``v``.
    """
    n = row.shape[0]
    top = row[peak]
    j = peak
    while True:
        if j < 0 or row[j] > top:
            return False
        if thr <= top - row[j]:
            break
        j -= 1
    j = peak
    while True:
        if j > n - 1 or row[j] > top:
            return False
        if thr <= top - row[j]:
            return True
        j += 1


@njit(inline="always")
def _local_maxima(row, flag, peaks):  # pragma: no cover - compiled
    """scipy's ``_local_maxima_1d`` (a plateau's peak is its middle), unordered; returns the count.

    Strict peaks are flagged in a loop that vectorises and gathered without a branch;
    plateaus entered from below (rare in measured traces) are then walked as scipy does.
    """
    n = row.shape[0]
    plateaus = 0
    for i in range(1, n - 1):
        flag[i] = (row[i - 1] < row[i]) & (row[i] > row[i + 1])
    for i in range(1, n - 1):
        plateaus += (row[i - 1] < row[i]) & (row[i] == row[i + 1])
    m = 0
    for i in range(1, n - 1):
        peaks[m] = i
        m += flag[i]
    if plateaus:
        for i in range(1, n - 1):
            if (row[i - 1] < row[i]) & (row[i] == row[i + 1]):
                ahead = i + 1
                while ahead < n - 1 and row[ahead] == row[i]:
                    ahead += 1
                if row[ahead] < row[i]:
                    peaks[m] = (i + ahead - 1) // 2
                    m += 1
    return m


#: Peaks of a trace put in order at a time, highest first (the next batch only if needed).
_BATCH = 32


@njit(inline="always")
def _row_events(row, thr, min_distance, out, flag, peaks, height, batch):  # pragma: no cover - compiled
    n_keep = out.shape[0]
    m = _local_maxima(row, flag, peaks)
    for k in range(m):
        height[k] = row[peaks[k]]
    # events._separated over the prominent peaks, highest first (ties: earliest):
    # a peak is kept iff it is prominent and farther than min_distance from every
    # peak kept before it, so peaks are visited in that order and only those not
    # already excluded by distance are tested for prominence, until n_keep are kept.
    # The order comes in batches: the _BATCH highest peaks after the last one
    # visited, by insertion (almost every peak fails the first comparison).
    kept = 0
    last = -1
    while kept < n_keep:
        top = 0
        floor = -np.inf  # height of the lowest peak in a full batch
        for k in range(m):
            h = height[k]
            if h < floor:
                continue
            if last >= 0 and not _before(height, peaks, last, k):
                continue  # visited already
            if top == _BATCH and not _before(height, peaks, k, batch[top - 1]):
                continue
            j = min(top, _BATCH - 1)
            while j > 0 and _before(height, peaks, k, batch[j - 1]):
                batch[j] = batch[j - 1]
                j -= 1
            batch[j] = k
            top = min(top + 1, _BATCH)
            if top == _BATCH:
                floor = height[batch[top - 1]]
        if top == 0:
            break
        for i in range(top):
            p = peaks[batch[i]]
            near = False
            for q in range(kept):
                if abs(p - out[q]) <= min_distance:
                    near = True
                    break
            if not near and _prominent(row, p, thr):
                out[kept] = p
                kept += 1
                if kept == n_keep:
                    break
        last = batch[top - 1]
    if kept == 0:
        # no prominent peak at all (a peak near a kept one implies one was kept)
        out[0] = np.argmax(row)


@njit(nogil=True, cache=True)
def _top_events(x, prominence, min_distance, out):  # pragma: no cover - compiled
    n = x.shape[1]
    flag = np.zeros(max(n, 1), np.uint8)
    peaks = np.empty(n, np.int64)
    height = np.empty(n, np.float64)
    batch = np.empty(_BATCH, np.int64)
    for r in range(x.shape[0]):
        _row_events(x[r], prominence[r], min_distance, out[r], flag, peaks, height, batch)


@njit(nogil=True, cache=True)
def _top_events_traces(traces, edge, min_distance, out):  # pragma: no cover - compiled
    n = traces.shape[1]
    row = np.empty(n, np.float64)
    flag = np.zeros(max(n, 1), np.uint8)
    peaks = np.empty(n, np.int64)
    height = np.empty(n, np.float64)
    batch = np.empty(_BATCH, np.int64)
    for r in range(traces.shape[0]):
        src = traces[r]
        for j in range(n):
            row[j] = np.float64(src[j])
        for j in range(n):
            if not np.isfinite(row[j]):
                return r
        for j in range(min(edge, n)):
            row[j] = 0.0
        for j in range(max(edge, n - edge), n):
            row[j] = 0.0
        lo = row[0]
        for j in range(n):
            lo = row[j] if row[j] < lo else lo
        if lo < 0:
            for j in range(n):
                row[j] -= lo
        mean = 0.0
        for j in range(n):
            mean += row[j]
        mean /= n
        ss = 0.0
        for j in range(n):
            d = row[j] - mean
            ss += d * d
        thr = np.sqrt(ss / (n - 1)) if n > 1 else 0.0  # MATLAB's std (ActSort's find_spikes.m): N - 1
        _row_events(row, thr if thr > 1e-300 else 1e-300, min_distance, out[r], flag, peaks, height, batch)
    return -1


def top_events_traces(traces, edge: int, min_distance: float, out) -> int:
    """:func:`actsort_nb.preprocess.events.top_events` on raw ``(rows, time)`` traces, one row at a time.

    Each row is prepared as ActSort does (float64, the first and last ``edge`` frames
    zeroed, shifted non-negative, prominence threshold = its s.d., summed in order
    rather than numpy's pairwise order) in a buffer of one row, then searched with
    the same loop as :func:`top_events_block`. ``out`` ``(rows, n_events)`` int32
    prefilled with -1. Returns the first row holding NaN/inf (stopping there), or -1.
    """
    x = np.asarray(traces)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    return int(_top_events_traces(np.ascontiguousarray(x), np.int64(edge), float(min_distance), out))


def top_events_block(x, prominence, min_distance: float, out) -> None:
    """The peak search of :func:`top_events_traces` on traces already prepared, with given thresholds.

    What the tests hold to ``scipy.signal.find_peaks`` + the separation rule (same
    frames). ``x`` ``(rows, time)`` float64 prepared traces, ``prominence`` ``(rows,)``
    thresholds, ``out`` ``(rows, n_events)`` int32 prefilled with -1.
    """
    _top_events(np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(prominence, dtype=np.float64),
                float(min_distance), out)

