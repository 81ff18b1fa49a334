"""Temporal features 1–36: what a candidate's trace alone says about it.

All functions take traces ``(candidate, time)``. The spectra are batched FFTs;
everything else is one compiled pass per trace (:mod:`._trace_kernels`, with
:mod:`scipy.signal`'s peak finding ported to :mod:`._peaks`) over blocks of traces
run in threads; feature 35 compares traces pairwise (:mod:`._similarity`).

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

Departures from ActSort (each stated with its feature in :func:`._trace_kernels.trace_features`)
-----------------------------------------------------------------------------------------------
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
import scipy.fft

from .._memory import release_free_memory
from .._validation import InputError, check_ndim, check_numeric
from ._parallel import map_blocks
from ._similarity import bound_dims, count_correlated, slow_part
from ._trace_kernels import pow2_rows, spectrum_sums, trace_features
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
#: Traces per block of the compiled pass (a few MB of float64 per block) ...
BLOCK = 256
#: ... and at most this many bytes per float64 copy, so memory does not grow with the length.
BLOCK_BYTES = 2**23

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
    x = traces if hasattr(traces, "shape") and hasattr(traces, "__getitem__") else np.asarray(traces)
    sigma = np.empty(x.shape[0])
    for s in range(0, x.shape[0], BLOCK):
        xs, e = pow2_rows(x[s : s + BLOCK])
        sigma[s : s + BLOCK] = np.ldexp(_spectrum(xs)[0], e)
    return sigma


def _bins(n_t: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray, np.ndarray]:
    """rfft bin ranges: the noise bins (0.25–0.5 cycles/frame) and each band of :data:`BANDS` without DC.

    Returns ``(noise_lo, noise_hi)``, ``band_lo``, ``band_hi`` and whether each band holds the DC bin.
    """
    f = np.fft.rfftfreq(n_t)
    sel = (f >= 0.25) & (f <= 0.5)
    if not sel.any():  # very short traces
        sel = f > 0
    k = np.flatnonzero(sel)
    fn = f * 2.0  # fraction of Nyquist
    lo, hi, dc = [], [], []
    for b_lo, b_hi in BANDS:
        kb = np.flatnonzero((fn >= b_lo) & ((fn < b_hi) | (b_hi >= 1)))
        kb_ac = kb[kb > 0]
        lo.append(kb_ac[0] if kb_ac.size else 1)
        hi.append(kb_ac[-1] + 1 if kb_ac.size else 1)
        dc.append(bool(kb.size and kb[0] == 0))
    return (int(k[0]), int(k[-1]) + 1), np.array(lo, np.int64), np.array(hi, np.int64), np.array(dc)


def _spectrum(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(σ̂, ac)`` of a block of traces from one float64 rfft (see :func:`._trace_kernels.spectrum_sums`)."""
    n_t = xb.shape[1]
    spec = scipy.fft.rfft(np.asarray(xb, np.float64), axis=1)
    (n_lo, n_hi), b_lo, b_hi, _ = _bins(n_t)
    sigma = np.empty(xb.shape[0])
    ac = np.empty((xb.shape[0], len(BANDS) + 1))
    spectrum_sums(spec, n_t, n_lo, n_hi, b_lo, b_hi, sigma, ac)
    return sigma, ac


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


def trace_similarity(
    traces, *, threshold: float = SIMILARITY_THRESHOLD, block: int = 512, workers: int | None = None
) -> np.ndarray:
    """Feature 35: fraction of *other* candidates whose smoothed trace correlates > ``threshold``.

    Traces are median-filtered (3 frames) and z-scored; a pair's Pearson correlation
    is the dot product of the (float32) unit rows, computed only for the pairs that
    cheap exact bounds cannot place on one side of the threshold
    (:mod:`._similarity`). Memory stays ``O(block · n)`` plus the unit rows of the
    undecided pairs' candidates (at most as large as the traces in float32), never ``n × n``.

    Parameters
    ----------
    traces : array-like
        ``(candidate, time)``.
    threshold : float
        Correlation threshold (ActSort: 0.7).
    block : int
        Candidates per block.
    workers : int, optional
        Threads (default: up to 2).

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
    if block < 1:
        raise InputError(f"block must be a positive number of candidates, got {block}.")
    n = x.shape[0]
    if n < 2:
        return np.zeros(n)
    return count_correlated(x, threshold, block, workers) / (n - 1)


def _temporal_block(xb: np.ndarray, similarity: bool):
    """Features (35 left 0), noise σ̂ and (for feature 35) the bounds of a block of traces."""
    xb, e = pow2_rows(xb)  # float64: one compiled version of the kernels, and the FFT wants it
    sigma, ac = _spectrum(xb)
    out = np.zeros((xb.shape[0], 36))
    unit = np.empty(xb.shape)
    has_dc = _bins(xb.shape[1])[3]
    scales = np.array(EVENT_SCALES, np.float64)
    trace_features(xb, sigma, ac, has_dc, scales, NOISE_FLOOR, PEAK_MIN_PROMINENCE, out, unit)
    d = bound_dims(xb.shape[1])
    return out, np.ldexp(sigma, e), slow_part(unit, d) if similarity and d else None


def temporal_and_noise(x: np.ndarray, *, block: int = BLOCK, similarity: bool = True, workers: int | None = None):
    """Features 1–36 and the noise σ̂ of each trace (which :func:`noise_level` would compute again).

    ``x`` is a checked ``(candidate, time)`` array (see :func:`temporal_features`).
    """
    n, n_t = x.shape
    block = min(block, max(16, BLOCK_BYTES // (8 * n_t)))
    parts = map_blocks(lambda sl: _temporal_block(x[sl], similarity), n, block, workers)
    out = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 36))
    sigma = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    if similarity and n > 1:
        release_free_memory()  # the blocks' temporaries, before the pairwise pass
        bounds = None
        if parts[0][2] is not None:
            bounds = (np.concatenate([p[2][0] for p in parts]), np.concatenate([p[2][1] for p in parts]))
        out[:, 34] = count_correlated(x, SIMILARITY_THRESHOLD, workers=workers, bounds=bounds) / (n - 1)
    return out.astype(np.float32), sigma


def temporal_features(traces, *, block: int = BLOCK, similarity: bool = True, workers: int | None = None) -> np.ndarray:
    """Features 1–36 of every trace, in registry order.

    Parameters
    ----------
    traces : array-like
        ``(candidate, time)`` float traces (finite).
    block : int
        Traces per block of the compiled pass (bounds memory; fewer for long
        traces, at most :data:`BLOCK_BYTES` per float64 copy).
    similarity : bool
        Compute feature 35 (``trace_similarity``), the only one that compares
        candidates with each other; if False it is 0.
    workers : int, optional
        Threads over blocks of traces (default: up to 2).

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
    trace (``max(T) == median(T)``) → everything 0 except the spacings (trace length)
    and ``spike_fluorescence``, which z-scores the raw trace: 0 for a constant trace,
    but a trace at its maximum most of the time with dips below keeps that variance.

    Examples
    --------
    >>> t = np.zeros((2, 200)); t[0, 50:60] = 1.0
    >>> f = temporal_features(t)
    >>> f.shape, f.dtype, bool(np.isfinite(f).all())
    ((2, 36), dtype('float32'), True)
    """
    x = _as_traces(traces)
    if block < 1:
        raise InputError(f"block must be a positive number of candidates, got {block}.")
    return temporal_and_noise(x, block=block, similarity=similarity, workers=workers)[0]
