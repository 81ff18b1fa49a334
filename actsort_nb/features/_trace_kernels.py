"""Compiled (numba) per-trace loops of the temporal features.

One call handles a block of traces; each trace is read once into a few cache-sized
scratch rows and every per-trace statistic of :mod:`.temporal` is computed from them
(the numpy formulation made ~30 passes over ``(block, time)`` float64 arrays, plus a
Python-level :func:`scipy.signal.find_peaks` per trace). The kernels release the GIL,
so blocks run in parallel threads, and are cached on disk (``cache=True``; numba's
cache does not notice edits to the functions imported from :mod:`._peaks` and
:mod:`._select`: after editing those, delete ``features/__pycache__/*.nb*``).

The arithmetic is the numpy code's, operation by operation (same quantile rule as
``np.quantile``'s ``"linear"``, same median, same 3-frame median filter, same
symmetric 5-tap smoothing as :func:`scipy.ndimage.convolve1d`, same peak finding as
:mod:`scipy.signal`, see :mod:`._peaks`); only sums are accumulated in a different
order (sequentially or in four partial sums rather than pairwise), which moves
results by a few float64 ulps. No ``fastmath``.
"""
# min/max are spelled as comparisons on purpose: numba's builtin min/max carry Python's
# NaN semantics and vectorise worse (as in actsort_nb/preprocess/_kernels.py).
# ruff: noqa: FURB136
from __future__ import annotations

import numpy as np
from numba import njit

from ._peaks import local_maxima, peak_bases, peak_width
from ._select import N_BINS, order_stats

__all__ = ["pow2_rows", "spectrum_sums", "trace_features", "unit_zscore"]

_EPS32 = float(np.finfo(np.float32).eps)
_TINY32 = float(np.finfo(np.float32).tiny)
_TINY64 = float(np.finfo(np.float64).tiny)
#: Smoothing of the event counts: [.1 .4 1 .4 .1] / 2, the centre and the two symmetric taps.
_W0, _W1, _W2 = 1.0 / 2.0, 0.4 / 2.0, 0.1 / 2.0


def pow2_rows(xb) -> tuple[np.ndarray, np.ndarray]:
    """A float64 copy of ``xb``, each row scaled by a power of two to a max ``|value|`` in [0.5, 1); and the exponents.

    The scaling is exact, so every feature (all are scale invariant) and σ̂ (scaled back
    with ``np.ldexp(σ̂, e)``) are those of the rows as given, bit for bit, while no
    square overflows (traces of 1e300) or underflows (of 1e-300). All-zero rows stay.
    """
    x = np.array(xb, np.float64)
    e = np.frexp(np.maximum(x.max(axis=1), -x.min(axis=1)))[1]  # max |x| = m 2**e, 0.5 <= m < 1
    if (np.abs(e) < 1000).all():
        x *= np.ldexp(1.0, -e)[:, None]  # a normal power of two: the faster way
    else:
        np.ldexp(x, -e[:, None], out=x)
    return x, e



@njit(inline="always")
def _med3(a, b, c):  # pragma: no cover - compiled
    lo = a if a < c else c
    hi = c if a < c else a
    m = b if b > lo else lo
    return m if m < hi else hi


@njit(nogil=True, cache=True)
def _medfilt3(x, out):  # pragma: no cover - compiled
    """Three-frame running median, ends replicated (as :func:`.temporal.medfilt3`)."""
    n = x.shape[0]
    for j in range(n):
        a = x[j - 1] if j > 0 else x[0]
        c = x[j + 1] if j < n - 1 else x[n - 1]
        out[j] = _med3(a, x[j], c)


@njit(nogil=True, cache=True)
def _smooth5(x, out):  # pragma: no cover - compiled
    """``scipy.ndimage.convolve1d(x, [.1, .4, 1, .4, .1] / 2, mode="nearest")``, same operation order."""
    n = x.shape[0]
    for j in range(n):
        if 2 <= j < n - 2:
            v = x[j] * _W0
            v += (x[j - 2] + x[j + 2]) * _W2
            v += (x[j - 1] + x[j + 1]) * _W1
        else:
            v = x[j] * _W0
            v += (x[max(j - 2, 0)] + x[min(j + 2, n - 1)]) * _W2
            v += (x[max(j - 1, 0)] + x[min(j + 1, n - 1)]) * _W1
        out[j] = v


