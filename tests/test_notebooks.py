"""Every notebook runs top to bottom, headless, as a user (or Binder) would run it.

The kernel is ``ACTSORT_NOTEBOOK_KERNEL`` when set: ``.ci/run`` builds a fresh
environment from ``binder/requirements.txt`` and registers it as a kernel, so the
notebooks are checked against what Binder installs. Widgets are constructed here;
their rendering is covered by the browser tests.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO, real_path

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
KERNEL = os.environ.get("ACTSORT_NOTEBOOK_KERNEL", "python3")


def _run(name: str, tmp_path: Path, env: dict | None = None) -> nbformat.NotebookNode:
    src = REPO / "notebooks" / name
    work = tmp_path / "nb" / "notebooks"
    work.mkdir(parents=True)
    shutil.copy2(src, work / name)
    nb = nbformat.read(work / name, as_version=4)
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        NotebookClient(nb, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": str(work)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return nb


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") or str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def test_every_notebook_is_covered():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_workshop_active_learning.ipynb",
        "03_sort_your_data.ipynb",
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} is saved with outputs"


@pytest.mark.slow
def test_quickstart_runs(tmp_path):
    nb = _run("01_quickstart.ipynb", tmp_path)
    text = _text(nb)
    assert "labelled 30 of" in text
    assert "balanced accuracy vs ground truth" in text
    assert (tmp_path / "nb" / "notebooks" / "quickstart_labels.csv").exists()


@pytest.mark.slow
def test_workshop_runs_on_real_annotations(tmp_path):
    data = real_path("actsort_benchmark", "ebrahimi_reanalysis.mat")
    nb = _run("02_workshop_active_learning.ipynb", tmp_path, {"ACTSORT_BENCHMARK": str(data)})
    text = _text(nb)
    assert "6691" in text  # the real set was used, not the simulated fallback
    for strategy in ("random", "cal", "dal", "dcal"):
        assert f"'{strategy}'" in text
    assert "from the previous recording: 0.5 %" in text


@pytest.mark.slow
def test_sort_your_data_runs(tmp_path):
    nb = _run("03_sort_your_data.ipynb", tmp_path)
    text = _text(nb)
    assert "format: extract" in text
    assert "the movie frames are (64, 64) but the footprints are (128, 128)" in text
    assert (tmp_path / "nb" / "notebooks" / "my_recording" / "labels.h5").exists()
