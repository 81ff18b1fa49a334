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