@njit(inline="always")
def _lerp(a, b, g):  # pragma: no cover - compiled
    """numpy's ``_lerp`` (the ``"linear"`` quantile's interpolation)."""
    d = b - a
    if g >= 0.5:
        return b - d * (1.0 - g)
    return a + d * g


@njit(inline="always")
def _rank(n, q):  # pragma: no cover - compiled
    """``np.quantile``'s ``"linear"`` rule: lower order statistic and interpolation weight."""
    v = (n - 1) * q
    lo = int(np.floor(v))
    if v >= n - 1:
        return n - 1, 0.0
    return lo, v - lo


@njit(inline="always")
def _sum(x, lo, hi):  # pragma: no cover - compiled
    """``sum(x[lo:hi])`` with four interleaved partial sums (a single one waits on every add)."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    k = lo
    while k + 4 <= hi:
        s0 += x[k]
        s1 += x[k + 1]
        s2 += x[k + 2]
        s3 += x[k + 3]
        k += 4
    while k < hi:
        s0 += x[k]
        k += 1
    return (s0 + s1) + (s2 + s3)


@njit(nogil=True, cache=True)
def _mean_std(x, ddof):  # pragma: no cover - compiled
    n = x.shape[0]
    mu = _sum(x, 0, n) / n
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    j = 0
    while j + 4 <= n:
        d0 = x[j] - mu
        d1 = x[j + 1] - mu
        d2 = x[j + 2] - mu
        d3 = x[j + 3] - mu
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
        j += 4
    while j < n:
        d0 = x[j] - mu
        s0 += d0 * d0
        j += 1
    return mu, np.sqrt(((s0 + s1) + (s2 + s3)) / (n - ddof))


@njit(nogil=True, cache=True)
def _spacing(pos, k, n_t):  # pragma: no cover - compiled
    if k < 2:
        return np.float64(n_t)
    return np.float64(pos[k - 1] - pos[0]) / (k - 1)


@njit(nogil=True, cache=True)
def _sum_std(w, k):  # pragma: no cover - compiled
    s = 0.0
    for j in range(k):
        s += w[j]
    if k < 2:
        return s, 0.0
    mean = s / k
    ss = 0.0
    for j in range(k):
        d = w[j] - mean
        ss += d * d
    return s, np.sqrt(ss / (k - 1))


@njit(nogil=True, cache=True)
def spectrum_sums(spec, n_t, noise_lo, noise_hi, band_lo, band_hi, sigma, ac):  # pragma: no cover - compiled
    """Noise σ̂ and one-sided band powers from each row's ``rfft``.

    ``sigma[i] = sqrt(mean(|spec[i, noise_lo:noise_hi]|²) / n_t)`` and, without the DC
    bin (it depends on the baseline, see :func:`trace_features`), ``ac[i, j]`` the
    Parseval-weighted power in bins ``band_lo[j]:band_hi[j]`` and ``ac[i, -1]`` the total.
    """
    m, nf = spec.shape
    n_b = band_lo.shape[0]
    p = np.empty(nf)
    for i in range(m):
        for k in range(nf):
            v = spec[i, k]
            p[k] = v.real * v.real + v.imag * v.imag
        sigma[i] = np.sqrt(_sum(p, noise_lo, noise_hi) / (noise_hi - noise_lo) / n_t)
        # one-sided weights: every bin counts twice but DC (excluded here) and, for even n_t, Nyquist
        for k in range(1, nf if n_t % 2 == 1 else nf - 1):
            p[k] *= 2.0
        for j in range(n_b):
            ac[i, j] = _sum(p, band_lo[j], band_hi[j])
        ac[i, n_b] = _sum(p, 1, nf)


@njit(nogil=True, cache=True)
def unit_zscore(x, out):  # pragma: no cover - compiled
    """Rows of ``x`` median-filtered (3 frames), z-scored (ddof 0) and divided by ``sqrt(n_t)``.

    As :func:`.temporal.medfilt3` then ``_zscore_unit``: unit-norm rows, 0 for flat ones.
    Rows must not square to overflow (or underflow): pass them through :func:`pow2_rows`.
    """
    m, n = x.shape
    row = np.empty(n)
    tm = np.empty(n)
    root = np.sqrt(np.float64(n))
    for i in range(m):
        for j in range(n):
            row[j] = x[i, j]
        _medfilt3(row, tm)
        mu, sd = _mean_std(tm, 0)
        if sd > 8 * _EPS32 * max(abs(mu), _TINY32):
            for j in range(n):
                out[i, j] = ((tm[j] - mu) / sd) / root
        else:
            for j in range(n):
                out[i, j] = 0.0


@njit(nogil=True, cache=True)
def trace_features(x, sigma_raw, ac, band_has_dc, scales, noise_floor, min_prominence, out, unit):  # pragma: no cover - compiled
    """Temporal features 1–34 and 36 of each row of ``x`` into ``out[:, :36]`` (column 35 untouched).

    ``sigma_raw``, ``ac`` come from :func:`spectrum_sums`; ``band_has_dc[j]`` says
    whether band ``j`` starts at frequency 0; ``scales`` are ascending. ``unit``
    (same shape as ``x``, float64) receives the unit rows of :func:`unit_zscore`,
    which feature 36 is made of and feature 35 compares. Squares of the values must
    not overflow (nor the relevant ones underflow): :mod:`.temporal` passes rows scaled
    by powers of two to a max ``|value|`` in [0.5, 1). With ``b`` the median,
    ``Tn = (T - b) / (max(T) - b)`` (see :mod:`.temporal`):

    * 1 SNR: ``max(medfilt3(T - b)) / (√2 σ̂)``, σ̂ floored at ``noise_floor`` × amplitude.
    * 2 corruption: mean ``|Tb − Tm| / max(Tm, Tb)`` over the frames where
      ``Tm = medfilt3(T − b) > 0.3 max(Tm)``; 0 where none.
    * 3, 5–11 peaks: the local maxima of ``Tn`` with a prominence of at least
      ``min_prominence`` (ActSort counts every local maximum, however tiny, so its
      counts change when a trace is stored at lower precision). A peak is *good*
      when its prominence (in units of the amplitude) is at least
      ``max(0.5 q90(Tn), 0.1)`` (ActSort's rule for feature 3; ActSort uses three
      differently normalised traces, hence three "good" sets, for features 3,
      5–7 and 8–11 — here one definition serves all). Widths are ActSort's "half
      height" widths on the min-max scaled trace (reference level: the trace
      minimum), bounded by the peak's prominence bases.
    * 4: std (ddof 1) of the z-scored values at or above their 90th percentile;
      0 for a flat trace (those values are its maximum, to float32 precision).
    * 12–29 for each scale ``s``: the threshold is ``s σ̂ / amplitude`` on ``Tn``,
      i.e. ``T − b ≥ s σ̂`` in the trace's own units (ActSort compares the
      normalised trace with the raw σ̂, a unit error that makes the thresholds
      depend on the trace's scale, and counts events with a second, max-relative
      threshold): power fraction and fraction of frames at or above it, and the
      number of upward crossings by the smoothed ``Tn`` (3-frame median, then
      ActSort's [.1 .4 1 .4 .1] / 2 kernel, ends replicated).
    * 30–34: fraction of the one-sided (Parseval-weighted) power of ``T − b`` per
      band of the Nyquist frequency; bands are half-open ``[lo, hi)`` except that
      ``hi = 1`` includes the Nyquist bin, so ``[0, .5) + [.5, 1] = 1`` (ActSort
      uses the raw trace, whose offset puts power at DC); 0 for a flat trace.
    * 36: sum of the unit rows' values at or above their 99th percentile.
    """
    m, n = x.shape
    v = np.empty(n)  # the row as float64
    buf = np.empty(n)  # scratch of the order statistics
    buf2 = np.empty(n)
    counts = np.empty(N_BINS, np.int64)
    counts2 = np.empty(N_BINS, np.int64)
    tn = np.empty(n)  # (T - b) / amplitude
    tmm = np.empty(n)  # min-max scaled
    tb = np.empty(n)  # T - b
    tm = np.empty(n)  # medfilt3(T - b), later medfilt3(T)
    med = np.empty(n)  # medfilt3(tn)
    sm = np.empty(n)  # ... smoothed
    zs = np.empty(n)  # z-scored row (feature 4)
    half = max(n // 2, 1)
    prom = np.empty(half)
    l_base = np.empty(half, np.int64)
    r_base = np.empty(half, np.int64)
    scratch = np.empty((6, half + 2))
    mid = np.empty(half, np.int64)
    pk = np.empty(half, np.int64)
    pk_good = np.empty(half, np.int64)
    pk_bad = np.empty(half, np.int64)
    w_all = np.empty(half)
    w_good = np.empty(half)
    n_s = scales.shape[0]
    thr = np.empty(n_s)
    level_power = np.empty(n_s + 1)  # sums of tn² over the frames at each level (number of thresholds reached)
    level_count = np.empty(n_s + 1, np.int64)
    events = np.empty(n_s, np.int64)
    # ranks: the median's (two for even n), the 90th percentile's pair; the 99th's pair
    k90, g90 = _rank(n, 0.9)
    k99, g99 = _rank(n, 0.99)
    ranks = np.array([(n - 1) // 2, n // 2, k90, min(k90 + 1, n - 1)])
    ranks99 = np.array([k99, min(k99 + 1, n - 1)])
    stats = np.empty(4)
    for i in range(m):
        mx = -np.inf
        mn = np.inf
        absmax = 0.0
        for j in range(n):
            a = np.float64(x[i, j])
            v[j] = a
            mx = a if a > mx else mx
            mn = a if a < mn else mn
            aa = abs(a)
            absmax = aa if aa > absmax else absmax
        order_stats(v, mn, mx, ranks, stats, counts, counts2, buf, buf2)
        b = stats[1] if n % 2 == 1 else (stats[0] + stats[1]) / 2.0  # np.median
        x90_lo = stats[2]
        x90_hi = stats[3]

        # normalisation (normalise()), noise floor, min-max scaling
        amp = mx - b
        flat = amp <= 8 * _EPS32 * max(absmax, _TINY64)
        if flat:
            amp = 0.0
        div = 1.0 if flat else amp
        sigma = max(sigma_raw[i], noise_floor * amp)
        sigma_n = sigma / amp if amp > 0 else 1.0
        rng = mx - mn
        for j in range(n):
            tb[j] = v[j] - b
        if flat:
            tn[:] = 0.0
        else:
            for j in range(n):
                tn[j] = (v[j] - b) / div
        if rng > 0:
            for j in range(n):
                tmm[j] = (v[j] - mn) / rng
        else:
            tmm[:] = 0.0
        _medfilt3(tb, tm)

        # 1 SNR and 2 temporal corruption
        tmax = -np.inf
        for j in range(n):
            tmax = tm[j] if tm[j] > tmax else tmax
        out[i, 0] = 0.0 if flat else tmax / (np.sqrt(2.0) * (sigma if sigma > 0 else 1.0))
        s = 0.0
        k = 0
        if tmax > 0:
            for j in range(n):
                if tm[j] > 0.3 * tmax:
                    den = tm[j] if tm[j] > tb[j] else tb[j]
                    s += abs(tb[j] - tm[j]) / den
                    k += 1
        out[i, 1] = s / k if k > 0 else 0.0

        # 3, 5-11 peaks of tn (prominence >= min_prominence); widths on tmm
        q90 = 0.0 if flat else _lerp((x90_lo - b) / div, (x90_hi - b) / div, g90)
        good_level = max(0.5 * q90, 0.1)
        n_max = local_maxima(tn, mid)
        peak_bases(tn, mid, n_max, prom, l_base, r_base, scratch)
        n_pk = 0
        n_good = 0
        n_bad = 0
        for c in range(n_max):
            p = mid[c]
            if prom[c] >= min_prominence:
                w = peak_width(tmm, p, tmm[p], l_base[c], r_base[c], 0.5)
                pk[n_pk] = p
                w_all[n_pk] = w
                n_pk += 1
                if prom[c] >= good_level:
                    pk_good[n_good] = p
                    w_good[n_good] = w
                    n_good += 1
                else:
                    pk_bad[n_bad] = p
                    n_bad += 1
        out[i, 2] = n_bad
        out[i, 4] = _spacing(pk_good, n_good, n)
        out[i, 5] = _spacing(pk_bad, n_bad, n)
        out[i, 6] = _spacing(pk, n_pk, n)
        out[i, 7], out[i, 9] = _sum_std(w_all, n_pk)
        out[i, 8], out[i, 10] = _sum_std(w_good, n_good)

        # 4 std of the z-scored values at or above their 90th percentile
        mu, sd = _mean_std(v, 1)
        out[i, 3] = 0.0  # sd == 0: every z is 0 (and so is their std)
        if sd > 0 and not flat:  # a flat trace's top decile is its maximum (to float32 precision)
            for j in range(n):  # a loop of its own, so that the divisions vectorise
                zs[j] = (v[j] - mu) / sd
            q = _lerp((x90_lo - mu) / sd, (x90_hi - mu) / sd, g90)
            s1 = 0.0
            k = 0
            for j in range(n):
                top = zs[j] >= q
                s1 += zs[j] if top else 0.0
                k += top
            mean = s1 / max(k, 1)
            ss = 0.0
            for j in range(n):
                d = zs[j] - mean
                ss += d * d if zs[j] >= q else 0.0
            out[i, 3] = np.sqrt(ss / max(k - 1, 1)) if k > 1 else 0.0

        # 12-29 event metrics: thresholds s * sigma on tn; events = upward crossings by the smoothed tn.
        # A frame's level is the number of (ascending) thresholds it reaches.
        _medfilt3(tn, med)
        _smooth5(med, sm)
        for c in range(n_s):
            thr[c] = scales[c] * sigma_n
            events[c] = 0
        for c in range(n_s + 1):
            level_power[c] = 0.0
            level_count[c] = 0
        total = 0.0
        prev = 0
        for j in range(n):
            t = tn[j]
            sq = t * t
            total += sq
            lv = 0
            up = 0
            for c in range(n_s):
                lv += t >= thr[c]
                up += sm[j] >= thr[c]
            level_power[lv] += sq
            level_count[lv] += 1
            if up > prev:
                for c in range(prev, up):
                    events[c] += 1
            prev = up
        pw = 0.0
        cnt = 0
        for c in range(n_s - 1, -1, -1):
            pw += level_power[c + 1]
            cnt += level_count[c + 1]
            out[i, 11 + 3 * c] = pw / total if total > 0 else 0.0
            out[i, 12 + 3 * c] = cnt / n
            out[i, 13 + 3 * c] = events[c]

        # 30-34 band powers of T - b: the spectrum's AC part plus the DC bin of T - b. A flat trace's
        # spectrum is rounding noise (the FFT of a constant is not 0 off DC), so its fractions are 0,
        # as are those of any total below a quarter of the least a non-flat trace has: by
        # Parseval total = n sum((T - b)^2) >= n amp^2 > n (8 eps32 absmax)^2.
        dc = 0.0
        for j in range(n):
            dc += tb[j]
        dc = dc * dc
        n_bands = band_has_dc.shape[0]
        total = ac[i, n_bands] + dc
        quiet = flat or np.sqrt(total / n) <= 4 * _EPS32 * absmax
        for c in range(n_bands):
            pb = ac[i, c] + (dc if band_has_dc[c] else 0.0)
            out[i, 29 + c] = 0.0 if quiet else pb / total

        # 36 spike fluorescence: unit-norm z-scored medfilt3(T) at or above its 99th percentile
        _medfilt3(v, tm)
        mu, sd = _mean_std(tm, 0)
        sf = 0.0  # a flat row: every z is 0
        if sd > 8 * _EPS32 * max(abs(mu), _TINY32):
            root = np.sqrt(np.float64(n))
            for j in range(n):
                unit[i, j] = ((tm[j] - mu) / sd) / root
            lo = tm[0]
            hi = tm[0]
            for j in range(n):
                lo = tm[j] if tm[j] < lo else lo
                hi = tm[j] if tm[j] > hi else hi
            order_stats(tm, lo, hi, ranks99, stats, counts, counts2, buf, buf2)
            q = _lerp(((stats[0] - mu) / sd) / root, ((stats[1] - mu) / sd) / root, g99)
            for j in range(n):
                u = unit[i, j]
                sf += u if u >= q else 0.0
        else:
            for j in range(n):
                unit[i, j] = 0.0
        out[i, 35] = sf
