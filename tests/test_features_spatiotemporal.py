"""Spatiotemporal features 47–76 on hand-built snapshot clips."""
from __future__ import annotations

import numpy as np
import pytest

from actsort_nb import InputError
from actsort_nb.features.spatiotemporal import (
    SPATIOTEMPORAL_NAMES,
    masked_quantiles,
    spatiotemporal_features,
    trace_snippets,
)

COL = {n: i for i, n in enumerate(SPATIOTEMPORAL_NAMES)}
C = 21  # crop side
E, F = 5, 11
YY, XX = np.mgrid[:C, :C]
TRANSIENT = np.array([0, 0, 0.23, 1.07, 3.13, 5, 4.21, 3.37, 2.29, 1.61, 1.13])  # no exact ratios to the peak


def blob(cy=10, cx=10, sd=2.5):
    g = np.exp(-((YY - cy) ** 2 + (XX - cx) ** 2) / (2 * sd * sd))
    return np.where(g > 0.02, g, 0.0)


def model(n=1, amp=None, noise=0.0, seed=0, footprint=None, offset=100.0):
    """Clips = footprint × trace (+ a per-pixel baseline + noise), trace snippets, events."""
    rng = np.random.default_rng(seed)
    fp = np.repeat((blob() if footprint is None else footprint)[None], n, axis=0)
    amp = rng.uniform(0.5, 2.0, (n, E, 1)) if amp is None else amp
    tr = amp * TRANSIENT[None, None, :]
    base = offset * (1 + rng.random((n, 1, 1, C, C)))
    clips = tr[..., None, None] * fp[:, None, None] + base + noise * rng.standard_normal((n, E, F, C, C))
    ev = np.tile(np.arange(1, E + 1) * 50, (n, 1))
    return fp, clips.astype(np.float32), tr, ev


def test_exact_footprint_times_trace_scores_perfectly():
    fp, clips, tr, ev = model(n=3)
    f = spatiotemporal_features(fp, clips, tr, ev)
    np.testing.assert_allclose(f[:, COL["corr_score"]], 1, atol=1e-4)
    for r in range(0, 100, 10):
        np.testing.assert_allclose(f[:, COL[f"tqm_{r:02d}"]], 1, atol=1e-4)
    for q in (1, 25, 50, 75, 99):  # nothing inside the footprint is left unexplained by the trace
        np.testing.assert_allclose(f[:, COL[f"inside_vs_trace_q{q:02d}"]], 0, atol=1e-3)
    np.testing.assert_allclose(f[:, COL["epsilon_mean"]], 0, atol=1e-6)


def test_invariant_to_units_of_movie_and_trace():
    fp, clips, tr, ev = model(n=4, noise=0.3, seed=1)
    f0 = spatiotemporal_features(fp, clips, tr, ev)
    f1 = spatiotemporal_features(2.5 * fp, 7.0 * clips + 300.0, 0.01 * tr + 4.0, ev)
    np.testing.assert_allclose(f1, f0, rtol=2e-3, atol=2e-3)


def test_noise_clips_score_low_and_cells_high():
    fp, clips, tr, ev = model(n=6, noise=0.5, seed=2)
    rng = np.random.default_rng(3)
    noise_clips = (100 + 0.5 * rng.standard_normal(clips.shape)).astype(np.float32)
    f_cell = spatiotemporal_features(fp, clips, tr, ev)
    f_noise = spatiotemporal_features(fp, noise_clips, tr, ev)
    assert f_cell[:, COL["corr_score"]].min() > 0.9
    assert np.abs(f_noise[:, COL["corr_score"]]).max() < 0.6
    assert f_cell[:, COL["tqm_50"]].min() > f_noise[:, COL["tqm_50"]].max() + 0.3


