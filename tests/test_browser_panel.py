"""End-to-end: the labelling app in a real JupyterLab, driven in headless Chromium by Playwright.

One JupyterLab server (loopback, no token, a temporary root) and one browser serve
the whole module. The notebook opens a simulated recording, shows the app, and its
last cell writes the kernel's view (learner labels, label log, plot data) to JSON,
which the test reads back after clicking and pressing keys in the page.

The helpers here (:func:`jupyter_lab`, :func:`browser_page`, :func:`write_notebook`,
:func:`run_all`, :func:`run_cell`) are also used by ``benchmarks/panel_latency.py``.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PANEL = ".actsort-panel[data-ready='1']"


# ----------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(root: Path, timeout: float = 60.0):
    """Run JupyterLab on 127.0.0.1 in ``root`` (no token); yield its base URL; stop it by pid."""
    port = _free_port()
    # our own settings and workspaces: no user state leaks in, and no "Jupyter news?" toast
    settings = root / ".lab-settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True, exist_ok=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    with open(root / "jupyterlab.log", "w") as log:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.token=",
             "--ServerApp.password=", "--ServerApp.ip=127.0.0.1", "--allow-root", f"--ServerApp.root_dir={root}",
             "--ServerApp.port_retries=0", f"--LabApp.user_settings_dir={settings}",
             f"--LabApp.workspaces_dir={root / '.lab-workspaces'}", "--LabApp.news_url=",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start; see {root / 'jupyterlab.log'}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its kernels (same session), by its pid
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@contextlib.contextmanager
def browser_page(chromium: str, viewport=(1500, 1300)):
    """Headless Chromium (Debian's) through Playwright; yield ``(page, errors)``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            yield page, errors
        finally:
            browser.close()


def write_notebook(path: Path, cells: list[str]) -> None:
    """Write a notebook of code cells, with the kernelspec JupyterLab needs to run it."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def open_notebook(page, url: str, name: str) -> None:
    page.goto(f"{url}/lab/tree/{name}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30_000)
    # the kernel must be up before Run All, or the cells are not run (status bar: "... | Idle")
    page.wait_for_function("() => /\\| Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText || '')",
                           timeout=90_000)


def _command(page, menu: str, command: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{menu}$")).first.click()
    page.locator(f"li.lm-Menu-item[data-command='{command}']").first.click()


def run_all(page) -> None:
    """Run → Run All Cells (the Run menu of JupyterLab 4)."""
    _command(page, "Run", "runmenu:run-all")


def run_cell(page, index: int) -> None:
    """Select cell ``index`` and run it (Run → Run Selected Cell)."""
    page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputPrompt").click()
    _command(page, "Run", "notebook:run-cell")  # "Run Selected Cell and Do not Advance"


def wait_json(path: Path, timeout: float = 60.0, predicate=lambda d: True) -> dict:
    """Wait until the kernel has written ``path`` (and ``predicate`` holds); return its content."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                data = None
            if data is not None and predicate(data):
                return data
        time.sleep(0.2)
    raise AssertionError(f"the kernel did not write {path} in {timeout} s")


# ----------------------------------------------------------------------------- the notebook
SETUP = """\
import json, pathlib
import numpy as np
import actsort_nb
from actsort_nb.synthetic import simulate_recording
from actsort_nb.preprocess import preprocess

rec = simulate_recording(n_cells=24, shape=(96, 96), n_frames=400, seed=3)
sortset = preprocess(rec)
app = actsort_nb.sort(sortset, log="labels.sqlite", annotator="tester", strategy="dcal", seed=0)
first = app.shown
plot_data0 = {"acc": app.plots.accuracy.y.tolist(), "hist": app.plots.histogram.y.tolist(), "counts": app.plots.counts.y.tolist()}
"""
SHOW = "app"
DUMP = """\
state = {
    "first": int(first),
    "shown": None if app.shown is None else int(app.shown),
    "labels": {int(i): int(v) for i, v in enumerate(app.learner.labels) if v >= 0},
    "history": [[d.candidate, d.label, d.strategy, d.annotator] for d in app.log.history()],
    "events": [e.kind for e in app.log.events()],
    "plots0": plot_data0,
    "plots": {"acc": app.plots.accuracy.y.tolist(), "hist": app.plots.histogram.y.tolist(), "counts": app.plots.counts.y.tolist()},
    "errors": app.errors,
    "ids": [str(v) for v in app.source.id_strings],
    "centers": app.source.centers.tolist(),
}
pathlib.Path("state.json").write_text(json.dumps(state))
"""


@pytest.fixture(scope="module")
def lab_page(tmp_path_factory):
    from conftest import chromium_path

    chromium = chromium_path()
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("lab")
    write_notebook(root / "panel.ipynb", [SETUP, SHOW, DUMP])
    with jupyter_lab(root) as url, browser_page(chromium) as (page, errors):
        open_notebook(page, url, "panel.ipynb")
        run_all(page)
        page.wait_for_selector(PANEL, timeout=120_000)
        state0 = wait_json(root / "state.json", timeout=120)
        (root / "state.json").unlink()
        yield page, errors, root, state0


# ----------------------------------------------------------------------------- the test
def _painted(page, n: int, timeout: float = 20_000) -> None:
    page.wait_for_function(f"() => Number(document.querySelector('.actsort-panel').dataset.nPainted || 0) >= {n}",
                           timeout=timeout)


def _shown(page) -> int:
    return int(page.locator(".actsort-panel").get_attribute("data-candidate"))


@pytest.mark.browser
@pytest.mark.slow
def test_label_undo_and_map_click_reach_the_kernel(lab_page):
    page, errors, root, state0 = lab_page
    panel = page.locator(".actsort-panel")
    first = _shown(page)
    assert first == state0["first"]

    # 1. click Cell on the first candidate
    panel.locator("button.as-cell").click()
    _painted(page, 1)
    second = _shown(page)
    assert second != first
    # 2. press ↓ on the second (the panel has focus after the click)
    panel.focus()
    page.keyboard.press("ArrowDown")
    _painted(page, 2)
    third = _shown(page)
    assert third not in (first, second)
    # 3. undo with z: the second candidate comes back
    page.keyboard.press("z")
    _painted(page, 3)
    assert _shown(page) == second
    # 4. click a candidate on the map and label it (r = not a cell)
    ids, centers = state0["ids"], state0["centers"]
    target = next(i for i in range(len(ids)) if i not in (first, second, third))
    box = page.locator("canvas.as-map").bounding_box()
    fov = json.loads(page.locator(".actsort-panel").get_attribute("data-fov"))
    sx = box["x"] + (centers[target][1] + 0.5) * box["width"] / fov[1]
    sy = box["y"] + (centers[target][0] + 0.5) * box["height"] / fov[0]
    page.mouse.click(sx, sy)
    _painted(page, 4)
    picked = _shown(page)
    assert picked == target
    page.keyboard.press("r")  # not a cell: with the first one (a cell) the model can now be fitted
    _painted(page, 5)

    # the panel, rendered: a screenshot for people to look at
    ARTIFACTS.mkdir(exist_ok=True)
    panel.screenshot(path=str(ARTIFACTS / "panel.png"))
    page.locator(".actsort-app").screenshot(path=str(ARTIFACTS / "app.png"))

    # read the kernel's view back
    run_cell(page, 2)
    state = wait_json(root / "state.json", timeout=60)
    assert state["errors"] == []
    assert state["labels"] == {str(first): 1, str(target): 0}
    assert [h[:2] for h in state["history"]] == [[first, 1], [target, 0]]
    assert state["events"] == ["label", "label", "retract", "label"]
    assert {h[3] for h in state["history"]} == {"tester"}
    assert state["history"][0][2] == "dcal" and state["history"][1][2] == "user"
    assert state["plots0"]["counts"] == [0, 0, 0, 0] and sum(state["plots0"]["hist"]) == 0
    n = len(ids)
    assert state["plots"]["counts"][:2] == [1, 1] and sum(state["plots"]["counts"]) == n
    assert sum(state["plots"]["hist"]) == n  # a fitted model: P(cell) of every candidate
    assert errors == [], errors


@pytest.mark.browser
@pytest.mark.slow
def test_keys_after_a_panel_control_and_in_a_burst_all_reach_the_kernel(lab_page):
    # runs after the test above, on the same page and kernel
    page, errors, root, _ = lab_page
    panel = page.locator(".actsort-panel")
    (root / "state.json").unlink(missing_ok=True)
    n0 = int(panel.get_attribute("data-n-painted") or 0)
    # a slider moved with the mouse, then r: a label, not JupyterLab's "make this a raw cell"
    shown = _shown(page)
    panel.locator("input.as-black").click()
    page.keyboard.press("r")
    _painted(page, n0 + 1)
    assert page.locator(".jp-RawCell").count() == 0
    # three ← pressed faster than the kernel answers: all three steps back through the history
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    _painted(page, n0 + 4)
    page.wait_for_timeout(500)  # a dropped press would have left the panel one or two steps short
    run_cell(page, 2)
    state = wait_json(root / "state.json", timeout=60)
    history = [h[0] for h in state["history"]]
    assert history[-1] == shown and state["labels"][str(shown)] == 0
    assert _shown(page) == history[-3]
    assert state["errors"] == [] and errors == [], errors
