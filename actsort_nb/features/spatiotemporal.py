"""Spatiotemporal features 47–76: does the movie around a candidate's events look like its footprint × its trace?

They are computed, like ActSort's, from the candidate's event snapshots only — the
``E`` clips of ``F`` frames of a fixed ``(cy, cx)`` crop around its top events
(``E·F`` frames in all, ActSort's ``M_cell``), the crop of its footprint
(``S_cell``) and the matching trace snippets (``T_cell``) — never from the movie.
Everything that touches the pixels is one compiled pass per candidate over its
clips (:mod:`._clip_kernels`), run over blocks of candidates in threads; what
follows it is array code over ``(candidate, frame)``. Missing events
(``event_frame == -1``) are left out of every sum, quantile and fit.

Choices that differ from ActSort, and why
-----------------------------------------
* **Baseline.** ActSort's statistics assume a movie and traces with a zero
  baseline (EXTRACT's ΔF). Snapshots here are raw movie values, so each pixel's
  baseline — the mean of the first two frames of the candidate's clips (4–5
  frames before each event peak) — is subtracted from the clips, and likewise
  for the trace snippets. A clip that is exactly footprint × trace stays rank one.
* **Units.** ActSort compares the trace with movie projections as if both had
  the same units (true only for EXTRACT). Here the trace snippets are first
  scaled by the least-squares gain that best matches the footprint projection
  of the clips, so the residual ratios (52–66) measure a mismatch of shape, not
  of units.
* **ε (47–50).** EXTRACT's one-sided Huber solver with its adaptive κ/ε
  fixed-point iteration (30 Newton steps per candidate) is replaced by a cheaper
  estimator of the same quantity, the per-frame fraction ``ε`` of footprint
  pixels carrying positive activity that the footprint × trace model does not
  explain: two iterations of the one-sided Huber fit of each frame with a
  fixed ``κ = 1`` (EXTRACT's typical κ), noise σ from the normalised MAD of the
  least-squares residuals, then ``ε̂ = (f − q)/(1 − q)`` clipped to [0, 1], where
  ``f`` is the fraction of core pixels (weight > 0.1) whose residual exceeds
  ``2σ`` and ``q = 1 − Φ(2)`` the Gaussian share of that tail. Counting at 2σ
  rather than at κ keeps ε̂ nearly unbiased despite the small biases of σ̂ and
  of the Huber fit (the tests check that it recovers a planted contamination
  fraction within 0.05); it costs a few array passes per block of candidates.
  Mean, min, 10th and 20th percentile over the valid frames, as ActSort.
* **TQM (67–76)** uses a true Pearson correlation between the footprint and each
  frame over the footprint's support (ActSort divides by the un-centred frame
  norm, which shrinks the score when a frame has an offset).
* **Undefined cases** get defined values, never NaN: no valid event/frame → 0;
  no frame above the ratio threshold (TQM) → 0; no trace activity above noise
  (corr_score) → 0; no active frame in any event (residual ratios) → 0.
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from .._validation import InputError
from ._clip_kernels import B1, B2, EPS, PROJ, SB, T_OUT, clip_statistics
from ._parallel import map_blocks
from .registry import FEATURE_NAMES, FEATURES

__all__ = [
    "SPATIOTEMPORAL_NAMES",
    "block_features",
    "masked_quantiles",
    "spatiotemporal_features",
    "trace_snippets",
]

SPATIOTEMPORAL_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.group == "spatiotemporal")
assert len(SPATIOTEMPORAL_NAMES) == 30 and SPATIOTEMPORAL_NAMES == FEATURE_NAMES[46:]

#: One-sided Huber threshold (units of noise σ) of the robust fit (EXTRACT's κ ≈ 1).
KAPPA = 1.0
#: Residuals above this many σ count as unexplained activity in ε̂. At 2σ the Gaussian
#: share is 2.3 %, so ε̂ hardly depends on the small biases of σ̂ and of the fit
#: (at κ = 1 it is 16 %, and a 0.25σ fit bias alone would move ε̂ by 0.06).
COUNT_KAPPA = 2.0
#: Huber iterations of the ε estimator (the fit settles after one or two).
EPS_ITERATIONS = 2
#: Peak-normalised footprint weight defining the "core" pixels of the ε estimator.
CORE_LEVEL = 0.1
#: ActSort's thresholds: footprint mask, trace activity (× max), noise multiple of the trace.
S_MASK_LEVEL = 0.01
T_MASK_LEVEL = 0.5
T_NOISE_MULTIPLE = 3 * np.sqrt(2)
#: Gaussian widths (pixels) of the near (corr_score) and far (surround) neighbourhoods.
NEAR_SIGMA = 3.0
FAR_SIGMA = 6.0
#: Frames at the start of each clip used as the per-pixel baseline.
BASELINE_FRAMES = 2
RESIDUAL_QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)
TQM_RATIOS = tuple(np.round(np.arange(0, 1, 0.1), 1))
_MAD = 0.6744897501960817


def masked_quantiles(x: np.ndarray, valid: np.ndarray, qs) -> np.ndarray:
    """Quantiles of each row over its valid entries, MATLAB's ``quantile`` rule.

    MATLAB (and ``numpy`` ``method="hazen"``) place the ``i``-th of ``m`` sorted
    values at probability ``(i − 0.5)/m`` and interpolate linearly, clamping
    outside. Rows without a valid entry give 0.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, k)`` values.
    valid : numpy.ndarray
        ``(n, k)`` bool.
    qs : sequence of float
        Probabilities in [0, 1].

    Returns
    -------
    numpy.ndarray
        ``(n, len(qs))``.

    Examples
    --------
    >>> masked_quantiles(np.array([[1.0, 2.0, 3.0, 9.0]]), np.array([[1, 1, 1, 0]], bool), [0, 0.5, 1])
    array([[1., 2., 3.]])
    """
    xs = np.sort(np.where(valid, x, np.inf), axis=1)
    m = valid.sum(axis=1)
    out = np.zeros((x.shape[0], len(qs)))
    has = m > 0
    mm = np.maximum(m, 1)[:, None]
    h = np.clip(np.asarray(qs, float)[None, :] * mm + 0.5, 1, mm)  # 1-based position
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, mm)
    frac = h - lo
    vlo = np.take_along_axis(xs, lo - 1, axis=1)
    vhi = np.take_along_axis(xs, hi - 1, axis=1)
    with np.errstate(invalid="ignore"):
        val = vlo + frac * np.where(frac > 0, vhi - vlo, 0.0)
    out[has] = val[has]
    return out


def trace_snippets(traces: np.ndarray, event_frame: np.ndarray, n_frames: int = 11) -> np.ndarray:
    """Trace values around each event: ``(candidate, event, frame)``, ±``n_frames // 2``.

    Indices are clamped to the trace; rows of missing events (``-1``) are 0.

    Examples
    --------
    >>> trace_snippets(np.arange(20.0)[None], np.array([[10, -1]]), 3)
    array([[[ 9., 10., 11.],
            [ 0.,  0.,  0.]]])
    """
    traces = np.asarray(traces)
    ev = np.asarray(event_frame)
    half = n_frames // 2
    idx = np.clip(ev[:, :, None] + np.arange(-half, n_frames - half)[None, None, :], 0, traces.shape[1] - 1)
    out = np.take_along_axis(traces[:, None, :], idx, axis=2).astype(np.float64)
    out[ev < 0] = 0.0
    return out


def _noise_from_diffs(x: np.ndarray, valid_events: np.ndarray) -> np.ndarray:
    """Robust white-noise σ from within-clip frame differences: ``median|Δx| / (0.6745·√2)``.

    ``x`` is ``(n, E, F, ...)``; missing events are excluded.
    """
    n = x.shape[0]
    d = np.abs(np.diff(x, axis=2)).reshape(n, x.shape[1], -1)
    out = np.zeros(n)
    full = valid_events.all(axis=1)
    if full.any():
        out[full] = np.median(d[full].reshape(int(full.sum()), -1), axis=1)
    for i in np.flatnonzero(~full & valid_events.any(axis=1)):  # few candidates miss events
        out[i] = np.median(d[i][valid_events[i]])
    return out / (_MAD * np.sqrt(2))


def _gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """``(size, size)`` matrix of :func:`scipy.ndimage.gaussian_filter1d` (``mode="constant"``, ``truncate=4``).

    The neighbourhoods of a footprint are its blur ``G_y · S · G_xᵀ`` (computed in the compiled pass).
    """
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 / sigma**2 * x**2)
    w /= w.sum()
    d = np.arange(size)[None, :] - np.arange(size)[:, None]  # column - row
    return np.where(np.abs(d) <= radius, w[np.clip(d + radius, 0, 2 * radius)], 0.0)


def block_features(a, q, scale, offset, tr, ev, trace_noise=None) -> np.ndarray:
    """Features 47–76 of a block of candidates from (possibly quantised) clips.

    Parameters
    ----------
    a : numpy.ndarray
        ``(n, cy, cx)`` crop footprints (negative or non-finite weights count as 0).
    q : numpy.ndarray
        ``(n, E, F, cy, cx)`` uint8 or float32 clips, valued ``float32(q) * scale + offset``
        (finite where the event exists).
    scale, offset : numpy.ndarray
        ``(n,)`` float32.
    tr : numpy.ndarray
        ``(n, E, F)`` finite trace snippets.
    ev : numpy.ndarray
        ``(n, E)`` event frames, ``-1`` for missing events.
    trace_noise : numpy.ndarray, optional
        ``(n,)`` noise σ of each trace (default: from the snippets' frame differences).

    Returns
    -------
    numpy.ndarray
        ``(n, 30)`` float64, finite.

    Notes
    -----
    An event whose clip or snippet is not finite (or whose candidate's ``scale`` or
    ``offset`` is not) is treated as missing.
    """
    n, n_e, n_f = q.shape[:3]
    tr = np.asarray(tr, np.float64)
    scale = np.asarray(scale, np.float32)
    offset = np.asarray(offset, np.float32)
    bad = ~np.isfinite(tr).all(axis=2) | ~(np.isfinite(scale) & np.isfinite(offset))[:, None]
    if q.dtype.kind == "f":
        bad |= ~np.isfinite(q).all(axis=(2, 3, 4))
    if bad.any():
        ev = np.where(bad, -1, ev)
        tr = np.where(bad[:, :, None], 0.0, tr)
    cy, cx = a.shape[1:]
    n_p = cy * cx
    valid_e = ev >= 0
    w = np.repeat(valid_e, n_f, axis=1).astype(np.float64)  # (n, K) frame validity
    wv = w > 0
    has_event = valid_e.any(axis=1)
    ne = np.maximum(valid_e.sum(axis=1), 1)

    # baseline-corrected snippets (n, K)
    t = tr.reshape(n, n_e, n_f)
    t = t - ((t[:, :, :BASELINE_FRAMES].mean(axis=2) * valid_e).sum(axis=1) / ne)[:, None, None]
    t[~valid_e] = 0.0
    sigma_t = _noise_from_diffs(t, valid_e) if trace_noise is None else np.asarray(trace_noise, np.float64)
    t = t.reshape(n, n_e * n_f)
    t_zm = np.maximum(t - (T_NOISE_MULTIPLE * sigma_t)[:, None], 0.0) * w  # weights of the trace-projected map

    frames = np.empty((n, 6, n_e * n_f))
    scalars = np.empty((n, 5))
    params = np.array(
        [KAPPA, COUNT_KAPPA, CORE_LEVEL, S_MASK_LEVEL, 1.0 - ndtr(COUNT_KAPPA), _MAD, EPS_ITERATIONS, BASELINE_FRAMES]
    )
    clip_statistics(
        np.ascontiguousarray(q).reshape(n, n_e, n_f, n_p),
        scale,
        offset,
        valid_e,
        np.ascontiguousarray(a, np.float64).reshape(n, n_p),
        t_zm,
        (_gaussian_matrix(cy, NEAR_SIGMA), _gaussian_matrix(cx, NEAR_SIGMA)),
        (_gaussian_matrix(cy, FAR_SIGMA), _gaussian_matrix(cx, FAR_SIGMA)),
        params,
        frames,
        scalars,
    )
    a_norm, s_cn, n_sup = scalars[:, 2], scalars[:, 3], scalars[:, 4]
    ok_fp = n_sup > 0
    proj, eps, t_out, sb, b1, b2 = (frames[:, r] for r in (PROJ, EPS, T_OUT, SB, B1, B2))
    out = np.zeros((n, 30))

    # --- 47-50: ε, the per-frame fraction of core pixels with unexplained positive activity
    out[:, 0] = (eps * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1)
    out[:, 1:4] = masked_quantiles(eps, wv, (0.0, 0.1, 0.2))

    # --- 51: corr_score
    out[:, 4] = scalars[:, 0]

    # --- 52-66: residual ratios per event
    s_norm = scalars[:, 1]
    t_in_fluo = np.maximum(proj / np.where(a_norm > 0, a_norm, 1.0)[:, None], 0.0)
    t_out_fluo = np.maximum(t_out / np.where(s_norm > 0, s_norm, 1.0)[:, None], 0.0)
    t_in_scaled = t_in_fluo / np.where(a_norm > 0, a_norm, 1.0)[:, None]  # × max(a) = 1
    t_out_scaled = t_out_fluo / np.where(s_norm > 0, s_norm, 1.0)[:, None]
    tt = (t * t * w).sum(axis=1)
    gain = np.where(tt > 0, (t * t_in_scaled * w).sum(axis=1) / np.where(tt > 0, tt, 1.0), 0.0)
    T = np.maximum(gain, 0.0)[:, None] * t
    r1 = np.maximum(t_in_scaled - T, 0.0)
    r2 = np.maximum(T - t_out_scaled, 0.0)
    r3 = np.maximum(t_in_fluo - t_out_fluo, 0.0)
    tmax = np.where(wv, T, -np.inf).max(axis=1)
    active = wv & (T > T_MASK_LEVEL * tmax[:, None]) & (tmax[:, None] > 0)

    def per_event(v):
        return np.where(active, v, 0.0).reshape(n, n_e, n_f).sum(axis=2)

    t_sum = per_event(T)
    fl_sum = per_event(t_in_fluo)
    ev_ok = per_event(np.ones_like(T)) > 0
    s1 = per_event(r1) / np.where(t_sum > 0, t_sum, 1.0)
    s2 = per_event(r2) / np.where(t_sum > 0, t_sum, 1.0)
    s3 = np.where(fl_sum > 0, per_event(r3) / np.where(fl_sum > 0, fl_sum, 1.0), 0.0)
    for j, s in enumerate((s1, s2, s3)):
        out[:, 5 + 5 * j : 10 + 5 * j] = masked_quantiles(s, ev_ok, RESIDUAL_QUANTILES)

    # --- 67-76: TQM, event-weighted footprint-frame Pearson correlation
    bvar = np.maximum(b2 - b1**2 / np.maximum(n_sup, 1)[:, None], 0.0)
    dd = s_cn[:, None] * np.sqrt(bvar)
    c = np.where(dd > 1e-12 * np.maximum(b2, 1e-300), sb / np.where(dd > 0, dd, 1.0), 0.0)
    c = np.clip(c, -1.0, 1.0)
    tpk = np.where(wv, t, -np.inf).max(axis=1)
    e_ratio = np.where((tpk > 0)[:, None] & wv, t / np.where(tpk > 0, tpk, 1.0)[:, None], 0.0)
    for j, r in enumerate(TQM_RATIOS):
        m = e_ratio > r
        num = np.where(m, e_ratio * c, 0.0).sum(axis=1)
        den = np.where(m, e_ratio, 0.0).sum(axis=1)
        out[:, 20 + j] = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)

    out[~(has_event & ok_fp)] = 0.0
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def spatiotemporal_features(
    crop_footprint,
    clips,
    trace_snippets,
    event_frame,
    *,
    trace_noise=None,
    block: int | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Features 47–76 of every candidate from its event snapshots, in registry order.

    Parameters
    ----------
    crop_footprint : array-like
        ``(candidate, cy, cx)`` footprint inside the crop.
    clips : array-like
        ``(candidate, event, frame, cy, cx)`` dequantised snapshot clips (finite;
        the values of missing events are ignored).
    trace_snippets : array-like
        ``(candidate, event, frame)`` trace values of the same frames
        (see :func:`trace_snippets`).
    event_frame : array-like
        ``(candidate, event)`` int, ``-1`` for a missing event.
    trace_noise : array-like, optional
        ``(candidate,)`` white-noise σ of each trace (e.g.
        :func:`actsort_nb.features.temporal.noise_level` of the full traces, which
        is better than the default estimate from the snippets' frame differences).
    block : int, optional
        Candidates per block (default: about 4 M clip values per block).
    workers : int, optional
        Threads over blocks of candidates (default: up to 2).

    Returns
    -------
    numpy.ndarray
        ``(candidate, 30)`` float32, finite. Column ``j`` is ``SPATIOTEMPORAL_NAMES[j]``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:15, :15]
    >>> fp = np.exp(-((yy - 7) ** 2 + (xx - 7) ** 2) / 8.0)[None]
    >>> tr = np.tile(np.r_[0, 0, 0, 1, 3, 5, 4, 3, 2, 1, 0.5], (1, 5, 1))
    >>> clips = tr[..., None, None] * fp[:, None, None]
    >>> f = spatiotemporal_features(fp, clips, tr, np.array([[20, 40, 60, 80, 100]]))
    >>> round(float(f[0, 4]), 3)  # corr_score
    1.0
    """
    a = np.asarray(crop_footprint)
    ev = np.asarray(event_frame)
    if a.ndim != 3:
        raise InputError(f"crop_footprint must be 3-D (candidate, cy, cx), got shape {a.shape}.")
    n, cy, cx = a.shape
    if np.ndim(clips) != 5 or tuple(np.shape(clips)[:1]) + tuple(np.shape(clips)[3:]) != (n, cy, cx):
        raise InputError(
            f"clips must be (candidate, event, frame, cy, cx) matching crop_footprint {a.shape}, "
            f"got shape {np.shape(clips)}."
        )
    n_e, n_f = np.shape(clips)[1:3]
    if tuple(np.shape(trace_snippets)) != (n, n_e, n_f):
        raise InputError(
            f"trace_snippets must be (candidate, event, frame) = {(n, n_e, n_f)}, got {np.shape(trace_snippets)}."
        )
    if ev.shape != (n, n_e):
        raise InputError(f"event_frame must be (candidate, event) = {(n, n_e)}, got {ev.shape}.")
    if block is None:
        block = max(1, int(2**22 // max(1, n_e * n_f * cy * cx)))
    noise = None if trace_noise is None else np.asarray(trace_noise, np.float64)

    def run(sl: slice) -> np.ndarray:
        c = np.asarray(clips[sl], np.float32)
        m = c.shape[0]
        ones, zeros = np.ones(m, np.float32), np.zeros(m, np.float32)
        tn = None if noise is None else noise[sl]
        return block_features(np.asarray(a[sl], np.float64), c, ones, zeros, trace_snippets[sl], ev[sl], tn)

    parts = map_blocks(run, n, block, workers)
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 30), np.float32)
