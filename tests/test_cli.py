"""The ``actsort-nb`` command line (``info`` so far)."""
from __future__ import annotations

import numpy as np
import pytest
from test_io_writers import make_truth, write_extract_v73, write_suite2p, write_suite2p_nwb

from actsort_nb.cli import main


def test_info_on_extract_output(tmp_path, capsys):
    fp, tr, _ = make_truth(n=3, h=8, w=9, t=20)
    p = write_extract_v73(tmp_path / "out.mat", fp, tr)
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "format: extract" in out and "candidates: 3" in out and "field of view: 8 x 9" in out


def test_info_on_a_movie(tmp_path, capsys):
    np.save(tmp_path / "m.npy", np.zeros((6, 4, 5), np.uint16))
    assert main(["info", str(tmp_path / "m.npy")]) == 0
    assert "frames: 6" in capsys.readouterr().out


def test_info_trust_flag_for_suite2p(tmp_path, capsys):
    fp, tr, _ = make_truth(n=3, h=8, w=9, t=20)
    folder = write_suite2p(tmp_path / "plane0", fp, tr)
    assert main(["info", str(folder)]) == 0
    assert "--trust" in capsys.readouterr().out
    assert main(["info", "--trust", str(folder)]) == 0
    assert "frame rate: 30 Hz" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"\x89HDF\r\n\x1a\n" + b"\x00" * 40, b"garbage"])
