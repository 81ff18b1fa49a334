"""Label efficiency on real human annotations (the ActSort benchmark sets).

For each set, each annotator rotation (the simulated human is one annotator,
ground truth the majority of the other three) and each seed, every strategy is
replayed one label at a time; the sorted output (human label where given,
classifier elsewhere) is scored at 0.5, 1, 2, 3 and 5 % of candidates.

Strategies: ActSort's ``random``, ``cal``, ``dal``, ``dcal`` (ActSort's L1 model),
ours ``explore`` (class-balanced L2 + self-training, uncertainty-weighted
sampling, weights held to the registry's feature directions; "explore, no
directions" without them), the candidate ``explore-robust`` (stronger self-training, a
label-noise model, novelty-seeking cold start), two ablations
(``random+balanced``, ``dcal+balanced``: ActSort's queries with our classifier),
and scikit-activeml's ``UncertaintySampling`` and ``DiscriminativeAL`` with
ActSort's classifier, in the same run.

With ``--transfer`` each set is sorted starting from a previous recording's
labels: the other set, labelled by one of its annotators (the learner's
``pretrained``); for rotation ``a`` and seed ``k`` the source annotator is
``(a + k) % 4``, so 4 seeds cover every (rotation, source annotator) pair once.
The row "pretrained only" is the sorted output with no label of the new set;
"explore, drop contradicted" leaves out the pretrained samples the new labels
contradict (``drop_contradicted=True``; without a pretrained set it is ``explore``).

Protocol: ``explore-robust``'s settings were chosen on tuning seeds (100-111,
same sets, all rotations, with ``actsort_nb.learn.simulate.simulate``); the
evaluation seeds 0, 1, 2 run here were not used for any choice.

Usage::

    python benchmarks/label_efficiency.py            # full: both sets, 4 rotations, 3 seeds
    python benchmarks/label_efficiency.py --quick    # 1 rotation, 1 seed, fewer strategies
    python benchmarks/label_efficiency.py --transfer # from the other set's labels, 4 seeds
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from actsort_nb.learn import ActiveLearner  # noqa: E402
from actsort_nb.learn.classifier import standardize  # noqa: E402
from actsort_nb.learn.simulate import (  # noqa: E402
    BUDGETS, METRICS, consensus, human_reference, load_benchmark, replay,
)

DATA = Path(os.environ.get("ACTSORT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SETS = ("ebrahimi_reanalysis", "twophoton_motion")


class SkactivemlLearner:
    """Minimal learner interface around a scikit-activeml query strategy.

    The classifier is ActSort's (L1 logistic regression, C = 1, z-scored
    features), refitted after every label; ``kind`` is ``"uncertainty"``
    (``UncertaintySampling``, least confident) or ``"discriminative"``
    (``DiscriminativeAL``, same model as discriminator).
    """

    def __init__(self, features, kind: str, seed: int) -> None:
        from skactiveml.classifier import SklearnClassifier
        from skactiveml.pool import DiscriminativeAL, UncertaintySampling
        from sklearn.linear_model import LogisticRegression

        self.z, _, _ = standardize(features)
        self.y = np.full(len(self.z), np.nan)
        self.kind = kind

        def make():
            lr = LogisticRegression(penalty="l1", C=1.0, solver="liblinear", random_state=seed)
            return SklearnClassifier(lr, classes=[0, 1], missing_label=np.nan, random_state=seed)

        self.make = make
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no labeled data" at the cold start
            self.clf = make().fit(self.z, self.y)
        if kind == "uncertainty":
            self.qs = UncertaintySampling(method="least_confident", random_state=seed)
        else:
            self.qs = DiscriminativeAL(random_state=seed)

    def query(self, k=1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.kind == "uncertainty":
                return self.qs.query(self.z, self.y, self.clf, fit_clf=False, batch_size=k)
            return self.qs.query(self.z, self.y, self.make(), batch_size=k)

    def teach(self, i, label):
        self.y[np.atleast_1d(i)] = label
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.clf = self.make().fit(self.z, self.y)

    @property
    def labels(self):
        return np.where(np.isnan(self.y), -1, self.y).astype(np.int8)

    def predict_proba(self):
        return self.clf.predict_proba(self.z)[:, 1]

    def sorted_labels(self):
        return np.where(self.labels >= 0, self.labels, self.predict_proba() >= 0.5).astype(np.int8)


FACTORIES = {
    "random": lambda x, s, **kw: ActiveLearner(x, "random", s, **kw),
    "cal": lambda x, s, **kw: ActiveLearner(x, "cal", s, **kw),
    "dal": lambda x, s, **kw: ActiveLearner(x, "dal", s, **kw),
    "dcal": lambda x, s, **kw: ActiveLearner(x, "dcal", s, **kw),
    "explore (ours)": lambda x, s, **kw: ActiveLearner(x, "explore", s, **kw),
    "explore, no directions": lambda x, s, **kw: ActiveLearner(x, "explore", s, directions=None, **kw),
    "explore-robust": lambda x, s, **kw: ActiveLearner(x, "explore-robust", s, **kw),
    "explore, drop contradicted": lambda x, s, **kw: ActiveLearner(x, "explore", s, drop_contradicted=True, **kw),
    "random+balanced": lambda x, s, **kw: ActiveLearner(x, "random", s, classifier="balanced", **kw),
    "dcal+balanced": lambda x, s, **kw: ActiveLearner(x, "dcal", s, classifier="balanced", **kw),
    "skactiveml US": lambda x, s: SkactivemlLearner(np.asarray(x), "uncertainty", s),
    "skactiveml DAL": lambda x, s: SkactivemlLearner(np.asarray(x), "discriminative", s),
}
QUICK = ("random", "dcal", "explore (ours)", "skactiveml US")
TRANSFER = ("explore (ours)", "explore, no directions", "explore, drop contradicted", "random+balanced", "dcal")
SCRATCH = tuple(s for s in FACTORIES if s != "explore, drop contradicted")  # = explore without a pretrained set


def _load(set_name):
    ds = load_benchmark(DATA / "data" / "real" / "actsort_benchmark" / f"{set_name}.mat")
    # features with their names: the learner takes the registry's feature directions from them
    return (ds["features"].transpose("candidate", "feature"),
            ds["annotations"].transpose("annotator", "candidate").values)


def _source(set_name, annotator, seed):
    """The previous recording of a transfer run: the other set, one annotator's labels."""
    x, ann = _load(SETS[1 - SETS.index(set_name)])
    return x, ann[(annotator + seed) % len(ann)]


