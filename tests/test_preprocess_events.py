"""Top events on hand-built traces (ActSort's rule)."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from actsort_nb import InputError
from actsort_nb.preprocess.events import EDGE_FRAMES, top_events


def _trace(n_t=300, peaks=(), base=0.0):
    t = np.full(n_t, base, np.float64)
    for f, h in peaks:
        t[f] = h
    return t


def test_highest_first_and_padding():
    t = _trace(peaks=[(50, 3.0), (120, 5.0), (200, 4.0)])
    assert top_events(t[None]).tolist() == [[120, 200, 50, -1, -1]]


def test_keeps_five_highest_of_many():
    peaks = [(20 + 25 * i, 1.0 + i) for i in range(10)]
    ev = top_events(_trace(peaks=peaks)[None])[0]
    assert ev.tolist() == [245, 220, 195, 170, 145]


def test_edges_are_excluded():
    n_t = 200
    t = _trace(n_t, peaks=[(3, 100.0), (n_t - 4, 100.0), (100, 2.0)])
    ev = top_events(t[None])[0]
    assert ev[0] == 100 and (ev[1:] == -1).all()
    assert EDGE_FRAMES <= ev[0] < n_t - EDGE_FRAMES


def test_min_distance_keeps_taller_neighbour():
    # 1 % of 1000 frames = 10: a peak 8 frames from a taller one is dropped, 12 frames is kept
    t = _trace(1000, peaks=[(500, 5.0), (508, 4.0), (300, 3.0), (312, 2.5)])
    assert top_events(t[None])[0].tolist() == [500, 300, 312, -1, -1]


def test_prominence_threshold_is_trace_std():
    rng = np.random.default_rng(0)
    t = rng.normal(0, 1, 2000)
    ev = top_events(t[None])[0]
    # every kept peak has prominence >= std of the edge-zeroed trace
    import scipy.signal

    x = t.copy()
    x[:EDGE_FRAMES] = 0
    x[-EDGE_FRAMES:] = 0
    x -= min(0, x.min())
    peaks, props = scipy.signal.find_peaks(x, prominence=0)
    prom = dict(zip(peaks.tolist(), props["prominences"]))
    kept = ev[ev >= 0]
    assert kept.size == 5
    assert all(prom[int(f)] >= x.std(ddof=1) for f in kept)
    assert np.all(np.diff(x[kept]) <= 0)  # highest first


def test_no_peak_falls_back_to_argmax():
    t = np.linspace(0, 1, 100)  # monotone: no interior peak; edges zeroed
    ev = top_events(t[None])[0]
    assert ev.tolist() == [100 - EDGE_FRAMES - 1, -1, -1, -1, -1]


def test_negative_traces_are_shifted():
    t = _trace(300, peaks=[(150, -1.0)], base=-3.0)  # a peak of -1 on a -3 baseline
    assert top_events(t[None])[0, 0] == 150


def test_dask_traces_match_numpy_and_blocks():
    rng = np.random.default_rng(1)
    tr = rng.normal(0, 1, (37, 400)).astype(np.float32)
    want = top_events(tr)
    got = top_events(da.from_array(tr, chunks=(5, 400)))
    np.testing.assert_array_equal(want, got)
    assert got.dtype == np.int32 and got.shape == (37, 5)


def test_nan_traces_refused():
    tr = np.zeros((2, 100))
    tr[1, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        top_events(tr)


def test_compiled_event_loop_equals_scipy_find_peaks():
    """The compiled per-trace loop picks the same frames as scipy.signal.find_peaks + _separated."""
    from actsort_nb.preprocess._kernels import top_events_block
    from actsort_nb.preprocess.events import _top_events_reference

    rng = np.random.default_rng(21)
    for trial in range(12):
        n_t = (50, 200, 1000, 3)[trial % 4]
        x = rng.normal(0, 1, (300, n_t))
        if trial % 2:
            x = np.round(x * 2) / 2  # plateaus and tied heights
        if trial % 3 == 2:
            x = x.cumsum(axis=1)  # long basins
        x[:5] = 0
        x[5:10] = np.arange(n_t)
        x -= np.minimum(0, x.min(axis=1, keepdims=True))
        prominence = np.maximum(x.std(axis=1) * (0.01, 1, 3)[trial % 3], 1e-300)
        min_distance = n_t * 0.01 * (trial + 1)
        got = np.full((300, 5), -1, np.int32)
        want = got.copy()
        top_events_block(x, prominence, min_distance, got)
        _top_events_reference(x, prominence, min_distance, want)
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")


def test_compiled_event_loop_equals_scipy_on_transients():
    """Calcium-like traces (few tall transients with long noisy decays, stretches of exact
    zeros) make the compiled loop look past its first batch of highest peaks: same frames."""
    from actsort_nb.preprocess._kernels import top_events_block
    from actsort_nb.preprocess.events import _top_events_reference

    rng = np.random.default_rng(5)
    n_t = 3000
    kernel = np.exp(-np.arange(400) / 120.0)
    for n_spikes in (1, 2, 4, 12):
        spikes = np.zeros((200, n_t))
        for row in spikes:
            row[rng.integers(10, n_t - 10, n_spikes)] = rng.uniform(5, 40, n_spikes)
        x = np.array([np.convolve(s, kernel)[:n_t] for s in spikes]) + rng.normal(0, 0.3, (200, n_t))
        x[::3] = np.maximum(x[::3] - 1.0, 0)  # exact zeros between events, as in deconvolved traces
        x[:, :EDGE_FRAMES] = 0
        x[:, -EDGE_FRAMES:] = 0
        x -= np.minimum(0, x.min(axis=1, keepdims=True))
        prominence = np.maximum(x.std(axis=1), 1e-300)
        got = np.full((200, 5), -1, np.int32)
        want = got.copy()
        top_events_block(x, prominence, n_t * 0.01, got)
        _top_events_reference(x, prominence, n_t * 0.01, want)
        np.testing.assert_array_equal(got, want, err_msg=f"{n_spikes} transients")


def test_top_events_prepares_each_trace_as_actsort_does():
    """top_events (each row prepared inside the compiled loop) picks the frames of the numpy
    preparation (float64, edges zeroed, shifted non-negative, prominence = s.d.) + scipy."""
    from actsort_nb.preprocess.events import _top_events_reference

    rng = np.random.default_rng(8)
    n_t = 1500
    kernel = np.exp(-np.arange(300) / 60.0)
    spikes = (rng.random((120, n_t)) < 0.004) * rng.uniform(2, 20, (120, n_t))
    traces = np.array([np.convolve(s, kernel)[:n_t] for s in spikes]) + rng.normal(0, 0.4, (120, n_t)) - 1.0
    traces = traces.astype(np.float32)
    traces[5] = 0  # flat
    traces[6, 3] = 50  # a peak inside the zeroed edge
    x = traces.astype(np.float64)
    x[:, :EDGE_FRAMES] = 0
    x[:, n_t - EDGE_FRAMES :] = 0
    x -= np.minimum(0.0, x.min(axis=1, keepdims=True))
    want = np.full((120, 5), -1, np.int32)
    _top_events_reference(x, np.maximum(x.std(axis=1, ddof=1), 1e-300), n_t * 0.01, want)
    np.testing.assert_array_equal(top_events(traces), want)
    np.testing.assert_array_equal(top_events(traces.astype(np.float64)), want)


def test_prominence_threshold_is_matlabs_sample_std():
    # ActSort's find_spikes.m: MinPeakProminence = std(trace), which divides by N - 1
    x = np.zeros(100)
    x[50], x[20] = 10.0, 1.001479
    assert x.std() < x[20] < x.std(ddof=1)  # prominent by the population s.d., not by MATLAB's
    assert top_events(x[None])[0].tolist() == [50, -1, -1, -1, -1]
