"""The direction of each feature on simulated recordings: the learner's known signs.

For every feature, the sign of d′ = (mean over true cells − mean over false
positives) / pooled s.d. on simulated recordings with ground truth
(:func:`actsort_nb.synthetic.simulate_recording`: cells plus duplicates, split cells,
neuropil, dendrites, silent candidates and edge artefacts; features from
:func:`actsort_nb.preprocess.preprocess` and :func:`actsort_nb.features.compute_features`).
+1: higher values look more like a cell; −1: less; 0: the feature does not vary on the
simulations (no direction known). No real recording or human label is used.

:data:`actsort_nb.features.registry.FEATURE_DIRECTIONS` holds this script's output; the
``balanced`` classifiers hold each weight to that sign (``benchmarks/README.md``,
"label_efficiency"). ``--check`` recomputes it and fails if it differs.

Run::

    python benchmarks/feature_directions.py [--check]
"""
from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

from actsort_nb.features import compute_features
from actsort_nb.features.registry import FEATURE_DIRECTIONS, FEATURE_NAMES
from actsort_nb.preprocess import preprocess
from actsort_nb.synthetic import simulate_recording

SEEDS = range(10, 16)


def directions(seeds=SEEDS) -> tuple[np.ndarray, np.ndarray]:
    """``(d′, sign)`` of every feature, cells vs all false positives, over ``seeds``."""
    feats, cell = [], []
    for seed in seeds:
        ds = simulate_recording(n_cells=150, shape=(192, 192), n_frames=1000, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            feats.append(compute_features(preprocess(ds, progress=False, features=False)).values)
        cell.append(np.asarray(ds["kind"].values) == "cell")
    x, c = np.concatenate(feats), np.concatenate(cell)
    a, b = x[c], x[~c]
    s = np.sqrt((a.var(axis=0) + b.var(axis=0)) / 2)
    d = np.where(s > 0, (a.mean(axis=0) - b.mean(axis=0)) / np.where(s > 0, s, 1.0), 0.0)
    return d, np.sign(d).astype(int)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the registry's FEATURE_DIRECTIONS")
    args = ap.parse_args(argv)
    d, sign = directions()
    print("| feature | d′ | direction |\n|---|---|---|")
    for name, v, sg in zip(FEATURE_NAMES, d, sign):
        print(f"| {name} | {v:+.2f} | {sg:+d} |")
    print("\nFEATURE_DIRECTIONS = {" + ", ".join(f'"{n}": {s}' for n, s in zip(FEATURE_NAMES, sign)) + "}")
    if args.check:
        stored = np.array([FEATURE_DIRECTIONS[n] for n in FEATURE_NAMES])
        diff = [n for n, a, b in zip(FEATURE_NAMES, stored, sign) if a != b]
        print(f"\nregistry: {'the same' if not diff else 'DIFFERENT for ' + ', '.join(diff)}")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