@pytest.mark.parametrize("eps", [0.0, 0.2, 0.4])
def test_epsilon_recovers_a_planted_contamination_fraction(eps):
    # EXTRACT's ε is the fraction of footprint pixels carrying activity the
    # footprint × trace model does not explain; plant it on a known fraction.
    rng = np.random.default_rng(4)
    n = 8
    fp = np.repeat(np.where(blob(sd=3.0) > 0.2, 1.0, 0.0)[None], n, axis=0)  # flat core
    fp_core = fp[0] > 0
    amp = np.full((n, E, 1), 20.0)
    tr = amp * TRANSIENT[None, None, :]
    clips = tr[..., None, None] * fp[:, None, None] + rng.standard_normal((n, E, F, C, C))
    idx = np.flatnonzero(fp_core)
    for i in range(n):
        hit = rng.choice(idx, round(eps * idx.size), replace=False)
        yy, xx = np.unravel_index(hit, (C, C))
        # a neighbour active during the event (not in the two baseline frames)
        clips[i, :, 2:, yy, xx] += 15.0 * (1 + rng.random((hit.size, 1, F - 2)))
    f = spatiotemporal_features(fp, clips.astype(np.float32), tr, np.tile(np.arange(1, E + 1) * 50, (n, 1)))
    # contaminated in F - 2 of the F frames of every clip
    assert f[:, COL["epsilon_mean"]].mean() == pytest.approx(eps * (F - 2) / F, abs=0.05)


def test_epsilon_increases_with_contamination():
    means = []
    rng = np.random.default_rng(5)
    fp = blob(sd=3.0)
    for eps in (0.0, 0.15, 0.3, 0.5):
        _, clips, tr, ev = model(n=4, noise=0.5, seed=6, amp=np.full((4, E, 1), 10.0), footprint=fp, offset=0)
        core = np.flatnonzero(fp > 0.1)
        hit = rng.choice(core, int(eps * core.size), replace=False)
        yy, xx = np.unravel_index(hit, (C, C))
        clips[:, :, 2:, yy, xx] += 8.0
        means.append(spatiotemporal_features(np.repeat(fp[None], 4, 0), clips, tr, ev)[:, COL["epsilon_mean"]].mean())
    assert np.all(np.diff(means) > 0.05), means


def test_missing_events_are_ignored():
    fp, clips, tr, ev = model(n=2, noise=0.3, seed=7)
    ev_missing = ev.copy()
    ev_missing[:, 3:] = -1
    garbage = clips.copy()
    garbage[:, 3:] = 1e6
    tr_g = tr.copy()
    tr_g[:, 3:] = -50.0
    f_a = spatiotemporal_features(fp, garbage, tr_g, ev_missing)
    f_b = spatiotemporal_features(fp, clips[:, :3], tr[:, :3], ev[:, :3])
    np.testing.assert_allclose(f_a, f_b, rtol=1e-4, atol=1e-5)


def test_no_events_no_footprint_flat_clips_are_finite_zeros():
    fp, clips, tr, ev = model(n=4)
    ev[0] = -1  # no event at all
    fp[1] = 0.0  # no footprint
    clips[2] = 100.0  # flat clips
    tr[2] = 1.0
    fp[3] = 0.0
    fp[3, 10, 10] = 1.0  # single-pixel footprint
    f = spatiotemporal_features(fp, clips, tr, ev)
    assert np.isfinite(f).all() and f.dtype == np.float32
    assert (f[0] == 0).all() and (f[1] == 0).all()


def test_masked_quantiles_match_matlab_rule():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((50, 7))
    valid = rng.random((50, 7)) < 0.7
    valid[0] = False
    qs = (0.01, 0.25, 0.5, 0.75, 0.99)
    got = masked_quantiles(x, valid, qs)
    for i in range(50):
        ref = np.quantile(x[i][valid[i]], qs, method="hazen") if valid[i].any() else np.zeros(5)
        np.testing.assert_allclose(got[i], ref)


def test_trace_snippets_follow_event_frames():
    tr = np.arange(100.0)[None].repeat(2, 0)
    s = trace_snippets(tr, np.array([[20, -1], [3, 98]]), 11)
    np.testing.assert_array_equal(s[0, 0], np.arange(15, 26))
    assert (s[0, 1] == 0).all()
    np.testing.assert_array_equal(s[1, 0], np.r_[0, 0, 0, np.arange(0, 9)][1:])  # clamped at the start
    assert s[1, 1, -1] == 99


