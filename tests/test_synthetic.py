"""Tests of actsort_nb.synthetic: simulated recordings with ground truth."""

from __future__ import annotations

import doctest

import dask.array as da
import h5py
import numpy as np
import pytest
import scipy.stats
import sparse
import tifffile
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import actsort_nb.synthetic as synthetic
from actsort_nb import InputError
from actsort_nb.synthetic import (
    DEFAULT_MIX,
    FALSE_KINDS,
    KINDS,
    _kind_counts,
    _shift_frame,
    simulate_candidates,
    simulate_recording,
    write_movie,
)

SMALL = dict(n_cells=12, shape=(48, 48), n_frames=240)


@pytest.fixture(scope="module")
def rec() -> xr.Dataset:
    return simulate_recording(n_cells=20, shape=(64, 64), n_frames=300, seed=3)


def _areas(ds, thresh=0.1):
    fp = ds.footprints.data
    return np.bincount(fp.coords[0][fp.data > thresh], minlength=fp.shape[0])


def assert_same(a: xr.Dataset, b: xr.Dataset) -> None:
    """Identical datasets; sparse footprints compared by coords and values (fast, no numba)."""
    fa, fb = a.footprints.data, b.footprints.data
    assert fa.shape == fb.shape
    np.testing.assert_array_equal(fa.coords, fb.coords)
    np.testing.assert_array_equal(fa.data, fb.data)
    xr.testing.assert_identical(a.drop_vars("footprints").compute(), b.drop_vars("footprints").compute())


def _pixels(ds, i):
    fp = ds.footprints.data
    sel = fp.coords[0] == i
    return fp.coords[1][sel], fp.coords[2][sel], fp.data[sel]


# ---------------------------------------------------------------- reproducibility
def test_same_seed_gives_identical_dataset():
    assert_same(simulate_recording(**SMALL, seed=5), simulate_recording(**SMALL, seed=5))


def test_different_seed_gives_different_data():
    a = simulate_recording(**SMALL, seed=5)
    b = simulate_recording(**SMALL, seed=6)
    assert not np.array_equal(a.traces.values, b.traces.values)
    assert not np.array_equal(a.movie.values, b.movie.values)


def test_lazy_movie_equals_eager_movie_whatever_the_chunks():
    eager = simulate_recording(**SMALL, seed=2, chunk_frames=200)
    lazy = simulate_recording(**SMALL, seed=2, lazy=True, chunk_frames=37)
    assert isinstance(lazy.movie.data, da.Array)
    assert lazy.movie.data.chunks[0][:2] == (37, 37)
    assert lazy.movie.dtype == np.uint16 and eager.movie.dtype == np.uint16
    np.testing.assert_array_equal(lazy.movie.values, eager.movie.values)
    # everything else is identical too (summary images come from the model)
    assert_same(lazy, eager)


def test_lazy_movie_renders_only_what_is_asked():
    lazy = simulate_recording(**SMALL, seed=2, lazy=True, chunk_frames=50)
    eager = simulate_recording(**SMALL, seed=2)
    np.testing.assert_array_equal(lazy.movie[120:125].values, eager.movie[120:125].values)


def test_two_lazy_movies_with_different_content_do_not_share_dask_keys():
    a = simulate_recording(**SMALL, seed=1, lazy=True, cell_radius=(4, 6))
    b = simulate_recording(**SMALL, seed=1, lazy=True, cell_radius=(3, 5))
    assert a.movie.data.name != b.movie.data.name
    assert bool((a.movie != b.movie).any().compute())


# ---------------------------------------------------------------- kinds and counts
def test_default_kinds_and_counts(rec):
    kinds, counts = np.unique(rec.kind.values, return_counts=True)
    got = dict(zip(kinds.tolist(), counts.tolist()))
    assert got == {k: v for k, v in {"cell": 20, **_kind_counts(20, None)}.items() if v}
    assert set(got) == set(KINDS)
    np.testing.assert_array_equal(rec.is_cell.values, rec.kind.values == "cell")
    assert rec.is_cell.dtype == bool


