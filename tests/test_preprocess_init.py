"""``preprocess()`` end to end: simulated recordings, the real Neurofinder crop, the CLI."""
from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage
import scipy.sparse
from conftest import real_path

from actsort_nb import candidate_set
from actsort_nb._validation import InputError
from actsort_nb.preprocess import open_sortset, preprocess

NF = "neurofinder_neuhofmo"


def _compute_features_available() -> bool:
    try:
        from actsort_nb.features import compute_features  # noqa: F401
    except ImportError:
        return False
    return True


def test_simulated_recording_end_to_end(tmp_path):
    synthetic = pytest.importorskip("actsort_nb.synthetic")
    ds = synthetic.simulate_recording(n_cells=12, shape=(64, 64), n_frames=300, seed=1, lazy=True, chunk_frames=64)
    ss = preprocess(ds, out=tmp_path / "s.h5", progress=False, features=_compute_features_available())
    n = ds.sizes["candidate"]
    s = ss.attrs["crop_size"]
    assert ss.snapshots.shape == (n, 5, 11, s, s) and ss.event_frame.shape == (n, 5)
    assert (ss.event_frame.values[:, 0] >= 0).all()
    # events come from the traces, and the movie agrees: in cells' clips the footprint
    # is brighter at the event frame than 5 frames before it
    cells = ds.is_cell.values
    snaps = ss.snapshots.values[cells].astype(np.float64) * ss.snapshot_scale.values[cells, None, None, None, None]
    w = ss.crop_footprint.values[cells][:, None, None]
    inside = (snaps * w).sum((-2, -1)) / w.sum((-2, -1))  # (cell, event, frame)
    first = ss.event_frame.values[cells, 0] >= 0
    assert np.median(inside[first, 0, 5] - inside[first, 0, 0]) > 0
    back = open_sortset(tmp_path / "s.h5")
    np.testing.assert_array_equal(back.snapshots.values, ss.snapshots.values)
    if _compute_features_available():
        assert ss.features.dims == ("candidate", "feature") and ss.features.shape[0] == n
        assert np.isfinite(ss.features.values).all()
        np.testing.assert_array_equal(back.features.values, ss.features.values)


def _neurofinder_candidates():
    """Ground-truth regions plus generated false candidates (shifted, duplicated, neuropil-like)."""
    from actsort_nb.io import open_movie
    from actsort_nb.io.neurofinder import region_footprints

    movie = open_movie(real_path(NF, "movie_crop_600x224x224_uint16.tif"))
    regions = json.loads(real_path(NF, "regions_crop.json").read_text())
    regions = [r for r in regions if r.get("fully_inside", True)]
    n_t, h, w = movie.shape
    csr, _ = region_footprints(regions, (h, w))
    gt = csr.toarray().reshape(-1, h, w).astype(np.float32)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(gt), 30, replace=False)
    shifted = np.roll(gt[pick[:10]], (9, -7), axis=(1, 2))
    shifted[:, :9] = 0
    shifted[:, :, -7:] = 0
    duplicated = gt[pick[10:20]] * rng.uniform(0.6, 0.9, (10, 1, 1)).astype(np.float32)
    grow = lambda m, k: scipy.ndimage.binary_dilation(m, iterations=k)
    neuropil = np.stack([grow(m > 0, 8) & ~grow(m > 0, 3) for m in gt[pick[20:30]]]).astype(np.float32)
    fp = np.concatenate([gt, shifted, duplicated, neuropil])
    keep = fp.reshape(len(fp), -1).sum(1) > 0
    fp = fp[keep]
    kind = np.array(["cell"] * len(gt) + ["shifted"] * 10 + ["duplicate"] * 10 + ["neuropil"] * 10)[keep]
    flat = scipy.sparse.csr_matrix(fp.reshape(len(fp), -1) / fp.reshape(len(fp), -1).sum(1, keepdims=True))
    traces = movie.reshape(n_t, -1).map_blocks(
        lambda b: np.asarray(flat @ b.T.astype(np.float32)).T, dtype=np.float32, chunks=(movie.chunks[0], (len(fp),))
    )
    traces = traces.compute().T  # (candidate, time): one pass to get traces
    return candidate_set(
        fp, traces, movie=movie, frame_rate=7.0, source=str(real_path(NF)), source_format="neurofinder",
        candidate_vars={"kind": kind, "is_cell": kind == "cell"},
    )


