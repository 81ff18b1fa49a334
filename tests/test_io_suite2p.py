"""Suite2p plane folder: pickles only with trust=True, iscell columns, lazy data.bin."""
from __future__ import annotations

import numpy as np
import pytest
from test_io_writers import make_truth, write_suite2p

from actsort_nb import InputError
from actsort_nb.io import guess_format, open_candidates, open_movie, suite2p


@pytest.fixture
def plane(tmp_path):
    fp, F, movie = make_truth(n=4, h=11, w=13, t=25, seed=5)
    Fneu = (F * 0.5 + 1).astype(np.float32)
    iscell = np.array([[1, 0.9], [0, 0.2], [1, 0.7], [0, 0.4]], np.float64)
    folder = write_suite2p(tmp_path / "suite2p" / "plane0", fp, F, Fneu, iscell, movie=movie, fs=9.5)
    return folder, fp, F, Fneu, iscell, movie


def test_round_trip_exact(plane):
    folder, fp, F, Fneu, iscell, movie = plane
    assert guess_format(folder) == "suite2p"
    ds = open_candidates(folder, trust=True)
    assert dict(ds.sizes) == {"candidate": 4, "y": 11, "x": 13, "time": 25}
    np.testing.assert_array_equal(ds.footprints.data.todense(), fp)
    np.testing.assert_array_equal(ds.traces.values, F - np.float32(0.7) * Fneu)
    np.testing.assert_array_equal(ds.source_label.values, [1, 0, 1, 0])
    np.testing.assert_array_equal(ds.source_probability.values, iscell[:, 1].astype(np.float32))
    np.testing.assert_array_equal(ds.mean_image.values, fp.sum(0))
    assert ds.attrs["frame_rate"] == 9.5
    # data.bin is opened lazily as int16 (nframes, Ly, Lx)
    assert ds.movie.data.dtype == np.int16
    np.testing.assert_array_equal(ds.movie.data.compute(), movie)


def test_raw_F_with_zero_neuropil_coefficient(plane):
    folder, _, F, *_ = plane
    ds = suite2p.read(folder, trust=True, neuropil_coefficient=0, movie=False)
    np.testing.assert_array_equal(ds.traces.values, F)
    assert "movie" not in ds


def test_pickles_need_trust_and_say_why(plane):
    folder = plane[0]
    with pytest.raises(InputError, match=r"loading a pickle can run arbitrary code.*trust=True"):
        open_candidates(folder)


def test_data_bin_shape_from_ops_or_explicit(plane):
    folder, *_, movie = plane
    with pytest.raises(InputError, match="pickle"):
        open_movie(folder / "data.bin")
    np.testing.assert_array_equal(open_movie(folder / "data.bin", trust=True).compute(), movie)
    np.testing.assert_array_equal(open_movie(folder / "data.bin", shape=movie.shape)[3].compute(), movie[3])


def test_data_bin_as_the_movie_argument_with_trust(plane, tmp_path, capsys):
    # the CLI always passes MOVIE: a data.bin needs the trust given for the folder (it asked for --trust again)
    from actsort_nb.cli import main

    folder, *_, movie = plane
    for given in (folder / "data.bin", folder):
        ds = open_candidates(folder, trust=True, movie=given)
        np.testing.assert_array_equal(ds.movie.data.compute(), movie)
        assert ds.movie.attrs["source"] == str(given)
    out = tmp_path / "s2p_sortset.h5"
    code = main(["preprocess", str(folder / "data.bin"), str(folder), "-o", str(out), "--trust", "--quiet",
                 "--no-features"])
    assert code == 0, capsys.readouterr().err
    assert out.exists()


def test_transposed_F_is_reported(tmp_path):
    fp, F, _ = make_truth(n=4, h=11, w=13, t=25)
    folder = write_suite2p(tmp_path / "p", fp, F.T.copy())
    with pytest.raises(InputError, match="looks transposed"):
        suite2p.read(folder, trust=True)


def test_missing_stat_is_not_a_plane(tmp_path):
    (tmp_path / "F.npy").write_bytes(b"")
    assert not suite2p.guess_can_open(tmp_path)
    with pytest.raises(InputError, match="stat.npy missing"):
        suite2p.read(tmp_path)


def test_pickles_from_older_numpy_and_suite2p_values_load(tmp_path):
    """stat/ops written by numpy 1.x name 'numpy.core.multiarray'; ops holds a datetime and numpy scalars."""
    import pickle
    from datetime import datetime

    fp, F, _ = make_truth(n=2, h=6, w=7, t=10)
    folder = write_suite2p(tmp_path / "plane0", fp, F, ops_extra={"date_proc": datetime(2024, 5, 1, 12, 0), "tau": np.float64(1.25)})
    for fname in ("stat.npy", "ops.npy"):
        p = folder / fname
        obj = np.load(p, allow_pickle=True)  # our own file, written just above
        # Protocol 2 names globals as text, so they can be renamed to numpy 1.x's module.
        body = pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray" in body
        with open(p, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": obj.shape})
            fh.write(body)
    ds = suite2p.read(folder, trust=True)
    np.testing.assert_array_equal(ds.footprints.data.todense(), fp)
    # and the reference unpickler agrees on what ops holds
    with open(folder / "ops.npy", "rb") as fh:
        np.lib.format.read_magic(fh)
        np.lib.format.read_array_header_1_0(fh)
        ops = pickle.load(fh).item()
    assert ops["date_proc"] == datetime(2024, 5, 1, 12, 0) and ops["tau"] == 1.25


@pytest.mark.parametrize("kind", ["list", "array", "none"])
def test_max_projection_crop_ranges_as_lists_arrays_or_none(tmp_path, kind):
    # Suite2p stores yrange/xrange as numpy arrays when it skips registration
    fp, F, _ = make_truth(n=2, h=11, w=13, t=10)
    max_proj = np.arange(9 * 10, dtype=np.float32).reshape(9, 10) + 1
    ranges = {"list": ([1, 10], [2, 12]), "array": (np.array([1, 10]), np.array([2, 12]))}.get(kind, (None, None))
    folder = write_suite2p(tmp_path / "plane0", fp, F, ops_extra={
        "yrange": ranges[0], "xrange": ranges[1], "max_proj": max_proj if kind != "none" else np.ones((11, 13), np.float32)})
    ds = suite2p.read(folder, trust=True)
    expected = np.ones((11, 13), np.float32)
    if kind != "none":
        expected = np.zeros((11, 13), np.float32)
        expected[1:10, 2:12] = max_proj
    np.testing.assert_array_equal(ds.max_image.values, expected)
