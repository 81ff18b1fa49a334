"""EXTRACT / ActSort .mat reader: v7.3 and v5 round trips and MATLAB-order pitfalls."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse
from test_io_writers import (
    make_truth,
    write_extract_v5,
    write_extract_v73,
    write_h5_movie,
)

from actsort_nb import InputError
from actsort_nb.io import extract, open_candidates


@pytest.fixture
def truth():
    return make_truth(n=5, h=12, w=10, t=40)


@pytest.mark.parametrize("writer", [write_extract_v73, write_extract_v5], ids=["v7.3", "v5"])
@pytest.mark.parametrize("struct", ["output", None], ids=["struct", "top-level"])
def test_round_trip_exact(tmp_path, truth, writer, struct):
    fp, tr, _ = truth
    image = np.arange(12 * 10, dtype=np.float32).reshape(12, 10)
    p = writer(tmp_path / "out.mat", fp, tr, image, struct=struct)
    assert extract.guess_can_open(p)
    ds = extract.read(p)
    assert dict(ds.sizes) == {"candidate": 5, "y": 12, "x": 10, "time": 40}
    np.testing.assert_array_equal(ds.footprints.data.todense(), fp)
    np.testing.assert_array_equal(ds.traces.values, tr)
    np.testing.assert_array_equal(ds.max_image.values, image)
    assert ds.attrs["source_format"] == "extract"
    assert ds.attrs["mat_version"] == ("7.3" if writer is write_extract_v73 else "5")


@pytest.mark.parametrize("fp_field,tr_field,img_field", [("filters", "traces", "summary_image"), ("spatialWeights", "temporal_weights", "max_im")])
def test_alternative_field_names(tmp_path, truth, fp_field, tr_field, img_field):
    fp, tr, _ = truth
    img = np.ones((12, 10), np.float32)
    p = write_extract_v73(tmp_path / "o.mat", fp, tr, img, fp_field=fp_field, tr_field=tr_field, image_field=img_field)
    ds = extract.read(p)
    np.testing.assert_array_equal(ds.footprints.data.todense(), fp)
    assert ds.attrs["footprint_field"].endswith(fp_field)


def test_with_lazy_movie_and_frame_rate(tmp_path, truth):
    fp, tr, movie = truth
    p = write_extract_v73(tmp_path / "o.mat", fp, tr, extra={"fps": np.array([[20.0]])})
    m = write_h5_movie(tmp_path / "movie.h5", movie, matlab=True)
    ds = open_candidates(p, movie=m)
    assert ds.attrs["frame_rate"] == 20.0
    np.testing.assert_array_equal(ds.movie.data.compute(), movie)
    assert ds.time.values[1] == pytest.approx(0.05)


def test_transposed_traces_are_detected_and_fixable(tmp_path, truth):
    fp, tr, _ = truth
    p = write_extract_v73(tmp_path / "o.mat", fp, tr.T, struct=None)  # saved [N T] instead of [T N]
    with pytest.raises(InputError, match="look transposed.*trace_order='NT'"):
        extract.read(p)
    np.testing.assert_array_equal(extract.read(p, trace_order="NT").traces.values, tr)


def test_nhw_footprints_are_detected_and_fixable(tmp_path, truth):
    fp, tr, _ = truth
    p = tmp_path / "o.mat"
    scipy.io.savemat(p, {"spatial_weights": fp, "temporal_weights": tr.T})  # [N H W]
    with pytest.raises(InputError, match="footprint_order='NHW'"):
        extract.read(p)
    np.testing.assert_array_equal(extract.read(p, footprint_order="NHW").footprints.data.todense(), fp)


def test_single_candidate_matlab_drops_trailing_singleton(tmp_path, truth):
    fp, tr, _ = truth
    p = tmp_path / "one.mat"
    scipy.io.savemat(p, {"spatial_weights": fp[0], "temporal_weights": tr[:1].T})  # [H W] and [T 1]
    ds = extract.read(p)
    assert ds.sizes["candidate"] == 1
    np.testing.assert_array_equal(ds.footprints.data.todense()[0], fp[0])


def test_sparse_flattened_footprints_v5_and_v73(tmp_path, truth):
    fp, tr, _ = truth
    flat = scipy.sparse.csc_matrix(np.stack([f.ravel(order="F") for f in fp], 1).astype(np.float64))  # MATLAB [H*W N]
    p5 = tmp_path / "sp5.mat"
    scipy.io.savemat(p5, {"spatial_weights": flat, "temporal_weights": tr.T.astype(np.float64)})
    with pytest.raises(InputError, match="fov_shape"):
        extract.read(p5)
    np.testing.assert_allclose(extract.read(p5, fov_shape=(12, 10)).footprints.data.todense(), fp)
    # v7.3 stores MATLAB sparse as a group with data/ir/jc and the row count in MATLAB_sparse.
    p73 = tmp_path / "sp73.mat"
    with h5py.File(p73, "w", userblock_size=512) as f:
        g = f.create_group("spatial_weights")
        g.attrs["MATLAB_class"] = np.bytes_(b"double")
        g.attrs["MATLAB_sparse"] = np.uint64(12 * 10)
        g["data"], g["ir"], g["jc"] = flat.data, flat.indices.astype(np.uint64), flat.indptr.astype(np.uint64)
        f["temporal_weights"] = tr.astype(np.float64)
        f["max_image"] = np.zeros((10, 12))
    from test_io_writers import _mat73_finish

    _mat73_finish(p73)
    np.testing.assert_allclose(extract.read(p73).footprints.data.todense(), fp)


def test_matlab_movie_without_markers_gets_the_fix_named(tmp_path, truth):
    fp, tr, movie = truth
    p = write_extract_v73(tmp_path / "o.mat", fp, tr)
    m = tmp_path / "m.h5"
    with h5py.File(m, "w") as f:  # MATLAB h5write of [H W T]: no F_per_pixel, no MATLAB_class
        f["mov"] = movie.transpose(0, 2, 1)
    with pytest.raises(InputError, match=r"look swapped.*open_movie\(path, matlab_order=True\)"):
        extract.read(p, movie=m)
    from actsort_nb.io import open_movie

    ds = extract.read(p, movie=open_movie(m, matlab_order=True))
    np.testing.assert_array_equal(ds.movie.values, movie)


def test_not_a_mat_file(tmp_path):
    p = tmp_path / "x.mat"
    p.write_bytes(b"hello world" * 20)
    assert not extract.guess_can_open(p)
    with pytest.raises(InputError, match="not a MATLAB .mat file"):
        extract.read(p)


def test_non_utf8_file_name_reads_and_prints(tmp_path, truth):
    import os
    from pathlib import Path

    fp, tr, _ = truth
    p = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"r\xe9sultat.mat")))
    write_extract_v5(p, fp, tr)
    ds = open_candidates(p)
    assert ds.attrs["source"].endswith("r\\xe9sultat.mat")
    ds.attrs["source"].encode("utf-8")  # printable, no lone surrogates
