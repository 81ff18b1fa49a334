"""The streaming pass: snapshot clips equal the movie, summary images equal direct numpy,
chunking and executors do not change results, an interrupted run leaves nothing behind."""
from __future__ import annotations

import importlib

import dask
import dask.array as da
import numpy as np
import pytest

from actsort_nb import InputError, candidate_set
from actsort_nb.preprocess import preprocess
from actsort_nb.preprocess.stream import (
    Moments,
    StreamResult,
    _moments,
    _quantise_records,
    quantise_snapshots,
    snapshot_index,
    stream,
)


def _direct_corr(movie: np.ndarray) -> np.ndarray:
    """Non-streaming 8-neighbour local correlation (CaImAn's local_correlations, eight_neighbours)."""
    x = movie.astype(np.float64)
    sd = x.std(0)
    z = np.divide(x - x.mean(0), sd, out=np.zeros_like(x), where=sd > 0)
    t, h, w = z.shape
    pad = np.zeros((t, h + 2, w + 2))
    pad[:, 1:-1, 1:-1] = z
    ones = np.zeros((h + 2, w + 2))
    ones[1:-1, 1:-1] = 1
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                nb = pad[:, 1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
                total += (z * nb).mean(0)
                count += ones[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
    return total / count


def _candidates(n_t=90, shape=(40, 48), seed=0, dtype=np.uint16):
    """Hand-built candidates: squares with one big transient each, a movie with unique values."""
    rng = np.random.default_rng(seed)
    h, w = shape
    boxes = [(0, 6, 0, 6), (h - 7, h, w - 5, w), (15, 21, 20, 26), (10, 14, 40, 46), (30, 36, 5, 9)]
    fp = np.zeros((len(boxes), h, w), np.float32)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        fp[i, y0:y1, x0:x1] = 1
    traces = rng.normal(0, 0.1, (len(boxes), n_t)).astype(np.float32)
    for i in range(len(boxes)):
        traces[i, 10 + 11 * i] += 5
        traces[i, n_t - 12 - 3 * i] += 3
    movie = rng.integers(0, 3000, (n_t, h, w)).astype(dtype)
    return candidate_set(fp, traces, movie=movie, frame_rate=10.0), movie


def test_snapshot_clips_equal_movie_within_quantisation():
    ds, movie = _candidates()
    ss = preprocess(ds, progress=False, features=False, chunk_frames=17)
    s = ss.attrs["crop_size"]
    snaps = ss.snapshots.values.astype(np.float64)
    scale = ss.snapshot_scale.values.astype(np.float64)
    offset = ss.snapshot_offset.values.astype(np.float64)
    ev = ss.event_frame.values
    o = ss.crop_origin.values
    n_t = movie.shape[0]
    checked = 0
    for c in range(ev.shape[0]):
        for e in range(ev.shape[1]):
            if ev[c, e] < 0:
                assert (snaps[c, e] == 0).all()
                continue
            frames = np.clip(np.arange(ev[c, e] - 5, ev[c, e] + 6), 0, n_t - 1)
            want = movie[frames, o[c, 0] : o[c, 0] + s, o[c, 1] : o[c, 1] + s]
            got = snaps[c, e] * scale[c] + offset[c]
            assert np.abs(got - want).max() <= scale[c] * 1.001  # two roundings of half a step
            checked += 1
    assert checked >= 10
    assert ss.snapshots.dtype == np.uint8
    assert ss.snapshots.dims == ("candidate", "event", "frame", "cy", "cx")


def test_summary_images_equal_numpy():
    ds, movie = _candidates(n_t=70, shape=(37, 47), seed=3)
    ss = preprocess(ds, progress=False, features=False, chunk_frames=9)
    np.testing.assert_array_equal(ss.max_image.values, movie.max(0).astype(np.float32))
    np.testing.assert_allclose(ss.mean_image.values, movie.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ss.corr_image.values, _direct_corr(movie), atol=2e-5)


def test_correlation_image_of_correlated_patch():
    rng = np.random.default_rng(5)
    sig = rng.normal(0, 1, 200)
    movie = rng.normal(0, 1, (200, 12, 12)).astype(np.float32)
    movie[:, 3:8, 3:8] += 20 * sig[:, None, None]  # one coherent patch
    acc = Moments()
    for s in range(0, 200, 33):
        acc.add(_moments(movie[s : s + 33]))
    corr = acc.corr_image()
    np.testing.assert_allclose(corr, _direct_corr(movie), atol=1e-5)
    assert corr[5, 5] > 0.99 and abs(corr[10, 10]) < 0.3


@pytest.mark.parametrize("chunk_frames", [1, 7, 64, 500])
def test_chunk_size_does_not_change_results(chunk_frames):
    ds, _ = _candidates(seed=2, dtype=np.float32)
    ref = preprocess(ds, progress=False, features=False, chunk_frames=90)
    got = preprocess(ds, progress=False, features=False, chunk_frames=chunk_frames)
    np.testing.assert_array_equal(ref.snapshots.values, got.snapshots.values)
    np.testing.assert_array_equal(ref.snapshot_scale.values, got.snapshot_scale.values)
    np.testing.assert_array_equal(ref.max_image.values, got.max_image.values)
    np.testing.assert_allclose(ref.mean_image.values, got.mean_image.values, rtol=1e-6)
    np.testing.assert_allclose(ref.corr_image.values, got.corr_image.values, atol=1e-6)


def test_dask_schedulers_give_identical_results():
    ds, _ = _candidates(seed=4)
    ref = preprocess(ds, progress=False, features=False, chunk_frames=13)
    for scheduler in ("synchronous", "threads"):
        got = preprocess(ds, progress=False, features=False, chunk_frames=13, scheduler=scheduler)
        for name in ("snapshots", "snapshot_scale", "snapshot_offset", "max_image", "mean_image", "corr_image"):
            np.testing.assert_array_equal(ref[name].values, got[name].values, err_msg=name)


def test_index_clamps_and_skips_missing_events():
    idx = snapshot_index(np.array([[1, -1], [98, 50]]), np.array([[3, 4], [5, 6]]), 100, half=2)
    assert np.all(np.diff(idx.frame) >= 0)
    assert idx.frame.min() == 0 and idx.frame.max() == 99
    assert len(idx.frame) == 15 and not np.any((idx.candidate == 0) & (idx.event == 1))
    assert idx.origin[idx.candidate == 1].tolist() == [[5, 6]] * 10


def _result(crops: np.ndarray) -> StreamResult:
    """A StreamResult from raw (candidate, event, frame, cy, cx) crops, quantised per record."""
    q, lo, sc = _quantise_records(crops.reshape(-1, *crops.shape[-2:]))
    z = np.zeros(crops.shape[-2:], np.float32)
    return StreamResult(q.reshape(crops.shape), lo.reshape(crops.shape[:3]), sc.reshape(crops.shape[:3]), z, z, z)


def test_quantise_constant_and_missing():
    clips = np.full((2, 2, 3, 4, 4), 7.0, np.float32)
    clips[0, 1] = 1e6  # a missing event's frames must not widen the range
    q, scale, offset = quantise_snapshots(_result(clips), np.array([[5, -1], [-1, -1]]))
    assert (q[0, 0] * scale[0] + offset[0] == 7).all() and (q[0, 1] == 0).all() and (q[1] == 0).all()


def test_requantisation_error_at_most_one_step():
    rng = np.random.default_rng(7)
    crops = rng.normal(0, 1, (6, 5, 11, 8, 8)) * rng.uniform(0.1, 100, (6, 5, 11, 1, 1)) + 50
    ev = np.array([[1, 2, 3, 4, 5]] * 5 + [[1, 2, -1, -1, -1]])
    q, scale, offset = quantise_snapshots(_result(crops), ev, noise_step=0)  # the range step alone
    got = q * scale[:, None, None, None, None].astype(np.float64) + offset[:, None, None, None, None]
    err = np.abs(got - crops)[ev >= 0]
    step = np.broadcast_to(scale[:, None], ev.shape)[ev >= 0]
    assert np.all(err.max(axis=(1, 2, 3)) <= step * 1.001)
    assert q.min() == 0 and q.max() == 255


def _failing(movie: np.ndarray, bad_block: int, chunk: int) -> da.Array:
    def boom(block, block_info=None):
        if block_info[0]["chunk-location"][0] == bad_block:
            raise RuntimeError("disk unplugged")
        return block

    return da.from_array(movie, chunks=(chunk, -1, -1)).map_blocks(boom, dtype=movie.dtype)


def test_interrupted_run_leaves_no_sortset_and_rerun_succeeds(tmp_path):
    ds, movie = _candidates()
    out = tmp_path / "sorted.h5"
    broken = ds.copy()
    broken["movie"] = (("time", "y", "x"), _failing(movie, bad_block=3, chunk=10))
    with pytest.raises(RuntimeError, match="disk unplugged"):
        preprocess(broken, out=out, progress=False, features=False)
    assert list(tmp_path.iterdir()) == []
    ss = preprocess(ds, out=out, progress=False, features=False)
    assert out.exists() and [p.name for p in tmp_path.iterdir()] == ["sorted.h5"]
    assert ss.snapshots.shape[0] == 5


def test_interrupted_write_keeps_previous_sortset(tmp_path, monkeypatch):
    from actsort_nb.preprocess import sortset as mod

    ds, _ = _candidates()
    out = tmp_path / "s.h5"
    preprocess(ds, out=out, progress=False, features=False)
    before = out.read_bytes()
    calls = {"n": 0}
    real = mod._write_var

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(mod, "_write_var", flaky)
    with pytest.raises(KeyboardInterrupt):
        preprocess(ds, out=out, progress=False, features=False)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["s.h5"]


def test_movie_required_and_bad_options():
    ds, _ = _candidates()
    with pytest.raises(InputError, match="no movie"):
        preprocess(ds.drop_vars("movie"), progress=False, features=False)
    with pytest.raises(InputError, match="chunk_frames"):
        preprocess(ds, progress=False, features=False, chunk_frames=0)
    with pytest.raises(InputError, match="either client= or scheduler="):
        stream(ds.movie.data, np.zeros((5, 5), int), np.zeros((5, 2), int), 8, client=object(), scheduler="threads")


@pytest.mark.slow
def test_local_cluster_gives_identical_results():
    distributed = pytest.importorskip("distributed")
    ds, _ = _candidates(n_t=120, seed=6)
    try:
        from actsort_nb.features import compute_features  # noqa: F401

        features = True
    except ImportError:  # the feature engine is another subpackage; compare the rest
        features = False
    ref = preprocess(ds, progress=False, features=features, chunk_frames=16)
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, silence_logs=50
        )
        try:
            with distributed.Client(cluster) as client:
                got = preprocess(ds, progress=False, features=features, chunk_frames=16, client=client)
                assert len(client.scheduler_info()["workers"]) == 2
        finally:
            cluster.close()
    names = ["event_frame", "snapshots", "snapshot_scale", "snapshot_offset", "crop_origin",
             "crop_footprint", "max_image", "mean_image", "corr_image"] + (["features"] if features else [])
    for name in names:
        np.testing.assert_array_equal(ref[name].values, got[name].values, err_msg=name)


def test_record_cap_splits_chunks_without_changing_results():
    ds, _ = _candidates(seed=8)
    ref = preprocess(ds, progress=False, features=False, chunk_frames=90)
    ev = ref.event_frame.values
    s = ref.attrs["crop_size"]
    got = stream(ds.movie.data, ev, ref.crop_origin.values, s, chunk_frames=90, progress=False,
                 max_record_bytes=7 * s * s)  # at most 7 records per task
    q, _, _ = quantise_snapshots(got, ev)
    np.testing.assert_array_equal(q, ref.snapshots.values)
    np.testing.assert_array_equal(got.max_image, ref.max_image.values)
    np.testing.assert_allclose(got.corr_image, ref.corr_image.values, atol=1e-6)


def test_cap_records_bounds_every_task():
    from actsort_nb.preprocess.stream import _cap_records

    movie = da.zeros((100, 4, 4), chunks=(50, 4, 4))
    idx = snapshot_index(np.array([[20, 22, 24, 80]] * 3), np.zeros((3, 2), int), 100)
    capped = _cap_records(movie, idx, 10)
    bounds = np.concatenate([[0], np.cumsum(capped.chunks[0])])
    counts = np.diff(np.searchsorted(idx.frame, bounds))
    assert capped.shape == movie.shape and counts.max() <= 10 and counts.sum() == len(idx.frame)
    assert _cap_records(movie, idx, 10**6) is movie


# --- the compiled kernels are held to the numpy/scipy reference, byte for byte -------------


@pytest.mark.parametrize("dtype", ["<u2", ">u2", "<i2", "<f2", "<f4", "<f8"])
def test_crops_cut_by_the_pass_equal_numpy(dtype):
    rng = np.random.default_rng(11)
    block = (rng.normal(300, 50, (12, 30, 33)) * rng.uniform(0.01, 3, (12, 1, 1))).astype(dtype)
    block[2, :9, :9] = 7  # flat crops: scale 0
    size, t0 = 9, 40
    frame = np.sort(rng.integers(0, 12, 200)) + t0
    origin = rng.integers(0, 30 - size, (200, 2))
    origin[:4] = 0
    windows = np.lib.stride_tricks.sliding_window_view(block, (size, size), axis=(1, 2))
    q, lo, sc = _quantise_records(windows[frame - t0, origin[:, 0], origin[:, 1]])
    rows = rng.permutation(230)[:200]
    dest = np.zeros((230, size, size), np.uint8)
    lo2, sc2 = np.zeros(230), np.zeros(230)
    _moments(block, 300, records=(t0, frame, origin, size, dest, rows, lo2, sc2))  # a few rows per band
    np.testing.assert_array_equal(dest[rows], q)
    np.testing.assert_array_equal(lo2[rows], lo)
    np.testing.assert_array_equal(sc2[rows], sc)
    assert not dest[np.setdiff1d(np.arange(230), rows)].any()


@pytest.mark.parametrize("band_bytes", [1, 500, 1e6])  # one row per band, crops across bands, one band
@pytest.mark.parametrize("dtype", ["<u2", ">i2", "<f4"])
def test_moments_with_records_cut_the_same_crops(band_bytes, dtype):
    """The pass cuts each band's share of the crops while computing that band's moments:
    the same bytes as numpy's gather + quantisation, and the same moments as without records."""
    rng = np.random.default_rng(12)
    block = rng.normal(300, 50, (10, 31, 26)).astype(dtype)
    size, t0 = 9, 100
    frame = np.sort(rng.integers(0, 10, 150)) + t0
    origin = np.column_stack([rng.integers(0, 31 - size + 1, 150), rng.integers(0, 26 - size + 1, 150)])
    rows = rng.permutation(150)
    windows = np.lib.stride_tricks.sliding_window_view(block, (size, size), axis=(1, 2))
    want, lo_want, sc_want = _quantise_records(windows[frame - t0, origin[:, 0], origin[:, 1]])
    got = np.zeros((150, size, size), np.uint8)
    lo, sc = np.zeros(150), np.zeros(150)
    part = _moments(block, band_bytes, records=(t0, frame, origin, size, got, rows, lo, sc))
    np.testing.assert_array_equal(got[rows], want)
    np.testing.assert_array_equal(lo[rows], lo_want)
    np.testing.assert_array_equal(sc[rows], sc_want)
    plain = _moments(block, band_bytes)
    for key in ("max", "mean", "m2"):
        np.testing.assert_array_equal(part[key], plain[key])


def _quantise_snapshots_numpy(result, event_frame):
    """The numpy form of quantise_snapshots (the compiled kernel must give the same bytes)."""
    clips = result.clips.copy()
    n = clips.shape[0]
    present = np.asarray(event_frame) >= 0
    b = (slice(None),) * 3 + (None, None)
    ok = np.broadcast_to(present[:, :, None], result.lo.shape)
    rec_lo, rec_sc = result.lo, result.scale
    lo = np.where(ok, rec_lo, np.inf).min(axis=(1, 2))
    hi = np.where(ok, rec_lo + 255.0 * rec_sc, -np.inf).max(axis=(1, 2))
    has = np.isfinite(lo)
    lo = np.where(has, lo, 0.0)
    sc = np.where(has & (hi > lo), (hi - lo) / 255.0, 1.0)
    gain = np.where(ok, rec_sc / sc[:, None, None], 0.0).astype(np.float32)
    shift = np.where(ok, (rec_lo - lo[:, None, None]) / sc[:, None, None], 0.0).astype(np.float32)
    x = clips.astype(np.float32)
    x *= gain[b]
    x += shift[b]
    np.rint(x, out=x)
    np.clip(x, 0, 255, out=x)
    assert n == len(sc)
    return x.astype(np.uint8), sc.astype(np.float32), lo.astype(np.float32)


def test_requantise_kernel_equals_numpy():
    rng = np.random.default_rng(12)
    crops = rng.normal(0, 1, (37, 5, 11, 6, 7)) * rng.uniform(0.01, 1000, (37, 5, 11, 1, 1)) + rng.normal(0, 500, (37, 1, 1, 1, 1))
    crops[4] = 3.0  # one flat candidate
    ev = rng.integers(-1, 40, (37, 5))
    ev[7] = -1  # one without events
    want = _quantise_snapshots_numpy(_result(crops), ev)
    got = quantise_snapshots(_result(crops), ev, block=5, noise_step=0)  # several blocks, two threads
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


def test_fused_merge_equals_numpy_merge():
    from actsort_nb.preprocess.stream import _PAIRS

    rng = np.random.default_rng(13)
    m = rng.normal(100, 10, (40, 9, 11))
    acc = Moments()
    mean = m2 = co = None
    n = 0
    for s in range(0, 40, 6):
        part = _moments(m[s : s + 6])
        acc.add(part)
        nb = part["n"]
        if n == 0:
            mean, m2, n = part["mean"].copy(), part["m2"].astype(np.float64), nb
            co = [c.astype(np.float64) for c in part["co"]]
            continue
        delta = part["mean"] - mean
        w = n * nb / (n + nb)
        mean += delta * (nb / (n + nb))
        m2 += part["m2"] + delta * delta * w
        for c, cb, (p, q) in zip(co, part["co"], _PAIRS):
            c += cb + delta[p] * delta[q] * w
        n += nb
    np.testing.assert_array_equal(acc.mean, mean)
    np.testing.assert_array_equal(acc.m2, m2)
    for a, b in zip(acc.co, co):
        np.testing.assert_array_equal(a, b)


def test_integer_chunk_mean_is_exact():
    rng = np.random.default_rng(14)
    block = rng.integers(0, 65536, (256, 5, 6)).astype(np.uint16)  # the largest exact-float32 case
    np.testing.assert_array_equal(_moments(block)["mean"], block.astype(np.float32).mean(axis=0, dtype=np.float64))


@pytest.mark.parametrize("direct_io", [False, True])
def test_hdf5_direct_read_equals_dask_path(tmp_path, monkeypatch, direct_io):
    # the pass reads the file itself (through the page cache, or with direct I/O as for big movies)
    h5py = pytest.importorskip("h5py")
    from actsort_nb.io import open_movie
    from actsort_nb.preprocess.stream import _array_source

    mod = importlib.import_module("actsort_nb.preprocess.stream")
    monkeypatch.setattr(mod, "DIRECT_MIN_BYTES", 0 if direct_io else 2**62)
    direct_reads = []
    real = mod._RawFrames._read_direct
    monkeypatch.setattr(mod._RawFrames, "_read_direct", lambda self, *a: direct_reads.append(real(self, *a)) or direct_reads[-1])

    ds, movie = _candidates(n_t=80, seed=9)
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("mov", data=movie, chunks=(3,) + movie.shape[1:])
    mov = open_movie(path)
    assert isinstance(_array_source(mov), h5py.Dataset)  # the local pass reads the file itself
    assert _array_source(mov.rechunk({0: 7})) is None and _array_source(mov + 1) is None
    ds = ds.assign(movie=(("time", "y", "x"), mov))
    ref = preprocess(ds, progress=False, features=False, chunk_frames=11, scheduler="synchronous")
    for chunk in (11, None, 80):
        got = preprocess(ds, progress=False, features=False, chunk_frames=chunk)
        for name in ("snapshots", "snapshot_scale", "snapshot_offset", "max_image", "mean_image"):
            np.testing.assert_array_equal(ref[name].values, got[name].values, err_msg=name)
        np.testing.assert_allclose(ref.corr_image.values, got.corr_image.values, atol=1e-6)
    used = any(got is not None for got in direct_reads)
    assert used == (direct_io and _direct_io_allowed(tmp_path))


def _moments_reference(block):
    """The numpy (einsum) form of the chunk moments that the compiled kernel replaces."""
    mu = block.mean(axis=0, dtype=np.float64)  # of the values as given (float64 exact)
    x = block.astype(np.float32)
    x -= mu.astype(np.float32)
    dot = "tij,tij->ij"
    co = (
        np.einsum(dot, x[:, :, :-1], x[:, :, 1:]),
        np.einsum(dot, x[:, :-1], x[:, 1:]),
        np.einsum(dot, x[:, :-1, :-1], x[:, 1:, 1:]),
        np.einsum(dot, x[:, :-1, 1:], x[:, 1:, :-1]),
    )
    return {"max": block.max(axis=0), "mean": mu, "m2": np.einsum(dot, x, x), "co": co}


@pytest.mark.parametrize("shape", [(9, 7, 11), (5, 1, 6), (5, 6, 1), (1, 4, 4), (40, 13, 17)])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64, ">i2"])
@pytest.mark.parametrize("band_bytes", [1, 300, 1e6])  # one row per band, a few rows, all rows
def test_compiled_chunk_moments_match_numpy(shape, dtype, band_bytes):
    rng = np.random.default_rng(15)
    block = (rng.normal(300, 20, shape)).astype(dtype)
    got = _moments(block, band_bytes=band_bytes)
    want = _moments_reference(block)
    assert got["n"] == shape[0]
    np.testing.assert_array_equal(got["max"], want["max"])
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-12)
    scale = max(1.0, float(want["m2"].max()))
    np.testing.assert_allclose(got["m2"], want["m2"], atol=1e-5 * scale)
    for g, w in zip(got["co"], want["co"]):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-5 * scale)