@pytest.mark.slow
@pytest.mark.realdata
def test_real_neurofinder_end_to_end(tmp_path):
    ds = _neurofinder_candidates()
    assert isinstance(ds.movie.data, da.Array)
    out = tmp_path / "neurofinder.h5"
    ss = preprocess(ds, out=out, progress=False, features=_compute_features_available())
    back = open_sortset(out)
    n = ds.sizes["candidate"]
    assert back.snapshots.shape[:3] == (n, 5, 11) and back.snapshots.dtype == np.uint8
    assert set(back.kind.values) == {"cell", "shifted", "duplicate", "neuropil"}
    # the summary images of the pass equal those shipped with the data (full-FOV, cropped)
    summary = np.load(real_path(NF, "summary_full_fov.npz"))
    (y0, x0), size = summary["crop_origin_rowcol"], int(summary["crop_size"])
    np.testing.assert_array_equal(back.max_image.values, summary["max_image"][y0 : y0 + size, x0 : x0 + size])
    np.testing.assert_allclose(back.mean_image.values, summary["mean_image"][y0 : y0 + size, x0 : x0 + size], rtol=1e-4)
    # neurons are locally correlated: higher correlation inside ground-truth regions than elsewhere
    corr = back.corr_image.values
    c, y, x = ds.footprints.data.coords  # (no sparse fancy indexing: it JIT-compiles for seconds)
    is_gt = (ds.kind.values == "cell")[c]
    inside = np.zeros(corr.shape, bool)
    inside[y[is_gt], x[is_gt]] = True
    assert corr[inside].mean() > corr[~inside].mean() + 0.05
    if _compute_features_available():
        assert back.features.shape[0] == n and np.isfinite(back.features.values).all()
    assert ss.attrs["crop_size"] == back.attrs["crop_size"]


@pytest.mark.slow
@pytest.mark.realdata
def test_cli_preprocess_real(tmp_path, capsys):
    from actsort_nb.cli import main

    out = tmp_path / "cli.h5"
    code = main([
        "preprocess", str(real_path(NF, "movie_crop_600x224x224_uint16.tif")),
        str(real_path(NF, "regions_crop.json")), "-o", str(out), "--no-features", "--quiet", "--chunk-frames", "200",
        "--trace-step", "0.125",
    ])
    assert code == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    back = open_sortset(out)
    assert back.sizes["candidate"] == 110 and back.sizes["time"] == 600
    import h5py

    with h5py.File(out) as f:
        assert f["vars/traces"].attrs["trace_step"] == 0.125


def test_trace_step_shrinks_the_stored_traces_only(tmp_path):
    synthetic = pytest.importorskip("actsort_nb.synthetic")
    ds = synthetic.simulate_recording(n_cells=12, shape=(64, 64), n_frames=600, seed=2)
    fine = preprocess(ds, out=tmp_path / "fine.h5", progress=False, features=False, trace_step=0)
    preprocess(ds, out=tmp_path / "coarse.h5", progress=False, features=False)  # default: half the noise
    a, b = open_sortset(tmp_path / "fine.h5"), open_sortset(tmp_path / "coarse.h5")
    assert (a.traces.attrs["quantised_to_noise_sd"], b.traces.attrs["quantised_to_noise_sd"]) == (0.0, 0.5)
    np.testing.assert_array_equal(a.snapshots.values, b.snapshots.values)
    x = fine.traces.transpose("candidate", "time").values.astype(np.float64)
    err_fine = np.abs(a.traces.values - x).max(1)
    err = np.abs(b.traces.values - x).max(1)
    sigma = np.median(np.abs(np.diff(x, axis=1)), axis=1) / (0.6745 * np.sqrt(2))
    assert (err <= 0.2501 * sigma + 1e-6 * np.ptp(x, axis=1)).all()  # <= step / 2
    assert (err > err_fine).mean() > 0.9  # coarser than the range step

    import h5py

    with h5py.File(tmp_path / "fine.h5") as f, h5py.File(tmp_path / "coarse.h5") as g:
        size = {k: h["vars/traces/q"].id.get_storage_size() for k, h in (("fine", f), ("coarse", g))}
        assert g["vars/traces"].attrs["trace_step"] == 0.5
    assert size["coarse"] < 0.6 * size["fine"]
    with pytest.raises(InputError, match="trace_step"):
        preprocess(ds, out=tmp_path / "bad.h5", progress=False, features=False, trace_step=-1)
    assert not (tmp_path / "bad.h5").exists()


