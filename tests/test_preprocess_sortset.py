"""The sort-set file: round trip, encodings and their error bounds, compression, laziness,
schemas, and hostile files (truncated, corrupt, foreign)."""
from __future__ import annotations

import json

import dask.array as da
import h5py
import numpy as np
import pytest
import sparse
import xarray as xr

from actsort_nb import InputError, candidate_set
from actsort_nb.preprocess import open_sortset, preprocess, write_sortset
from actsort_nb.preprocess._kernels import requantise
from actsort_nb.preprocess.sortset import (
    SORTSET_SCHEMA,
    decode_snapshots,
    decode_traces,
    encode_snapshots,
    encode_traces,
)
from actsort_nb.preprocess.stream import (
    StreamResult,
    _quantise_records,
    quantise_snapshots,
)

ZSTD = 32015  # HDF5 filter id of Zstandard (registered by hdf5plugin)


@pytest.fixture(scope="module")
def sortset():
    rng = np.random.default_rng(0)
    h, w, n_t = 40, 44, 80
    fp = np.zeros((4, h, w), np.float32)
    for i, (y, x) in enumerate([(5, 5), (20, 30), (33, 10), (12, 38)]):
        fp[i, y : y + 5, x : x + 4] = rng.random((5, 4)) + 0.1
    traces = rng.normal(0, 1, (4, n_t)).astype(np.float32) * 100 + 1000
    movie = rng.integers(0, 4000, (n_t, h, w)).astype(np.uint16)
    ds = candidate_set(
        fp, traces, movie=movie, frame_rate=7.5, ids=[11, 12, 13, 14], source="hand-built",
        candidate_vars={"kind": np.array(["cell", "duplicate", "cell", "neuropil"]),
                        "is_cell": np.array([True, False, True, False]),
                        "source_label": np.array([1, 0, 1, 1], np.int8)},
    )
    return preprocess(ds, progress=False, features=False)


@pytest.fixture
def saved(sortset, tmp_path):
    return write_sortset(sortset, tmp_path / "s.h5")


