"""Property tests (hypothesis) of the validators every reader goes through."""
from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_io_writers import write_extract_v5, write_extract_v73

from actsort_nb import InputError, candidate_set
from actsort_nb.io import extract, from_arrays
from actsort_nb.io._common import check_size, npy_header
from actsort_nb.io.neurofinder import region_footprints

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one_sentence(msg: str) -> bool:
    return "\n" not in msg and msg.endswith((".", "?")) and not re.search(r"[.?!]\s+[A-Z]", msg)


@st.composite
def recordings(draw, max_n=5, max_side=9, max_t=12):
    n = draw(st.integers(1, max_n))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    t = draw(st.integers(1, max_t))
    elems = st.floats(0, 100, width=32, allow_nan=False, allow_infinity=False)
    fp = draw(hnp.arrays(np.float32, (n, h, w), elements=elems))
    # every candidate needs at least one non-zero pixel
    ys = draw(st.lists(st.integers(0, h - 1), min_size=n, max_size=n))
    xs = draw(st.lists(st.integers(0, w - 1), min_size=n, max_size=n))
    fp[np.arange(n), ys, xs] = 1.0 + fp[np.arange(n), ys, xs]
    tr = draw(hnp.arrays(np.float32, (n, t), elements=st.floats(-1e3, 1e3, width=32)))
    return fp, tr


@SETTINGS
@given(recordings(), st.permutations(["candidate", "y", "x"]), st.booleans())
def test_from_arrays_round_trips_any_named_order(rec, dims, time_first):
    fp, tr = rec
    fp_in = np.transpose(fp, [("candidate", "y", "x").index(d) for d in dims])
    tr_in, tdims = (tr.T, ("time", "candidate")) if time_first else (tr, ("candidate", "time"))
    ds = from_arrays(fp_in, tr_in, dims=tuple(dims), trace_dims=tdims)
    np.testing.assert_array_equal(ds.footprints.data.todense(), fp)
    np.testing.assert_array_equal(ds.traces.values, tr)


@SETTINGS
@given(recordings(), st.sampled_from(["footprints", "traces"]), st.sampled_from([np.nan, np.inf, -np.inf]), st.data())
def test_any_non_finite_value_is_refused_in_one_sentence(rec, where, bad, data):
    fp, tr = (a.copy() for a in rec)
    arr = fp if where == "footprints" else tr
    idx = tuple(data.draw(st.integers(0, s - 1)) for s in arr.shape)
    arr[idx] = bad
    with pytest.raises(InputError) as info:
        candidate_set(fp, tr, source="rec.mat")
    assert one_sentence(str(info.value)) and "rec.mat" in str(info.value) and "NaN/inf" in str(info.value)


@SETTINGS
@given(recordings(), st.integers(1, 4))
def test_candidate_count_mismatch_is_refused(rec, extra):
    fp, tr = rec
    tr2 = np.concatenate([tr, np.ones((extra, tr.shape[1]), np.float32)])
    with pytest.raises(InputError) as info:
        candidate_set(fp, tr2, source="rec.mat")
    assert "rec.mat" in str(info.value)


@SETTINGS
@given(recordings(max_n=4, max_side=7, max_t=8), st.booleans(), st.booleans())
def test_mat_files_round_trip_exactly(rec, v73, in_struct):
    fp, tr = rec
    with tempfile.TemporaryDirectory() as d:
        writer = write_extract_v73 if v73 else write_extract_v5
        p = writer(Path(d) / "o.mat", fp, tr, struct="output" if in_struct else None)
        ds = extract.read(p)
        np.testing.assert_array_equal(ds.footprints.data.todense(), fp)
        np.testing.assert_array_equal(ds.traces.values, tr)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 10**7), min_size=0, max_size=4),
    st.sampled_from(["u1", "i2", "f4", "f8", "c16"]),
    st.integers(1, 2**34),
)
def test_check_size_refuses_exactly_above_the_limit(shape, dtype, limit):
    nbytes = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    if nbytes > limit:
        with pytest.raises(InputError, match="not loaded"):
            check_size(shape, dtype, "x", path="f.h5", limit=limit)
    else:
        check_size(shape, dtype, "x", path="f.h5", limit=limit)


@SETTINGS
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)), st.data())
def test_truncated_npy_is_always_refused(arr, data):
    buf = io.BytesIO()
    np.save(buf, arr)
    raw = buf.getvalue()
    cut = data.draw(st.integers(0, len(raw) - 1))  # at least one byte missing
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.npy"
        p.write_bytes(raw[:cut])
        with pytest.raises(InputError) as info:
            npy_header(p)
        assert one_sentence(str(info.value)) and "a.npy" in str(info.value)


@SETTINGS
@given(
    st.integers(1, 12),
    st.integers(1, 12),
    st.lists(st.lists(st.tuples(st.integers(-3, 14), st.integers(-3, 14)), min_size=1, max_size=6), min_size=1, max_size=5),
)
def test_region_pixels_inside_or_refused(h, w, regions):
    recs = [{"id": i, "coordinates": [list(c) for c in r]} for i, r in enumerate(regions)]
    inside = all(0 <= y < h and 0 <= x < w for r in regions for y, x in r)
    if inside:
        fp, ids = region_footprints(recs, (h, w))
        assert fp.shape == (len(regions), h * w) and ids.tolist() == list(range(len(regions)))
        for k, r in enumerate(regions):
            assert set(fp[k].indices.tolist()) == {y * w + x for y, x in r}
    else:
        with pytest.raises(InputError, match="outside"):
            region_footprints(recs, (h, w), path="regions.json")
