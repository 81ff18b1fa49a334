"""compute_features on CandidateSets and sort sets; sanitize; describe_features."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from _sortset_factory import make_sortset

from actsort_nb import InputError, candidate_set
from actsort_nb.features import FALLBACKS, compute_features, describe_features, sanitize
from actsort_nb.features.registry import FEATURE_NAMES
from actsort_nb.synthetic import simulate_recording


@pytest.fixture(scope="module")
def recording():
    return simulate_recording(n_cells=8, shape=(48, 48), n_frames=300, seed=3)


def test_candidate_set_gives_temporal_and_spatial(recording):
    f = compute_features(recording)
    assert f.dims == ("candidate", "feature")
    assert f.dtype == np.float32
    assert f["feature"].values.tolist() == list(FEATURE_NAMES[:46])
    assert f.attrs["groups"] == ["temporal", "spatial"]
    assert f.attrs["missing_groups"] == ["spatiotemporal"] and "snapshots" in f.attrs["note"]
    assert np.isfinite(f.values).all()
    np.testing.assert_array_equal(f["candidate"].values, recording["candidate"].values)
    assert set(f["group"].values) == {"temporal", "spatial"}


def test_sort_set_gives_all_76_in_registry_order():
    ss = make_sortset(12, shape=(48, 48), n_frames=200, seed=1).drop_vars(["features", "feature"])
    f = compute_features(ss)
    assert f["feature"].values.tolist() == list(FEATURE_NAMES)
    assert f.attrs["missing_groups"] == [] and f.attrs["note"] == ""
    assert np.isfinite(f.values).all() and f.shape == (12, 76)
    # one group alone equals that group's slice of the full table
    st = compute_features(ss, groups=["spatiotemporal"], block=5)
    np.testing.assert_allclose(st.values, f.sel(feature=st["feature"]).values, rtol=1e-6, atol=1e-7)


def test_group_selection_and_bad_input(recording):
    f = compute_features(recording, groups=("spatial",))
    assert f.sizes["feature"] == 10
    with pytest.raises(InputError, match="groups"):
        compute_features(recording, groups=("spacial",))
    with pytest.raises(InputError, match="Dataset"):
        compute_features(np.zeros((3, 3)))
    with pytest.raises(InputError, match="traces"):
        compute_features(recording.drop_vars("traces"))


def test_spatiotemporal_alone_on_a_candidate_set_is_refused(recording):
    for groups in (["spatiotemporal"], "spatiotemporal", ("spatiotemporal", "spatiotemporal")):
        with pytest.raises(InputError, match=r"snapshots.*preprocess\(candidates\).*groups=\['temporal', 'spatial'\]"):
            compute_features(recording, groups=groups)


def test_skipped_groups_asked_for_by_name_warn(recording):
    with pytest.warns(UserWarning, match="skipping the spatiotemporal features"):
        f = compute_features(recording, groups=["temporal", "spatiotemporal"])
    assert f.attrs["groups"] == ["temporal"] and f.attrs["missing_groups"] == ["spatiotemporal"]
    np.testing.assert_array_equal(f.values, compute_features(recording, groups=["temporal"]).values)
    with pytest.warns(UserWarning, match="spatiotemporal"):
        assert compute_features(recording, groups=("temporal", "spatial", "spatiotemporal")).sizes["feature"] == 46


def test_default_groups_skip_silently(recording):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = compute_features(recording)
    assert f.attrs["missing_groups"] == ["spatiotemporal"] and f.sizes["feature"] == 46


def test_traces_beyond_float32_are_refused(recording):
    # candidate_set refuses them; a dataset built otherwise must not turn them into inf
    ds = recording.copy()
    ds["traces"] = ds["traces"].astype(np.float64)
    ds["traces"][0, 0] = 1e300
    with pytest.raises(InputError, match="float32 range"):
        compute_features(ds, groups=["temporal"])


def test_degenerate_candidates_stay_finite():
    fp = np.zeros((4, 16, 16), np.float32)
    fp[0, 5, 5] = 1  # single pixel
    fp[1, 0:3, 0:16] = 1  # a bar along the edge
    fp[2, 8:12, 8:12] = 2  # flat square
    fp[3, 3, 3] = 1
    fp[3, 12, 12] = 1  # two single pixels
    tr = np.zeros((4, 60), np.float32)  # flat traces
    tr[1, 30] = 1.0  # one spike
    tr[2] = 5.0  # constant offset
    tr[3] = -np.linspace(0, 1, 60)  # all negative ramp
    f = compute_features(candidate_set(fp, tr))
    assert np.isfinite(f.values).all()
    assert f.attrs.get("n_sanitized") == 0  # the features themselves are finite


def test_sanitize_fallbacks_and_extremes():
    X = np.ones((4, 76))
    X[:, 6] = [1.0, np.inf, 3.0, -np.inf]
    X[0, 42] = np.nan  # eccentricity's fallback is 1
    X[1, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="non-finite"):
        Y = sanitize(X)
    assert Y.dtype == np.float32 and np.isfinite(Y).all()
    assert Y[:, 6].tolist() == [1.0, 3.0, 3.0, 1.0]
    assert Y[0, 42] == FALLBACKS["eccentricity"] == 1.0
    assert Y[1, 0] == 0.0
    # the other candidates' values do not leak into a NaN's replacement (unlike a column mean)
    X2 = X.copy()
    X2[2:, 0] = 1000.0
    with pytest.warns(RuntimeWarning):
        assert sanitize(X2)[1, 0] == 0.0


def test_sanitize_dataarray_by_name_and_clean_input_untouched():
    da = xr.DataArray(
        np.array([[np.nan, 2.0], [1.0, 3.0]]), dims=("candidate", "feature"), coords={"feature": ["eccentricity", "snr"]}
    )
    with pytest.warns(RuntimeWarning):
        out = sanitize(da)
    assert out.values.tolist() == [[1.0, 2.0], [1.0, 3.0]] and out.attrs["n_sanitized"] == 1
    clean = np.random.default_rng(0).random((3, 76))
    np.testing.assert_allclose(sanitize(clean), clean.astype(np.float32))
    with pytest.raises(InputError, match="feature_names"):
        sanitize(np.zeros((2, 5)))


def test_describe_features_rejects_unknown_group():
    with pytest.raises(InputError, match="group"):
        describe_features("tempral")


def test_lazily_reopened_sort_set_gives_the_same_features(tmp_path):
    from actsort_nb.preprocess import open_sortset, write_sortset

    ss = make_sortset(20, shape=(48, 48), n_frames=200, seed=1)
    write_sortset(ss, tmp_path / "s.h5", trace_step=0)  # 65,536 levels per trace (default: σ / 2)
    lazy = open_sortset(tmp_path / "s.h5")
    a = compute_features(lazy, block=6)  # snapshots read block by block from HDF5
    b = compute_features(ss)
    assert a["feature"].values.tolist() == b["feature"].values.tolist()
    # the sort set stores traces as 16-bit; only that rounding may move a feature
    np.testing.assert_allclose(a.values, b.values, rtol=2e-3, atol=2e-3)


def test_traces_are_read_in_blocks_never_whole(monkeypatch):
    import actsort_nb.features as F
    from actsort_nb import candidate_set

    rng = np.random.default_rng(0)
    n = 1300
    fp = np.zeros((n, 8, 8), np.float32)
    fp[:, 2:5, 2:5] = 1
    traces = rng.standard_normal((n, 400)).astype(np.float32)
    traces[: n // 2, 100:110] += 8.0  # half share a transient: many correlated pairs
    ds = candidate_set(fp, traces)
    reads = []
    original = F._TraceRows.__getitem__

    def spy(self, item):
        out = original(self, item)
        reads.append(out.shape[0])
        return out

    monkeypatch.setattr(F._TraceRows, "__getitem__", spy)
    got = F.compute_features(ds, groups=["temporal"]).values
    assert reads and max(reads) <= 512 < n
    monkeypatch.undo()
    want = F.temporal_features(traces)  # the whole array at once: same numbers
    np.testing.assert_array_equal(got, want)