def test_info_bad_file_exits_2_with_one_line(tmp_path, capsys, content):
    p = tmp_path / "bad.h5"
    p.write_bytes(content)
    assert main(["info", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("actsort-nb info: ") and "bad.h5" in err and "\n" not in err


@pytest.mark.realdata
def test_info_on_real_files(real, capsys):
    assert main(["info", str(real("actsort_benchmark", "twophoton_motion.mat"))]) == 0
    out = capsys.readouterr().out
    assert "candidates: 5276" in out and "features: 76" in out and "koala (3718 cells)" in out
    assert main(["info", str(real("neurofinder_neuhofmo", "movie_crop_600x224x224_uint16.tif"))]) == 0
    out = capsys.readouterr().out
    assert "frames: 600" in out and "field of view: 224 x 224" in out and "uint16" in out


def test_benchmark_unknown_name_is_one_sentence(capsys):
    from actsort_nb.cli import main

    assert main(["benchmark", "no_such_benchmark"]) == 2
    err = capsys.readouterr().err
    assert "no benchmark 'no_such_benchmark'" in err and "label_efficiency" in err


def test_demo_headless_runs_the_whole_path(tmp_path, capsys):
    from actsort_nb.demo import run_headless

    out = run_headless(n_cells=30, shape=(80, 80), n_frames=400, labels=20, out_dir=tmp_path, progress=False)
    text = capsys.readouterr().out
    assert "balanced accuracy" in text
    assert out["csv"].exists() and out["sortset"].exists()
    assert len(out["curve"]) == 2 and all(0.0 <= acc <= 1.0 for _, acc in out["curve"])


def test_info_describes_a_sort_set(tmp_path, capsys):
    from actsort_nb.cli import main
    from actsort_nb.preprocess import preprocess
    from actsort_nb.synthetic import simulate_recording

    ds = simulate_recording(n_cells=5, shape=(48, 48), n_frames=120, seed=0)
    preprocess(ds, out=tmp_path / "s.h5", progress=False)
    assert main(["info", str(tmp_path / "s.h5")]) == 0
    text = capsys.readouterr().out
    from actsort_nb.preprocess import SORTSET_SCHEMA

    assert f"actsort_nb sort set (schema {SORTSET_SCHEMA})" in text  # the file's layout, not its candidate set's
    assert f"candidates: {ds.sizes['candidate']}" in text and "features: 76" in text


def test_demo_serves_the_quickstart_in_jupyterlab(tmp_path):
    """The README's first command: ``actsort-nb demo`` starts JupyterLab on the quickstart."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JUPYTER_TOKEN="actsort-test", JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"))
    cmd = [sys.executable, "-m", "actsort_nb.cli", "demo", "--dir", str(tmp_path / "demo"), "--port", str(port),
           "--no-browser"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api/contents/01_quickstart.ipynb?content=0&token=actsort-test"
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    model = json.load(r)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"JupyterLab did not serve the quickstart (exit code {proc.poll()})")
                time.sleep(0.5)
        assert model["name"] == "01_quickstart.ipynb" and model["type"] == "notebook"
        assert (tmp_path / "demo" / "01_quickstart.ipynb").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def test_demo_and_preprocess_options_are_checked_in_one_sentence(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    for argv, expected in (
        (["demo", "--headless", "--dir", str(tmp_path / "a_file")], "is a file; give the demo a folder"),
        (["demo", "--headless", "--labels", "-5", "--dir", str(tmp_path / "d")], "'labels' parameter must be an int >= 1"),
        (["preprocess", "m.h5", "e.mat", "-o", "o.h5", "--scheduler", "threads"], "scheduler address such as tcp://"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1


def _preprocess_args(tmp_path, movie_name: str, *, traces_nt: bool = False) -> tuple[list[str], object]:
    """A small simulated recording saved as an EXTRACT .mat (traces [T N], or [N T]); the CLI's preprocess
    arguments for it with the movie at ``movie_name`` (written by the caller), and the recording."""
    import scipy.io

    from actsort_nb.synthetic import simulate_recording

    ds = simulate_recording(n_cells=4, shape=(32, 32), n_frames=60, seed=1)
    fp = ds.footprints.transpose("y", "x", "candidate").data
    traces = ds.traces.values if traces_nt else ds.traces.transpose("time", "candidate").values
    scipy.io.savemat(tmp_path / "e.mat", {"spatial_weights": fp.todense() if hasattr(fp, "todense") else np.asarray(fp),
                                          "temporal_weights": traces})
    args = ["preprocess", str(tmp_path / movie_name), str(tmp_path / "e.mat"), "-o", str(tmp_path / "o.h5"), "--quiet",
            "--no-features"]
    return args, ds


def test_preprocess_movie_dataset_option(tmp_path, capsys):
    # an HDF5 movie file holding two stacks: the error names the CLI option, and the option picks one
    import h5py

    args, ds = _preprocess_args(tmp_path, "m.h5")
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["mov"] = ds.movie.values
        f["ref_stack"] = ds.movie.values[:10]
    assert main(args) == 2
    assert "CLI: --movie-dataset name" in capsys.readouterr().err
    assert main(args + ["--movie-dataset", "mov"]) == 0, capsys.readouterr().err


def test_info_on_a_suite2p_root_folder_names_a_plane(tmp_path, capsys):
    fp, tr, _ = make_truth(n=3, h=8, w=9, t=20)
    for plane in ("plane0", "plane1", "combined"):
        write_suite2p(tmp_path / "suite2p" / plane, fp, tr)
    assert main(["info", str(tmp_path / "suite2p")]) == 2
    assert "Suite2p output folder with plane0, plane1; open one plane folder, e.g." in capsys.readouterr().err


def test_nwb_pixel_masks_take_the_field_of_view_from_the_movie(tmp_path, capsys):
    # Suite2p's NWB without a recorded image size: info still counts the ROIs, preprocess sizes them by the movie
    pytest.importorskip("pynwb")
    from actsort_nb.synthetic import simulate_recording

    ds = simulate_recording(n_cells=4, shape=(32, 40), n_frames=60, seed=1)
    fp = np.asarray(ds.footprints.data.todense())
    tr = ds.traces.values
    p = write_suite2p_nwb(tmp_path / "s2p.nwb", fp, tr, tr * 0, tr * 0, dimension=False)
    np.save(tmp_path / "m.npy", ds.movie.values)
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert f"candidates: {len(fp)}" in out and "field of view: unknown" in out
    out_path = tmp_path / "o.h5"
    args = ["preprocess", str(tmp_path / "m.npy"), str(p), "-o", str(out_path), "--quiet", "--no-features"]
    assert main(args) == 0, capsys.readouterr().err
    assert f"{len(fp)} candidates, 60 frames" in capsys.readouterr().out


def test_ctrl_c_is_one_sentence_that_says_how_to_resume(monkeypatch, tmp_path, capsys):
    import actsort_nb.io

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(actsort_nb.io, "open_candidates", interrupted)
    rc = main(["preprocess", str(tmp_path / "movie.h5"), str(tmp_path / "ext.mat"), "-o", str(tmp_path / "o.h5")])
    err = capsys.readouterr().err.strip()
    assert rc == 130 and err.startswith("actsort-nb preprocess: interrupted") and "same command again to resume" in err
    assert "Traceback" not in err


def test_preprocess_trace_order_option_fixes_transposed_extract_traces(tmp_path, capsys):
    args, ds = _preprocess_args(tmp_path, "m.npy", traces_nt=True)  # [N T], not EXTRACT's [T N]
    np.save(tmp_path / "m.npy", ds.movie.values)
    assert main(args) == 2
    assert "--trace-order NT" in capsys.readouterr().err
    assert main(args + ["--trace-order", "NT"]) == 0, capsys.readouterr().err


def test_info_describes_the_packages_own_label_files(tmp_path, capsys):
    from actsort_nb.store import LabelLog, export

    log_path = tmp_path / "labels.sqlite"
    with LabelLog(log_path, annotator="ana", dataset="d") as log:
        log.n_candidates = 5
        log.record(0, 1, candidate_id="0")
        log.record(2, 0, candidate_id="2")
        export(log, "csv", tmp_path / "labels.csv")
        export(log, "hdf5", tmp_path / "labels.h5")
    assert main(["info", str(log_path)]) == 0
    out = capsys.readouterr().out
    assert "actsort_nb label log" in out and "candidates: 5" in out and "annotator ana: 2 labelled (1 cells" in out
    for name, kind in (("labels.csv", "CSV"), ("labels.h5", "HDF5")):
        assert main(["info", str(tmp_path / name)]) == 0
        out = capsys.readouterr().out
        assert f"actsort_nb labels ({kind} export)" in out and "candidates: 5" in out and "decided by a human: 2" in out
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert main(["info", str(tmp_path / "other.csv")]) == 2
