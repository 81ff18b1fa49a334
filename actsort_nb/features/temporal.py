"""Temporal features 1–36: what a candidate's trace alone says about it.

All functions take traces ``(candidate, time)`` and are vectorised across
candidates; only the peak finding (:func:`scipy.signal.find_peaks` and friends,
which work on one 1-D signal) loops over traces, never over the movie.

The normalised trace
--------------------
ActSort normalises with ``T / max(T)``, which is scale invariant but not offset
invariant: a trace that sits on a baseline of 100 with transients of 10 looks
flat, and an all-negative trace flips sign. Here every normalised quantity uses

``Tn = (T - b) / (max(T) - b)``, with ``b = median(T)`` the baseline,

so ``Tn`` is 0 at baseline and 1 at the highest point, and every feature is
invariant to both the scale and the offset of the trace (a tested property).
For traces with a zero baseline (EXTRACT's) this is ActSort's normalisation.
A flat trace (``max(T) == b``) has ``Tn = 0`` and every feature takes its
documented fallback; nothing here ever returns NaN or inf.

Noise level
-----------
``σ̂`` = the square root of the mean periodogram power over the upper half of
the positive frequencies (0.25–0.5 cycles/frame), an unbiased estimate of the
standard deviation of white noise that is blind to slow calcium transients.
(ActSort's ``get_trace_noise`` takes a geometric mean of Welch estimates, which
is biased low by a constant factor.)

Departures from ActSort, all documented where they are computed
----------------------------------------------------------------
* SNR (1) and the corruption (2) use the baseline-subtracted trace.
* One definition of a "good" peak (prominence ≥ max(0.5·q90(Tn), 0.1)) for
  features 3 and 5–11; ActSort uses three differently normalised traces.
  Local maxima with prominence < 1e-3 of the amplitude are not peaks.
* Peak spacing (5–7) is the mean gap ``(last − first)/(count − 1)``; ActSort
  divides by ``count``, and reports 0 when there is no peak, as if peaks were
  dense. Fewer than two peaks → the trace length.
* Event metrics (12–29): thresholds ``s·σ̂`` in the trace's own units (ActSort
  compares raw σ̂ with ``T/max(T)``); events are upward crossings of the smoothed
  trace.
* Band powers (30–34) of the baseline-subtracted trace with one-sided
  (Parseval) weights, so an offset is not power and bands partition the spectrum.
* The 3-frame median filter replicates the end frames instead of zero-padding.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage
import scipy.signal

from .._validation import InputError, check_ndim, check_numeric
from .registry import FEATURE_NAMES, FEATURES

__all__ = [
    "BANDS",
    "EVENT_SCALES",
    "TEMPORAL_NAMES",
    "medfilt3",
    "noise_level",
    "normalise",
    "temporal_features",
    "trace_similarity",
]

TEMPORAL_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.group == "temporal")
#: Thresholds of the event metrics (features 12–29) in units of the trace's noise σ̂.
EVENT_SCALES: tuple[int, ...] = (1, 3, 10, 30, 100, 300)
#: Spectral bands of features 30–34, as fractions of the Nyquist frequency.
BANDS: tuple[tuple[float, float], ...] = ((0, 0.05), (0.05, 0.95), (0.5, 1), (0, 0.5), (0.95, 1))
#: Pearson correlation above which another candidate's trace counts as similar (feature 35).
SIMILARITY_THRESHOLD = 0.7
#: σ̂ is floored at this fraction of the trace amplitude so that SNR stays finite.
NOISE_FLOOR = 1e-4
#: Local maxima with a prominence below this fraction of the trace amplitude are not
#: peaks: they are numerical dust that storage (e.g. the sort set's 16-bit traces) moves.
PEAK_MIN_PROMINENCE = 1e-3
#: Smoothing kernel applied (after a 3-frame median) before counting events (ActSort's).
_EVENT_KERNEL = np.array([0.1, 0.4, 1.0, 0.4, 0.1]) / 2.0

assert len(TEMPORAL_NAMES) == 36 and TEMPORAL_NAMES == FEATURE_NAMES[:36]


def _as_traces(traces) -> np.ndarray:
    check_ndim(traces, 2, "traces", dims=("candidate", "time"))
    check_numeric(traces, "traces")
    arr = np.asarray(traces)
    if arr.shape[1] < 3:
        raise InputError(f"traces need at least 3 time points for temporal features, got {arr.shape[1]}.")
    if not np.isfinite(arr).all():
        raise InputError("traces hold NaN or inf values; replace them (e.g. interpolate) before computing features.")
    return arr


def medfilt3(traces: np.ndarray) -> np.ndarray:
    """Three-frame running median along time, edges replicated.

    Vectorised over candidates (ActSort's ``medfilt1(T, 3)`` zero-pads the ends,
    which pulls a trace with a baseline down at both ends; replicating does not).

    Parameters
    ----------
    traces : numpy.ndarray
        ``(candidate, time)``.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype.

    Examples
    --------
    >>> medfilt3(np.array([[0.0, 5.0, 0.0, 1.0, 2.0]]))
    array([[0., 0., 1., 1., 2.]])
    """
    a = np.concatenate([traces[:, :1], traces[:, :-1]], axis=1)
    c = np.concatenate([traces[:, 1:], traces[:, -1:]], axis=1)
    lo = np.minimum(a, c)
    hi = np.maximum(a, c)
    return np.minimum(np.maximum(traces, lo), hi)


def noise_level(traces: np.ndarray) -> np.ndarray:
    """White-noise standard deviation ``σ̂`` of each trace from its high-frequency power.

    ``σ̂² = mean(|FFT(T)_k|² / n_t)`` over the bins with frequency in
    [0.25, 0.5] cycles/frame; for Gaussian white noise of s.d. σ its expectation is σ².

    Parameters
    ----------
    traces : numpy.ndarray
        ``(candidate, time)``.

    Returns
    -------
    numpy.ndarray
        ``(candidate,)`` float64, ≥ 0.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> float(np.round(noise_level(2.0 * rng.standard_normal((1, 20000)))[0], 1))
    2.0
    """
    x = np.asarray(traces, dtype=np.float64)
    n_t = x.shape[1]
    spec = np.fft.rfft(x, axis=1)
    f = np.fft.rfftfreq(n_t)
    sel = (f >= 0.25) & (f <= 0.5)
    if not sel.any():  # very short traces
        sel = f > 0
    power = spec[:, sel].real ** 2 + spec[:, sel].imag ** 2
    return np.sqrt(power.mean(axis=1) / n_t)


def normalise(traces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Baseline-subtracted, peak-normalised traces (see the module docstring).

    Parameters
    ----------
    traces : numpy.ndarray
        ``(candidate, time)``.

    Returns
    -------
    tn : numpy.ndarray
        ``(T - b) / (max(T) - b)`` as float64; 0 for flat traces.
    baseline : numpy.ndarray
        ``b = median(T)`` per candidate.
    amplitude : numpy.ndarray
        ``max(T) - b`` per candidate (0 for flat traces).

    Examples
    --------
    >>> tn, b, a = normalise(np.array([[10.0, 10.0, 12.0, 10.0]]))
    >>> tn.tolist(), b.tolist(), a.tolist()
    ([[0.0, 0.0, 1.0, 0.0]], [10.0], [2.0])
    """
    x = np.asarray(traces, dtype=np.float64)
    b = np.median(x, axis=1)
    amp = x.max(axis=1) - b
    scale = np.abs(x).max(axis=1)
    flat = amp <= 8 * np.finfo(np.float32).eps * np.maximum(scale, np.finfo(np.float64).tiny)
    amp = np.where(flat, 0.0, amp)
    tn = (x - b[:, None]) / np.where(flat, 1.0, amp)[:, None]
    tn[flat] = 0.0
    return tn, b, amp