def test_kind_counts_are_exact_and_deterministic():
    c = _kind_counts(7, None)
    assert sum(c.values()) == 7 and set(c) == set(FALSE_KINDS)
    assert _kind_counts(100, None) == {k: round(100 * v) for k, v in DEFAULT_MIX.items()}
    assert _kind_counts(5, ["noise", "edge"]) == {**dict.fromkeys(FALSE_KINDS, 0), "noise": 3, "edge": 2}
    assert _kind_counts(4, {"dendrite": 3, "neuropil": 1})["dendrite"] == 3


def test_explicit_kinds_and_n_false():
    ds = simulate_recording(n_cells=6, shape=(48, 48), n_frames=60, n_false=9, kinds=["dendrite", "noise", "edge"])
    assert ds.sizes["candidate"] == 15
    assert sorted(np.unique(ds.kind.values).tolist()) == ["cell", "dendrite", "edge", "noise"]
    assert (ds.kind.values == "dendrite").sum() == 3


def test_candidates_are_shuffled_not_grouped_by_kind(rec):
    first = rec.kind.values[: rec.sizes["candidate"] // 2]
    assert 0 < (first == "cell").sum() < 20


def test_parents_of_duplicates_and_splits_are_overlapping_cells(rec):
    ids = rec.candidate.values
    csr = rec.actsort.footprints_csr()
    traces = rec.traces.values
    corr = []
    for k in ("duplicate", "split"):
        for i in np.flatnonzero(rec.kind.values == k):
            p = int(np.flatnonzero(ids == int(rec.parent[i]))[0])
            assert rec.kind.values[p] == "cell"
            overlap = csr[i].multiply(csr[p]).sum()
            assert overlap > 0.3 * csr[i].sum()
            corr.append(np.corrcoef(traces[i], traces[p])[0, 1])
    assert min(corr) > 0.15 and np.median(corr) > 0.4
    others = ~np.isin(rec.kind.values, ["duplicate", "split"])
    assert (rec.parent.values[others] == -1).all()


# ---------------------------------------------------------------- footprints
def test_footprints_are_sparse_float32_nonempty_and_peak_one(rec):
    fp = rec.footprints.data
    assert isinstance(fp, sparse.COO) and fp.dtype == np.float32
    assert fp.nnz < 0.2 * np.prod(fp.shape)
    assert (_areas(rec, 0.0) > 0).all()
    peak = np.zeros(fp.shape[0], np.float32)
    np.maximum.at(peak, fp.coords[0], fp.data)
    np.testing.assert_allclose(peak, 1.0, rtol=1e-6)
    assert fp.data.min() >= synthetic._FP_FLOOR


def test_cell_sizes_are_somatic(rec):
    area = _areas(rec)[rec.is_cell.values]
    # radius 4-7 px -> area roughly pi r^2, 50 to 155 px (soft edges, thresholds)
    assert 35 < area.min() and area.max() < 220


def _elongation(ds, i):
    y, x, v = _pixels(ds, i)
    keep = v > 0.3
    cov = np.cov(np.stack([y[keep], x[keep]]).astype(float))
    ev = np.linalg.eigvalsh(cov)
    return np.sqrt(ev[1] / max(ev[0], 1e-9))


def test_dendrites_are_elongated_and_cells_are_not(rec):
    dend = [_elongation(rec, i) for i in np.flatnonzero(rec.kind.values == "dendrite")]
    cells = [_elongation(rec, i) for i in np.flatnonzero(rec.is_cell.values)]
    assert min(dend) > 3.0
    assert max(cells) < 1.6


def test_neuropil_footprints_are_large_and_diffuse(rec):
    area = _areas(rec)
    npl = area[rec.kind.values == "neuropil"]
    cells = area[rec.is_cell.values]
    assert npl.min() > 1.5 * np.median(cells)
    assert np.median(npl) > 2.5 * np.median(cells)


def test_edge_candidates_touch_the_edge_and_cells_do_not(rec):
    h, w = rec.actsort.fov_shape
    fp = rec.footprints.data
    on_edge = (fp.coords[1] == 0) | (fp.coords[1] == h - 1) | (fp.coords[2] == 0) | (fp.coords[2] == w - 1)
    touches = np.bincount(fp.coords[0][on_edge], minlength=rec.sizes["candidate"]) > 0
    assert touches[rec.kind.values == "edge"].all()
    assert not touches[rec.is_cell.values].any()


def test_centers_of_cells_lie_inside_their_footprint(rec):
    c = np.rint(rec.actsort.centers()).astype(int)
    csr = rec.actsort.footprints_csr()
    cells = np.flatnonzero(rec.is_cell.values)
    at_centre = csr[cells, c[cells, 0] * rec.sizes["x"] + c[cells, 1]].A1
    assert (at_centre > 0.5).all()


# ---------------------------------------------------------------- traces
def test_cells_have_transients_and_noise_candidates_do_not(rec):
    tr = rec.traces.values
    skew = scipy.stats.skew(tr, axis=1)
    kinds = rec.kind.values
    # peak height over the robust s.d. of the values (MAD) and of the frame-to-frame noise
    med = np.median(tr, 1, keepdims=True)
    peak = (tr.max(1) - med[:, 0]) / (1.4826 * np.median(np.abs(tr - med), 1))
    d = np.diff(tr, axis=1)
    noise_sd = 1.4826 * np.median(np.abs(d - np.median(d, 1, keepdims=True)), 1) / np.sqrt(2)
    peak_over_noise = (tr.max(1) - med[:, 0]) / noise_sd
    assert np.median(skew[kinds == "cell"]) > 1.5
    assert skew[kinds == "cell"].min() > 0.5
    assert np.median(np.abs(skew[kinds == "noise"])) < 0.4
    assert np.abs(skew[kinds == "noise"]).max() < 0.8
    assert peak_over_noise[kinds == "cell"].min() > 5
    assert peak[kinds == "noise"].max() < 5
    assert np.median(peak[kinds == "cell"]) > 2 * np.median(peak[kinds == "noise"])


def test_traces_are_float32_finite_in_seconds(rec):
    assert rec.traces.dtype == np.float32 and np.isfinite(rec.traces.values).all()
    np.testing.assert_allclose(np.diff(rec.time.values), 1 / rec.attrs["frame_rate"])


def test_transient_kinetics_follow_the_frame_rate():
    """The same recording at 4x the frame rate has ~4x longer transients in frames."""
    widths = []
    for fps in (5.0, 20.0):
        ds = simulate_recording(n_cells=10, shape=(48, 48), n_frames=int(60 * fps), frame_rate=fps, noise=0.0, seed=4)
        tr = ds.traces.values[ds.is_cell.values]
        acf = [np.correlate(t - t.mean(), t - t.mean(), "full")[t.size - 1 :] for t in tr]
        widths.append(np.median([np.argmax(a < a[0] / 2) for a in acf]))
    assert 2.5 < widths[1] / widths[0] < 6


def test_edge_traces_follow_the_motion_and_noise_traces_do_not(rec):
    mot = np.stack([rec.motion_y.values, rec.motion_x.values])
    tr = rec.traces.values

    def best(i):
        return max(abs(np.corrcoef(tr[i], m)[0, 1]) for m in mot)

    assert min(best(i) for i in np.flatnonzero(rec.kind.values == "edge")) > 0.7
    assert np.median([best(i) for i in np.flatnonzero(rec.kind.values == "noise")]) < 0.3
    assert rec.motion_y.std() == pytest.approx(0.5, rel=0.05)


def test_neuropil_traces_are_shared_and_slow(rec):
    tr = rec.traces.values[rec.kind.values == "neuropil"]
    c = np.corrcoef(tr)
    assert c[np.triu_indices_from(c, 1)].min() > 0.8


# ---------------------------------------------------------------- movie
def test_movie_shows_cells_firing_where_their_footprint_is(rec):
    mov = rec.movie.values.astype(np.float32)
    base = np.median(mov, 0)
    csr = rec.actsort.footprints_csr()
    tr = rec.traces.values
    lit = []
    for i in np.flatnonzero(rec.is_cell.values):
        t = int(np.argmax(tr[i]))
        w = csr[i].toarray().reshape(base.shape)
        lit.append(((mov[t] - base) * w).sum() / w.sum())
    assert np.median(lit) > 20 and np.mean(np.array(lit) > 0) >= 0.9


def test_noise_free_static_movie_matches_the_model_images():
    ds = simulate_recording(n_cells=8, shape=(40, 40), n_frames=80, noise=0.0, motion=0.0, seed=9)
    mov = ds.movie.values.astype(np.float64)
    np.testing.assert_allclose(mov.mean(0), ds.mean_image.values, atol=0.5)
    assert np.corrcoef(mov.max(0).ravel(), ds.max_image.values.ravel())[0, 1] > 0.95
    noisy = simulate_recording(n_cells=8, shape=(40, 40), n_frames=80, motion=0.0, seed=9)
    resid = noisy.movie.values.astype(np.float64) - mov
    # shot + read noise: variance = 2 * F + 3^2
    expected = np.sqrt(2 * mov + 9)
    assert 0.9 < (resid / expected).std() < 1.1


def test_motion_darkens_the_border_it_shifts_in():
    ds = simulate_recording(n_cells=4, shape=(40, 40), n_frames=200, noise=0.0, motion=1.0, seed=0)
    mov = ds.movie.values.astype(np.float32)
    dy = ds.motion_y.values
    top = mov[:, 0, :].mean(1)
    assert np.corrcoef(top, dy)[0, 1] < -0.6


def test_shift_frame_equals_scipy_grid_constant_shift():
    from scipy import ndimage

    img = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    for d in [(0.3, -0.7), (1.6, -2.3), (-0.2, 0.0), (0.0, 0.0), (-3.0, 2.5)]:
        ref = ndimage.shift(img, d, order=1, mode="grid-constant", cval=0.0)
        np.testing.assert_allclose(_shift_frame(img, *d), ref, atol=1e-5)


# ---------------------------------------------------------------- large sets
def test_simulate_candidates_builds_a_sparse_large_set():
    ds = simulate_candidates(3000, (256, 256), 200, seed=1)
    fp = ds.footprints.data
    assert isinstance(fp, sparse.COO) and fp.shape == (3000, 256, 256)
    assert fp.nnz < 3000 * 1000  # ~200 px per candidate on average, not 65,536
    assert "movie" not in ds and ds.traces.dtype == np.float32
    assert int(ds.is_cell.sum()) == 1500
    assert set(np.unique(ds.kind.values)) == set(KINDS)
    assert (_areas(ds, 0.0) > 0).all()
    assert_same(ds, simulate_candidates(3000, (256, 256), 200, seed=1))


def test_simulate_candidates_lazy_movie():
    ds = simulate_candidates(400, (96, 96), 120, seed=0, movie="lazy", chunk_frames=50)
    assert isinstance(ds.movie.data, da.Array) and ds.movie.shape == (120, 96, 96)
    assert ds.movie.data.chunks[0] == (50, 50, 20)
    frames = ds.movie[:3].values
    assert frames.dtype == np.uint16 and frames.std() > 0
    assert "max_image" in ds and "mean_image" in ds


def test_simulate_candidates_cell_fraction():
    ds = simulate_candidates(200, (64, 64), 50, cell_fraction=0.25)
    assert int(ds.is_cell.sum()) == 50


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_cells=-1), "n_cells"),
        (dict(n_cells=2.5), "n_cells"),
        (dict(n_frames=0), "n_frames"),
        (dict(shape=(8, 8)), "shape"),
        (dict(shape=(64,)), "shape"),
        (dict(frame_rate=0), "frame_rate"),
        (dict(frame_rate=float("nan")), "frame_rate"),
        (dict(noise=-1), "noise"),
        (dict(motion="lots"), "motion"),
        (dict(seed=-3), "seed"),
        (dict(kinds=["dendrit"]), "dendrite"),
        (dict(kinds={"noise": -1}), "weight"),
        (dict(kinds={"noise": 0}), "positive weight"),
        (dict(n_cells=0, kinds=["duplicate"]), "n_cells >= 1"),
        (dict(n_cells=0, n_false=0), "no candidates"),
        (dict(cell_radius=(7, 4)), "cell_radius"),
        (dict(shape=(20, 20), cell_radius=(8, 12)), "too small"),
        (dict(chunk_frames=0), "chunk_frames"),
    ],
)
def test_bad_parameters_raise_one_clear_input_error(kwargs, match):
    args = dict(n_cells=4, shape=(32, 32), n_frames=20) | kwargs
    with pytest.raises(InputError, match=match):
        simulate_recording(**args)