def test_compiled_chunk_max_propagates_nan():
    block = np.ones((4, 3, 3), np.float32)
    block[2, 1, 1] = np.nan
    assert np.isnan(_moments(block)["max"][1, 1])
    assert np.isfinite(np.delete(_moments(block)["max"].ravel(), 4)).all()


def _direct_io_allowed(folder) -> bool:
    import os

    try:
        os.close(os.open(folder / ".probe", os.O_RDWR | os.O_CREAT | os.O_DIRECT))
        return True
    except (AttributeError, OSError):
        return False
    finally:
        (folder / ".probe").unlink(missing_ok=True)


@pytest.mark.parametrize("direct", [False, True])
def test_raw_frame_reads_equal_h5py_for_every_layout(tmp_path, monkeypatch, direct):
    # frames are read with preadv where their bytes lie in the file as in memory (with direct I/O for
    # big files: monkeypatched to all here), by h5py elsewhere: both give h5py's values (big-endian
    # data, odd lengths, partial edge chunks, fill values)
    import h5py

    mod = importlib.import_module("actsort_nb.preprocess.stream")
    from actsort_nb.preprocess.stream import _RawFrames

    monkeypatch.setattr(mod, "DIRECT_MIN_BYTES", 0 if direct else 2**62)
    direct_reads = []
    real = _RawFrames._read_direct
    monkeypatch.setattr(_RawFrames, "_read_direct", lambda self, *a: direct_reads.append(real(self, *a)) or direct_reads[-1])
    x = np.random.default_rng(0).integers(0, 60_000, (37, 20, 30)).astype(">u2")
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.create_dataset("contiguous", data=x)
        f.create_dataset("chunks2", data=x, chunks=(2, 20, 30))
        f.create_dataset("chunks5", data=x, chunks=(5, 20, 30))
        f.create_dataset("spatial", data=x, chunks=(5, 10, 30))
        f.create_dataset("gzip", data=x, chunks=(5, 20, 30), compression="gzip")
        holes = f.create_dataset("holes", shape=x.shape, dtype=x.dtype, chunks=(4, 20, 30), fillvalue=7)
        holes[0:4], holes[12:20] = x[0:4], x[12:20]
    raw_read = {}
    with h5py.File(tmp_path / "m.h5", "r") as f:
        for name, d in f.items():
            r = _RawFrames(d)
            try:
                raw_read[name] = r.ranges(0, 37) is not None
                assert r.direct == (direct and r.parallel and _direct_io_allowed(tmp_path))
                buf = r.buffer(37)
                for t0, t1 in [(0, 37), (3, 11), (35, 37), (1, 2)]:
                    np.testing.assert_array_equal(r.read(t0, t1, buf), d[t0:t1])
            finally:
                r.close()
    assert raw_read == {"contiguous": True, "chunks2": True, "chunks5": True, "spatial": False, "gzip": False,
                        "holes": False}
    if direct and _direct_io_allowed(tmp_path):
        assert any(got is not None for got in direct_reads)


