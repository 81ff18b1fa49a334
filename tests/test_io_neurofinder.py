"""Neurofinder: the real movie crop + its ground-truth regions become a CandidateSet with a lazy movie."""
from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import tifffile

from actsort_nb import InputError
from actsort_nb.io import guess_format, neurofinder, open_candidates

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def crop():
    from conftest import real_path

    folder = real_path("neurofinder_neuhofmo")
    return folder / "regions_crop.json", folder / "movie_crop_600x224x224_uint16.tif"


@pytest.fixture(scope="module")
def ds(crop):
    return open_candidates(crop[0], movie=crop[1], frame_rate=7.0)


def test_real_crop(crop, ds):
    regions_path, movie_path = crop
    assert guess_format(regions_path) == "neurofinder" and guess_format(movie_path) == "movie"
    assert dict(ds.sizes) == {"candidate": 110, "y": 224, "x": 224, "time": 600}
    assert isinstance(ds.movie.data, da.Array) and ds.movie.dtype == np.uint16
    assert int(ds.fully_inside.sum()) == 96
    regions = json.loads(regions_path.read_text())
    assert ds.candidate.values.tolist() == [r["id"] for r in regions]
    # footprint of region 0 is exactly its pixels (row = y, col = x)
    c = np.array(regions[0]["coordinates"])
    mask = np.zeros((224, 224), bool)
    mask[c[:, 0], c[:, 1]] = True
    fp = ds.actsort.footprints_csr()
    np.testing.assert_array_equal(fp[0].toarray().reshape(224, 224) > 0, mask)
    # traces = mean of the movie over the region, checked on a few frames read independently
    frames = tifffile.imread(movie_path, key=range(0, 5)).astype(np.float64)
    expected = frames[:, mask].mean(1)
    np.testing.assert_allclose(ds.traces.values[0, :5], expected, rtol=1e-5)
    # the README's orientation check: GT pixels are brighter than the rest, and than the axis-swapped regions
    mean_img = ds.movie[:50].mean("time").values
    inside = (np.asarray(fp.sum(0)) > 0).reshape(224, 224)
    assert mean_img[inside].mean() > 1.2 * max(mean_img[~inside].mean(), mean_img[inside.T].mean())


def test_fully_inside_only(crop, ds):
    regions_path, _ = crop
    frames = tifffile.imread(crop[1])  # in memory once, instead of decoding the lazy movie again
    inside = neurofinder.read(regions_path, movie=frames, fully_inside_only=True)
    assert inside.sizes["candidate"] == 96 and bool(inside.fully_inside.all())
    np.testing.assert_array_equal(inside.traces.values, ds.traces.sel(candidate=inside.candidate).values)


def test_regions_need_a_movie(crop):
    with pytest.raises(InputError, match="pass movie="):
        neurofinder.read(crop[0])


def test_full_fov_regions_do_not_fit_the_crop(crop):
    regions_full = crop[0].parent / "regions_full.json"
    with pytest.raises(InputError, match="outside the 224x224 movie"):
        neurofinder.read(regions_full, movie=crop[1])