def _quantile_rows(x: np.ndarray, q: float) -> np.ndarray:
    return np.quantile(x, q, axis=1)


def _top_decile_std(x: np.ndarray) -> np.ndarray:
    """Feature 4: std (ddof 1) of z-scored values at or above their 90th percentile."""
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, ddof=1, keepdims=True)
    z = np.where(sd > 0, (x - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    q = _quantile_rows(z, 0.9)[:, None]
    m = z >= q
    k = m.sum(axis=1)
    s1 = np.where(m, z, 0.0).sum(axis=1)
    mean = s1 / np.maximum(k, 1)
    ss = np.where(m, (z - mean[:, None]) ** 2, 0.0).sum(axis=1)
    return np.where(k > 1, np.sqrt(ss / np.maximum(k - 1, 1)), 0.0)


def _temporal_corruption(tb: np.ndarray, tm: np.ndarray) -> np.ndarray:
    """Feature 2 on baseline-subtracted traces; 0 where no frame is active."""
    mx = tm.max(axis=1, keepdims=True)
    valid = (tm > 0.3 * mx) & (mx > 0)
    den = np.maximum(tm, tb)
    ratio = np.abs(tb - tm) / np.where(valid, den, 1.0)
    k = valid.sum(axis=1)
    return np.where(k > 0, np.where(valid, ratio, 0.0).sum(axis=1) / np.maximum(k, 1), 0.0)


def _spacing(peaks: np.ndarray, n_t: int) -> float:
    """Mean spacing of peak positions; the trace length when fewer than two peaks."""
    if peaks.size < 2:
        return float(n_t)
    return float(peaks[-1] - peaks[0]) / (peaks.size - 1)


def _std(w: np.ndarray) -> float:
    k = w.size
    if k < 2:
        return 0.0
    d = w - w.sum() / k
    return float(np.sqrt(np.dot(d, d) / (k - 1)))


def _peak_features(tn: np.ndarray, tmm: np.ndarray) -> np.ndarray:
    """Features 3, 5–11 for each row; one ``find_peaks`` call per trace.

    Peaks are the local maxima of the normalised trace with a prominence of at least
    ``PEAK_MIN_PROMINENCE`` (ActSort counts every local maximum, however tiny, so
    its counts change when a trace is stored at lower precision). A peak is *good* when its
    prominence (in units of the trace amplitude) is at least
    ``max(0.5 * q90(Tn), 0.1)`` (ActSort's rule for feature 3); ActSort uses three
    differently normalised traces, hence three different "good" sets, for
    features 3, 5–7 and 8–11 — here one definition serves all of them. Widths
    are ActSort's "half height" widths on the min-max scaled trace ``tmm``
    (reference level: the trace minimum), bounded by the peak's prominence bases.
    """
    n, n_t = tn.shape
    out = np.zeros((n, 8))
    q90 = _quantile_rows(tn, 0.9)
    for i in range(n):
        x = tn[i]
        peaks, props = scipy.signal.find_peaks(x, prominence=PEAK_MIN_PROMINENCE)
        if peaks.size == 0:
            out[i] = (0, n_t, n_t, n_t, 0, 0, 0, 0)
            continue
        prom, lb, rb = props["prominences"], props["left_bases"], props["right_bases"]
        good = prom >= max(0.5 * q90[i], 0.1)
        h = tmm[i]
        w = scipy.signal.peak_widths(h, peaks, rel_height=0.5, prominence_data=(h[peaks], lb, rb))[0]
        wg = w[good]
        out[i] = (
            peaks.size - good.sum(),
            _spacing(peaks[good], n_t),
            _spacing(peaks[~good], n_t),
            _spacing(peaks, n_t),
            w.sum(),
            wg.sum(),
            _std(w),
            _std(wg),
        )
    return out


def _event_metrics(tn: np.ndarray, sigma_n: np.ndarray) -> np.ndarray:
    """Features 12–29: for each scale s, threshold ``s·σ̂`` on the normalised trace.

    ActSort compares the *normalised* trace ``T/max(T)`` with the *raw* noise σ̂
    (a unit error that makes the thresholds depend on the trace's scale) and
    counts events with a second, max-relative threshold. Here the threshold is
    ``s · σ̂ / amplitude`` on ``Tn``, i.e. ``T − b ≥ s·σ̂`` in the trace's own
    units, and an event is an upward crossing of that threshold by the smoothed
    trace (3-frame median, then ActSort's [.1 .4 1 .4 .1] kernel).
    """
    n = tn.shape[0]
    sq = tn**2
    total = sq.sum(axis=1)
    smooth = medfilt3(tn)
    smooth = scipy.ndimage.convolve1d(smooth, _EVENT_KERNEL, axis=1, mode="nearest")
    out = np.zeros((n, 3 * len(EVENT_SCALES)))
    for j, s in enumerate(EVENT_SCALES):
        thr = (s * sigma_n)[:, None]
        above = tn >= thr
        out[:, 3 * j] = np.where(total > 0, np.where(above, sq, 0.0).sum(axis=1) / np.where(total > 0, total, 1), 0)
        out[:, 3 * j + 1] = above.mean(axis=1)
        sa = smooth >= thr
        out[:, 3 * j + 2] = sa[:, 0] + (sa[:, 1:] & ~sa[:, :-1]).sum(axis=1)
    return out


def _band_power(tb: np.ndarray) -> np.ndarray:
    """Features 30–34: fraction of (one-sided, Parseval-weighted) power per band.

    Frequencies are fractions of the Nyquist frequency; bands are half-open
    ``[lo, hi)`` except that ``hi = 1`` includes the Nyquist bin, so
    ``[0, .5) + [.5, 1] = 1``. The baseline-subtracted trace is used, so an offset
    does not put all the power at DC (ActSort uses the raw trace).
    """
    n_t = tb.shape[1]
    spec = np.fft.rfft(tb, axis=1)
    p = spec.real**2 + spec.imag**2
    wgt = np.full(p.shape[1], 2.0)
    wgt[0] = 1.0
    if n_t % 2 == 0:
        wgt[-1] = 1.0
    p *= wgt
    f = np.fft.rfftfreq(n_t) * 2.0  # fraction of Nyquist
    total = p.sum(axis=1)
    out = np.zeros((tb.shape[0], len(BANDS)))
    for j, (lo, hi) in enumerate(BANDS):
        sel = (f >= lo) & ((f < hi) | (hi >= 1))
        out[:, j] = np.where(total > 0, p[:, sel].sum(axis=1) / np.where(total > 0, total, 1), 0.0)
    return out


def _zscore_unit(tm: np.ndarray) -> np.ndarray:
    """Rows z-scored (ddof 0) and divided by sqrt(n_t): unit norm, or 0 if flat."""
    mu = tm.mean(axis=1, keepdims=True)
    sd = tm.std(axis=1, keepdims=True)
    ok = sd > 8 * np.finfo(np.float32).eps * np.maximum(np.abs(mu), np.finfo(np.float32).tiny)
    return np.where(ok, (tm - mu) / np.where(ok, sd, 1.0), 0.0) / np.sqrt(tm.shape[1])


def _spike_fluorescence(z: np.ndarray) -> np.ndarray:
    """Feature 36: sum of the unit-norm z-scored smoothed trace at or above its 99th percentile."""
    q = _quantile_rows(z, 0.99)[:, None]
    return np.where(z >= q, z, 0.0).sum(axis=1)


def trace_similarity(traces, *, threshold: float = SIMILARITY_THRESHOLD, block: int = 2048) -> np.ndarray:
    """Feature 35: fraction of *other* candidates whose smoothed trace correlates > ``threshold``.

    Traces are median-filtered (3 frames), z-scored and correlated in blocks
    (float32 matrix products over the upper triangle only), so memory stays
    ``O(block · n)`` and never ``n × n``.

    Parameters
    ----------
    traces : array-like
        ``(candidate, time)``.
    threshold : float
        Correlation threshold (ActSort: 0.7).
    block : int
        Candidates per block.

    Returns
    -------
    numpy.ndarray
        ``(candidate,)`` float64 in [0, 1]; 0 when there is a single candidate.

    Examples
    --------
    >>> t = np.random.default_rng(0).standard_normal((3, 100))
    >>> trace_similarity(np.vstack([t, t[:1]])).tolist()
    [0.3333333333333333, 0.0, 0.0, 0.3333333333333333]
    """
    x = _as_traces(traces)
    n = x.shape[0]
    counts = np.zeros(n, np.int64)
    if n < 2:
        return np.zeros(n)
    z = np.empty(x.shape, np.float32)
    for s in range(0, n, block):
        xb = np.asarray(x[s : s + block], np.float64)
        z[s : s + block] = _zscore_unit(medfilt3(xb))
    for s in range(0, n, block):
        e = min(n, s + block)
        c = z[s:e] @ z[s:].T  # rows s..e against columns s..n
        hit = c > threshold
        # the diagonal block: drop self-pairs, count each pair once per side
        d = np.arange(e - s)
        hit[d, d] = False
        counts[s:e] += hit.sum(axis=1)
        counts[e:] += hit[:, e - s :].sum(axis=0)
    return counts / (n - 1)


def temporal_features(traces, *, block: int = 2048, similarity: bool = True) -> np.ndarray:
    """Features 1–36 of every trace, in registry order.

    Parameters
    ----------
    traces : array-like
        ``(candidate, time)`` float traces (finite).
    block : int
        Candidates processed at a time (bounds memory).
    similarity : bool
        Compute feature 35 (``trace_similarity``), the only one that compares
        candidates with each other; if False it is 0.

    Returns
    -------
    numpy.ndarray
        ``(candidate, 36)`` float32, finite. Column ``j`` is ``TEMPORAL_NAMES[j]``.

    Notes
    -----
    Fallbacks for undefined cases (no NaN ever leaves): no active frames → 0
    (corruption); fewer than two peaks → spacing = trace length; no peaks → width
    sums and stds 0; zero total power → power fractions 0; σ̂ floored at
    ``1e-4 ×`` amplitude (so a noiseless transient has a large, finite SNR); flat
    trace → everything 0 except the spacings (trace length).

    Examples
    --------
    >>> t = np.zeros((2, 200)); t[0, 50:60] = 1.0
    >>> f = temporal_features(t)
    >>> f.shape, f.dtype, bool(np.isfinite(f).all())
    ((2, 36), dtype('float32'), True)
    """
    x = _as_traces(traces)
    n = x.shape[0]
    out = np.zeros((n, 36), np.float32)
    for s in range(0, n, block):
        xb = np.asarray(x[s : s + block], np.float64)
        tn, b, amp = normalise(xb)
        tb = xb - b[:, None]
        tm = medfilt3(tb)
        sigma = noise_level(xb)
        sigma = np.maximum(sigma, NOISE_FLOOR * amp)
        sigma_n = np.where(amp > 0, sigma / np.where(amp > 0, amp, 1.0), 1.0)
        mn = xb.min(axis=1, keepdims=True)
        rng = xb.max(axis=1, keepdims=True) - mn
        tmm = np.where(rng > 0, (xb - mn) / np.where(rng > 0, rng, 1.0), 0.0)
        flat = amp <= 0

        o = np.zeros((xb.shape[0], 36))
        o[:, 0] = np.where(flat, 0.0, tm.max(axis=1) / (np.sqrt(2.0) * np.where(sigma > 0, sigma, 1.0)))
        o[:, 1] = _temporal_corruption(tb, tm)
        pk = _peak_features(tn, tmm)
        o[:, 2] = pk[:, 0]
        o[:, 3] = _top_decile_std(xb)
        o[:, 4:11] = pk[:, 1:]
        o[:, 11:29] = _event_metrics(tn, sigma_n)
        o[:, 29:34] = _band_power(tb)
        o[:, 35] = _spike_fluorescence(_zscore_unit(medfilt3(xb)))
        out[s : s + block] = o
    if similarity:
        out[:, 34] = trace_similarity(x, block=block)
    return out