def test_direct_reads_fall_back_to_the_page_cache_where_refused(tmp_path, monkeypatch):
    # a file system may accept O_DIRECT at open and refuse the read (EINVAL): the frames still come
    import errno
    import os

    import h5py

    mod = importlib.import_module("actsort_nb.preprocess.stream")
    from actsort_nb.preprocess.stream import _RawFrames

    monkeypatch.setattr(mod, "DIRECT_MIN_BYTES", 0)
    x = np.arange(12 * 6 * 5, dtype=np.uint16).reshape(12, 6, 5)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.create_dataset("mov", data=x)
    real = os.preadv

    with h5py.File(tmp_path / "m.h5", "r") as f:
        r = _RawFrames(f["mov"])
        if not r.direct:
            r.close()
            pytest.skip("this file system has no direct I/O")

        def preadv(fd, bufs, off):
            if fd == r._dfd:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real(fd, bufs, off)

        monkeypatch.setattr(mod.os, "preadv", preadv)
        try:
            np.testing.assert_array_equal(r.read(2, 9, r.buffer(12)), x[2:9])
        finally:
            r.close()


def test_prefetch_asks_the_kernel_for_the_movie_start_in_order(tmp_path, monkeypatch):
    """While the events are found, a thread asks the kernel to read the first chunks of a movie
    the pass reads from its file (within max_bytes, in file order); anything else is left alone."""
    import importlib
    import os
    import threading

    import h5py

    from actsort_nb.io import open_movie
    from actsort_nb.preprocess.stream import _RawFrames, prefetch

    stream_mod = importlib.import_module("actsort_nb.preprocess.stream")

    x = np.zeros((300, 16, 20), np.uint16)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.create_dataset("mov", data=x, chunks=(10, 16, 20))
    calls = []
    done = threading.Event()

    def fadvise(fd, offset, length, advice):
        calls.append((offset, length, advice))
        if len(calls) == 4:  # frames 0-9, 10-19, 20-29, 30-34
            done.set()

    monkeypatch.setattr(stream_mod.os, "posix_fadvise", fadvise, raising=False)
    monkeypatch.setattr(stream_mod, "default_chunk_frames", lambda shape, itemsize: 10)
    mov = open_movie(tmp_path / "m.h5", dataset="mov")
    frame = 16 * 20 * 2
    with prefetch(mov, max_bytes=35 * frame):
        assert done.wait(10)
    with h5py.File(tmp_path / "m.h5", "r") as f:
        raw = _RawFrames(f["mov"])
        want = [r for t0 in range(0, 35, 10) for r in raw.ranges(t0, min(35, t0 + 10))]
        raw.close()
    assert [(o, n) for o, n, _ in calls] == want  # the first 35 frames, chunk by chunk
    assert {a for *_, a in calls} == {os.POSIX_FADV_WILLNEED}
    calls.clear()
    with prefetch(da.from_array(x, chunks=(10, 16, 20))):  # a numpy movie: nothing to read
        pass
    assert calls == []


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_movie_with_nan_or_inf_is_refused_in_one_sentence(bad):
    # one bad pixel made a candidate's snapshot scale infinite and its clips all zero, silently
    from actsort_nb.synthetic import simulate_recording

    ds = simulate_recording(n_cells=6, shape=(40, 40), n_frames=160, seed=1)
    mov = ds.movie.values.astype(np.float32)
    mov[130, 10, 11] = bad
    with pytest.raises(InputError, match=r"NaN or infinite values in frames \d+-\d+ \(e.g. at y, x = \(10, 11\)\)"):
        preprocess(ds.assign(movie=(("time", "y", "x"), mov)), progress=False, features=False, chunk_frames=50)