def test_simulate_candidates_bad_movie_option():
    with pytest.raises(InputError, match="movie"):
        simulate_candidates(100, (64, 64), 20, movie="eager")
    with pytest.raises(InputError, match="cell_fraction"):
        simulate_candidates(100, (64, 64), 20, cell_fraction=1.5)


# ---------------------------------------------------------------- write_movie
@pytest.mark.parametrize("fmt", ["h5", "npy", "tif"])
def test_write_movie_streams_every_format(tmp_path, fmt):
    ds = simulate_recording(n_cells=4, shape=(32, 32), n_frames=45, lazy=True, chunk_frames=20, seed=1)
    path = write_movie(ds, tmp_path / f"m.{fmt}", format=fmt, chunk_frames=7)
    if fmt == "h5":
        with h5py.File(path) as f:
            got = f["mov"][...]
            assert f["mov"].attrs["dims"] == "time,y,x"
    elif fmt == "npy":
        got = np.load(path)
    else:
        got = tifffile.imread(path)
    np.testing.assert_array_equal(got, ds.movie.values)


def test_write_movie_needs_a_movie(tmp_path):
    ds = simulate_candidates(100, (64, 64), 20)
    with pytest.raises(InputError, match="no 'movie'"):
        write_movie(ds, tmp_path / "m.h5")
    with pytest.raises(InputError, match="format"):
        write_movie(ds, tmp_path / "m.zarr", format="zarr")


