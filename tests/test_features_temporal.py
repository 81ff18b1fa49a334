"""Temporal features 1–36 on hand-built traces with known answers, and their invariants."""
from __future__ import annotations

import numpy as np
import pytest

from actsort_nb import InputError
from actsort_nb.features import _similarity
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


FLAT_VALUES = (2.5, 123.4, 5.0, -7000.3, 1e-20, 3e30, 0.0)


def _assert_flat_fallbacks(f, n_t):
    spacings = [COL[n] for n in ("good_peak_spacing", "bad_peak_spacing", "peak_spacing")]
    assert (f[:, spacings] == n_t).all()  # no peaks: spacing = trace length
    others = [i for n, i in COL.items() if not n.endswith("peak_spacing")]
    assert (f[:, others] == 0).all()


@pytest.mark.parametrize("n_t", [120, 300, 1000, 4096])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_flat_trace_fallbacks(n_t, dtype):
    # the FFT of a constant is rounding noise off DC: band powers (30-34) must not be ratios of it
    x = np.repeat(np.array(FLAT_VALUES, dtype)[:, None], n_t, axis=1)
    _assert_flat_fallbacks(temporal_features(x), n_t)
    _assert_flat_fallbacks(temporal_features(x, block=1, similarity=False), n_t)


@pytest.mark.parametrize("n_t", [120, 300, 1000, 4096])
def test_flat_trace_fallbacks_through_compute_features(n_t):
    from actsort_nb import candidate_set
    from actsort_nb.features import compute_features

    fp = np.zeros((len(FLAT_VALUES), 8, 8), np.float32)
    fp[:, 2:5, 2:5] = 1
    x = np.repeat(np.array(FLAT_VALUES, np.float32)[:, None], n_t, axis=1)
    f = compute_features(candidate_set(fp, x), groups=["temporal"])
    assert f["feature"].values.tolist() == list(TEMPORAL_NAMES)
    _assert_flat_fallbacks(f.values, n_t)


def test_band_powers_of_a_barely_non_flat_trace():
    # one frame just above the flatness threshold (8 float32 eps of the magnitude): real power, not noise
    n_t = 1000
    x = np.full((2, n_t), 1000.0)
    x[0, 500] += 1e-2
    x[1, 500] += 1e-3  # just above 8 * eps32 * 1000 = 9.5e-4
    f = temporal_features(x)
    ref = _reference_temporal(x)
    bands = [COL[n] for n in TEMPORAL_NAMES if n.startswith("band_power")]
    np.testing.assert_allclose(f[:, bands], ref[:, bands], rtol=1e-6)
    np.testing.assert_allclose(f[:, COL["band_power_0_50"]] + f[:, COL["band_power_50_100"]], 1, atol=1e-6)


def test_band_powers_of_a_flat_trace_with_dips_are_zero():
    # flat in the sense of the normalisation (the median is the maximum): no activity, no band powers
    x = np.r_[np.full(60, 5.0), np.linspace(0, 4, 40)][None]
    f = temporal_features(x)[0]
    assert (f[[COL[n] for n in TEMPORAL_NAMES if n.startswith("band_power")]] == 0).all()


@pytest.mark.parametrize("k", [-1000, -900, -300, 300, 900, 1000])
def test_extreme_magnitudes_neither_overflow_nor_underflow(k):
    # squares of 1e300 overflow float64 and those of 1e-300 underflow; the features are scale invariant
    x = _awkward_traces(14, 501)
    x = np.vstack([x, 3 * x[:4] + 1])  # similar pairs for feature 35
    want = temporal_features(x)
    assert want[:, COL["trace_similarity"]].max() > 0
    got = temporal_features(np.ldexp(x, k))
    np.testing.assert_array_equal(got, want)  # powers of two scale exactly
    np.testing.assert_array_equal(trace_similarity(np.ldexp(x, k)), trace_similarity(x))
    np.testing.assert_array_equal(noise_level(np.ldexp(x, k)), np.ldexp(noise_level(x), k))


def test_huge_single_spike_is_finite():
    spike = np.r_[1.0, np.zeros(49)]
    want = temporal_features(spike[None])
    for scale in (1e300, 1e-300, 1.7e308):
        got = temporal_features(scale * spike[None])
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-6)
    f = temporal_features(np.array([[1.7e308, -1.7e308, 0.0, 1.0, 2.0, 3.0]]))
    assert np.isfinite(f).all()


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


# --- the compiled per-trace pass against a straightforward numpy/scipy reference ---------------------------


