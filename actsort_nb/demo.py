"""The demo: the whole path on a simulated recording, headless or in JupyterLab.

``actsort-nb demo`` opens JupyterLab on the quickstart notebook;
``actsort-nb demo --headless`` runs the same steps without a browser, with a
simulated annotator standing in for the human, and prints what it measured.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ._validation import InputError, check_int

__all__ = ["run_headless", "launch_lab", "quickstart_path"]


def _work_dir(path: str | os.PathLike) -> Path:
    """``path`` as an existing folder (created if missing); a file there is refused in one sentence."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give the demo a folder to work in (--dir), e.g. {out}-demo.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def quickstart_path() -> Path:
    """Path of ``notebooks/01_quickstart.ipynb`` in the source checkout.

    Raises
    ------
    InputError
        If the package was installed without its repository (the notebooks live there).
    """
    path = Path(__file__).resolve().parents[1] / "notebooks" / "01_quickstart.ipynb"
    if not path.exists():
        raise InputError(
            f"the quickstart notebook is not at {path}; install actsort_nb from a clone "
            "with `pip install -e .` so the notebooks are beside the package."
        )
    return path


def run_headless(
    *,
    n_cells: int = 150,
    shape: tuple[int, int] = (192, 192),
    n_frames: int = 1000,
    labels: int = 60,
    annotator_error: float = 0.05,
    strategy: str | None = None,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    stream=None,
) -> dict:
    """Simulate a recording, pre-process it, sort it with a simulated annotator, export.

    Parameters
    ----------
    n_cells : int
        True cells in the simulated recording (about as many false candidates are added).
    shape : (int, int)
        Field of view in pixels.
    n_frames : int
        Movie length in frames.
    labels : int
        How many candidates the simulated annotator labels.
    annotator_error : float
        Probability that the simulated annotator gives the wrong label.
    strategy : str, optional
        Query strategy; default: the learner's default.
    seed : int
        Seed of the simulation, the learner and the annotator.
    out_dir : path, optional
        Where the sort set, label log and CSV export go (default ``./actsort-demo``).
    progress : bool
        Show progress bars.
    stream : file-like, optional
        Where the report is printed (default ``sys.stdout``).

    Returns
    -------
    dict
        What was measured: candidate counts, balanced accuracy against ground truth
        after each batch of labels, timings and output paths.
    """
    from .learn import ActiveLearner
    from .learn.simulate import score
    from .preprocess import preprocess
    from .store import LabelLog, export
    from .synthetic import simulate_recording

    stream = stream or sys.stdout
    check_int(labels, "labels", 1)
    out = _work_dir(out_dir or "actsort-demo")
    say = lambda msg: print(msg, file=stream, flush=True)  # noqa: E731

    t0 = time.perf_counter()
    cands = simulate_recording(n_cells=n_cells, shape=shape, n_frames=n_frames, seed=seed)
    n = cands.sizes["candidate"]
    truth = cands["is_cell"].values.astype(int)
    say(f"simulated {n} candidates ({truth.sum()} cells) on a {shape[0]}x{shape[1]} field, {n_frames} frames")
    t1 = time.perf_counter()
    sortset_path = out / "demo_sortset.h5"
    sortset = preprocess(cands, out=sortset_path, progress=progress)
    t2 = time.perf_counter()
    say(f"pre-processed in {t2 - t1:.1f} s -> {sortset_path} ({sortset.sizes['feature']} features)")

    kwargs = {} if strategy is None else {"strategy": strategy}
    learner = ActiveLearner(sortset, seed=seed, **kwargs)
    rng = np.random.default_rng(seed + 1)
    log_path = out / "demo_labels.sqlite"
    if log_path.exists():
        log_path.unlink()
    curve = []
    with LabelLog(log_path, annotator="simulated", dataset=str(sortset_path)) as log:
        for k in range(1, min(labels, n) + 1):
            i = int(learner.query())
            label = int(truth[i]) if rng.random() >= annotator_error else 1 - int(truth[i])
            log.record(i, label, strategy=str(learner.strategy), p_cell=float(learner.predict_proba()[i]))
            learner.teach(i, label)
            if k % 10 == 0 or k == labels:
                curve.append((k, float(score(truth, np.asarray(learner.sorted_labels()))["balanced_accuracy"])))
        csv = export(log, "csv", out / "demo_labels.csv", n=n, p_cell=learner.predict_proba())
    t3 = time.perf_counter()
    say("labels  share  balanced accuracy of the sorted output vs ground truth")
    for k, acc in curve:
        say(f"{k:6d}  {k / n:5.1%}  {acc:.3f}")
    say(f"sorted {n} candidates from {min(labels, n)} labels in {t3 - t2:.1f} s; labels exported to {csv.path}")
    say(f"total {t3 - t0:.1f} s. Next: `actsort-nb demo` opens the same steps in JupyterLab.")
    return {
        "n_candidates": n,
        "n_cells": int(truth.sum()),
        "curve": curve,
        "seconds": {"simulate": t1 - t0, "preprocess": t2 - t1, "sort": t3 - t2},
        "sortset": sortset_path,
        "log": log_path,
        "csv": Path(csv.path),
    }


def launch_lab(directory: str | os.PathLike | None = None, *, port: int | None = None, open_browser: bool = True) -> int:
    """Copy the quickstart notebook into ``directory`` and start JupyterLab on it.

    Parameters
    ----------
    directory : path, optional
        Working folder (default ``./actsort-demo``); the notebook is copied, never overwritten.
    port : int, optional
        Port for JupyterLab (default: its own choice).
    open_browser : bool
        Let JupyterLab open a browser tab.

    Returns
    -------
    int
        JupyterLab's exit code.
    """
    src = quickstart_path()
    work = _work_dir(directory or "actsort-demo")
    dst = work / src.name
    if not dst.exists():
        shutil.copy2(src, dst)
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={work}", dst.name]
    if port is not None:
        cmd.append(f"--port={port}")
    if not open_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI machines often run as root; Lab refuses it otherwise
    return subprocess.call(cmd, cwd=work)
