"""Spatial features 37–46 on hand-built footprints with known geometry."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from actsort_nb import InputError
from actsort_nb.features.spatial import SPATIAL_NAMES, region_geometry, spatial_features

COL = {n: i for i, n in enumerate(SPATIAL_NAMES)}
H, W = 64, 72
YY, XX = np.mgrid[:H, :W]


def disk(cy, cx, r):
    return (((YY - cy) ** 2 + (XX - cx) ** 2) <= r * r).astype(float)


def ellipse(cy, cx, a, b, theta=0.0):
    c, s = np.cos(theta), np.sin(theta)
    u = (YY - cy) * c + (XX - cx) * s
    v = -(YY - cy) * s + (XX - cx) * c
    return (((u / a) ** 2 + (v / b) ** 2) <= 1).astype(float)


def gauss(cy, cx, sd):
    g = np.exp(-((YY - cy) ** 2 + (XX - cx) ** 2) / (2 * sd * sd))
    return np.where(g > 0.01, g, 0.0)


def feats(*images):
    m = scipy.sparse.csr_matrix(np.array([im.ravel() for im in images]))
    return spatial_features(m, (H, W))


def test_area_sum_and_mean_of_a_disk():
    d = disk(30.3, 35.6, 7)
    f = feats(d, 3 * d)[0]
    assert f[COL["area"]] == d.sum()  # every pixel of a binary disk is > 0.1
    assert f[COL["footprint_sum"]] == d.sum()
    assert f[COL["mean_footprint_value"]] == pytest.approx(d.sum() / (H * W))
    # peak normalisation: scaling the footprint changes nothing
    np.testing.assert_allclose(feats(d, 3 * d)[1], f, rtol=1e-6)


def test_area_counts_pixels_above_a_tenth_of_the_peak():
    g = gauss(30, 30, 4.0)
    assert feats(g)[0, COL["area"]] == ((g / g.max()) > 0.1).sum()


@pytest.mark.parametrize("r", [4, 8, 15])
def test_disk_is_circular_with_2_pi_r_perimeter(r):
    f = feats(disk(31.4, 35.2, r))[0]
    assert f[COL["circularity"]] > 0.93
    assert f[COL["perimeter"]] == pytest.approx(2 * np.pi * r, rel=0.06)
    assert f[COL["eccentricity"]] == pytest.approx(1, abs=0.05)


def test_elongated_ellipse_is_less_circular_and_has_known_axis_ratio():
    for theta in (0.0, np.pi / 4, 1.0):
        f = feats(ellipse(32, 36, 4, 12, theta))[0]
        assert f[COL["circularity"]] < 0.72
        assert f[COL["eccentricity"]] == pytest.approx(3.0, rel=0.1)
    f2 = feats(ellipse(32, 36, 6, 12))[0]
    assert f2[COL["eccentricity"]] == pytest.approx(2.0, rel=0.08)


def test_circularity_uses_the_largest_region_above_0_3():
    d = disk(20, 20, 6) + 0.2 * ellipse(45, 50, 3, 15)  # faint bar below the 0.3 level
    f = feats(d, disk(20, 20, 6))
    assert f[0, COL["circularity"]] == pytest.approx(f[1, COL["circularity"]])


def test_edge_distance_of_the_peak_pixel():
    a = np.zeros((H, W))
    a[3, 10] = 1.0
    a[4, 11] = 0.5
    b = np.zeros((H, W))
    b[H - 2, 40] = 1.0
    c = np.zeros((H, W))
    c[30, W - 1] = 1.0
    f = feats(a, b, c, gauss(30, 33, 2))
    assert f[:, COL["edge_distance"]].tolist() == [3, 1, 0, 30]


def test_multiple_bodies():
    two = disk(20, 20, 5) + disk(45, 50, 5)
    one_and_stray = disk(20, 20, 5)
    one_and_stray[50, 60] = 1.0  # a single pixel is not a body
    touching_weakly = gauss(30, 25, 3) + gauss(30, 45, 3)
    f = feats(two, disk(30, 30, 6), one_and_stray, touching_weakly)
    assert f[:, COL["multiple_bodies"]].tolist() == [1, 0, 0, 1]


def test_overlap_correlation_of_duplicates_overlaps_and_loners():
    a = gauss(30, 30, 3)
    f = feats(a, a.copy(), gauss(30, 34, 3), gauss(10, 60, 2))
    oc = f[:, COL["footprint_overlap_corr"]]
    assert oc[0] == pytest.approx(1) and oc[1] == pytest.approx(1)
    assert 0.1 < oc[2] < 0.99
    assert oc[3] == 0  # overlaps nobody


def test_overlap_correlation_matches_dense_pearson():
    rng = np.random.default_rng(0)
    imgs = [gauss(*rng.uniform(10, 54, 2), rng.uniform(1.5, 4)) for _ in range(15)]
    f = feats(*imgs)[:, COL["footprint_overlap_corr"]]
    dense = np.array([im.ravel() for im in imgs])
    c = np.corrcoef(dense)
    overlap = (dense @ dense.T) > 0
    np.fill_diagonal(overlap, False)
    ref = np.array([c[i][overlap[i]].max() if overlap[i].any() else 0.0 for i in range(15)])
    np.testing.assert_allclose(f, ref, rtol=1e-5, atol=1e-6)


def test_spatial_corruption_rises_with_pixel_noise():
    rng = np.random.default_rng(1)
    g = gauss(32, 36, 4)
    noisy = np.where(g > 0, g * rng.uniform(0.3, 1.7, g.shape), 0)
    f = feats(g, noisy)[:, COL["spatial_corruption"]]
    assert 0 <= f[0] < f[1] < 1


def test_region_geometry_of_small_shapes():
    # a 2x2 block: marching-squares octagon with 4 unit sides and 4 half-diagonals
    rows = np.zeros(4, int)
    cols = np.array([0, 1, W, W + 1]) + 5 * W + 5
    g = region_geometry(rows, cols, 1, (H, W))
    assert g["count"][0] == 4 and g["area"][0] == pytest.approx(3.5)
    assert g["perimeter"][0] == pytest.approx(0.948 * 4 + 0.670 * 4)


def test_degenerate_footprints_are_finite():
    px = np.zeros((H, W))
    px[0, 0] = 1.0
    line = np.zeros((H, W))
    line[10, 5:40] = 1.0
    full = np.ones((H, W))
    empty = np.zeros((H, W))
    neg = -disk(30, 30, 4)
    f = feats(px, line, full, empty, neg)
    assert np.isfinite(f).all() and f.dtype == np.float32
    # no positive weight: every feature 0, the axis ratio its neutral 1
    expect = np.zeros(10)
    expect[COL["eccentricity"]] = 1
    np.testing.assert_array_equal(f[3], expect)
    np.testing.assert_array_equal(f[4], expect)
    assert f[0, COL["area"]] == 1 and f[0, COL["edge_distance"]] == 0
    assert f[1, COL["eccentricity"]] > 10


def test_input_checks():
    with pytest.raises(InputError, match="footprints_csr"):
        spatial_features(np.zeros((2, H * W)), (H, W))
    with pytest.raises(InputError, match="fov_shape"):
        spatial_features(scipy.sparse.csr_matrix((2, 10)), (H, W))


def test_neighbour_lookup_table_and_binary_search_agree():
    from actsort_nb.features.spatial import _Pixels

    rng = np.random.default_rng(2)
    rows = np.repeat(np.arange(6), 40)
    cols = []
    for k in range(6):  # 40 of the 100 pixels of a 10x10 box (one box on the border)
        y0, x0 = (0, W - 10) if k == 0 else rng.integers(0, (H - 10, W - 10))
        box = np.sort(rng.choice(100, 40, replace=False))
        cols.append((y0 + box // 10) * W + x0 + box % 10)
    cols = np.concatenate(cols)
    fast = _Pixels(rows, cols, (H, W))
    assert fast._table is not None
    slow = _Pixels(rows, cols, (H, W))
    slow._table = None  # force the binary-search path
    for dy in (-1, 0, 1, 2):
        for dx in (-1, 0, 1, 2):
            f1, i1 = fast.find(dy, dx)
            f2, i2 = slow.find(dy, dx)
            np.testing.assert_array_equal(f1, f2)
            np.testing.assert_array_equal(i1[f1], i2[f2])
    # and both agree with a dense reference
    dense = np.zeros((6, H, W), bool)
    dense[rows, cols // W, cols % W] = True
    f, _ = fast.find(1, 0)
    y, x = cols // W, cols % W
    ref = (y + 1 < H) & dense[rows, np.minimum(y + 1, H - 1), x]
    np.testing.assert_array_equal(f, ref)


def test_compiled_table_lookups_match_the_binary_search():
    from actsort_nb.features.spatial import _Pixels

    rng = np.random.default_rng(4)
    imgs = [gauss(*rng.uniform(8, 56, 2), rng.uniform(1.5, 4)) for _ in range(6)] + [disk(30, 30, 5)]
    m = scipy.sparse.csr_matrix(np.array([im.ravel() for im in imgs]))
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    px = _Pixels(rows, m.indices.astype(np.int64), (H, W))
    assert px._table is not None
    slow = _Pixels(rows, m.indices.astype(np.int64), (H, W))
    slow._table = None  # the binary-search path, used when the boxes are too sparse for a table
    for dy, dx in ((0, 1), (1, -1), (-2, 2), (3, 0)):
        f1, i1 = px.find(dy, dx)
        f2, i2 = slow.find(dy, dx)
        np.testing.assert_array_equal(f1, f2)
        np.testing.assert_array_equal(i1[f1], i2[f2])
    np.testing.assert_array_equal(px.box_sum(m.data, -1, 2), slow.box_sum(m.data, -1, 2))


@pytest.mark.parametrize("fill", [0.15, 0.45, 0.8])
def test_pixel_components_match_scipy_labels(fill):
    # the union-find labels equal scipy's connected_components on the 8-neighbour graph, label for label
    # (their order decides which region is "largest" on ties), never joining two candidates
    import scipy.sparse.csgraph

    from actsort_nb.features.spatial import _Pixels

    rng = np.random.default_rng(int(fill * 100))
    h, w, n = 23, 31, 5
    mask = rng.random((n, h * w)) < fill
    rows, cols = np.nonzero(mask)
    px = _Pixels(rows, cols.astype(np.int64), (h, w))
    src, dst = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        found, idx = px.find(dy, dx)
        src.append(np.flatnonzero(found))
        dst.append(idx[found])
    g = scipy.sparse.coo_matrix((np.ones(sum(map(len, src))), (np.concatenate(src), np.concatenate(dst))),
                                shape=(rows.size, rows.size))
    ref = scipy.sparse.csgraph.connected_components(g, directed=False)[1]
    lab = px.components()
    np.testing.assert_array_equal(lab, ref)
    assert ref.max() + 1 >= n  # at least one region per candidate (many when sparse)
    assert all(np.unique(px.rows[lab == k]).size == 1 for k in range(lab.max() + 1))
