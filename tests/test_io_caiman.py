"""CaImAn HDF5 reader: sparse Fortran-ordered A, C + YrA, idx_components, frame rate."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from test_io_writers import make_truth, write_caiman

from actsort_nb import InputError
from actsort_nb.io import caiman, guess_format, open_candidates


@pytest.fixture
def truth():
    return make_truth(n=6, h=9, w=14, t=30, seed=3)


def test_round_trip_exact(tmp_path, truth):
    fp, C, movie = truth
    YrA = np.random.default_rng(1).normal(size=C.shape).astype(np.float32)
    Cn = np.random.default_rng(2).random((9, 14)).astype(np.float32)
    p = write_caiman(tmp_path / "cnm.hdf5", fp, C, YrA, idx_components=[0, 2, 5], fr=15.5, Cn=Cn)
    assert guess_format(p) == "caiman"
    ds = open_candidates(p, movie=movie)
    assert dict(ds.sizes) == {"candidate": 6, "y": 9, "x": 14, "time": 30}
    np.testing.assert_array_equal(ds.footprints.data.todense(), fp)
    np.testing.assert_array_equal(ds.traces.values, (C + YrA).astype(np.float32))
    np.testing.assert_array_equal(ds.source_label.values, [1, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(ds.corr_image.values, Cn)
    assert ds.attrs["frame_rate"] == 15.5 and ds.attrs["trace"] == "C+YrA"
    np.testing.assert_array_equal(ds.movie.data.compute(), movie)


def test_denoised_traces_and_missing_optional_fields(tmp_path, truth):
    fp, C, _ = truth
    p = write_caiman(tmp_path / "cnm.hdf5", fp, C, YrA=None, idx_components=None)
    ds = caiman.read(p, trace="C")
    np.testing.assert_array_equal(ds.traces.values, C)
    assert "source_label" not in ds
    # raw falls back to C when YrA was not saved
    np.testing.assert_array_equal(caiman.read(p).traces.values, C)


def test_time_first_C_is_reported(tmp_path, truth):
    fp, C, _ = truth
    p = write_caiman(tmp_path / "cnm.hdf5", fp, C.T.copy())
    with pytest.raises(InputError, match=r"time first.*transpose C"):
        caiman.read(p)


def test_pixels_do_not_match_dims(tmp_path, truth):
    fp, C, _ = truth
    p = write_caiman(tmp_path / "cnm.hdf5", fp, C)
    with h5py.File(p, "r+") as f:
        del f["estimates/dims"]
        f["estimates/dims"] = np.array([10, 14])
    with pytest.raises(InputError, match="pixel rows but dims"):
        caiman.read(p)


def test_bad_trace_option(tmp_path, truth):
    fp, C, _ = truth
    p = write_caiman(tmp_path / "cnm.hdf5", fp, C)
    with pytest.raises(InputError, match="'trace' parameter"):
        caiman.read(p, trace="YrA")