def _has_zstd(dset: h5py.Dataset) -> bool:
    plist = dset.id.get_create_plist()
    return ZSTD in [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


def _trace_steps(path) -> np.ndarray:
    with h5py.File(path) as f:
        return f["vars/traces/step"][...]


def test_round_trip(sortset, saved):
    back = open_sortset(saved)
    want = sortset.drop_vars("movie")
    assert list(back.data_vars) == list(want.data_vars)
    assert set(back.coords) == set(want.coords)
    assert back.attrs["schema"] == sortset.attrs["schema"] and back.attrs["sortset_schema"] == SORTSET_SCHEMA
    assert np.isnan(back.attrs["frame_rate"]) or back.attrs["frame_rate"] == 7.5
    step = _trace_steps(saved)[:, None]
    for name, var in want.variables.items():
        got = back[name]
        assert got.dims == var.dims, name
        assert got.dtype == var.dtype, name
        if name == "traces":  # quantised with a per-candidate step: error <= step / 2
            assert np.all(np.abs(got.values - var.values) <= step / 2 * (1 + 1e-6) + 1e-4), name
            assert np.all(step >= np.ptp(var.values.astype(np.float64), axis=1)[:, None] / 65535 * (1 - 1e-9))  # <= 65,536 levels
        elif isinstance(var.data, sparse.COO):
            assert isinstance(got.data, sparse.COO)
            np.testing.assert_array_equal(got.data.todense(), var.data.todense())
        else:  # everything else, the snapshots included, is stored losslessly
            np.testing.assert_array_equal(got.values, var.values, err_msg=name)
    assert back.time.attrs.get("units") == "s"


def test_lazy_compressed_and_chunked_per_candidate(saved):
    back = open_sortset(saved)
    assert isinstance(back.snapshots.data, da.Array) and isinstance(back.traces.data, da.Array)
    assert back.snapshots.data.chunks[0] == (4,)  # dask groups candidates, HDF5 chunks hold a few (below)
    one = back.snapshots.isel(candidate=2).values
    assert one.shape == back.snapshots.shape[1:]
    np.testing.assert_array_equal(back.snapshots.values[2], one)
    np.testing.assert_array_equal(back.traces.isel(candidate=[3, 1]).values, back.traces.values[[3, 1]])
    with h5py.File(saved) as f:
        assert f.attrs["schema"] == SORTSET_SCHEMA == 2
        assert f["vars/snapshots"].attrs["encoding"] == "uint8-predictive"
        d = f["vars/snapshots/residual"]
        assert d.chunks == (min(4, d.shape[0]),) + d.shape[1:] and d.fletcher32 and _has_zstd(d)
        for name in ("vars/traces/q", "vars/crop_footprint", "vars/event_frame", "vars/footprints/data"):
            assert f[name].fletcher32 and _has_zstd(f[name]), name
        assert "movie" not in f["vars"]
        assert f["vars/footprints"].attrs["encoding"] == "coo"


def test_reopened_sortset_saves_again(saved, tmp_path):
    back = open_sortset(saved)
    again = open_sortset(write_sortset(back, tmp_path / "copy.h5"))
    for name in ("snapshots", "event_frame", "crop_footprint", "corr_image", "kind", "is_cell"):
        np.testing.assert_array_equal(again[name].values, back[name].values, err_msg=name)
    step = _trace_steps(saved)[:, None]  # re-encoding the decoded traces moves them by at most about a step
    assert np.all(np.abs(again.traces.values - back.traces.values) <= 1.1 * step)


def test_write_refuses_non_sortset_and_missing_folder(sortset, tmp_path):
    with pytest.raises(InputError, match="not a sort set"):
        write_sortset(sortset.drop_vars("snapshots"), tmp_path / "x.h5")
    with pytest.raises(InputError, match="does not exist"):
        write_sortset(sortset, tmp_path / "nowhere" / "x.h5")


def test_non_finite_traces_refused_and_nothing_left_behind(sortset, tmp_path):
    bad = sortset.copy()
    tr = bad.traces.values.copy()
    tr[1, 3] = np.nan
    bad["traces"] = (bad.traces.dims, tr)
    with pytest.raises(InputError, match="NaN"):
        write_sortset(bad, tmp_path / "x.h5")
    assert list(tmp_path.iterdir()) == []


# ---- the encodings -----------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 5, 11, 9, 8), (3, 2, 3, 1, 5), (3, 2, 3, 5, 1), (2, 1, 1, 2, 2), (2, 3, 4, 1, 1)])
def test_snapshot_code_is_lossless(shape):
    rng = np.random.default_rng(1)
    q = rng.integers(0, 256, shape).astype(np.uint8)
    q[0] = 255  # extremes wrap around modulo 256
    present = rng.random(shape[:2]) > 0.3
    present[-1] = False  # a candidate without events: reference 0
    ref, code = encode_snapshots(q, present)
    assert ref.shape == (shape[0],) + shape[3:] and code.shape == q.shape
    assert (ref[-1] == 0).all()
    np.testing.assert_array_equal(decode_snapshots(ref, code), q)


def test_trace_code_error_bounds_and_noise_step():
    rng = np.random.default_rng(2)
    n_t = 3000
    sigma = np.array([0.5, 3.0, 40.0, 1e-3])
    x = rng.normal(0, 1, (4, n_t)) * sigma[:, None] + np.array([10.0, -200.0, 1e4, 0.0])[:, None]
    x[:, 1000:1010] += 20 * sigma[:, None]  # a transient does not move the noise estimate
    flat = np.full((1, n_t), 7.25)
    steps = np.r_[x, np.round(x[:1], 0), flat, np.where(np.arange(n_t) % 97, 0.0, 1.0)[None]]
    k = 1 / 8
    q, step, offset = encode_traces(steps, k)
    assert q.dtype == np.uint16
    back = decode_traces(q, step, offset, np.float64)
    assert np.all(np.abs(back - steps) <= step[:, None] / 2 * (1 + 1e-9))
    # the step is k times the noise s.d. (white noise: σ from the MAD of first differences)
    np.testing.assert_allclose(step[:4], k * sigma, rtol=0.1)
    # integer-valued rows keep their noise step; a flat row has step 1 and is exact
    assert step[5] == 1.0 and (back[5] == 7.25).all()
    # a row whose differences are mostly 0 has no measurable noise: 65,536 levels of its range
    assert step[6] == pytest.approx(1 / 65535)
    # and the stored integers are small: zigzag first differences of noise-level steps
    assert np.percentile(q[:4], 99) < 10 / k
    # k = 0: 65,536 levels of the range (the default), as in schema 1
    q0, step0, offset0 = encode_traces(steps, 0.0)
    np.testing.assert_allclose(step0[:5], np.ptp(steps[:5], axis=1) / 65535)
    assert np.all(np.abs(decode_traces(q0, step0, offset0, np.float64) - steps) <= step0[:, None] / 2 * (1 + 1e-9))


def test_noise_relative_trace_step(sortset, tmp_path):
    """``trace_step=k``: steps of k·σ, error ≤ step / 2, and fewer bytes than the range step (0)."""
    a = write_sortset(sortset, tmp_path / "range.h5", trace_step=0)
    b = write_sortset(sortset, tmp_path / "noise.h5", trace_step=0.25)
    tr = sortset.traces.values
    step = _trace_steps(b)
    np.testing.assert_allclose(step, 0.25 * 100, rtol=0.25)  # the fixture's traces have s.d. 100
    assert np.all(np.abs(open_sortset(b).traces.values - tr) <= step[:, None] / 2 * (1 + 1e-6) + 1e-4)
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert fb["vars/traces/q"].id.get_storage_size() < 0.75 * fa["vars/traces/q"].id.get_storage_size()
        assert fb["vars/traces"].attrs["trace_step"] == 0.25
    d = write_sortset(sortset, tmp_path / "default.h5")  # half the noise unless told
    np.testing.assert_allclose(_trace_steps(d), 0.5 * 100, rtol=0.25)
    with h5py.File(d) as fd:
        assert fd["vars/traces"].attrs["trace_step"] == 0.5
    with pytest.raises(InputError, match="trace_step"):
        write_sortset(sortset, tmp_path / "x.h5", trace_step=-1)


def _clips(sigma, n=6, n_ev=5, size=16, seed=3, transient=300.0):
    """Raw clips: a smooth background per candidate, a transient, Gaussian noise of s.d. ``sigma``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    bg = 300 + 40 * np.sin(yy / 3.0)[None] + 30 * np.cos(xx / 4.0)[None] + rng.uniform(0, 500, (n, 1, 1))
    crops = np.broadcast_to(bg[:, None, None], (n, n_ev, 11, size, size)).copy()
    blob = np.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 3.0)  # a small cell: few pixel pairs move
    crops += transient * np.exp(-np.abs(np.arange(11) - 5) / 2.0)[None, None, :, None, None] * blob
    crops += rng.normal(0, 1, crops.shape) * np.asarray(sigma, float).reshape(-1, 1, 1, 1, 1)
    return crops


def _result(crops):
    q, lo, sc = _quantise_records(crops.reshape(-1, *crops.shape[-2:]))
    z = np.zeros(crops.shape[-2:], np.float32)
    return StreamResult(q.reshape(crops.shape), lo.reshape(crops.shape[:3]), sc.reshape(crops.shape[:3]), z, z, z)


@pytest.mark.parametrize(("transient", "rtol"), [(0.0, 0.06), (300.0, 0.15)])
def test_snapshot_noise_estimate_matches_known_sigma(transient, rtol):
    """σ from consecutive-frame differences; a transient (a 60σ..2.5σ jump on ~10 % of the
    pixels) moves the median only a little, and only upwards (a slightly coarser step)."""
    sigma = np.array([5.0, 8.0, 15.0, 30.0, 60.0, 120.0])
    crops = _clips(sigma, transient=transient)
    res = _result(crops)
    present = np.ones(crops.shape[:2], bool)
    present[2, 1:] = False  # fewer events: fewer samples, same estimate
    n = len(crops)
    scale, offset, noise = np.ones(n, np.float32), np.zeros(n, np.float32), np.zeros(n)
    requantise(res.clips, res.lo, res.scale, present, 0, n, scale, offset, 0.5, noise)
    np.testing.assert_allclose(noise, sigma, rtol=rtol)
    assert np.all(noise > 0.93 * sigma)  # (2,048 sampled differences: ~2.6 % sampling error)
    assert np.all(scale >= 0.5 * noise * (1 - 1e-6))


def test_noise_relative_requantisation_error_and_bytes():
    sigma = np.array([5.0, 8.0, 15.0, 30.0, 60.0, 120.0])
    crops = _clips(sigma)
    ev = np.tile(np.arange(5) * 20 + 5, (len(crops), 1))
    ev[1, 3:] = -1
    q, scale, offset = quantise_snapshots(_result(crops), ev, block=2, noise_step=0.5)
    got = q * scale[:, None, None, None, None].astype(np.float64) + offset[:, None, None, None, None]
    ok = ev >= 0
    err = np.abs(got - crops)[ok]
    step = np.broadcast_to(scale[:, None], ev.shape)[ok]
    assert np.all(err.max(axis=(1, 2, 3)) <= step * 1.001)  # at most one step, as before
    assert (q[~ok] == 0).all()
    # the step follows the noise (the range alone would give range / 255): ~σ/2 here
    rng_ = np.array([np.ptp(crops[i][ok[i]]) for i in range(len(crops))])
    np.testing.assert_allclose(scale, np.maximum(rng_ / 255, 0.5 * sigma), rtol=0.12)
    # the added error is small against the noise: RMS ≈ step/√12 ≈ 0.14 σ
    rel = (got - crops)[ok] / np.broadcast_to(sigma[:, None], ev.shape)[ok][:, None, None, None]
    assert 0.08 < np.sqrt(np.mean(rel**2)) < 0.2
    # noise_step=0 is the range quantisation, which uses all 256 levels
    q0, s0, _ = quantise_snapshots(_result(crops), ev, noise_step=0)
    np.testing.assert_allclose(s0, rng_ / 255, rtol=1e-5)
    assert q0.max() == 255 and q.max() < 255
    with pytest.raises(InputError, match="noise_step"):
        quantise_snapshots(_result(crops), ev, noise_step=-1)


def test_noise_level_snapshots_compress_at_least_twofold(tmp_path):
    """A sort set of noise-level clips (as the pass makes them) takes < half its bytes on disk."""
    rng = np.random.default_rng(5)
    n_t, h, w = 300, 48, 48
    yy, xx = np.mgrid[:h, :w]
    movie = 400 + 100 * np.sin(yy / 7.0) * np.cos(xx / 9.0) + rng.normal(0, 12, (n_t, h, w))
    fp = np.zeros((6, h, w), np.float32)
    traces = rng.normal(0, 0.05, (6, n_t)).astype(np.float32)
    for i, (y, x) in enumerate([(8, 8), (8, 30), (24, 16), (36, 36), (30, 6), (18, 38)]):
        fp[i, y : y + 6, x : x + 6] = 1
        for t in rng.choice(n_t - 20, 5, replace=False) + 10:
            movie[t : t + 4, y : y + 6, x : x + 6] += 150
            traces[i, t : t + 4] += 1.0
    ds = candidate_set(fp, traces, movie=np.clip(movie, 0, None).astype(np.uint16), frame_rate=10.0)
    path = tmp_path / "noise.h5"
    ss = preprocess(ds, out=path, progress=False, features=False)
    with h5py.File(path) as f:
        d = f["vars/snapshots/residual"]
        assert d.id.get_storage_size() * 2 <= d.size
    np.testing.assert_array_equal(open_sortset(path).snapshots.values, ss.snapshots.values)


def _to_schema_1(path):
    """Rewrite a schema-2 file in the schema-1 layout (as the previous writer made it)."""
    with h5py.File(path, "a") as f:
        g = f["vars"]
        ref = g["snapshots/reference"][...]
        res = g["snapshots/residual"][...]
        attrs = dict(g["snapshots"].attrs)
        del g["snapshots"]
        d = g.create_dataset("snapshots", data=decode_snapshots(ref, res), chunks=(1,) + res.shape[1:], fletcher32=True)
        for k, v in attrs.items():
            d.attrs[k] = v
        d.attrs["encoding"] = "array"
        t = g["traces"]
        values = decode_traces(t["q"][...], t["step"][...], t["offset"][...], np.float64)
        lo, hi = values.min(1), values.max(1)
        sc = np.where(hi > lo, (hi - lo) / 65535.0, 1.0)
        q = np.clip(np.rint((values - lo[:, None]) / sc[:, None]), 0, 65535).astype(np.uint16)
        del t["q"], t["step"], t["offset"]
        t.create_dataset("q", data=q, compression="gzip", fletcher32=True)
        t["scale"], t["offset"] = sc, lo
        t.attrs["encoding"] = "uint16"
        f.attrs["schema"] = 1
    return sc


def test_schema_1_files_are_still_read(saved, tmp_path):
    new = open_sortset(saved)
    snaps, traces = new.snapshots.values, new.traces.values
    path = tmp_path / "schema1.h5"
    path.write_bytes(saved.read_bytes())
    sc = _to_schema_1(path)
    old = open_sortset(path)
    np.testing.assert_array_equal(old.snapshots.values, snaps)
    assert np.all(np.abs(old.traces.values - traces) <= sc[:, None] + 1e-3)
    assert old.snapshots.isel(candidate=1).shape == snaps.shape[1:]


# ---- hostile files ---------------------------------------------------------------

def _one_sentence(msg: str) -> None:
    assert msg.count(". ") == 0 and msg.endswith(".") and "\n" not in msg, msg


def test_truncated_file_refused(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt") as err:
        open_sortset(saved)
    assert str(saved) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="is a folder; give the sort set file in it"):
        open_sortset(saved.parent)


def test_empty_and_text_files_refused(tmp_path):
    for content in (b"", b"candidate,feature\n1,2\n"):
        p = tmp_path / "bad.h5"
        p.write_bytes(content)
        with pytest.raises(InputError, match="not a readable HDF5 file"):
            open_sortset(p)


def test_foreign_hdf5_refused(tmp_path):
    p = tmp_path / "movie.h5"
    with h5py.File(p, "w") as f:
        f["mov"] = np.zeros((3, 4, 4))
    with pytest.raises(InputError, match="not an actsort_nb sort set") as err:
        open_sortset(p)
    _one_sentence(str(err.value))


@pytest.mark.parametrize("schema", [SORTSET_SCHEMA + 1, 0])
def test_other_schema_refused(saved, schema):
    with h5py.File(saved, "a") as f:
        f.attrs["schema"] = schema
    with pytest.raises(InputError, match=f"schema {schema} ") as err:
        open_sortset(saved)
    _one_sentence(str(err.value))


def test_incomplete_file_refused(saved):
    with h5py.File(saved, "a") as f:
        del f.attrs["complete"]
    with pytest.raises(InputError, match="not completely written"):
        open_sortset(saved)


def test_missing_variable_refused(saved):
    with h5py.File(saved, "a") as f:
        del f["vars/snapshots"]
    with pytest.raises(InputError, match="lacks the variables"):
        open_sortset(saved)


def test_inconsistent_shapes_refused(saved):
    with h5py.File(saved, "a") as f:
        sizes = json.loads(f.attrs["sizes"])
        sizes["candidate"] += 1
        f.attrs["sizes"] = json.dumps(sizes)
    with pytest.raises(InputError, match="has shape"):
        open_sortset(saved)


def _repeat(sortset, k: int):
    """``k`` copies of the sort set's candidates (the field-of-view images once)."""
    many = xr.concat([sortset] * k, dim="candidate", data_vars="minimal", coords="minimal", compat="override")
    return many.assign_coords(candidate=np.arange(many.sizes["candidate"]))


@pytest.mark.parametrize("name", ["vars/snapshots/residual", "vars/traces/q"])
def test_corrupt_compressed_chunk_detected_on_read(sortset, tmp_path, name):
    many = _repeat(sortset, 3)
    saved = write_sortset(many.drop_vars("movie", errors="ignore"), tmp_path / "s.h5")
    with h5py.File(saved) as f:
        d = f[name]
        assert _has_zstd(d)
        info = d.id.get_chunk_info(1 if name.endswith("residual") else 0)  # residual: candidates 4-7
    raw = bytearray(saved.read_bytes())
    mid = info.byte_offset + info.size // 2
    raw[mid : mid + 8] = bytes(b ^ 0x5A for b in raw[mid : mid + 8])  # (0x00 -> 0xFF is invisible to Fletcher-32)
    saved.write_bytes(bytes(raw))
    back = open_sortset(saved)  # the small variables are intact
    if name.endswith("residual"):
        assert back.snapshots.isel(candidate=0).values.shape[0] == 5  # other chunks still read
    with pytest.raises(InputError, match="corrupt") as err:
        _ = back.snapshots.isel(candidate=5).values if name.endswith("residual") else back.traces.values
    assert str(saved) in str(err.value)


def test_corrupt_small_variable_detected_on_open(saved):
    with h5py.File(saved) as f:
        d = f["vars/event_frame"]
        info = d.id.get_chunk_info(0)
    raw = bytearray(saved.read_bytes())
    raw[info.byte_offset : info.byte_offset + 4] = b"\x00\xff\x00\xff"
    saved.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="damaged|corrupt"):
        open_sortset(saved)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such sort set"):
        open_sortset(tmp_path / "nope.h5")


