"""Feature separation on simulated recordings: per-feature d′ and a cross-validated ROC AUC.

Like ActSort's figure 2, for every feature and every false-positive kind ``k`` this
prints the sensitivity index

    d′ = (mean_cells − mean_k) / sqrt((var_cells + var_k) / 2)

and the ROC AUC of an L1 logistic regression (ActSort's classifier: z-scored
features, C = 1) trained on all features, cross-validated (5 folds, stratified),
for temporal + spatial features (a CandidateSet) and for all three groups (a sort
set from :func:`actsort_nb.preprocess.preprocess`). It also times the feature
engine on a large candidate set.

Run::

    python benchmarks/feature_separation.py [--cells 150] [--seeds 0 1 2] [--speed 30000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from actsort_nb.features import compute_features
from actsort_nb.learn.classifier import l1_penalty
from actsort_nb.synthetic import FALSE_KINDS, simulate_recording


def cv_auc(X: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """5-fold stratified cross-validated ROC AUC of an L1 logistic regression (NaN if a class has < 5)."""
    if min(int(y.sum()), int((1 - y).sum())) < 5:  # a fold would hold one class only
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(**l1_penalty(), C=1.0, solver="liblinear", max_iter=2000))
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    p = cross_val_predict(clf, X, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def dprime(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise d′ between samples ``a`` and ``b`` (0 where both are constant)."""
    s = np.sqrt((a.var(axis=0) + b.var(axis=0)) / 2)
    d = a.mean(axis=0) - b.mean(axis=0)
    return np.where(s > 0, d / np.where(s > 0, s, 1), 0.0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=150)
    ap.add_argument("--shape", type=int, default=192)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--speed", type=int, default=0, help="also time the engine on this many candidates")
    args = ap.parse_args(argv)

    from actsort_nb.preprocess import preprocess

    feats, kinds = [], []
    for seed in args.seeds:
        ds = simulate_recording(n_cells=args.cells, shape=(args.shape, args.shape), n_frames=args.frames, seed=seed)
        t0 = time.perf_counter()
        ss = preprocess(ds, progress=False, features=False)
        t1 = time.perf_counter()
        f = compute_features(ss)
        t2 = time.perf_counter()
        print(f"seed {seed}: {ds.sizes['candidate']} candidates, preprocess {t1 - t0:.1f} s, features {t2 - t1:.1f} s")
        feats.append(f)
        kinds.append(np.asarray(ds["kind"].values))
    X = np.concatenate([f.values for f in feats])
    kind = np.concatenate(kinds)
    names = [str(s) for s in feats[0]["feature"].values]
    group = [str(s) for s in feats[0]["group"].values]
    y = (kind == "cell").astype(int)
    present = [k for k in FALSE_KINDS if (kind == k).any()]

    cells = X[y == 1]
    table = np.stack([dprime(cells, X[kind == k]) for k in present], axis=1)
    print(f"\nper-feature d' (cells vs each false-positive kind; n cells = {int(y.sum())}, "
          + ", ".join(f"{k} = {int((kind == k).sum())}" for k in present) + ")")
    print(f"{'#':>3} {'feature':<26}{'group':<15}" + "".join(f"{k:>10}" for k in present))
    for i, nm in enumerate(names):
        print(f"{i + 1:>3} {nm:<26}{group[i]:<15}" + "".join(f"{v:>10.2f}" for v in table[i]))
    best = np.abs(table).max(axis=0)
    print(f"{'':>3} {'max |d′|':<41}" + "".join(f"{v:>10.2f}" for v in best))

    ts = np.isin(group, ["temporal", "spatial"])
    print("\ncross-validated ROC AUC, cells vs all false positives (L1 logistic regression, C = 1):")
    print(f"  temporal + spatial ({ts.sum()} features): {cv_auc(X[:, ts], y):.3f}")
    print(f"  all groups ({X.shape[1]} features):        {cv_auc(X, y):.3f}")
    for g in ("temporal", "spatial", "spatiotemporal"):
        sel = np.array(group) == g
        print(f"  {g} only ({sel.sum()}):" + " " * (22 - len(g)) + f"{cv_auc(X[:, sel], y):.3f}")
    for k in present:
        sel = (y == 1) | (kind == k)
        auc = cv_auc(X[sel], y[sel])
        print(f"  cells vs {k:<10} (all features): " + (f"{auc:.3f}" if np.isfinite(auc) else "fewer than 5, not scored"))

    if args.speed:
        speed(args.speed)


def speed(n: int) -> None:
    """Time each group on ``n`` simulated candidates, 1 BLAS thread: wall and CPU seconds."""
    from threadpoolctl import threadpool_limits

    from actsort_nb.features import spatial_features, spatiotemporal_features, temporal_features
    from actsort_nb.features.temporal import trace_similarity
    from actsort_nb.synthetic import simulate_candidates

    big = simulate_candidates(n, (512, 512), 1000, seed=0)
    tr = np.asarray(big["traces"].values)
    csr = big.actsort.footprints_csr()
    rng = np.random.default_rng(0)
    m = min(n, 2000)  # snapshots: time a block of m candidates (5 events x 11 frames x 21 x 21) and scale
    yy, xx = np.mgrid[:21, :21]
    fp = np.exp(-((yy - 10) ** 2 + (xx - 10) ** 2) / 8.0)[None].repeat(m, 0).astype(np.float32)
    clips = (rng.standard_normal((m, 5, 11, 21, 21)) + 100).astype(np.float32)
    snip = rng.standard_normal((m, 5, 11)).astype(np.float32)
    ev = np.tile(np.arange(5) * 50 + 20, (m, 1))

    def timed(fn, *a, **k):
        w, c = time.perf_counter(), time.process_time()
        fn(*a, **k)
        return time.perf_counter() - w, time.process_time() - c

    with threadpool_limits(1):
        t_temp = timed(temporal_features, tr, similarity=False)
        t_sim = timed(trace_similarity, tr)
        t_spat = timed(spatial_features, csr, (512, 512))
        t_st = timed(spatiotemporal_features, fp, clips, snip, ev)
    t_st = tuple(v * n / m for v in t_st)
    print(f"\nspeed, 1 BLAS thread, {n} candidates x 1000 frames, 512x512 FOV "
          f"(footprint nnz {csr.nnz}); wall / CPU seconds:")
    print(f"  temporal features 1-34, 36:   {t_temp[0]:6.1f} / {t_temp[1]:6.1f}")
    print(f"  trace_similarity (35):        {t_sim[0]:6.1f} / {t_sim[1]:6.1f}")
    print(f"  spatial 37-46:                {t_spat[0]:6.1f} / {t_spat[1]:6.1f}")
    print(f"  spatiotemporal 47-76 (21x21 crops, scaled from {m}): {t_st[0]:6.1f} / {t_st[1]:6.1f}")


if __name__ == "__main__":
    main()
