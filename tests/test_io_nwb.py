"""NWB reader: a PlaneSegmentation + RoiResponseSeries written with pynwb, read back exactly."""
from __future__ import annotations

import numpy as np
import pytest
from test_io_writers import make_truth, write_nwb, write_suite2p_nwb

from actsort_nb import InputError
from actsort_nb.io import guess_format, nwb, open_candidates

pytest.importorskip("pynwb")


@pytest.fixture
def truth():
    return make_truth(n=4, h=10, w=13, t=35, seed=7)


def test_image_mask_round_trip(tmp_path, truth):
    fp, tr, movie = truth
    p = write_nwb(tmp_path / "s.nwb", fp, tr, rate=12.5, ids=[10, 11, 12, 13])
    assert guess_format(p) == "nwb"
    ds = open_candidates(p, movie=movie)
    assert dict(ds.sizes) == {"candidate": 4, "y": 10, "x": 13, "time": 35}
    np.testing.assert_array_equal(ds.footprints.data.todense(), fp)
    np.testing.assert_array_equal(ds.traces.values, tr)
    np.testing.assert_array_equal(ds.candidate.values, [10, 11, 12, 13])
    assert ds.attrs["frame_rate"] == 12.5 and ds.attrs["source_format"] == "nwb"


def test_pixel_mask_needs_fov_shape(tmp_path, truth):
    fp, tr, _ = truth
    p = write_nwb(tmp_path / "px.nwb", fp, tr, pixel_masks=True)
    with pytest.raises(InputError, match="fov_shape"):
        nwb.read(p)
    np.testing.assert_array_equal(nwb.read(p, fov_shape=(10, 13)).footprints.data.todense(), fp)


def test_missing_pynwb_is_one_sentence(monkeypatch, tmp_path, truth):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "pynwb" or name.startswith("pynwb."):
            raise ImportError("no pynwb")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(InputError, match=r"pip install 'actsort_nb\[nwb\]'"):
        nwb.read(tmp_path / "whatever.nwb")


def test_unknown_series_name(tmp_path, truth):
    fp, tr, _ = truth
    p = write_nwb(tmp_path / "s.nwb", fp, tr)
    with pytest.raises(InputError, match="no RoiResponseSeries"):
        nwb.read(p, series="DfOverF")


@pytest.fixture
def s2p():
    """Suite2p-like ROIs on a non-square field: a horizontal and a vertical bar with graded weights."""
    fp = np.zeros((2, 12, 20), np.float32)
    fp[0, 2, 3:9] = np.linspace(1, 2, 6)
    fp[1, 5:11, 15] = np.linspace(3, 1, 6)
    rng = np.random.default_rng(3)
    F, Fneu, spks = (rng.random((2, 30)).astype(np.float32) + off for off in (100, 50, 0))
    return fp, F, Fneu, spks


def test_pixel_mask_x_is_the_row_as_suite2p_writes_it(tmp_path, s2p):
    fp, F, Fneu, spks = s2p
    px = write_suite2p_nwb(tmp_path / "px.nwb", fp, F, Fneu, spks)
    img = write_nwb(tmp_path / "img.nwb", fp, F)
    from_pixels = nwb.read(px, fov_shape=(12, 20)).footprints.data.todense()
    np.testing.assert_array_equal(from_pixels, nwb.read(img).footprints.data.todense())
    np.testing.assert_array_equal(from_pixels, fp)


def test_suite2p_layout_reads_the_fluorescence_container(tmp_path, s2p):
    fp, F, Fneu, spks = s2p
    p = write_suite2p_nwb(tmp_path / "s2p.nwb", fp, F, Fneu, spks)
    ds = nwb.read(p)
    np.testing.assert_array_equal(ds.traces.values, F)
    assert ds.attrs["series"] == "Fluorescence/plane0"
    np.testing.assert_array_equal(nwb.read(p, series="plane0").traces.values, F)
    np.testing.assert_array_equal(nwb.read(p, series="Neuropil/plane0").traces.values, Fneu)
    np.testing.assert_array_equal(nwb.read(p, series="Deconvolved/plane0").traces.values, spks)


def test_series_that_tie_must_be_named(tmp_path, s2p):
    fp, F, Fneu, spks = s2p
    p = write_suite2p_nwb(tmp_path / "s2p.nwb", fp, F, Fneu, spks, containers=("Raw", "Neuropil", "Deconvolved"))
    with pytest.raises(InputError, match=r"holds 3 RoiResponseSeries .*\(Raw/plane0, Neuropil/plane0, "
                                         r"Deconvolved/plane0\); pass series="):
        nwb.read(p)
    np.testing.assert_array_equal(nwb.read(p, series="Raw/plane0").traces.values, F)


def test_pixel_masks_take_the_field_of_view_from_the_movie(tmp_path, s2p):
    fp, F, Fneu, spks = s2p
    p = write_suite2p_nwb(tmp_path / "s2p.nwb", fp, F, Fneu, spks, dimension=False)
    with pytest.raises(InputError, match=r"pixel masks, .*pass fov_shape=\(height, width\) or the movie"):
        open_candidates(p)
    movie = np.zeros((30, 12, 20), np.int16)
    np.save(tmp_path / "m.npy", movie)
    for given in (movie, tmp_path / "m.npy"):
        ds = open_candidates(p, movie=given)
        assert dict(ds.sizes) == {"candidate": 2, "y": 12, "x": 20, "time": 30}
        np.testing.assert_array_equal(ds.footprints.data.todense(), fp)
    with pytest.raises(InputError, match=r"outside the 12x10 field of view from the movie's frames"):
        open_candidates(p, movie=movie[:, :, :10])


@pytest.mark.parametrize("where", ["dimension", "backgrounds"])
def test_pixel_masks_take_the_field_of_view_from_the_file(tmp_path, s2p, where):
    fp, F, Fneu, spks = s2p
    p = write_suite2p_nwb(tmp_path / "s2p.nwb", fp, F, Fneu, spks, dimension=where == "dimension",
                          backgrounds=where == "backgrounds")
    np.testing.assert_array_equal(open_candidates(p).footprints.data.todense(), fp)


def test_describe_counts_pixel_masks_without_a_field_of_view(tmp_path, s2p):
    from actsort_nb.io import describe

    fp, F, Fneu, spks = s2p
    p = write_suite2p_nwb(tmp_path / "s2p.nwb", fp, F, Fneu, spks, dimension=False)
    text = describe(p)
    assert "format: nwb" in text and "candidates: 2" in text and "field of view: unknown" in text
