"""Peak memory of a 30,000-candidate 512x512 simulated recording as a CandidateSet.

Each measurement runs in a fresh Python process (so earlier allocations do not hide
in the peak) and reads the peak resident set size from ``resource.getrusage``.
The dense footprint array it avoids would be ``n * 512 * 512 * 4`` bytes.

Usage::

    python benchmarks/load_memory.py [--n 30000] [--shape 512 512] [--frames 1000]

Target (issue 2): peak RSS < 1 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
n, h, w, t, step = json.loads(sys.argv[1])
import actsort_nb
from actsort_nb.synthetic import simulate_candidates
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
ds = simulate_candidates(n, (h, w), t, seed=0)
build = time.perf_counter() - t0
fp = ds.footprints.data
out = {"import_rss": base, "build_s": build, "nnz": int(fp.nnz),
       "fp_bytes": int(fp.nbytes), "traces_bytes": int(ds.traces.nbytes),
       "n_cells": int(ds.is_cell.sum())}
if step == "accessor":
    t0 = time.perf_counter()
    csr = ds.actsort.footprints_csr()
    c = ds.actsort.centers()
    out["accessor_s"] = time.perf_counter() - t0
    out["csr_bytes"] = int(csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes)
out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"""


def measure(n: int, h: int, w: int, t: int, step: str) -> dict:
    """Run one build in a fresh interpreter and return its measurements (RSS in KiB)."""
    res = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([n, h, w, t, step])], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30_000, help="number of candidates")
    ap.add_argument("--shape", type=int, nargs=2, default=(512, 512), help="field of view")
    ap.add_argument("--frames", type=int, default=1000, help="frames per trace")
    args = ap.parse_args(argv)
    n, (h, w), t = args.n, args.shape, args.frames
    dense = n * h * w * 4
    mib = 1024**2
    print(f"CandidateSet of {n} simulated candidates, {h}x{w} field, {t} frames (fresh process each row)\n")
    print(f"{'step':<38} {'time s':>8} {'peak RSS MiB':>13} {'of which import':>16}")
    rows = []
    for step, label in (
        ("build", "simulate_candidates -> CandidateSet"),
        ("accessor", "+ footprints_csr() + centers()"),
    ):
        m = measure(n, h, w, t, step)
        rows.append(m)
        secs = m["build_s"] + m.get("accessor_s", 0.0)
        print(f"{label:<38} {secs:>8.2f} {m['peak_rss'] / 1024:>13.0f} {m['import_rss'] / 1024:>16.0f}")
    m = rows[0]
    print()
    print(f"{'array':<38} {'MiB':>8}")
    print(f"{'footprints, sparse COO (nnz %d)' % m['nnz']:<38} {m['fp_bytes'] / mib:>8.0f}")
    print(f"{'footprints as CSR (accessor cache)':<38} {rows[1]['csr_bytes'] / mib:>8.0f}")
    print(f"{'traces float32':<38} {m['traces_bytes'] / mib:>8.0f}")
    print(f"{'dense footprints %dx%dx%dx4 B' % (n, h, w):<38} {dense / mib:>8.0f}")
    peak = max(r["peak_rss"] for r in rows) * 1024
    print(
        f"\npeak RSS {peak / 1e9:.2f} GB vs target < 1 GB: {'PASS' if peak < 1e9 else 'FAIL'}; "
        f"dense footprints alone would be {dense / 1e9:.1f} GB ({dense / peak:.0f}x the peak RSS)"
    )


if __name__ == "__main__":
    main()
