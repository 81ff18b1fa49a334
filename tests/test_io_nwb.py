"""NWB reader: a PlaneSegmentation + RoiResponseSeries written with pynwb, read back exactly."""
from __future__ import annotations

import numpy as np
import pytest
from test_io_writers import make_truth, write_nwb

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
