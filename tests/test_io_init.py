"""The dispatcher: format guessing from contents, one-sentence refusals, and describe()."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from test_io_writers import (
    make_truth,
    write_caiman,
    write_extract_v5,
    write_extract_v73,
    write_h5_movie,
    write_suite2p,
)

from actsort_nb import InputError
from actsort_nb.io import BACKENDS, describe, guess_format, open_candidates


@pytest.fixture
def truth():
    return make_truth(n=3, h=8, w=9, t=20)


def test_guess_uses_contents_not_extensions(tmp_path, truth):
    fp, tr, movie = truth
    # Misleading extensions on purpose: the magic bytes decide.
    assert guess_format(write_extract_v73(tmp_path / "a.h5", fp, tr)) == "extract"
    assert guess_format(write_extract_v5(tmp_path / "b.bin", fp, tr)) == "extract"
    assert guess_format(write_caiman(tmp_path / "c.mat", fp, tr)) == "caiman"
    np.save(tmp_path / "d.h5", movie)
    assert guess_format(tmp_path / "d.h5.npy") == "movie"
    assert guess_format(write_suite2p(tmp_path / "plane0", fp, tr)) == "suite2p"
    (tmp_path / "e.json").write_text('{"not": "regions"}')
    assert guess_format(tmp_path / "e.json") is None


def test_every_backend_has_a_description():
    assert {"extract", "caiman", "suite2p", "nwb", "neurofinder", "croissant", "actsort-benchmark", "movie"} <= set(BACKENDS)
    assert all(b.description for b in BACKENDS.values())


def test_unknown_format_lists_supported_ones(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(InputError, match=r"supported are EXTRACT.*CaImAn.*Suite2p.*NWB"):
        open_candidates(p)


def test_bad_format_option_suggests(tmp_path, truth):
    p = write_extract_v5(tmp_path / "a.mat", *truth[:2])
    with pytest.raises(InputError, match="Did you mean 'extract'"):
        open_candidates(p, format="extrct")


def test_movie_is_not_candidates(tmp_path, truth):
    p = write_h5_movie(tmp_path / "m.h5", truth[2])
    with pytest.raises(InputError, match="is a movie, not an extraction output.*MOVIE first, then EXTRACTION"):
        open_candidates(p)


def test_suite2p_root_and_incomplete_plane_folders_say_which(tmp_path):
    root = tmp_path / "suite2p"
    for plane in ("plane0", "plane1"):
        (root / plane).mkdir(parents=True)
    for reader in (open_candidates, describe):
        with pytest.raises(InputError, match="Suite2p output folder with plane0, plane1; open one plane folder"):
            reader(root)
    np.save(root / "plane0" / "F.npy", np.zeros((2, 5), np.float32))
    with pytest.raises(InputError, match="Suite2p plane folder but has no stat.npy"):
        open_candidates(root / "plane0")


def test_describe_candidates(tmp_path, truth):
    fp, tr, movie = truth
    p = write_caiman(tmp_path / "cnm.hdf5", fp, tr, idx_components=[1], fr=7.5)
    text = describe(p)
    for line in ("format: caiman", "candidates: 3", "field of view: 8 x 9", "frames: 20", "frame rate: 7.5 Hz",
                 "source labels: 1 cells, 2 not cells", "footprints (candidate, y, x) float32"):
        assert line in text


def test_describe_movie_and_generic_hdf5(tmp_path, truth):
    movie = truth[2]
    text = describe(write_h5_movie(tmp_path / "m.h5", movie, matlab=True))
    assert "format: movie (hdf5)" in text and "frames: 20" in text and "field of view: 8 x 9" in text
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["a/b"] = np.zeros((2, 3, 4, 5))
        f.attrs["schema"] = 1
    text = describe(p)
    assert "HDF5 (not a known extraction output)" in text and "a/b: (2, 3, 4, 5) float64" in text


def test_describe_suite2p_without_trust_reads_no_pickle(tmp_path, truth):
    fp, tr, _ = truth
    folder = write_suite2p(tmp_path / "plane0", fp, tr)
    text = describe(folder)
    assert "candidates: 3" in text and "--trust" in text
    assert "frame rate: 30 Hz" in describe(folder, trust=True)


@pytest.mark.parametrize(
    "module",
    ["__init__", "arrays", "benchmark", "caiman", "croissant", "extract", "movie", "neurofinder", "nwb", "suite2p"],
)
def test_docstring_examples_run(module):
    import doctest
    import importlib

    if module == "nwb":
        pytest.importorskip("pynwb")
    mod = importlib.import_module("actsort_nb.io" if module == "__init__" else f"actsort_nb.io.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_an_unknown_reader_option_names_the_right_one(tmp_path, truth):
    p = write_extract_v5(tmp_path / "a.mat", *truth[:2])
    with pytest.raises(InputError, match="no option 'dataset'; it takes .*Did you mean 'movie_dataset'"):
        open_candidates(p, dataset="mov")
    with pytest.raises(InputError, match="matlab_order= applies to a movie given as a path"):
        open_candidates(p, matlab_order=True)
