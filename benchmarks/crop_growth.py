"""How large ActSort's per-candidate crops would be, against the one fixed crop side we store.

ActSort crops each candidate's bounding box ± 7 px and grows the crop to include the
bounding boxes of the neighbours whose centres fall inside it, so its crops have ragged
sizes. ``actsort_nb.preprocess`` stores one ``side × side`` crop for every candidate
(:func:`actsort_nb.preprocess.crop_size`: the median box ± 7 px), which keeps the
snapshots a stacked, per-candidate-chunked array. This script measures what the grown
crops would cost in snapshot bytes (proportional to the crop's area) on

- the pre-processing benchmark's candidates (10,000 on 512², ``benchmarks/preprocess.py``),
- the real Neurofinder recording's ground-truth regions (``../shared/data/real``).

Usage::

    python benchmarks/crop_growth.py
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from actsort_nb.preprocess import crop_size
from actsort_nb.preprocess.crops import MARGIN, bounding_boxes

DATA = Path(os.environ.get("ACTSORT_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def grown_sides(ds, level: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``(box ± MARGIN side, ActSort's grown side)`` per candidate (larger of height and width)."""
    h, w = ds.actsort.fov_shape
    lo_y, hi_y, lo_x, hi_x = bounding_boxes(ds["footprints"].data, level).T
    n = len(lo_y)
    y0, y1 = np.maximum(lo_y - MARGIN, 0), np.minimum(hi_y + MARGIN, h - 1)
    x0, x1 = np.maximum(lo_x - MARGIN, 0), np.minimum(hi_x + MARGIN, w - 1)
    centers = ds.actsort.centers()
    tree = cKDTree(centers)
    grown = np.empty(n, np.int64)
    for i in range(n):
        radius = np.hypot(y1[i] - y0[i], x1[i] - x0[i]) / 2 + 1
        js = np.array(tree.query_ball_point([(y0[i] + y1[i]) / 2, (x0[i] + x1[i]) / 2], radius), int)
        cy, cx = centers[js, 0], centers[js, 1]
        js = js[(cy >= y0[i]) & (cy <= y1[i]) & (cx >= x0[i]) & (cx <= x1[i])]
        gy = max(y1[i], hi_y[js].max(initial=-1)) - min(y0[i], lo_y[js].min(initial=h)) + 1
        gx = max(x1[i], hi_x[js].max(initial=-1)) - min(x0[i], lo_x[js].min(initial=w)) + 1
        grown[i] = max(gy, gx)
    return np.maximum(y1 - y0, x1 - x0) + 1, grown


def report(name: str, ds) -> None:
    side = crop_size(ds["footprints"].data, ds.actsort.fov_shape)
    box, grown = grown_sides(ds)
    area = np.mean(grown.astype(float) ** 2) / side**2
    print(f"| {name} | {len(box)} | {side} | {np.median(box):.0f} / {np.percentile(box, 90):.0f} | "
          f"{np.median(grown):.0f} / {np.percentile(grown, 90):.0f} / {grown.max()} | "
          f"{np.mean(grown > side):.0%} | {area:.2f}× |")


def main() -> int:
    from actsort_nb.synthetic import simulate_candidates

    print("| candidates | n | fixed side | box ± 7 side, median / p90 | grown side, median / p90 / max | "
          "grown > fixed | grown crops' bytes / fixed crops' |")
    print("|---|---|---|---|---|---|---|")
    report("pre-processing benchmark (simulated, 512²)", simulate_candidates(10_000, (512, 512), 64, seed=0))
    regions = DATA / "data" / "real" / "neurofinder_neuhofmo" / "regions_full.json"
    if regions.exists():
        import json

        import sparse

        from actsort_nb import candidate_set

        rc = [(k, r, c) for k, reg in enumerate(json.loads(regions.read_text()))
              for r, c in reg["coordinates"]]
        k, r, c = np.array(rc).T
        fp = sparse.COO(np.stack([k, r, c]), np.ones(len(k), np.float32), shape=(k.max() + 1, 512, 512))
        report("Neurofinder neuhofmo, its 512² field's ground-truth regions (real)",
               candidate_set(fp, np.zeros((fp.shape[0], 1), np.float32)))
    else:
        print(f"(Neurofinder regions not found at {regions}; set ACTSORT_SHARED)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
