"""Writing the sort set in parts: the traces during the pass, the rest after it; the same bytes either way,
a bad output path refused before the pass, and nothing left behind by a failure."""
from __future__ import annotations

import importlib

import h5py
import numpy as np
import pytest

from actsort_nb import InputError
from actsort_nb.preprocess import preprocess, write_sortset
from actsort_nb.preprocess.sortset import SortsetWriter
from actsort_nb.synthetic import simulate_candidates

pp = importlib.import_module("actsort_nb.preprocess")
sortset_mod = importlib.import_module("actsort_nb.preprocess.sortset")


@pytest.fixture(scope="module")
def recording():
    ds = simulate_candidates(40, (64, 64), 400, seed=2, movie="lazy", chunk_frames=20)
    return ds.assign(movie=ds.movie.compute())


def _stored(path) -> dict:
    """Every dataset's stored chunks (the bytes on disk) or values, and every attribute, by name."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = dict(f.attrs)

        def visit(name, obj):
            out[name + "@"] = dict(obj.attrs)
            if isinstance(obj, h5py.Dataset):
                if obj.chunks is None:
                    out[name] = obj[()]
                else:
                    info = (obj.id.get_chunk_info(i) for i in range(obj.id.get_num_chunks()))
                    out[name] = {c.chunk_offset: obj.id.read_direct_chunk(c.chunk_offset)[1] for c in info}

        f.visititems(visit)
    return out


def test_traces_written_during_the_pass_give_the_same_file(recording, tmp_path):
    during = preprocess(recording, out=tmp_path / "a.h5", progress=False, features=False)
    after = preprocess(recording, progress=False, features=False)
    write_sortset(after.assign_attrs(during.attrs), tmp_path / "b.h5")  # the same run times
    a, b = _stored(tmp_path / "a.h5"), _stored(tmp_path / "b.h5")
    assert a.keys() == b.keys() and any(k.startswith("vars/traces/") for k in a)
    for name in a:
        if isinstance(a[name], dict) and name != "/":
            assert a[name].keys() == b[name].keys(), name
            for k in a[name]:
                np.testing.assert_array_equal(a[name][k], b[name][k], err_msg=f"{name} {k}")
        elif name != "/":
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert a["/"] == b["/"]


def test_a_bad_output_folder_is_refused_before_the_pass(recording, tmp_path, monkeypatch):
    def never(*a, **k):
        raise AssertionError("the pass ran")

    monkeypatch.setattr(pp, "top_events", never)
    with pytest.raises(InputError, match="does not exist"):
        preprocess(recording, out=tmp_path / "nowhere" / "s.h5", progress=False, features=False)
    with pytest.raises(InputError, match="is a folder"):
        preprocess(recording, out=tmp_path, progress=False, features=False)

    def refused(*a, **k):  # a folder this user cannot write to (root could: simulated)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sortset_mod.h5py, "File", refused)
    with pytest.raises(InputError, match="cannot create a file .* choose a folder you can write to"):
        preprocess(recording, out=tmp_path / "s.h5", progress=False, features=False)


def test_a_failed_trace_write_stops_preprocess_and_leaves_nothing(recording, tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sortset_mod, "_write_traces", full)
    with pytest.raises(InputError, match="no space left on the disk of .*; free some space or choose another folder"):
        preprocess(recording, out=tmp_path / "s.h5", progress=False, features=False)
    assert list(tmp_path.iterdir()) == []


def test_finish_refuses_a_variable_changed_after_it_was_written(recording, tmp_path):
    ss = preprocess(recording, progress=False, features=False)
    writer = SortsetWriter(tmp_path / "s.h5")
    writer.add("traces", ss.traces.variable)
    with pytest.raises(RuntimeError, match="traces changed"):
        writer.finish(ss.isel(time=slice(0, 100)))
    assert list(tmp_path.iterdir()) == []


def test_a_temporary_file_left_by_a_killed_run_is_removed_by_the_next(recording, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    host = socket.gethostname()
    stale = tmp_path / f".s.h5.{host}.{int(gone.stdout)}.0badc0de.tmp"  # its process has exited
    live = tmp_path / f".s.h5.{host}.{os.getppid()}.0badc0de.tmp"  # another run still writing
    other = tmp_path / f".s.h5.elsewhere.{int(gone.stdout)}.0badc0de.tmp"  # another host's: not ours to judge
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    preprocess(recording, out=tmp_path / "s.h5", progress=False, features=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "s.h5"])