def _reference_temporal(x):
    """Features 1-34 and 36 computed the plain way: numpy over the block, scipy.signal per trace."""
    import scipy.ndimage
    import scipy.signal

    from actsort_nb.features.temporal import (
        BANDS,
        EVENT_SCALES,
        NOISE_FLOOR,
        PEAK_MIN_PROMINENCE,
    )

    x = np.asarray(x, np.float64)
    n, n_t = x.shape
    tn, b, amp = normalise(x)
    tb = x - b[:, None]
    tm = medfilt3(tb)
    sigma = np.maximum(noise_level(x), NOISE_FLOOR * amp)
    sigma_n = np.where(amp > 0, sigma / np.where(amp > 0, amp, 1.0), 1.0)
    mn = x.min(axis=1, keepdims=True)
    rng = x.max(axis=1, keepdims=True) - mn
    tmm = np.where(rng > 0, (x - mn) / np.where(rng > 0, rng, 1.0), 0.0)
    o = np.zeros((n, 36))
    o[:, 0] = np.where(amp <= 0, 0.0, tm.max(axis=1) / (np.sqrt(2.0) * np.where(sigma > 0, sigma, 1.0)))
    mx = tm.max(axis=1, keepdims=True)
    valid = (tm > 0.3 * mx) & (mx > 0)
    ratio = np.abs(tb - tm) / np.where(valid, np.maximum(tm, tb), 1.0)
    k = valid.sum(axis=1)
    o[:, 1] = np.where(k > 0, np.where(valid, ratio, 0.0).sum(axis=1) / np.maximum(k, 1), 0.0)
    q90 = np.quantile(tn, 0.9, axis=1)

    def spacing(p):
        return float(n_t) if p.size < 2 else float(p[-1] - p[0]) / (p.size - 1)

    def std(w):
        return 0.0 if w.size < 2 else float(np.std(w, ddof=1))

    for i in range(n):
        peaks, props = scipy.signal.find_peaks(tn[i], prominence=PEAK_MIN_PROMINENCE)
        if peaks.size == 0:
            o[i, [2, 4, 5, 6, 7, 8, 9, 10]] = (0, n_t, n_t, n_t, 0, 0, 0, 0)
            continue
        good = props["prominences"] >= max(0.5 * q90[i], 0.1)
        h = tmm[i]
        w = scipy.signal.peak_widths(h, peaks, 0.5, (h[peaks], props["left_bases"], props["right_bases"]))[0]
        o[i, [2, 4, 5, 6, 7, 8, 9, 10]] = (
            peaks.size - good.sum(), spacing(peaks[good]), spacing(peaks[~good]), spacing(peaks),
            w.sum(), w[good].sum(), std(w), std(w[good]),
        )
    sd = x.std(axis=1, ddof=1, keepdims=True)
    z = np.where(sd > 0, (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0), 0.0)
    m = z >= np.quantile(z, 0.9, axis=1)[:, None]
    o[:, 3] = [np.std(r[mm], ddof=1) if mm.sum() > 1 else 0.0 for r, mm in zip(z, m)]
    smooth = scipy.ndimage.convolve1d(medfilt3(tn), np.array([0.1, 0.4, 1.0, 0.4, 0.1]) / 2, axis=1, mode="nearest")
    sq = tn**2
    total = sq.sum(axis=1)
    for j, s in enumerate(EVENT_SCALES):
        above = tn >= (s * sigma_n)[:, None]
        o[:, 11 + 3 * j] = np.where(total > 0, (sq * above).sum(axis=1) / np.where(total > 0, total, 1.0), 0.0)
        o[:, 12 + 3 * j] = above.mean(axis=1)
        sa = smooth >= (s * sigma_n)[:, None]
        o[:, 13 + 3 * j] = sa[:, 0] + (sa[:, 1:] & ~sa[:, :-1]).sum(axis=1)
    p = np.abs(np.fft.rfft(tb, axis=1)) ** 2
    p[:, 1 : (n_t + 1) // 2] *= 2  # one-sided: every bin but DC and (even n_t) Nyquist counts twice
    f = np.fft.rfftfreq(n_t) * 2
    for j, (lo, hi) in enumerate(BANDS):
        sel = (f >= lo) & ((f < hi) | (hi >= 1))
        o[:, 29 + j] = p[:, sel].sum(axis=1) / p.sum(axis=1)
    zs = medfilt3(x)
    mu, sd0 = zs.mean(axis=1, keepdims=True), zs.std(axis=1, keepdims=True)
    ok = sd0 > 8 * np.finfo(np.float32).eps * np.maximum(np.abs(mu), np.finfo(np.float32).tiny)
    zs = np.where(ok, (zs - mu) / np.where(ok, sd0, 1.0), 0.0) / np.sqrt(n_t)
    o[:, 35] = np.where(zs >= np.quantile(zs, 0.99, axis=1)[:, None], zs, 0.0).sum(axis=1)
    return o


def _awkward_traces(seed, n_t):
    """Transients on noise, plus what breaks fast paths: plateaus (16-bit storage), drift, spikes below the baseline."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_t)
    rows = []
    for _ in range(6):
        x = rng.standard_normal(n_t)
        for c in rng.integers(0, n_t, 4):
            x += rng.uniform(2, 20) * np.exp(-np.clip(t - c, 0, None) / 8.0) * (t >= c)
        rows.append(x)
    rows.append(np.round(rows[0] * 4) / 4)  # many ties and plateaus
    rows.append(rows[1] + np.linspace(0, 40, n_t))  # drift: every peak's walk reaches back far
    spiky = rows[2].copy()
    spiky[n_t // 3] = -80.0  # the minimum far below the baseline: half-height walks end at the bases
    rows.append(spiky)
    rows.append(np.sin(np.arange(n_t) / 3.0))  # regular, equal peaks
    rows.append(np.r_[np.zeros(n_t - 1), 1.0])
    return np.stack(rows)


@pytest.mark.parametrize("n_t", [5, 64, 501, 2000])
def test_compiled_pass_matches_the_reference(n_t):
    x = _awkward_traces(n_t, n_t)
    got = temporal_features(x, similarity=False, block=5)
    ref = _reference_temporal(x)
    cols = [j for j in range(36) if j != 34]
    np.testing.assert_allclose(got[:, cols], ref[:, cols].astype(np.float32), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(temporal_features(x.astype(np.float32), similarity=False)[:, cols],
                                  temporal_features(x.astype(np.float32).astype(np.float64), similarity=False)[:, cols])


def test_peak_ports_match_scipy():
    import scipy.signal

    from actsort_nb.features._peaks import local_maxima, peak_bases, peak_width

    for x in _awkward_traces(3, 3000):
        mid = np.empty(x.size // 2, np.int64)
        k = local_maxima(x, mid)
        ref = scipy.signal.find_peaks(x)[0]
        np.testing.assert_array_equal(mid[:k], ref)
        prom, lb, rb = np.empty(k), np.empty(k, np.int64), np.empty(k, np.int64)
        peak_bases(x, mid, k, prom, lb, rb, np.empty((6, x.size // 2 + 2)))
        rp, rl, rr = scipy.signal.peak_prominences(x, ref)
        np.testing.assert_array_equal(prom, rp)
        np.testing.assert_array_equal(lb, rl)
        np.testing.assert_array_equal(rb, rr)
        h = (x - x.min()) / (x.max() - x.min())
        w = [peak_width(h, p, h[p], lb[i], rb[i], 0.5) for i, p in enumerate(ref)]
        np.testing.assert_array_equal(w, scipy.signal.peak_widths(h, ref, 0.5, (h[ref], rl, rr))[0])


def test_order_statistics_match_partition():
    from actsort_nb.features._select import N_BINS, order_stats

    rng = np.random.default_rng(12)
    cases = [
        rng.standard_normal(5000),
        np.round(rng.standard_normal(5000) * 3),  # heavy ties
        np.r_[rng.standard_normal(4000) * 1e-3, 1e6],  # one far outlier: everything in one bin, twice
        np.full(300, 2.5),
        np.r_[np.zeros(10), 5e-324],  # a range too small to scale
        np.clip(rng.standard_normal(3000) * 1e38, -3e38, 3e38).astype(np.float32),  # a range beyond float32
        np.r_[rng.standard_normal(500), np.inf, -np.inf],
        rng.standard_normal(7),
    ]
    for a in cases:
        ranks = np.unique(np.clip(np.array([0, a.size // 2 - 1, a.size // 2, int(0.9 * a.size), a.size - 1]), 0, a.size - 1))
        out = np.empty(ranks.size, a.dtype)
        scratch = [np.empty(N_BINS, np.int64), np.empty(N_BINS, np.int64), np.empty_like(a), np.empty_like(a)]
        order_stats(a, a.min(), a.max(), ranks, out, *scratch)
        np.testing.assert_array_equal(out, np.sort(a)[ranks])


@pytest.mark.parametrize("exact_bytes", [None, 100_000])
@pytest.mark.parametrize("kind", ["mixed", "noise"])
def test_pruned_similarity_matches_dense_reference(kind, exact_bytes, monkeypatch):
    # long traces, so the bounds are used; white noise leaves every pair undecided (dense fallback),
    # the mixed set only a few (pair-by-pair dot products); a small budget for the exact check's
    # unit rows sends them to a temporary file, read back in tiles of ~12 rows
    spills = []
    if exact_bytes is not None:
        monkeypatch.setattr(_similarity, "EXACT_BYTES", exact_bytes)
        make_file = _similarity.tempfile.TemporaryFile
        monkeypatch.setattr(_similarity.tempfile, "TemporaryFile", lambda: spills.append(1) or make_file())
    rng = np.random.default_rng(13)
    n, n_t = (300 if kind == "noise" else 150), 1024
    if kind == "noise":
        x = rng.standard_normal((n, n_t))
        x[1] = x[0] + 0.1 * rng.standard_normal(n_t)  # one similar pair among noise
    else:
        common = np.cumsum(rng.standard_normal((4, n_t)), axis=1)
        x = common[rng.integers(0, 4, n)] * rng.uniform(0.3, 2, (n, 1)) + rng.uniform(0.5, 40, (n, 1)) * rng.standard_normal((n, n_t))
    c = np.corrcoef(medfilt3(x))
    np.fill_diagonal(c, -1)
    ref = (c > 0.7).sum(axis=1) / (n - 1)
    assert 0 < ref.sum() and (kind == "noise" or ref.min() < ref.max())
    for block in (7, 512):
        np.testing.assert_allclose(trace_similarity(x, block=block), ref)
    # the temporal pass hands its own bounds to the same count
    np.testing.assert_allclose(temporal_features(x)[:, COL["trace_similarity"]], ref.astype(np.float32))
    assert bool(spills) == (exact_bytes is not None)
