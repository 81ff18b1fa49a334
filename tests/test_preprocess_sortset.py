"""The sort-set file: round trip, laziness, and hostile files (truncated, corrupt, foreign)."""
from __future__ import annotations

import json

import dask.array as da
import h5py
import numpy as np
import pytest
import sparse

from actsort_nb import InputError, candidate_set
from actsort_nb.preprocess import open_sortset, preprocess, write_sortset
from actsort_nb.preprocess.sortset import SORTSET_SCHEMA


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


def test_round_trip(sortset, saved):
    back = open_sortset(saved)
    want = sortset.drop_vars("movie")
    assert list(back.data_vars) == list(want.data_vars)
    assert set(back.coords) == set(want.coords)
    assert back.attrs["schema"] == sortset.attrs["schema"] and back.attrs["sortset_schema"] == SORTSET_SCHEMA
    assert np.isnan(back.attrs["frame_rate"]) or back.attrs["frame_rate"] == 7.5
    for name, var in want.variables.items():
        got = back[name]
        assert got.dims == var.dims, name
        assert got.dtype == var.dtype, name
        if name == "traces":  # stored as per-candidate uint16: error <= range / 131070
            rng_ = np.ptp(var.values, axis=1)[:, None]
            assert np.all(np.abs(got.values - var.values) <= rng_ / 131070 + 1e-4), name
        elif isinstance(var.data, sparse.COO):
            assert isinstance(got.data, sparse.COO)
            np.testing.assert_array_equal(got.data.todense(), var.data.todense())
        else:
            np.testing.assert_array_equal(got.values, var.values, err_msg=name)
    assert back.time.attrs.get("units") == "s"


def test_lazy_and_chunked_per_candidate(saved):
    back = open_sortset(saved)
    assert isinstance(back.snapshots.data, da.Array) and isinstance(back.traces.data, da.Array)
    assert back.snapshots.data.chunks[0] == (1, 1, 1, 1)
    one = back.snapshots.isel(candidate=2).values
    assert one.shape == back.snapshots.shape[1:]
    with h5py.File(saved) as f:
        d = f["vars/snapshots"]
        assert d.chunks == (1,) + d.shape[1:] and d.fletcher32
        assert "movie" not in f["vars"]
        assert f["vars/footprints"].attrs["encoding"] == "coo"


def test_reopened_sortset_saves_again(saved, tmp_path):
    back = open_sortset(saved)
    again = open_sortset(write_sortset(back, tmp_path / "copy.h5"))
    for name in ("snapshots", "event_frame", "crop_footprint", "corr_image", "kind", "is_cell"):
        np.testing.assert_array_equal(again[name].values, back[name].values, err_msg=name)
    np.testing.assert_allclose(again.traces.values, back.traces.values, rtol=0, atol=float(np.ptp(back.traces.values)) / 65535)


def test_write_refuses_non_sortset_and_missing_folder(sortset, tmp_path):
    with pytest.raises(InputError, match="not a sort set"):
        write_sortset(sortset.drop_vars("snapshots"), tmp_path / "x.h5")
    with pytest.raises(InputError, match="does not exist"):
        write_sortset(sortset, tmp_path / "nowhere" / "x.h5")


# ---- hostile files ---------------------------------------------------------------

def _one_sentence(msg: str) -> None:
    assert msg.count(". ") == 0 and msg.endswith(".") and "\n" not in msg, msg


def test_truncated_file_refused(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt") as err:
        open_sortset(saved)
    assert str(saved) in str(err.value)


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


def test_other_schema_refused(saved):
    with h5py.File(saved, "a") as f:
        f.attrs["schema"] = SORTSET_SCHEMA + 1
    with pytest.raises(InputError, match=f"schema {SORTSET_SCHEMA + 1}") as err:
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


def test_corrupt_snapshot_chunk_detected_on_read(saved):
    with h5py.File(saved) as f:
        info = f["vars/snapshots"].id.get_chunk_info(1)
    raw = bytearray(saved.read_bytes())
    mid = info.byte_offset + info.size // 2
    raw[mid : mid + 8] = bytes(b ^ 0x5A for b in raw[mid : mid + 8])  # (0x00 -> 0xFF is invisible to Fletcher-32)
    saved.write_bytes(bytes(raw))
    back = open_sortset(saved)  # the small variables are intact
    assert back.snapshots.isel(candidate=0).values.shape[0] == 5  # other chunks still read
    with pytest.raises(InputError, match="corrupt"):
        _ = back.snapshots.isel(candidate=1).values


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


def test_trace_quantisation_kernel_equals_numpy():
    """The compiled uint16 trace encoding gives the bytes of clip(rint((x - lo) / sc), 0, 65535)."""
    from actsort_nb.preprocess._kernels import quantise_u16

    rng = np.random.default_rng(3)
    for trial in range(4):
        x = rng.normal(0, 1, (120, 517)) * rng.uniform(1e-3, 1e4, (120, 1)) + rng.normal(0, 1e3, (120, 1))
        x[3] = 5.0  # flat row: scale 1
        x[4, ::2] = 1.0
        if trial % 2:
            x = np.round(x, 1)  # ties
        lo, hi = x.min(axis=1), x.max(axis=1)
        sc = np.where(hi > lo, (hi - lo) / 65535.0, 1.0)
        want = np.clip(np.rint((x - lo[:, None]) / sc[:, None]), 0, 65535).astype(np.uint16)
        q, scale, offset = np.empty_like(want), np.ones(120), np.zeros(120)
        quantise_u16(x, q, scale, offset)
        np.testing.assert_array_equal(q, want)
        np.testing.assert_array_equal(scale, sc)
        np.testing.assert_array_equal(offset, lo)
