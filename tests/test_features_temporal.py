"""Temporal features 1–36 on hand-built traces with known answers, and their invariants."""
from __future__ import annotations

import numpy as np
import pytest

from actsort_nb import InputError
from actsort_nb.features.temporal import (
    TEMPORAL_NAMES,
    medfilt3,
    noise_level,
    normalise,
    temporal_features,
    trace_similarity,
)

COL = {n: i for i, n in enumerate(TEMPORAL_NAMES)}


def feat(traces, name, **kw):
    return temporal_features(traces, **kw)[:, COL[name]]


def test_medfilt3_matches_scipy_inside():
    import scipy.signal

    x = np.random.default_rng(0).standard_normal((4, 50))
    np.testing.assert_allclose(medfilt3(x)[:, 1:-1], scipy.signal.medfilt(x, (1, 3))[:, 1:-1])


def test_noise_level_of_white_noise():
    rng = np.random.default_rng(1)
    sig = np.array([0.5, 2.0, 10.0])
    x = sig[:, None] * rng.standard_normal((3, 5000))
    np.testing.assert_allclose(noise_level(x), sig, rtol=0.05)


def test_noise_level_ignores_slow_transients():
    rng = np.random.default_rng(2)
    t = np.arange(2000)
    slow = 50 * np.exp(-((t - 1000) / 40.0) ** 2)
    x = 1.5 * rng.standard_normal(2000) + slow
    assert noise_level(x[None])[0] == pytest.approx(1.5, rel=0.06)


def test_snr_of_known_transient_in_known_noise():
    rng = np.random.default_rng(3)
    sigma, amp = 1.0, 20.0
    t = np.zeros(3000)
    t[1000:1010] = amp  # a 10-frame plateau survives the 3-frame median
    x = 7.0 + t + sigma * rng.standard_normal((5, 3000))
    # expected SNR = amp / (sqrt(2) sigma), up to the noise on the plateau's max
    np.testing.assert_allclose(feat(x, "snr"), amp / (np.sqrt(2) * sigma), rtol=0.1)


def test_event_metrics_count_events_at_noise_multiples():
    rng = np.random.default_rng(4)
    n_t = 2000
    base = np.zeros(n_t)
    for start, h in ((300, 5.0), (900, 20.0), (1500, 60.0)):
        base[start : start + 10] = h
    x = base + rng.standard_normal((3, n_t))  # σ = 1
    f = temporal_features(x)
    counts = {s: f[:, COL[f"event_count_{s}sd"]] for s in (1, 3, 10, 30, 100)}
    assert (counts[3] == 3).all()  # all three pulses exceed 3σ, the smoothed noise does not
    assert (counts[10] == 2).all()
    assert (counts[30] == 1).all()
    assert (counts[100] == 0).all()
    assert (counts[1] >= 3).all()
    # only the 60σ pulse's 10 frames lie above 30σ; they hold almost all the power
    np.testing.assert_allclose(f[:, COL["event_fraction_30sd"]], 10 / n_t)
    assert (f[:, COL["event_power_30sd"]] > 0.85).all()
    assert (f[:, COL["event_fraction_300sd"]] == 0).all()


def test_event_metrics_use_the_traces_own_noise_scale():
    # ActSort's defect: thresholds in raw noise units on a max-normalised trace
    # make the counts depend on the trace's units. Here they must not.
    rng = np.random.default_rng(5)
    x = np.zeros(1500)
    x[[200, 700, 1200]] = 15.0
    x = np.convolve(x, np.exp(-np.arange(30) / 6.0))[:1500] + rng.standard_normal(1500)
    f = temporal_features(np.stack([x, 1000 * x, 1e-3 * x]))
    np.testing.assert_allclose(f[1:], np.repeat(f[:1], 2, axis=0), rtol=1e-4, atol=1e-6)


def test_invariant_to_trace_scale_and_offset():
    rng = np.random.default_rng(6)
    n, n_t = 12, 800
    spikes = (rng.random((n, n_t)) < 0.01).astype(float)
    x = np.array([np.convolve(s, np.exp(-np.arange(40) / 8.0))[:n_t] for s in spikes])
    x = 4 * x + rng.standard_normal((n, n_t))
    f0 = temporal_features(x)
    f1 = temporal_features(3.7 * x + 250.0)
    np.testing.assert_allclose(f1, f0, rtol=1e-4, atol=1e-5)


def test_band_power_of_pure_sinusoid():
    n_t = 1000
    t = np.arange(n_t)
    x = np.stack([np.sin(2 * np.pi * 0.2 * t), 3 + np.sin(2 * np.pi * 0.01 * t), np.sin(2 * np.pi * 0.49 * t)])
    f = temporal_features(x)
    b = lambda name: f[:, COL[name]]
    # 0.2 cycles/frame = 0.4 of Nyquist
    assert b("band_power_05_95")[0] == pytest.approx(1, abs=1e-6)
    assert b("band_power_0_50")[0] == pytest.approx(1, abs=1e-6)
    assert b("band_power_50_100")[0] == pytest.approx(0, abs=1e-6)
    # 0.01 cycles/frame = 0.02 of Nyquist; the offset of 3 is not "power"
    assert b("band_power_0_05")[1] == pytest.approx(1, abs=1e-3)
    # 0.49 cycles/frame = 0.98 of Nyquist
    assert b("band_power_95_100")[2] == pytest.approx(1, abs=1e-3)