def test_input_checks():
    fp, clips, tr, ev = model(n=2)
    with pytest.raises(InputError, match="crop_footprint"):
        spatiotemporal_features(fp[0], clips, tr, ev)
    with pytest.raises(InputError, match="clips"):
        spatiotemporal_features(fp, clips[:, :, :, :5], tr, ev)
    with pytest.raises(InputError, match="trace_snippets"):
        spatiotemporal_features(fp, clips, tr[:, :, :5], ev)
    with pytest.raises(InputError, match="event_frame"):
        spatiotemporal_features(fp, clips, tr, ev[:, :2])


# --- the compiled per-candidate pass against the straightforward numpy formulation ------------------------


def _reference(a, clips, tr, ev, trace_noise):
    """Features 47-76 as plain array code: float32 batched matrix products over (candidate, frame, pixel)."""
    import scipy.ndimage
    from scipy.special import ndtr

    from actsort_nb.features import spatiotemporal as st

    def proj(B, v):
        return np.matmul(B, v.astype(np.float32)[:, :, None])[..., 0].astype(np.float64)

    n, n_e, n_f = clips.shape[:3]
    cy, cx = a.shape[1:]
    n_p = cy * cx
    valid_e = ev >= 0
    w = np.repeat(valid_e, n_f, axis=1).astype(np.float64)
    wv = w > 0
    ne = np.maximum(valid_e.sum(axis=1), 1)
    a = np.maximum(np.asarray(a, np.float64).reshape(n, n_p), 0.0)
    peak = a.max(axis=1)
    a = a / np.where(peak > 0, peak, 1.0)[:, None]
    a2 = (a**2).sum(axis=1)
    a_norm = np.sqrt(a2)
    B = np.asarray(clips, np.float32).reshape(n, n_e, n_f, n_p)
    base = (B[:, :, :2].mean(axis=2) * valid_e[:, :, None].astype(np.float32)).sum(axis=1) / ne[:, None]
    B = B - base[:, None, None, :].astype(np.float32)
    B[~valid_e] = 0.0
    t = np.asarray(tr, np.float64).reshape(n, n_e, n_f)
    t = t - ((t[:, :, :2].mean(axis=2) * valid_e).sum(axis=1) / ne)[:, None, None]
    t[~valid_e] = 0.0
    b_range = np.abs(B).reshape(n, -1).max(axis=1)
    B = B.reshape(n, n_e * n_f, n_p)
    t = t.reshape(n, n_e * n_f)
    af = a.astype(np.float32)
    out = np.zeros((n, 30))
    # ε
    pr = proj(B, af)
    x = np.maximum(pr / np.where(a2 > 0, a2, 1.0)[:, None], 0.0)
    step = max(1, (n_f * n_p) // 1024)
    res = np.abs(B - x.astype(np.float32)[:, :, None] * af[:, None, :]).reshape(n, n_e, -1)[:, :, ::step]
    sigma_b = np.array([np.median(res[i][valid_e[i]]) if valid_e[i].any() else 0.0 for i in range(n)])
    sigma_b = np.maximum(sigma_b / st._MAD, 1e-4 * b_range)
    kap = (st.KAPPA * sigma_b).astype(np.float32)[:, None, None]
    for _ in range(st.EPS_ITERATIONS):
        inl = (B - x.astype(np.float32)[:, :, None] * af[:, None, :]) <= kap
        num = proj(np.where(inl, B, kap), af)
        den = proj(inl.astype(np.float32), af**2)
        x = np.where(den > 0, np.maximum(num / np.where(den > 0, den, 1.0), 0.0), 0.0)
    outl = (B - x.astype(np.float32)[:, :, None] * af[:, None, :]) > kap * np.float32(st.COUNT_KAPPA / st.KAPPA)
    core = (a > st.CORE_LEVEL).astype(np.float32)
    frac = proj(outl.astype(np.float32), core) / np.maximum(core.sum(axis=1), 1)[:, None]
    q = 1.0 - ndtr(st.COUNT_KAPPA)
    eps = np.clip((frac - q) / (1.0 - q), 0.0, 1.0)
    out[:, 0] = (eps * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1)
    out[:, 1:4] = st.masked_quantiles(eps, wv, (0.0, 0.1, 0.2))
    # corr_score
    t_zm = np.maximum(t - (st.T_NOISE_MULTIPLE * trace_noise)[:, None], 0.0) * w
    pre = np.matmul(t_zm.astype(np.float32)[:, None, :], B)[:, 0].astype(np.float64)
    img = a.reshape(n, cy, cx)
    near = scipy.ndimage.gaussian_filter(img, (0, st.NEAR_SIGMA, st.NEAR_SIGMA), mode="constant").reshape(n, n_p)
    far = scipy.ndimage.gaussian_filter(img, (0, st.FAR_SIGMA, st.FAR_SIGMA), mode="constant").reshape(n, n_p)
    s_corr = pre * (near > st.S_MASK_LEVEL * near.max(axis=1, keepdims=True))
    den = np.sqrt((s_corr**2).sum(axis=1)) * a_norm
    out[:, 4] = np.where(den > 0, (s_corr * a).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)
    # residual ratios
    sur = np.maximum(pre * (far > st.S_MASK_LEVEL * far.max(axis=1, keepdims=True)), 0.0)
    sur[a > st.S_MASK_LEVEL] = 0.0
    smax = sur.max(axis=1)
    sur = sur / np.where(smax > 0, smax, 1.0)[:, None]
    s_norm = np.sqrt((sur**2).sum(axis=1))
    t_in_fluo = np.maximum(pr / np.where(a_norm > 0, a_norm, 1.0)[:, None], 0.0)
    t_out_fluo = np.maximum(proj(B, sur) / np.where(s_norm > 0, s_norm, 1.0)[:, None], 0.0)
    t_in_scaled = t_in_fluo / np.where(a_norm > 0, a_norm, 1.0)[:, None]
    t_out_scaled = t_out_fluo / np.where(s_norm > 0, s_norm, 1.0)[:, None]
    tt = (t * t * w).sum(axis=1)
    gain = np.where(tt > 0, (t * t_in_scaled * w).sum(axis=1) / np.where(tt > 0, tt, 1.0), 0.0)
    T = np.maximum(gain, 0.0)[:, None] * t
    tmax = np.where(wv, T, -np.inf).max(axis=1)
    active = wv & (T > st.T_MASK_LEVEL * tmax[:, None]) & (tmax[:, None] > 0)

    def per_event(v):
        return np.where(active, v, 0.0).reshape(n, n_e, n_f).sum(axis=2)

    t_sum = per_event(T)
    fl_sum = per_event(t_in_fluo)
    ev_ok = per_event(np.ones_like(T)) > 0
    ratios = (
        per_event(np.maximum(t_in_scaled - T, 0.0)) / np.where(t_sum > 0, t_sum, 1.0),
        per_event(np.maximum(T - t_out_scaled, 0.0)) / np.where(t_sum > 0, t_sum, 1.0),
        np.where(fl_sum > 0, per_event(np.maximum(t_in_fluo - t_out_fluo, 0.0)) / np.where(fl_sum > 0, fl_sum, 1.0), 0.0),
    )
    for j, s in enumerate(ratios):
        out[:, 5 + 5 * j : 10 + 5 * j] = st.masked_quantiles(s, ev_ok, st.RESIDUAL_QUANTILES)
    # TQM
    sup = (a > 0).astype(np.float32)
    n_sup = sup.sum(axis=1)
    s_c = (a - ((a * sup).sum(axis=1) / np.maximum(n_sup, 1))[:, None]) * sup
    b1, b2 = proj(B, sup), proj(np.square(B), sup)
    dd = np.sqrt((s_c**2).sum(axis=1))[:, None] * np.sqrt(np.maximum(b2 - b1**2 / np.maximum(n_sup, 1)[:, None], 0.0))
    c = np.clip(np.where(dd > 1e-12 * np.maximum(b2, 1e-300), proj(B, s_c) / np.where(dd > 0, dd, 1.0), 0.0), -1, 1)
    tpk = np.where(wv, t, -np.inf).max(axis=1)
    e_ratio = np.where((tpk > 0)[:, None] & wv, t / np.where(tpk > 0, tpk, 1.0)[:, None], 0.0)
    for j, r in enumerate(st.TQM_RATIOS):
        m = e_ratio > r
        num = np.where(m, e_ratio * c, 0.0).sum(axis=1)
        den = np.where(m, e_ratio, 0.0).sum(axis=1)
        out[:, 20 + j] = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    out[~(valid_e.any(axis=1) & (peak > 0))] = 0.0
    return out


def _random_case(seed, n=12):
    """Cells and noise with contaminated pixels, missing events, odd footprints and an off-centre crop."""
    rng = np.random.default_rng(seed)
    fp = np.stack([blob(rng.uniform(6, 14), rng.uniform(6, 14), rng.uniform(1.5, 3.5)) for _ in range(n)])
    fp[0] = 0.0
    fp[0, 3, 3] = 1.0  # a single pixel
    amp = rng.uniform(0.5, 3.0, (n, E, 1))
    tr = amp * TRANSIENT[None, None, :] + 0.1 * rng.standard_normal((n, E, F))
    clips = tr[..., None, None] * fp[:, None, None] * rng.uniform(0.5, 2, (n, 1, 1, 1, 1))
    clips += 50 * (1 + rng.random((n, 1, 1, C, C))) + rng.uniform(0.1, 1.0, (n, 1, 1, 1, 1)) * rng.standard_normal(clips.shape)
    clips[:4] += 4.0 * (rng.random((4, E, F, C, C)) < 0.1)  # contaminated pixels
    clips[4] = 60 + rng.standard_normal(clips[4].shape)  # noise only
    ev = np.tile(np.arange(1, E + 1) * 50, (n, 1))
    ev[5, 2:] = -1
    ev[6] = -1
    return fp, clips.astype(np.float32), tr, ev, rng.uniform(0.05, 0.3, n)


@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_pass_matches_the_array_reference(seed):
    fp, clips, tr, ev, noise = _random_case(seed)
    got = spatiotemporal_features(fp, clips, tr, ev, trace_noise=noise, block=5)
    ref = _reference(fp, clips, tr, ev, noise)
    # the projections are float64 sums here and float32 matrix products in the reference
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_quantised_clips_give_the_features_of_their_dequantised_values():
    from actsort_nb.features.spatiotemporal import block_features

    fp, clips, tr, ev, noise = _random_case(2)
    lo = clips.min(axis=(1, 2, 3, 4))
    scale = ((clips.max(axis=(1, 2, 3, 4)) - lo) / 255).astype(np.float32)
    q = np.round((clips - lo[:, None, None, None, None]) / scale[:, None, None, None, None]).astype(np.uint8)
    deq = q.astype(np.float32) * scale[:, None, None, None, None] + lo[:, None, None, None, None].astype(np.float32)
    a = block_features(fp, q, scale, lo.astype(np.float32), tr, ev, noise)
    b = spatiotemporal_features(fp, deq, tr, ev, trace_noise=noise)
    np.testing.assert_array_equal(a.astype(np.float32), b)


def test_non_finite_inputs_count_as_missing():
    from actsort_nb.features.spatiotemporal import block_features

    fp, clips, tr, ev, noise = _random_case(3, n=8)
    q = np.clip(np.round(clips - 40), 0, 255).astype(np.uint8)
    scale = np.ones(8, np.float32)
    offset = np.zeros(8, np.float32)
    scale[0] = np.nan  # every event of candidate 0 is unusable
    fp = fp.copy()
    fp[1, 0, 0] = np.inf  # a broken footprint weight counts as 0
    tr = tr.copy()
    tr[2, 1, 3] = np.nan  # one event of candidate 2 is unusable
    f = block_features(fp, q, scale, offset, tr, ev, noise)
    assert np.isfinite(f).all() and (f[0] == 0).all()
    ev2 = ev.copy()
    ev2[2, 1] = -1
    tr2 = np.nan_to_num(tr)
    fp2 = np.where(np.isfinite(fp), fp, 0.0)
    np.testing.assert_array_equal(f[1:], block_features(fp2, q, scale, offset, tr2, ev2, noise)[1:])