def test_cli_preprocess_bad_input(tmp_path, capsys):
    from actsort_nb.cli import main

    code = main(["preprocess", str(tmp_path / "missing.tif"), str(tmp_path / "missing.mat"), "-o", str(tmp_path / "o.h5")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("actsort-nb preprocess:") and err.count("\n") == 1
    assert not (tmp_path / "o.h5").exists()


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path, capsys):
    # -o pointing at the movie or the extraction output would replace the user's data with the sort set
    import hashlib

    import h5py
    import scipy.io

    from actsort_nb.cli import main
    from actsort_nb.io import open_candidates

    synthetic = pytest.importorskip("actsort_nb.synthetic")
    ds = synthetic.simulate_recording(n_cells=6, shape=(40, 40), n_frames=150, seed=1)
    movie, extraction = tmp_path / "mov.h5", tmp_path / "ext.mat"
    with h5py.File(movie, "w") as f:
        f["mov"] = ds.movie.values
    fp = ds.footprints.transpose("y", "x", "candidate").data
    scipy.io.savemat(extraction, {"spatial_weights": fp.todense() if hasattr(fp, "todense") else np.asarray(fp),
                                  "temporal_weights": ds.traces.transpose("time", "candidate").values})
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (movie, extraction)}
    for target, role in ((movie, "movie"), (extraction, "extraction output")):
        code = main(["preprocess", str(movie), str(extraction), "-o", str(target), "--quiet", "--no-features"])
        err = capsys.readouterr().err
        assert code == 2 and f"is this run's {role}" in err and err.count("\n") == 1
        with pytest.raises(InputError, match=f"is this run's {role}"):
            preprocess(open_candidates(extraction, movie=movie), out=target, progress=False, features=False)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (movie, extraction)} == digest
    with pytest.raises(InputError, match="'workers' parameter must be an int >= 1"):
        preprocess(open_candidates(extraction, movie=movie), workers=0, progress=False, features=False)


def test_processes_scheduler_and_short_recordings_say_what_to_do(tmp_path):
    import h5py

    from actsort_nb.io import open_movie

    synthetic = pytest.importorskip("actsort_nb.synthetic")
    ds = synthetic.simulate_recording(n_cells=4, shape=(32, 32), n_frames=100, seed=1)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["mov"] = ds.movie.values
    on_disk = ds.assign(movie=(("time", "y", "x"), open_movie(tmp_path / "m.h5")))
    with pytest.raises(InputError, match="scheduler='processes' cannot send this movie"):
        preprocess(on_disk, scheduler="processes", progress=False, features=False)

    short = synthetic.simulate_recording(n_cells=3, shape=(32, 32), n_frames=12, seed=1)
    with pytest.warns(UserWarning, match="only 12 frames"):
        preprocess(short, progress=False, features=False)
    with pytest.raises(InputError, match="at least 3: pass features=False"):
        preprocess(short.isel(time=slice(0, 2)), progress=False)


def test_bad_crop_scheduler_and_trace_step_are_one_sentence():
    from actsort_nb.synthetic import simulate_recording

    cands = simulate_recording(n_cells=4, shape=(48, 48), n_frames=60, seed=0)
    for bad in (0, -4, 2.7, "20", True):
        with pytest.raises(InputError, match="'crop' parameter"):
            preprocess(cands, crop=bad, progress=False, features=False)
    with pytest.raises(InputError, match="scheduler"):
        preprocess(cands, scheduler="bogus", progress=False, features=False)
    for bad in ("x", "0.5", -1.0, float("nan"), True):
        with pytest.raises(InputError, match="trace_step"):
            preprocess(cands, trace_step=bad, progress=False, features=False)


def test_dict_attributes_survive_the_sort_set(tmp_path):
    from actsort_nb.preprocess import open_sortset
    from actsort_nb.synthetic import simulate_recording

    cands = simulate_recording(n_cells=4, shape=(48, 48), n_frames=60, seed=0)
    cands.attrs["meta"] = {"a": 1, "b": [1, 2], "c": {"d": np.float32(0.5)}}
    cands["traces"].attrs["units"] = {"scale": 2}
    preprocess(cands, out=tmp_path / "s.h5", progress=False, features=False)
    back = open_sortset(tmp_path / "s.h5")
    assert back.attrs["meta"] == {"a": 1, "b": [1, 2], "c": {"d": 0.5}}
    assert back["traces"].attrs["units"] == {"scale": 2}


def test_the_first_run_after_installing_says_it_compiles(tmp_path):
    # a fresh numba cache is a first run: preprocess says so once, and the next run does not
    import os
    import subprocess
    import sys

    code = """
import sys
from actsort_nb.preprocess import first_run, preprocess
from actsort_nb.synthetic import simulate_recording
print(first_run())
cands = simulate_recording(n_cells=3, shape=(40, 40), n_frames=40, seed=0)
preprocess(cands, features=False)
print(first_run())
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, check=True)
    assert run.stdout.split() == ["True", "False"]
    assert run.stderr.count("the first run after installing compiles the kernels") == 1