def _task(set_name, strategy, annotator, seed, transfer=False):
    x, ann = _load(set_name)
    opts = {"pretrained": _source(set_name, annotator, seed)} if transfer else {}
    t = time.perf_counter()
    if strategy == "pretrained only":  # ours before the first new label, repeated at every budget
        res = replay(lambda: ActiveLearner(x, "explore", seed, **opts), ann[annotator],
                     consensus(ann, annotator), budgets=(0.0,))
        res = np.repeat(res, len(BUDGETS), axis=0)
    else:
        res = replay(lambda: FACTORIES[strategy](x, seed, **opts), ann[annotator], consensus(ann, annotator))
    return set_name, strategy, annotator, seed, res, time.perf_counter() - t


def _fmt(values):
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 rotation, 1 seed, 4 strategies")
    parser.add_argument("--jobs", type=int, default=2, help="parallel worker processes")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--strategies", nargs="+", choices=list(FACTORIES), default=None,
                        help="subset of strategies (default: all)")
    parser.add_argument("--transfer", action="store_true",
                        help="start from the other set's labels (one annotator's); 4 seeds")
    args = parser.parse_args(argv)
    strategies = QUICK if args.quick else TRANSFER if args.transfer else SCRATCH
    if args.strategies:
        strategies = tuple(args.strategies)
    if args.transfer and any(s.startswith("skactiveml") for s in strategies):
        parser.error("--transfer runs this package's learners only (scikit-activeml has no pretrained set)")
    if args.transfer:
        strategies = ("pretrained only",) + strategies
    rotations = (0,) if args.quick else (0, 1, 2, 3)
    seeds = range(1 if args.quick else 4 if args.transfer else args.seeds)
    tasks = [(d, s, a, k, args.transfer) for d in SETS for s in strategies for a in rotations for k in seeds]
    t0 = time.perf_counter()
    from joblib import Parallel, delayed

    out = Parallel(n_jobs=args.jobs, verbose=0)(delayed(_task)(*t) for t in tasks)
    elapsed = time.perf_counter() - t0
    results: dict = {}
    seconds: dict = {}
    for d, s, a, k, res, sec in out:
        results.setdefault((d, s), []).append(res)
        seconds[(d, s)] = seconds.get((d, s), 0.0) + sec
    budgets = [f"{b:g} %" for b in BUDGETS]
    ba = METRICS.index("balanced_accuracy")
    all_ok = True
    for d in SETS:
        ds = load_benchmark(DATA / "data" / "real" / "actsort_benchmark" / f"{d}.mat")
        ann = ds["annotations"].transpose("annotator", "candidate").values
        human = human_reference(ann)[list(rotations)]
        n = ann.shape[1]
        start = (f"starting from {SETS[1 - SETS.index(d)]}'s labels (one annotator's); "
                 if args.transfer else "")
        print(f"\n### {d} ({n} candidates; {start}{len(rotations)} rotations x {len(seeds)} seeds; "
              "balanced accuracy of the sorted output vs the other annotators' majority, mean ± s.d.)\n")
        print("| strategy | " + " | ".join(budgets) + " | s/run |")
        print("|---" * (len(budgets) + 2) + "|")
        for s in strategies:
            r = np.array(results[(d, s)])
            cells = [_fmt(r[:, b, ba]) for b in range(len(BUDGETS))]
            print(f"| {s} | " + " | ".join(cells) + f" | {seconds[(d, s)] / len(r):.1f} |")
        print(f"| annotator vs consensus of the others | {_fmt(human[:, ba])} (each: "
              + ", ".join(f"{v:.3f}" for v in human[:, ba]) + ") |")
        i2 = BUDGETS.index(2.0)
        print("\nAt 2 % labels (mean over runs): " + "; ".join(
            f"{s}: " + ", ".join(f"{m} {np.nanmean(np.array(results[(d, s)])[:, i2, j]):.3f}"
                                 for j, m in enumerate(METRICS) if m != "balanced_accuracy")
            for s in ("dcal", "explore (ours)") if (d, s) in results))
        if args.transfer and (d, "explore (ours)") in results:
            ours = np.array(results[(d, "explore (ours)")])[:, :, ba].mean(0)
            b_ok = ours[i2] > human[:, ba].mean()
            print(f"\nWith a previous recording's labels: ours at 2 % {ours[i2]:.3f} > annotator vs "
                  f"consensus {human[:, ba].mean():.3f}: {'yes' if b_ok else 'no'}.")
            all_ok &= b_ok
        elif (d, "dcal") in results and (d, "explore (ours)") in results:
            ours = np.array(results[(d, "explore (ours)")])[:, :, ba].mean(0)
            ref = np.array(results[(d, "dcal")])[:, :, ba].mean(0)
            i1, i5 = BUDGETS.index(1.0), BUDGETS.index(5.0)
            a_ok = ours[i1] >= ref[i5]
            b_ok = ours[i2] > human[:, ba].mean()
            all_ok &= a_ok and b_ok
            print(f"\nTarget (a) ours at 1 % {ours[i1]:.3f} >= dcal at 5 % {ref[i5]:.3f}: "
                  f"{'MET' if a_ok else 'NOT MET'}. Target (b) ours at 2 % {ours[i2]:.3f} > "
                  f"annotator vs consensus {human[:, ba].mean():.3f}: {'MET' if b_ok else 'NOT MET'}.")
    print(f"\n{len(tasks)} runs in {elapsed:.0f} s with {args.jobs} worker(s).")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
