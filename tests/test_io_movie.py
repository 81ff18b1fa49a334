"""Lazy movies: HDF5 (Python and MATLAB order), TIFF (memmap and compressed), .npy, data.bin."""
from __future__ import annotations

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile
from test_io_writers import make_truth, write_h5_movie

from actsort_nb import InputError
from actsort_nb.io import guess_format, open_movie
from actsort_nb.io.movie import movie_format


@pytest.fixture
def movie():
    return make_truth(n=3, h=12, w=10, t=40)[2]


def _check(arr, movie):
    assert isinstance(arr, da.Array)
    assert arr.shape == movie.shape
    np.testing.assert_array_equal(arr.compute(), movie)
    np.testing.assert_array_equal(arr[7].compute(), movie[7])


def test_hdf5_python_order(tmp_path, movie):
    p = write_h5_movie(tmp_path / "m.h5", movie)
    assert guess_format(p) == "movie" and movie_format(p) == "hdf5"
    _check(open_movie(p), movie)


def test_hdf5_actsort_matlab_order_ignores_F_per_pixel(tmp_path, movie):
    p = write_h5_movie(tmp_path / "m.h5", movie, matlab=True, dataset="Y")
    _check(open_movie(p), movie)
    # Explicit override reads it as stored.
    assert open_movie(p, matlab_order=False).shape == (40, 10, 12)


def test_hdf5_several_datasets_need_a_name(tmp_path, movie):
    p = tmp_path / "m.h5"
    with h5py.File(p, "w") as f:
        f["a"] = movie
        f["b"] = movie
    with pytest.raises(InputError, match="dataset='name'"):
        open_movie(p)
    _check(open_movie(p, dataset="b"), movie)
    with pytest.raises(InputError, match="has no dataset 'c'"):
        open_movie(p, dataset="c")


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff(tmp_path, movie, compression):
    p = tmp_path / "m.tif"
    tifffile.imwrite(p, movie, compression=compression)
    assert movie_format(p) == "tiff"
    _check(open_movie(p), movie)


def test_tiff_one_page_per_file_frame_is_read_in_chunks(tmp_path, movie, monkeypatch):
    import actsort_nb.io.movie as mm

    monkeypatch.setattr(mm, "CHUNK_BYTES", movie[0].nbytes * 7)
    p = tmp_path / "m.tif"
    tifffile.imwrite(p, movie, compression="zlib")
    arr = open_movie(p)
    assert arr.chunks[0][0] == 7
    _check(arr, movie)


def test_npy_memmap(tmp_path, movie):
    p = tmp_path / "m.npy"
    np.save(p, movie)
    arr = open_movie(p)
    _check(arr, movie)


def test_data_bin(tmp_path, movie):
    p = tmp_path / "data.bin"
    movie.astype(np.int16).tofile(p)
    _check(open_movie(p, shape=movie.shape), movie)
    with pytest.raises(InputError, match="no ops.npy beside it"):
        open_movie(p)


def test_movie_is_never_loaded_whole(tmp_path):
    """A 2 GB-declared .npy movie opens instantly as a lazy array backed by a memmap."""
    shape = (2000, 512, 1024)
    with open(tmp_path / "big.npy", "wb") as fh:  # header + a sparse file: nothing written, nothing read
        np.lib.format.write_array_header_1_0(fh, {"descr": "<u2", "fortran_order": False, "shape": shape})
        fh.truncate(fh.tell() + int(np.prod(shape)) * 2)
    arr = open_movie(tmp_path / "big.npy")
    assert arr.shape == (2000, 512, 1024) and arr.numblocks[0] > 1


def test_not_a_movie(tmp_path):
    p = tmp_path / "m.txt"
    p.write_text("hello")
    with pytest.raises(InputError, match="supported movies are"):
        open_movie(p)


def test_a_compressed_tiff_has_the_same_dask_name_in_every_process(tmp_path, movie):
    # the checkpoint of an interrupted pass recognises its movie by this name: a random one never resumed
    import subprocess
    import sys

    tifffile = pytest.importorskip("tifffile")
    p = tmp_path / "m.tif"
    tifffile.imwrite(p, movie, compression="zlib")
    code = f"from actsort_nb.io import open_movie; print(open_movie({str(p)!r}).name)"
    names = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
             for _ in range(2)}
    assert len(names) == 1 and open_movie(p).name in next(iter(names))


def test_a_pickled_npy_is_not_a_movie(tmp_path):
    # e.g. Suite2p's classifier.npy given as the movie: said to be a pickle needing --trust, which did not help
    p = tmp_path / "classifier.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for trust in (False, True):
        with pytest.raises(InputError, match="holds pickled Python objects, not movie frames"):
            open_movie(p, trust=trust)


@pytest.mark.parametrize("imagej", [False, True])
def test_a_big_endian_tiff_is_mapped_in_its_byte_order(tmp_path, movie, imagej):
    p = tmp_path / "be.tif"
    tifffile.imwrite(p, movie.astype(np.uint16), byteorder=">", imagej=imagej)
    arr = open_movie(p)
    assert arr.dtype.byteorder == ">"  # memory-mapped, not decoded page by page
    _check(arr, movie)


def test_the_byte_order_is_part_of_a_mapped_movie_name(tmp_path, movie):
    # the same bytes read as "<u2" and ">u2" are different movies: a cache keyed by the name must not mix them
    from actsort_nb.io.movie import FileFrames, _from_frames

    p = tmp_path / "m.raw"
    movie.astype(np.uint16).tofile(p)
    little, big = (_from_frames(FileFrames(p, dt, movie.shape), "raw") for dt in ("<u2", ">u2"))
    assert little.name != big.name


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_a_tiff_written_frame_by_frame_is_a_movie(tmp_path, movie, compression):
    # every frame is its own one-page series, whose metadata declares one frame: not a truncated file
    p = tmp_path / "frames.tif"
    with tifffile.TiffWriter(p) as tw:
        for frame in movie:
            tw.write(frame, contiguous=False, compression=compression)
    with tifffile.TiffFile(p) as tif:
        assert len(tif.series) == movie.shape[0]
    _check(open_movie(p), movie)
