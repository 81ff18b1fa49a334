"""Spatiotemporal features 47–76: does the movie around a candidate's events look like its footprint × its trace?

They are computed, like ActSort's, from the candidate's event snapshots only — the
``E`` clips of ``F`` frames of a fixed ``(cy, cx)`` crop around its top events
(``E·F`` frames in all, ActSort's ``M_cell``), the crop of its footprint
(``S_cell``) and the matching trace snippets (``T_cell``) — never from the movie.
All quantities are vectorised across candidates (blocks of candidates, arrays
``(candidate, frame, pixel)``); missing events (``event_frame == -1``) are
masked out of every sum, quantile and fit.

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
import scipy.ndimage
from scipy.special import ndtr

from .._validation import InputError
from .registry import FEATURE_NAMES, FEATURES

__all__ = ["SPATIOTEMPORAL_NAMES", "masked_quantiles", "spatiotemporal_features", "trace_snippets"]

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


def _proj(B: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``(n, K, P) · (n, P) -> (n, K)`` as a batched BLAS product, returned as float64."""
    return np.matmul(B, v.astype(np.float32)[:, :, None])[..., 0].astype(np.float64)


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


def _block(a: np.ndarray, clips: np.ndarray, tr: np.ndarray, ev: np.ndarray, trace_noise) -> np.ndarray:
    n, n_e, n_f = clips.shape[:3]
    cy, cx = a.shape[1:]
    n_p = cy * cx
    valid_e = ev >= 0
    w = np.repeat(valid_e, n_f, axis=1).astype(np.float64)  # (n, K) frame validity
    has_event = valid_e.any(axis=1)
    ne = np.maximum(valid_e.sum(axis=1), 1)

    # footprint: non-negative, peak-normalised
    a = np.maximum(np.asarray(a, np.float64).reshape(n, n_p), 0.0)
    peak = a.max(axis=1)
    ok_fp = peak > 0
    a = a / np.where(ok_fp, peak, 1.0)[:, None]
    a2 = (a**2).sum(axis=1)
    a_norm = np.sqrt(a2)

    # baseline-corrected clips (n, E, F, P) and snippets (n, E, F)
    B = np.asarray(clips, np.float32).reshape(n, n_e, n_f, n_p)
    vb = valid_e[:, :, None].astype(np.float32)
    base = (B[:, :, :BASELINE_FRAMES].mean(axis=2) * vb).sum(axis=1) / ne[:, None]
    B = B - base[:, None, None, :].astype(np.float32)
    B[~valid_e] = 0.0
    t = np.asarray(tr, np.float64).reshape(n, n_e, n_f)
    t = t - ((t[:, :, :BASELINE_FRAMES].mean(axis=2) * valid_e).sum(axis=1) / ne)[:, None, None]
    t[~valid_e] = 0.0
    b_range = np.abs(B).reshape(n, -1).max(axis=1)
    sigma_t = _noise_from_diffs(t, valid_e) if trace_noise is None else np.asarray(trace_noise, np.float64)
    B = B.reshape(n, n_e * n_f, n_p)
    t = t.reshape(n, n_e * n_f)
    af = a.astype(np.float32)

    out = np.zeros((n, 30))

    # --- 47-50: ε, the per-frame fraction of core pixels with unexplained positive activity
    proj = _proj(B, af)  # <a, B_k>
    x = np.maximum(proj / np.where(a2 > 0, a2, 1.0)[:, None], 0.0)
    # noise σ: the normalised MAD of the least-squares residuals over every pixel of
    # the valid frames (robust to the contaminated minority), floored at 1e-4 of the
    # clips' range so a noiseless clip's rounding residuals are not "outliers"
    step = max(1, (n_f * n_p) // 1024)  # a strided sample of ≥ 1024 values per event is plenty
    res = np.abs(B - x.astype(np.float32)[:, :, None] * af[:, None, :]).reshape(n, n_e, -1)[:, :, ::step]
    sigma_b = np.zeros(n)
    full = valid_e.all(axis=1)
    if full.any():
        sigma_b[full] = np.median(res[full].reshape(int(full.sum()), -1), axis=1)
    for i in np.flatnonzero(~full & has_event):  # few candidates miss events
        sigma_b[i] = np.median(res[i][valid_e[i]])
    del res
    sigma_b = np.maximum(sigma_b / _MAD, 1e-4 * b_range)
    kap = (KAPPA * sigma_b).astype(np.float32)[:, None, None]
    for _ in range(EPS_ITERATIONS):
        outl = (B - x.astype(np.float32)[:, :, None] * af[:, None, :]) > kap
        inl = ~outl
        num = _proj(np.where(inl, B, kap), af)
        den = _proj(inl.astype(np.float32), af**2)
        x = np.maximum(num / np.where(den > 0, den, 1.0), 0.0)
        x = np.where(den > 0, x, 0.0)
    outl = (B - x.astype(np.float32)[:, :, None] * af[:, None, :]) > kap * np.float32(COUNT_KAPPA / KAPPA)
    core = (a > CORE_LEVEL).astype(np.float32)
    frac = _proj(outl.astype(np.float32), core) / np.maximum(core.sum(axis=1), 1)[:, None]
    q = 1.0 - ndtr(COUNT_KAPPA)
    eps = np.clip((frac - q) / (1.0 - q), 0.0, 1.0)
    wv = w > 0
    eq = masked_quantiles(eps, wv, (0.0, 0.1, 0.2))
    out[:, 0] = (eps * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1)
    out[:, 1:4] = eq

    # --- 51: corr_score
    t_zm = np.maximum(t - (T_NOISE_MULTIPLE * sigma_t)[:, None], 0.0) * w
    pre = np.matmul(t_zm.astype(np.float32)[:, None, :], B)[:, 0].astype(np.float64)  # trace-projected map
    img = a.reshape(n, cy, cx)
    near = scipy.ndimage.gaussian_filter(img, (0, NEAR_SIGMA, NEAR_SIGMA), mode="constant").reshape(n, n_p)
    far = scipy.ndimage.gaussian_filter(img, (0, FAR_SIGMA, FAR_SIGMA), mode="constant").reshape(n, n_p)
    near_mask = near > S_MASK_LEVEL * near.max(axis=1, keepdims=True)
    far_mask = far > S_MASK_LEVEL * far.max(axis=1, keepdims=True)
    s_corr = pre * near_mask
    nc = np.sqrt((s_corr**2).sum(axis=1))
    den = nc * a_norm
    out[:, 4] = np.where(den > 0, (s_corr * a).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)

    # --- 52-66: residual ratios per event
    sur = np.maximum(pre * far_mask, 0.0)
    sur[a > S_MASK_LEVEL] = 0.0
    smax = sur.max(axis=1)
    sur = sur / np.where(smax > 0, smax, 1.0)[:, None]
    s_norm = np.sqrt((sur**2).sum(axis=1))
    t_out = _proj(B, sur)
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
    sup = (a > 0).astype(np.float32)
    n_sup = sup.sum(axis=1)
    s_mean = (a * sup).sum(axis=1) / np.maximum(n_sup, 1)
    s_c = (a - s_mean[:, None]) * sup
    s_cn = np.sqrt((s_c**2).sum(axis=1))
    sb = _proj(B, s_c)
    b1 = _proj(B, sup)
    b2 = _proj(np.square(B), sup)
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
    return out


def spatiotemporal_features(
    crop_footprint,
    clips,
    trace_snippets,
    event_frame,
    *,
    trace_noise=None,
    block: int | None = None,
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
        Candidates per block (default: about 16 M clip values per block).

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
        block = max(1, int(2**24 // max(1, n_e * n_f * cy * cx)))
    out = np.zeros((n, 30), np.float32)
    for s in range(0, n, block):
        sl = slice(s, s + block)
        c = np.asarray(clips[sl], np.float32)
        tr = np.asarray(trace_snippets[sl], np.float64)
        e = ev[sl]
        bad = ~np.isfinite(c).all(axis=(2, 3, 4)) | ~np.isfinite(tr).all(axis=2)
        if bad.any():  # a non-finite clip is treated as a missing event
            e = np.where(bad, -1, e)
            c = np.where(bad[:, :, None, None, None], 0.0, c)
            tr = np.where(bad[:, :, None], 0.0, tr)
        tn = None if trace_noise is None else np.asarray(trace_noise, np.float64)[sl]
        res = _block(np.nan_to_num(a[sl].astype(np.float64)), c, tr, e, tn)
        out[sl] = np.nan_to_num(res, nan=0.0, posinf=0.0, neginf=0.0)
    return out
