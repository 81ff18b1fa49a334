"""Tests of the data model: candidate_set, feature_set, to_coo and the ds.actsort accessor."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.sparse
import sparse
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from actsort_nb import InputError, candidate_set, feature_set
from actsort_nb.candidates import SCHEMA_VERSION, to_coo


def two_squares(h: int = 8, w: int = 10) -> np.ndarray:
    fp = np.zeros((2, h, w), np.float32)
    fp[0, 1:3, 1:3] = [[1.0, 0.5], [0.25, 2.0]]
    fp[1, 5:8, 6:9] = 1.0
    return fp


def traces(n: int = 2, t: int = 20) -> np.ndarray:
    return np.random.default_rng(0).random((n, t))


# ---------------------------------------------------------------- candidate_set: values
def test_candidate_set_from_dense_arrays_keeps_values_and_dims():
    fp = two_squares()
    tr = traces()
    ds = candidate_set(fp, tr, frame_rate=4.0, ids=[10, 20], source="here.mat", source_format="extract")
    assert dict(ds.sizes) == {"candidate": 2, "y": 8, "x": 10, "time": 20}
    assert ds.footprints.dims == ("candidate", "y", "x") and ds.traces.dims == ("candidate", "time")
    data = ds.footprints.data
    assert isinstance(data, sparse.COO) and data.dtype == np.float32 and data.nnz == 4 + 9
    np.testing.assert_array_equal(data.todense(), fp)
    assert ds.traces.dtype == np.float32
    np.testing.assert_allclose(ds.traces.values, tr.astype(np.float32))
    np.testing.assert_array_equal(ds.candidate.values, [10, 20])
    np.testing.assert_allclose(ds.time.values, np.arange(20) / 4.0)
    assert ds.time.attrs["units"] == "s"
    assert ds.attrs == {"frame_rate": 4.0, "source": "here.mat", "source_format": "extract", "schema": SCHEMA_VERSION}


def test_unknown_frame_rate_is_nan_and_time_has_no_coordinate():
    ds = candidate_set(two_squares(), traces())
    assert np.isnan(ds.attrs["frame_rate"]) and "time" not in ds.coords
    np.testing.assert_array_equal(ds.candidate.values, [0, 1])
    assert ds.attrs["source"] == "" and ds.attrs["source_format"] == "arrays"


def test_footprints_from_scipy_sparse_and_coo_match_dense():
    fp = two_squares()
    dense = candidate_set(fp, traces())
    csr = scipy.sparse.csr_matrix(fp.reshape(2, -1))
    from_csr = candidate_set(csr, traces(), fov_shape=(8, 10))
    from_coo = candidate_set(sparse.COO.from_numpy(fp.astype(np.float64)), traces())
    for ds in (from_csr, from_coo):
        assert ds.footprints.dtype == np.float32
        np.testing.assert_array_equal(ds.footprints.data.todense(), dense.footprints.data.todense())


def test_to_coo_uses_row_major_pixel_order():
    m = scipy.sparse.coo_matrix(([3.0], ([0], [1 * 5 + 4])), shape=(1, 4 * 5))
    out = to_coo(m, (4, 5))
    assert out.shape == (1, 4, 5) and out.todense()[0, 1, 4] == 3.0


def test_movie_is_kept_lazy_and_chunked_in_time():
    fp, tr = two_squares(), traces(t=250)
    mov = np.random.default_rng(1).integers(0, 100, (250, 8, 10), dtype=np.uint16)
    ds = candidate_set(fp, tr, movie=mov)
    assert isinstance(ds.movie.data, da.Array) and ds.movie.dims == ("time", "y", "x")
    assert ds.movie.data.chunks[0] == (100, 100, 50) and ds.movie.dtype == np.uint16
    np.testing.assert_array_equal(ds.movie.values, mov)
    lazy = da.from_array(mov, chunks=(30, 8, 10))
    assert candidate_set(fp, tr, movie=lazy).movie.data.chunks[0][0] == 30
    as_da = xr.DataArray(mov, dims=("time", "y", "x"))
    np.testing.assert_array_equal(candidate_set(fp, tr, movie=as_da).movie.values, mov)


def test_summary_images_and_candidate_vars():
    img = np.arange(80, dtype=np.float32).reshape(8, 10)
    ds = candidate_set(
        two_squares(),
        traces(),
        summary_images={"max_image": img},
        candidate_vars={"source_label": np.array([1, 0], np.int8), "extra": np.zeros((2, 3))},
        attrs={"note": "x"},
    )
    assert ds.max_image.dims == ("y", "x")
    np.testing.assert_array_equal(ds.max_image.values, img)
    assert ds.source_label.dims == ("candidate",) and ds.source_label.dtype == np.int8
    assert ds.extra.dims == ("candidate", "extra_dim1")
    assert ds.attrs["note"] == "x"


@pytest.mark.slow  # the first indexing of a sparse.COO in a process compiles numba code (~10 s)
def test_subsetting_by_candidate_keeps_everything_aligned():
    ds = candidate_set(two_squares(), traces(), ids=[7, 9], candidate_vars={"source_label": [1, 0]})
    one = ds.isel(candidate=slice(1, 2))
    np.testing.assert_array_equal(one.footprints.data.todense(), two_squares()[1:])
    assert one.source_label.values.tolist() == [0] and one.candidate.values.tolist() == [9]
    np.testing.assert_allclose(one.actsort.centers(), [[6.0, 7.0]])


# ---------------------------------------------------------------- candidate_set: each error path
def err(fn, match):
    with pytest.raises(InputError, match=match) as info:
        fn()
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_errors_on_footprints():
    tr = traces()
    err(lambda: candidate_set(np.ones((8, 10)), tr), r"footprints must be 3-D \(candidate, y, x\), got 2-D")
    err(lambda: candidate_set(np.full((2, 4, 4), "a"), tr), "must be numeric")
    bad = two_squares()
    bad[0, 0, 0] = np.nan
    err(lambda: candidate_set(bad, tr), r"1 NaN/inf value")
    bad = two_squares()
    bad[1] = 0
    err(lambda: candidate_set(bad, tr), r"all-zero footprint \(first at index 1\)")
    bad[1] = -two_squares()[1]  # no pixel > 0: ActSort's rules would see an empty footprint
    err(lambda: candidate_set(bad, tr), r"all-zero footprint \(first at index 1\), or no weight above zero")
    csr = scipy.sparse.csr_matrix(two_squares().reshape(2, -1))
    err(lambda: candidate_set(csr, tr), "need fov_shape")
    err(lambda: candidate_set(csr, tr, fov_shape=(9, 9)), "80 pixels per candidate but fov_shape")
    err(lambda: candidate_set(sparse.COO.from_numpy(np.ones((2, 3))), tr), "must be 3-D")


def test_errors_on_traces():
    fp = two_squares()
    err(lambda: candidate_set(fp, np.ones(20)), r"traces must be 2-D \(candidate, time\)")
    err(lambda: candidate_set(fp, np.full((2, 5), "x")), "must be numeric")
    msg = err(lambda: candidate_set(fp, np.ones((20, 2))), "2 footprints but 20 traces")
    assert "transposed" in msg
    msg = err(lambda: candidate_set(fp, np.ones((3, 20))), "2 footprints but 3 traces")
    assert "same extraction run" in msg
    err(lambda: candidate_set(fp, np.ones((2, 0))), "no time points")
    tr = traces()
    tr[1, 3] = np.inf
    err(lambda: candidate_set(fp, tr), "traces holds 1 NaN/inf")
    err(lambda: candidate_set(np.zeros((0, 4, 4)), np.zeros((0, 5))), "holds no candidates")


def test_errors_on_ids_frame_rate_and_vars():
    fp, tr = two_squares(), traces()
    err(lambda: candidate_set(fp, tr, ids=[1, 2, 3]), "one entry per candidate")
    err(lambda: candidate_set(fp, tr, ids=[4, 4]), "unique")
    err(lambda: candidate_set(fp, tr, frame_rate=0), "frame_rate must be a positive")
    err(lambda: candidate_set(fp, tr, frame_rate=-3), "frame_rate must be a positive")
    err(lambda: candidate_set(fp, tr, frame_rate="fast"), "frame_rate must be a positive")
    err(lambda: candidate_set(fp, tr, frame_rate=float("inf")), "frame_rate must be a positive")
    err(lambda: candidate_set(fp, tr, candidate_vars={"source_label": [1, 0, 1]}), "one value per candidate")
    err(lambda: candidate_set(fp, tr, summary_images={"max_image": np.ones((8, 9))}), "summary image is")
    err(lambda: candidate_set(fp, tr, summary_images={"max_image": np.ones(80)}), "max_image must be 2-D")
    err(lambda: candidate_set(fp, tr, summary_images={"max_image": np.full((8, 10), "a")}), "must be numeric")


def test_errors_on_movie():
    fp, tr = two_squares(), traces()
    msg = err(lambda: candidate_set(fp, tr, movie=np.zeros((20, 10, 8))), r"frames are \(10, 8\)")
    assert "swapped" in msg
    msg = err(lambda: candidate_set(fp, tr, movie=np.zeros((20, 9, 9))), "same crop")
    assert "swapped" not in msg
    err(lambda: candidate_set(fp, tr, movie=np.zeros((21, 8, 10))), "movie has 21 frames but the traces have 20")
    err(lambda: candidate_set(fp, tr, movie=np.zeros((8, 10))), r"movie must be 3-D \(time, y, x\)")
    err(lambda: candidate_set(fp, tr, movie=np.full((20, 8, 10), "a")), "must be numeric")
    err(lambda: candidate_set(fp, tr, movie=[[1, 2], [3, 4]]), "movie must be 3-D")


# ---------------------------------------------------------------- feature_set
def test_feature_set_values_names_and_annotations():
    X = np.arange(12.0).reshape(4, 3)
    fs = feature_set(
        X, feature_names=["a", "b", "c"], annotations=[[1, 0, -1, 1]], annotators=["ann"], ids=[5, 6, 7, 8]
    )
    assert dict(fs.sizes) == {"candidate": 4, "feature": 3, "annotator": 1}
    np.testing.assert_array_equal(fs.features.values, X)
    assert fs.feature.values.tolist() == ["a", "b", "c"] and fs.annotator.values.tolist() == ["ann"]
    assert fs.annotations.dtype == np.int8 and fs.annotations.dims == ("annotator", "candidate")
    np.testing.assert_array_equal(fs.sel(candidate=7).annotations.values, [-1])
    default = feature_set(X, annotations=[1, 0, 0, 1])
    assert default.feature.values.tolist() == ["f0", "f1", "f2"]
    assert default.annotator.values.tolist() == ["annotator0"]
    assert "annotations" not in feature_set(X)


def test_feature_set_error_paths():
    X = np.ones((4, 3))
    err(lambda: feature_set(np.ones(4)), r"features must be 2-D \(candidate, feature\)")
    err(lambda: feature_set(np.full((2, 2), "a")), "must be numeric")
    err(lambda: feature_set(np.ones((0, 3))), "feature table is empty")
    err(lambda: feature_set(X, feature_names=["a"]), "3 feature columns but 1 feature names")
    err(lambda: feature_set(X, annotations=np.ones((2, 5))), "annotations have 5 candidates but features have 4")
    err(lambda: feature_set(X, annotations=[[1, 2, 0, 0]]), "must be 1 \\(cell\\), 0")
    err(lambda: feature_set(X, annotations=[0.5, 1, 1, 1]), "must be 1 \\(cell\\), 0")
    err(lambda: feature_set(X, annotations=np.ones((1, 4, 2))), "annotations must be")
    err(lambda: feature_set(X, annotations=1), "annotations must be")
    err(lambda: feature_set(X, annotations=np.ones((2, 4)), annotators=["a"]), "2 annotator rows but 1 annotator names")
    err(lambda: feature_set(X, ids=[1, 2]), "one entry per candidate")


# ---------------------------------------------------------------- accessor
def test_accessor_centers_are_the_mean_of_positive_pixels():
    fp = two_squares()
    fp[1, 0, 0] = -5.0  # negative weights do not count (ActSort: pixels > 0)
    ds = candidate_set(fp, traces())
    np.testing.assert_allclose(ds.actsort.centers(), [[1.5, 1.5], [6.0, 7.0]])


def test_accessor_centers_ignore_explicit_zeros():
    coo = sparse.COO(
        np.array([[0, 0], [2, 4], [3, 9]]),
        np.array([1.0, 0.0], np.float32),
        shape=(1, 5, 10),
        sorted=True,
        has_duplicates=False,
    )
    ds = candidate_set(coo, traces(1))
    np.testing.assert_allclose(ds.actsort.centers(), [[2.0, 3.0]])


def test_accessor_footprints_csr_values_shape_and_cache():
    fp = two_squares()
    ds = candidate_set(fp, traces())
    csr = ds.actsort.footprints_csr()
    assert isinstance(csr, scipy.sparse.csr_matrix) and csr.shape == (2, 80)
    np.testing.assert_array_equal(csr.toarray(), fp.reshape(2, -1))
    assert csr[0, 2 * 10 + 2] == 2.0
    assert ds.actsort.footprints_csr() is csr


def test_accessor_cache_follows_replaced_footprints():
    ds = candidate_set(two_squares(), traces())
    first = ds.actsort.footprints_csr()
    new = two_squares()[::-1].copy()
    ds["footprints"] = (("candidate", "y", "x"), sparse.COO.from_numpy(new))
    np.testing.assert_array_equal(ds.actsort.footprints_csr().toarray(), new.reshape(2, -1))
    assert ds.actsort.footprints_csr() is not first


def test_accessor_sizes_and_require():
    ds = candidate_set(two_squares(), traces())
    assert ds.actsort.n_candidates == 2 and ds.actsort.fov_shape == (8, 10)
    ds.actsort.require("footprints", "traces")
    with pytest.raises(InputError, match="no variable 'trace'.*Did you mean 'traces'"):
        ds.actsort.require("traces", "trace")


# ---------------------------------------------------------------- hypothesis: validators never crash
DTYPES = st.sampled_from(["float32", "float64", "int16", "uint8", "bool", "complex64", "U1"])


def _array(draw, min_dims, max_dims, max_side=4):
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=max_side))
    if dtype == "U1":
        return np.full(shape, "a")
    if dtype in ("float32", "float64"):
        elems = st.floats(allow_nan=True, allow_infinity=True, width=32)
    elif dtype == "complex64":
        elems = st.complex_numbers(max_magnitude=10, width=64)
    else:
        elems = None
    return draw(hnp.arrays(np.dtype(dtype), shape, elements=elems))


@st.composite
def cs_inputs(draw):
    fp = _array(draw, 1, 4)
    if draw(st.booleans()) and fp.ndim == 3:  # often a coherent trace count
        tr = _array(draw, 2, 2)
        n_t = tr.shape[1] if tr.ndim == 2 else 3
        tr = draw(hnp.arrays(np.float64, (fp.shape[0], n_t), elements=st.floats(-1e6, 1e6) | st.just(np.nan)))
    else:
        tr = _array(draw, 1, 3)
    kw = {}
    if draw(st.booleans()):
        kw["frame_rate"] = draw(
            st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 30), st.text(max_size=3))
        )
    if draw(st.booleans()):
        kw["ids"] = draw(
            hnp.arrays(
                np.int64,
                draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=4)),
                elements=st.integers(0, 3),
            )
        )
    if draw(st.booleans()):
        kw["movie"] = _array(draw, 1, 4)
    if draw(st.booleans()):
        kw["summary_images"] = {"max_image": _array(draw, 1, 3)}
    return fp, tr, kw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cs_inputs())
def test_candidate_set_gives_a_valid_dataset_or_an_input_error(args):
    fp, tr, kw = args
    try:
        ds = candidate_set(fp, tr, **kw)
    except InputError as e:
        assert str(e).endswith((".", "?")) and "\n" not in str(e)
        return
    assert ds.sizes["candidate"] == fp.shape[0] == tr.shape[0] > 0
    assert (ds.sizes["y"], ds.sizes["x"]) == fp.shape[1:]
    assert ds.sizes["time"] == tr.shape[1] > 0
    assert isinstance(ds.footprints.data, sparse.COO) and ds.footprints.dtype == np.float32
    assert np.isfinite(ds.footprints.data.data).all() and np.isfinite(ds.traces.values).all()
    assert np.isnan(ds.attrs["frame_rate"]) or ds.attrs["frame_rate"] > 0
    if "movie" in kw:
        assert isinstance(ds.movie.data, da.Array) and ds.movie.shape == (tr.shape[1], *fp.shape[1:])


@st.composite
def fs_inputs(draw):
    X = _array(draw, 1, 3)
    kw = {}
    if draw(st.booleans()):
        n = X.shape[0] if X.ndim >= 1 else 1
        shape = draw(st.sampled_from([(n,), (2, n), (1, n + 1), (), (1, n, 2)]))
        kw["annotations"] = draw(
            hnp.arrays(draw(st.sampled_from(["int8", "float64", "int64"])), shape, elements=st.integers(-2, 2))
        )
    if draw(st.booleans()):
        kw["feature_names"] = [f"n{i}" for i in range(draw(st.integers(0, 4)))]
    if draw(st.booleans()):
        kw["annotators"] = [f"a{i}" for i in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        kw["ids"] = list(range(draw(st.integers(0, 4))))
    return X, kw


@settings(max_examples=150, deadline=None)
@given(fs_inputs())
def test_feature_set_gives_a_valid_dataset_or_an_input_error(args):
    X, kw = args
    try:
        fs = feature_set(X, **kw)
    except InputError:
        return
    assert fs.features.shape == X.shape and fs.sizes["candidate"] * fs.sizes["feature"] > 0
    if "annotations" in kw:
        assert fs.annotations.dtype == np.int8 and set(np.unique(fs.annotations.values)) <= {-1, 0, 1}
        assert fs.annotations.dims == ("annotator", "candidate")


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 5),
    st.integers(1, 30),
    st.tuples(st.integers(-1, 6), st.integers(-1, 6)) | st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_to_coo_from_scipy_gives_coo_or_input_error(n, cols, fov, fill):
    m = scipy.sparse.random(n, cols, density=0.5, format="csr", random_state=0, dtype=np.float64)
    if m.nnz:
        m.data[0] = fill
    try:
        out = to_coo(m, fov)
    except InputError:
        return
    assert out.shape == (n, *fov) and out.dtype == np.float32 and np.isfinite(out.data).all()
    np.testing.assert_array_equal(out.todense().reshape(n, cols), m.toarray().astype(np.float32))


def test_subset_matches_isel_and_keeps_order():
    from actsort_nb.synthetic import simulate_recording

    ds = simulate_recording(n_cells=6, shape=(48, 48), n_frames=60, seed=3)
    idx = [4, 0, 2]
    sub = ds.actsort.subset(idx)
    assert list(sub.candidate.values) == list(ds.candidate.values[idx])
    np.testing.assert_array_equal(sub.footprints.data.todense(), ds.footprints.data.todense()[idx])
    np.testing.assert_array_equal(sub.traces.values, ds.traces.values[idx])
    mask = np.zeros(ds.sizes["candidate"], bool)
    mask[[1, 3]] = True
    assert sub.actsort.subset(slice(0, 2)).sizes["candidate"] == 2
    assert ds.actsort.subset(mask).sizes["candidate"] == 2
    with pytest.raises(InputError, match="at most once"):
        ds.actsort.subset([1, 1])


def test_footprints_are_read_by_dimension_name_whatever_their_order():
    # transposed footprints gave silently wrong spatial features and centres
    import warnings

    from actsort_nb.features import compute_features

    fp = np.zeros((2, 10, 30), np.float32)
    fp[0, 0:3, 20:23] = 1
    fp[1, 4:7, 4:8] = 1
    ds = candidate_set(fp, np.random.default_rng(0).random((2, 100)))
    swapped = ds.assign(footprints=ds.footprints.transpose("candidate", "x", "y"))
    np.testing.assert_allclose(swapped.actsort.centers(), [[1, 21], [5, 5.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = compute_features(ds, groups="spatial").values   # one group as a string
        for other in (swapped, ds.transpose(), ds.assign(footprints=(("candidate", "y", "x"), fp))):  # dense too
            np.testing.assert_array_equal(compute_features(other, groups=["spatial"]).values, ref)
    da_fp = xr.DataArray(fp, dims=("candidate", "y", "x")).transpose("candidate", "x", "y")
    tr = xr.DataArray(np.arange(2.0)[:, None] * np.ones((1, 4)), dims=("candidate", "time")).T
    built = candidate_set(da_fp, tr)
    assert dict(built.sizes) == {"candidate": 2, "y": 10, "x": 30, "time": 4}
    np.testing.assert_array_equal(built.traces.values[1], 1.0)


def test_reserved_names_and_bad_feature_names_are_refused():
    fp = np.zeros((2, 8, 8), np.float32)
    fp[:, 2:4, 2:4] = 1
    for kw in ({"summary_images": {"traces": np.zeros((8, 8))}}, {"candidate_vars": {"candidate": [7, 8]}}):
        with pytest.raises(InputError, match="the CandidateSet's own"):
            candidate_set(fp, np.ones((2, 5)), **kw)
    for names, msg in (("ab", "sequence of 2 names"), (3, "sequence of 2 names"), (["a", "a"], "repeat a name")):
        with pytest.raises(InputError, match=msg):
            feature_set(np.ones((4, 2)), feature_names=names)


def test_feature_set_refuses_nan_repeated_ids_and_annotators():
    x = np.ones((3, 2))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        feature_set(bad)
    with pytest.raises(InputError, match="ids must be unique"):
        feature_set(x, ids=[1, 1, 2])
    with pytest.raises(InputError, match="annotator names repeat"):
        feature_set(x, annotations=np.ones((2, 3), np.int8), annotators=["ana", "ana"])
    swapped = xr.DataArray(x.T, dims=("feature", "candidate"))
    assert feature_set(swapped).sizes["candidate"] == 3  # by name, not by position


def test_frame_rate_true_and_traces_beyond_float32_are_refused():
    fp = np.zeros((2, 8, 8), np.float32)
    fp[:, 2:4, 2:4] = 1
    with pytest.raises(InputError, match="frame_rate must be a positive number"):
        candidate_set(fp, np.ones((2, 5)), frame_rate=True)
    with pytest.raises(InputError, match="exceed the float32 range"):
        candidate_set(fp, np.full((2, 5), 1e300))