def test_docstring_examples_run():
    res = doctest.testmod(synthetic, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted >= 6 and res.failed == 0


# ---------------------------------------------------------------- hypothesis: any parameters
@settings(max_examples=25, deadline=None)
@given(
    n_cells=st.integers(0, 12),
    n_false=st.integers(0, 12) | st.none(),
    shape=st.tuples(st.integers(12, 40), st.integers(12, 40)),
    n_frames=st.integers(1, 40),
    frame_rate=st.sampled_from([0.5, 3.0, 30.0, 1000.0]),
    radius=st.tuples(st.floats(0.5, 4), st.floats(0.0, 3)).map(lambda t: (t[0], t[0] + t[1])),
    motion=st.floats(0, 3),
    kinds=st.none() | st.lists(st.sampled_from(FALSE_KINDS), min_size=1, max_size=3, unique=True),
    lazy=st.booleans(),
)
def test_any_small_parameters_give_a_valid_recording_or_an_input_error(
    n_cells, n_false, shape, n_frames, frame_rate, radius, motion, kinds, lazy
):
    try:
        ds = simulate_recording(
            n_cells,
            shape,
            n_frames,
            n_false=n_false,
            frame_rate=frame_rate,
            cell_radius=radius,
            motion=motion,
            kinds=kinds,
            lazy=lazy,
            chunk_frames=16,
        )
    except InputError:
        return
    n = n_cells + (n_cells if n_false is None else n_false)
    assert dict(ds.sizes) == {"candidate": n, "y": shape[0], "x": shape[1], "time": n_frames}
    assert int(ds.is_cell.sum()) == n_cells
    mov = ds.movie.values
    assert mov.dtype == np.uint16 and mov.shape == (n_frames, *shape)
    assert np.isfinite(ds.traces.values).all()
    assert np.abs(ds.motion_y.values).max() <= 6 * motion + 1e-6
