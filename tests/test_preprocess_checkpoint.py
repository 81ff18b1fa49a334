"""Resuming an interrupted pass: the same result as an uninterrupted one, from where it stopped."""
from __future__ import annotations

import importlib
import json

import h5py
import numpy as np
import pytest

from actsort_nb.io import open_movie
from actsort_nb.preprocess.checkpoint import checkpoint_path
from actsort_nb.preprocess.stream import _RawFrames, stream

stream_mod = importlib.import_module("actsort_nb.preprocess.stream")


@pytest.fixture
def movie_file(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.integers(100, 4000, (200, 24, 30)).astype(np.uint16)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.create_dataset("mov", data=x, chunks=(10, 24, 30))
    return tmp_path / "m.h5"


def _inputs(seed=4):
    rng = np.random.default_rng(seed)
    events = np.sort(rng.integers(0, 200, (6, 5)), axis=1)
    events[2, 3:] = -1
    origins = np.column_stack([rng.integers(0, 24 - 8, 6), rng.integers(0, 30 - 8, 6)])
    return events, origins


def _run(path, events, origins, ckpt, **kw):
    return stream(open_movie(path, dataset="mov"), events, origins, 8, progress=False, workers=2,
                  checkpoint=ckpt, checkpoint_every=0, chunk_frames=10, **kw)


def _same(a, b):
    for name in ("clips", "lo", "scale", "max_image", "mean_image", "corr_image"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _count_reads(monkeypatch, fail_at=None):
    calls = []
    real = _RawFrames.read

    def read(self, t0, t1, out):
        calls.append(t0)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        return real(self, t0, t1, out)

    monkeypatch.setattr(_RawFrames, "read", read)
    return calls


def test_interrupted_pass_resumes_where_it_stopped(movie_file, tmp_path, monkeypatch):
    events, origins = _inputs()
    want = _run(movie_file, events, origins, None)
    monkeypatch.setattr(importlib.import_module("actsort_nb.preprocess.checkpoint"), "_BLOCK", 7)  # several blocks
    ckpt = checkpoint_path(tmp_path / "out.h5")
    _count_reads(monkeypatch, fail_at=12)
    with pytest.raises(KeyboardInterrupt):
        _run(movie_file, events, origins, ckpt)
    with h5py.File(ckpt, "r") as f:
        done = json.loads(f.attrs["state"])["chunks"]
    assert 1 <= done < 20
    calls = _count_reads(monkeypatch)
    got = _run(movie_file, events, origins, ckpt)
    assert sorted(calls) == list(range(done * 10, 200, 10))  # only the chunks not done before
    _same(got, want)


@pytest.mark.parametrize("damage", ["other events", "garbage"])
def test_a_checkpoint_of_other_inputs_or_a_broken_one_is_not_resumed(movie_file, tmp_path, monkeypatch, damage):
    events, origins = _inputs()
    ckpt = checkpoint_path(tmp_path / "out.h5")
    _count_reads(monkeypatch, fail_at=12)
    with pytest.raises(KeyboardInterrupt):
        _run(movie_file, *_inputs(seed=5), ckpt)  # other candidates' events and crops
    if damage == "garbage":
        ckpt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # cut short while saving
    calls = _count_reads(monkeypatch)
    with pytest.warns(UserWarning, match="not resuming"):
        got = _run(movie_file, events, origins, ckpt)
    assert len(calls) == 20  # all over again
    monkeypatch.undo()
    _same(got, _run(movie_file, events, origins, None))


def test_preprocess_removes_its_checkpoint_once_the_sort_set_is_written(tmp_path):
    from actsort_nb import candidate_set
    from actsort_nb.preprocess import preprocess

    rng = np.random.default_rng(0)
    fp = np.zeros((2, 40, 40), np.float32)
    fp[0, 5:10, 5:10] = 1
    fp[1, 25:31, 20:26] = 1
    ds = candidate_set(fp, rng.random((2, 120)), movie=rng.random((120, 40, 40)).astype(np.float32))
    out = tmp_path / "s.h5"
    checkpoint_path(out).write_bytes(b"left over from a crash")
    with pytest.warns(UserWarning, match="not resuming"):
        preprocess(ds, out=out, progress=False, features=False)
    assert out.exists() and not checkpoint_path(out).exists()


def test_a_checkpoint_that_cannot_be_saved_does_not_stop_the_pass(movie_file, tmp_path):
    events, origins = _inputs()
    ckpt = tmp_path / "no such folder" / "out.pass.h5"
    with pytest.warns(UserWarning, match="cannot save"):
        got = _run(movie_file, events, origins, ckpt)
    _same(got, _run(movie_file, events, origins, None))


def test_a_save_cut_short_leaves_the_previous_state(movie_file, tmp_path, monkeypatch):
    """Killed while saving (records appended, moments written, state not yet updated): the
    rerun resumes from the previous save and still gets the uninterrupted result."""
    events, origins = _inputs()
    want = _run(movie_file, events, origins, None)
    ckpt = checkpoint_path(tmp_path / "out.h5")
    saves = []
    real = h5py.File.flush

    def flush(self):
        saves.append(1)
        if len(saves) == 3:  # the third save dies after writing its data, before its state
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(h5py.File, "flush", flush)
    with pytest.raises(KeyboardInterrupt):
        _run(movie_file, events, origins, ckpt)
    monkeypatch.undo()
    with h5py.File(ckpt, "r") as f:
        assert json.loads(f.attrs["state"])["chunks"] == 2  # the second save's state
        assert len(f["clips"]) > 0
    calls = _count_reads(monkeypatch)
    got = _run(movie_file, events, origins, ckpt)
    assert sorted(calls) == list(range(20, 200, 10))
    _same(got, want)