@pytest.mark.parametrize(("dtype", "shape", "chunks"), [
    (np.uint16, (7, 301), (3, 301)),  # shuffled, odd byte count, a zero-padded last chunk
    (np.uint8, (5, 2, 3, 4, 4), (1, 2, 3, 4, 4)),
    (np.uint8, (2, 200_001), (1, 200_001)),  # > 360 words per Fletcher fold, odd length
])
def test_chunks_filtered_here_are_what_hdf5_stores(tmp_path, dtype, shape, chunks):
    # the writer compresses and checksums the big variables itself (threads) and writes finished
    # chunks: HDF5 must read them back, and its own Fletcher-32 of the same bytes must agree
    from actsort_nb.preprocess import sortset

    x = np.random.default_rng(1).integers(0, 200, shape).astype(dtype)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        ref = f.create_dataset("ref", shape=shape, dtype=dtype, chunks=chunks, **sortset._compression(dtype))
        ref[...] = x
        ours = f.create_dataset("ours", shape=shape, dtype=dtype, chunks=chunks, **sortset._compression(dtype))
        assert sortset._direct(ours)
        sortset._put(ours, 0, sortset._packed(ours, x))
        for k in range(0, shape[0], chunks[0]):
            stored = ref.id.read_direct_chunk((k,) + (0,) * (len(shape) - 1))[1]
            body = np.frombuffer(stored[:-4], np.uint8)
            assert int(sortset._fletcher32(body)).to_bytes(4, "little") == stored[-4:]
    with h5py.File(tmp_path / "c.h5", "r") as f:
        np.testing.assert_array_equal(f["ours"][...], x)
        assert f["ours"].fletcher32 and _has_zstd(f["ours"])


@pytest.mark.parametrize("n", [1, 5, 9])
def test_snapshots_round_trip_whatever_the_last_chunk_holds(sortset, tmp_path, n):
    # snapshots are stored a few candidates per chunk: a last chunk partly filled reads back exactly
    ss = _repeat(sortset, 3).isel(candidate=slice(0, n))
    back = open_sortset(write_sortset(ss.drop_vars("movie", errors="ignore"), tmp_path / "s.h5"))
    np.testing.assert_array_equal(back.snapshots.values, ss.snapshots.values)
    np.testing.assert_array_equal(back.snapshots.isel(candidate=n - 1).values, ss.snapshots.values[n - 1])
