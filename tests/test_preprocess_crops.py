"""Fixed-size crops: size, placement at the field-of-view edges, cropped footprints, boundaries."""
from __future__ import annotations

import numpy as np
import pytest
import sparse

from actsort_nb import InputError
from actsort_nb.preprocess.crops import (
    boundary_mask,
    crop_footprints,
    crop_origins,
    crop_size,
)


def _fp(boxes, shape=(64, 80)):
    fp = np.zeros((len(boxes), *shape), np.float32)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        fp[i, y0:y1, x0:x1] = 1
    return sparse.COO.from_numpy(fp), fp


def test_size_from_largest_extent_plus_margin():
    coo, _ = _fp([(10, 20, 10, 20), (30, 42, 30, 39)])
    assert crop_size(coo, (64, 80), quantile=1.0) == 12 + 14
    assert crop_size(coo, (64, 80), quantile=1.0, margin=0, min_size=1) == 12


def test_size_clipped_to_range_and_fov():
    coo, _ = _fp([(0, 60, 0, 60)])
    assert crop_size(coo, (64, 80)) == 48
    assert crop_size(coo, (64, 80), max_size=100) == 64
    small, _ = _fp([(5, 6, 5, 6)])
    assert crop_size(small, (64, 80)) == 16


def test_faint_tails_do_not_set_size():
    _, fp = _fp([(10, 20, 10, 20)])
    fp[0, 10:20, 20:60] = 0.01  # below 5 % of the peak
    assert crop_size(sparse.COO.from_numpy(fp), (64, 80), quantile=1.0) == 24


def test_origins_centred_and_inside_fov():
    centers = np.array([[0.0, 0.0], [63.0, 79.0], [32.0, 40.0], [5.4, 74.6]])
    o = crop_origins(centers, 16, (64, 80))
    assert o.dtype == np.int32 and o.shape == (4, 2)
    assert o.tolist() == [[0, 0], [48, 64], [24, 32], [0, 64]]
    assert (o >= 0).all() and (o[:, 0] + 16 <= 64).all() and (o[:, 1] + 16 <= 80).all()


def test_crop_larger_than_fov_refused():
    with pytest.raises(InputError, match="larger than the field of view"):
        crop_origins(np.zeros((1, 2)), 100, (64, 80))


def test_crop_footprints_match_dense_slices_at_edges():
    coo, fp = _fp([(0, 5, 0, 5), (58, 64, 70, 80), (30, 35, 38, 44)])
    rng = np.random.default_rng(0)
    fp = fp * rng.random(fp.shape).astype(np.float32)
    coo = sparse.COO.from_numpy(fp)
    centers = np.array([[2.0, 2.0], [61.0, 75.0], [32.0, 40.0]])
    o = crop_origins(centers, 20, (64, 80))
    crops = crop_footprints(coo, o, 20)
    for i in range(3):
        np.testing.assert_array_equal(crops[i], fp[i, o[i, 0] : o[i, 0] + 20, o[i, 1] : o[i, 1] + 20])
        assert np.isclose(crops[i].sum(), fp[i].sum())  # the whole footprint fits


def test_boundary_mask_ring():
    f = np.zeros((2, 7, 7), np.float32)
    f[0, 1:6, 1:6] = 1
    f[1, 0:3, 0:3] = 2  # touching the crop edge: edge pixels are boundary
    b = boundary_mask(f)
    assert b[0].sum() == 16 and not b[0, 3, 3] and b[0, 1, 3]
    assert b[1, 0, 0]
    assert b[1].sum() == 8 and not b[1, 1, 1]
    assert not boundary_mask(np.zeros((5, 5))).any()
