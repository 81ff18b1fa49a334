"""Binder's image: ``binder/postBuild`` compiles the kernels the quickstart needs, ``binder/start`` uses them.

Run against the environment ``.ci/run`` builds from ``binder/requirements.txt``
(``ACTSORT_BINDER_ENV``), else this one. The quickstart's code cells then run under
``binder/start`` in a fresh process that counts numba compilations: a user's first
session on Binder must not spend ~40 s compiling.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

# Runs the code cells of a notebook and prints the actsort_nb kernels numba compiled meanwhile.
_COUNT = """
import json, sys
from numba.core import event
compiled = []
class Outermost(event.Listener):
    depth = 0
    def on_start(self, e):
        self.depth += 1
    def on_end(self, e):
        self.depth -= 1
        if self.depth == 0:
            f = e.data["dispatcher"].py_func
            compiled.append(f.__module__ + "." + f.__qualname__)
event.register("numba:compile", Outermost())
cells = [c for c in json.load(open(sys.argv[1]))["cells"] if c["cell_type"] == "code"]
for c in cells:
    exec("".join(c["source"]), globals())
print(json.dumps(sorted({n for n in compiled if n.startswith("actsort_nb")})))
"""


@pytest.mark.slow
def test_binder_image_has_the_quickstarts_kernels_compiled(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["HOME"] = str(home)
    binder_env = os.environ.get("ACTSORT_BINDER_ENV")
    python = sys.executable
    if binder_env:
        env["PATH"] = f"{Path(binder_env) / 'bin'}{os.pathsep}{env['PATH']}"
        python = str(Path(binder_env) / "bin" / "python")
    else:
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    subprocess.run(["bash", str(REPO / "binder" / "postBuild")], env=env, cwd=REPO, check=True,
                   capture_output=True, timeout=600)
    assert (home / ".jupyter" / "jupyter_server_config.py").exists()
    assert any((home / ".cache" / "actsort-numba").rglob("*.nbc")), "postBuild left no compiled kernels"

    work = tmp_path / "session"
    work.mkdir()
    script = tmp_path / "count.py"
    script.write_text(_COUNT)
    run = subprocess.run(
        [str(REPO / "binder" / "start"), python, str(script), str(REPO / "notebooks" / "01_quickstart.ipynb")],
        env=env, cwd=work, check=True, capture_output=True, text=True, timeout=600,
    )
    compiled = json.loads(run.stdout.strip().splitlines()[-1])
    assert compiled == [], f"the quickstart compiled {compiled} on Binder (binder/postBuild should have)"


def test_binder_start_execs_its_command(tmp_path):
    run = subprocess.run([str(REPO / "binder" / "start"), "sh", "-c", 'echo "$NUMBA_CPU_NAME $NUMBA_CACHE_DIR"'],
                         env={**os.environ, "HOME": str(tmp_path)}, capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["generic", f"{tmp_path}/.cache/actsort-numba"]