def test_band_powers_partition_the_spectrum():
    x = np.random.default_rng(7).standard_normal((5, 501))
    f = temporal_features(x)
    np.testing.assert_allclose(f[:, COL["band_power_0_50"]] + f[:, COL["band_power_50_100"]], 1, atol=1e-6)
    np.testing.assert_allclose(
        f[:, COL["band_power_0_05"]] + f[:, COL["band_power_05_95"]] + f[:, COL["band_power_95_100"]], 1, atol=1e-6
    )


def test_trace_similarity_of_duplicates():
    rng = np.random.default_rng(8)
    t = rng.standard_normal((4, 300))
    x = np.vstack([t, t[0] * 2 + 5, t[1]])  # 4 independent + 2 duplicates
    s = trace_similarity(x)
    np.testing.assert_allclose(s, np.array([1, 1, 0, 0, 1, 1]) / 5)


def test_trace_similarity_blocks_match_dense_reference():
    rng = np.random.default_rng(9)
    common = rng.standard_normal((3, 200))
    x = common[rng.integers(0, 3, 23)] * rng.uniform(0.5, 2, (23, 1)) + rng.uniform(0.2, 1.2, (23, 1)) * rng.standard_normal((23, 200))
    c = np.corrcoef(medfilt3(x))
    np.fill_diagonal(c, -1)
    ref = (c > 0.7).sum(axis=1) / 22
    for block in (1, 4, 7, 2048):
        np.testing.assert_allclose(trace_similarity(x, block=block), ref)


def test_peak_counts_spacing_and_widths_on_a_hand_built_trace():
    n_t = 400
    x = np.zeros(n_t)
    t = np.arange(n_t)
    for c in (50, 150, 250, 350):  # four big Gaussian bumps (sd 3)
        x += np.exp(-0.5 * ((t - c) / 3.0) ** 2)
    for c in (100, 200):  # two small bumps (5 % of the big ones)
        x += 0.05 * np.exp(-0.5 * ((t - c) / 2.0) ** 2)
    f = temporal_features(x[None])[0]
    assert f[COL["n_bad_peaks"]] == 2
    assert f[COL["good_peak_spacing"]] == pytest.approx(100)
    assert f[COL["bad_peak_spacing"]] == pytest.approx(100)
    assert f[COL["peak_spacing"]] == pytest.approx(60)  # 6 peaks over 300 frames
    # half-height width of a Gaussian of sd 3 = 2.3548 * 3
    assert f[COL["good_peak_width_sum"]] == pytest.approx(4 * 2.3548 * 3, rel=0.05)
    assert f[COL["good_peak_width_std"]] == pytest.approx(0, abs=0.2)


def test_top_decile_std_matches_direct_computation():
    x = np.random.default_rng(10).gamma(2.0, size=(3, 1000))
    z = (x - x.mean(1, keepdims=True)) / x.std(1, ddof=1, keepdims=True)
    ref = [np.std(r[r >= np.quantile(r, 0.9)], ddof=1) for r in z]
    np.testing.assert_allclose(feat(x, "top_decile_std"), ref, rtol=1e-5)


def test_spike_fluorescence_and_corruption_bounds():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 500))
    x[:3, 100:110] += 30
    f = temporal_features(x)
    sf = f[:, COL["spike_fluorescence"]]
    assert (sf[:3] > sf[3:].max()).all()
    corr = f[:, COL["temporal_corruption"]]
    assert ((corr >= 0) & (corr <= 2)).all()
    # a clean plateau has no frame-to-frame corruption where it is active
    clean = np.zeros(200)
    clean[50:150] = 1.0
    assert feat(clean[None], "temporal_corruption")[0] == 0


@pytest.mark.parametrize(
    "x",
    [
        np.zeros(100),
        np.full(100, 3.0),
        np.r_[np.zeros(50), 1.0, np.zeros(49)],
        -np.linspace(1, 2, 100),
        np.array([0.0, 1.0, 0.0]),
        np.r_[np.zeros(99), 1.0],
    ],
    ids=["zeros", "constant", "one_spike", "negative_ramp", "three_frames", "last_frame"],
)
def test_degenerate_traces_are_finite(x):
    f = temporal_features(np.vstack([x, x]))
    assert np.isfinite(f).all() and f.dtype == np.float32


def test_flat_trace_fallbacks():
    f = temporal_features(np.full((1, 120), 2.5))[0]
    for name in ("good_peak_spacing", "bad_peak_spacing", "peak_spacing"):
        assert f[COL[name]] == 120  # no peaks: spacing = trace length
    others = [i for n, i in COL.items() if not n.endswith("peak_spacing")]
    assert (f[others] == 0).all()


def test_normalise_baseline_and_amplitude():
    tn, b, a = normalise(np.array([[1.0, 1.0, 1.0, 3.0, 1.0], [2.0] * 5]))
    np.testing.assert_allclose(tn[0], [0, 0, 0, 1, 0])
    assert b.tolist() == [1.0, 2.0] and a.tolist() == [2.0, 0.0] and (tn[1] == 0).all()


def test_input_checks():
    with pytest.raises(InputError, match="2-D"):
        temporal_features(np.zeros(10))
    with pytest.raises(InputError, match="NaN"):
        temporal_features(np.array([[0.0, np.nan, 1.0, 2.0]]))
    with pytest.raises(InputError, match="3 time points"):
        temporal_features(np.zeros((2, 2)))
