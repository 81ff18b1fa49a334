"""Simulated annotators: replay a strategy against real human annotations.

For each annotator rotation the simulated human is one annotator and the ground
truth is the majority vote of the *other* annotators (ties, possible only with
an even number of voters or missing votes, count as "not a cell", as ActSort's
MATLAB ``mode`` does for a ±1 tie). At each budget (percent of candidates
labelled) the sorted output (human label where given, classifier decision
elsewhere) is scored against the ground truth.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import xarray as xr

from .._validation import InputError
from ..store.agreement import consensus as majority_vote
from .learner import ActiveLearner

#: Budgets in percent of candidates, as in the ActSort paper's curves.
BUDGETS = (0.5, 1.0, 2.0, 3.0, 5.0)
METRICS = ("balanced_accuracy", "tpr", "tnr", "precision", "f1", "auc")


def consensus(annotations: np.ndarray, exclude: int | None = None) -> np.ndarray:
    """Majority vote over annotators (optionally leaving one out); ties -> 0.

    Parameters
    ----------
    annotations : ndarray of int, shape (annotator, candidate)
        1 cell, 0 not a cell, -1 no vote.
    exclude : int, optional
        Row of the annotator to leave out (the simulated human).

    Examples
    --------
    >>> a = np.array([[1, 0, 1], [1, 1, 0], [0, 1, -1], [1, 0, 0]])
    >>> consensus(a, exclude=0).tolist()
    [1, 1, 0]
    >>> consensus(a[:2]).tolist()
    [1, 0, 0]
    """
    a = np.asarray(annotations)
    if exclude is not None:
        a = np.delete(a, exclude, axis=0)
    # The store's majority vote (ties -> not a cell); a candidate nobody voted on counts as 0 here.
    return np.maximum(majority_vote(a, ties="not_cell"), 0).astype(np.int8)


def score(truth: np.ndarray, decision: np.ndarray, p_cell: np.ndarray | None = None) -> dict:
    """Balanced accuracy, TPR, TNR, precision, F1 and AUC of a decision against truth.

    Parameters
    ----------
    truth, decision : ndarray of 0/1, shape (n,)
    p_cell : ndarray, shape (n,), optional
        Ranking score for the AUC (NaN without it).

    Examples
    --------
    >>> s = score(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), np.array([.9, .4, .3, .1]))
    >>> {k: round(v, 3) for k, v in s.items()}
    {'balanced_accuracy': 0.75, 'tpr': 0.5, 'tnr': 1.0, 'precision': 1.0, 'f1': 0.667, 'auc': 1.0}
    """
    t = np.asarray(truth).astype(bool)
    d = np.asarray(decision).astype(bool)
    tp = float((t & d).sum())
    tn = float((~t & ~d).sum())
    fp = float((~t & d).sum())
    fn = float((t & ~d).sum())
    tpr = tp / (tp + fn) if tp + fn else np.nan
    tnr = tn / (tn + fp) if tn + fp else np.nan
    prec = tp / (tp + fp) if tp + fp else np.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan
    auc = np.nan
    if p_cell is not None and 0 < t.sum() < t.size:
        from scipy.stats import rankdata

        r = rankdata(np.asarray(p_cell, dtype=np.float64))
        n1 = t.sum()
        auc = float((r[t].sum() - n1 * (n1 + 1) / 2) / (n1 * (t.size - n1)))
    return {"balanced_accuracy": (tpr + tnr) / 2, "tpr": tpr, "tnr": tnr,
            "precision": prec, "f1": f1, "auc": auc}


def budget_counts(n: int, budgets: Sequence[float] = BUDGETS) -> np.ndarray:
    """Number of labels for each budget (percent of ``n``, rounded, at least 1; 0 % is none).

    A 0 % budget scores the learner before its first label (with a ``pretrained``
    set, the previous recording's model).

    Examples
    --------
    >>> budget_counts(6691).tolist()
    [33, 67, 134, 201, 335]
    >>> budget_counts(100, [0, 0.1]).tolist()
    [0, 1]
    """
    b = np.asarray(budgets, dtype=float)
    if np.any(b < 0) or np.any(b > 100):
        raise InputError(f"budgets are percentages of the candidates in [0, 100], got {b.tolist()}.")
    if np.any(np.diff(b) <= 0):
        raise InputError(f"budgets must increase (each is scored after the labels of the one before), "
                         f"got {b.tolist()}; sort them.")
    return np.where(b > 0, np.maximum(1, np.round(b * n / 100.0)), 0).astype(int)


def replay(
    make_learner: Callable[[], object],
    human: np.ndarray,
    truth: np.ndarray,
    budgets: Sequence[float] = BUDGETS,
    *,
    batch: int = 1,
) -> np.ndarray:
    """Run one simulated session and score it at each budget.

    Parameters
    ----------
    make_learner : callable
        Returns a fresh learner (``query(k)``, ``teach(i, y)``,
        ``predict_proba()``, ``labels``, ``sorted_labels()``).
    human : ndarray of 0/1, shape (n,)
        The simulated annotator's labels (complete).
    truth : ndarray of 0/1, shape (n,)
        Ground truth.
    budgets : sequence of float
        Percent of candidates.
    batch : int
        Labels per query (1 = one retrain per label).

    Returns
    -------
    ndarray, shape (len(budgets), len(METRICS))
    """
    human = np.asarray(human)
    if not np.isin(human, (0, 1)).all():
        raise InputError("The simulated annotator must have labelled every candidate (0/1); "
                         "pick an annotator without missing votes.")
    counts = budget_counts(len(human), budgets)
    learner = make_learner()
    out = np.full((len(counts), len(METRICS)), np.nan)
    done = 0
    for b, target in enumerate(counts):
        while done < target:
            k = min(batch, target - done)
            idx = np.atleast_1d(learner.query(k))
            learner.teach(idx, human[idx])
            done += len(idx)
        lab = np.asarray(learner.labels)
        p = np.where(lab >= 0, lab, learner.predict_proba())
        s = score(truth, learner.sorted_labels(), p)
        out[b] = [s[m] for m in METRICS]
    return out


def human_reference(annotations: np.ndarray) -> np.ndarray:
    """Each annotator scored against the consensus of the others.

    Returns
    -------
    ndarray, shape (annotator, len(METRICS))

    Examples
    --------
    >>> a = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]])
    >>> human_reference(a)[:, 0].round(2).tolist()
    [0.83, 0.83, 0.75]
    """
    a = np.asarray(annotations)
    rows = []
    for j in range(a.shape[0]):
        truth = consensus(a, exclude=j)
        s = score(truth, a[j] == 1, (a[j] == 1).astype(float))
        rows.append([s[m] for m in METRICS])
    return np.array(rows)


def load_benchmark(path) -> xr.Dataset:
    """Read an ActSort benchmark .mat as a feature set (``features`` + ``annotations``).

    Uses :func:`actsort_nb.io.read_actsort_benchmark` when available, else
    reads the file with h5py as its data README shows.
    """
    try:
        from actsort_nb.io import read_actsort_benchmark
    except ImportError:
        read_actsort_benchmark = None
    if read_actsort_benchmark is not None:
        return read_actsort_benchmark(path)
    import h5py

    from ..candidates import feature_set

    with h5py.File(path, "r") as h:
        x = h["metrics"][()]
        names = sorted(k for k in h if k.endswith("_choices"))
        votes = np.stack([h[k][()].ravel() for k in names])
    ann = np.where(votes > 0, 1, np.where(votes < 0, 0, -1)).astype(np.int8)
    return feature_set(x, annotations=ann, annotators=[k[: -len("_choices")] for k in names],
                       source=str(path), source_format="actsort_benchmark")


def simulate(
    dataset: xr.Dataset,
    strategies: Sequence[str] | dict[str, Callable] = ("random", "cal", "dal", "dcal", "explore"),
    *,
    seeds: Sequence[int] = (0, 1, 2),
    budgets: Sequence[float] = BUDGETS,
    annotators: Sequence[int] | None = None,
    candidates: np.ndarray | None = None,
    batch: int = 1,
    **options,
) -> xr.Dataset:
    """Replay strategies over annotator rotations and seeds on a features-and-annotations set.

    Parameters
    ----------
    dataset : xarray.Dataset
        ``features(candidate, feature)`` and ``annotations(annotator, candidate)``.
    strategies : str, sequence of str, or dict name -> factory
        A learner strategy name, several, or ``{name: f(features, seed) -> learner}``.
    seeds : sequence of int
    budgets : sequence of float
        Percent of candidates.
    annotators : sequence of int, optional
        Rotations to run (annotator positions); default all.
    candidates : ndarray of int, optional
        Restrict to a subset of candidates (fast tests).
    batch : int
        Labels per query.
    **options
        Passed to :class:`ActiveLearner` (e.g. ``classifier="balanced"``).

    Returns
    -------
    xarray.Dataset
        One variable per metric with dims ``(strategy, annotator, seed, budget)``,
        plus ``human(annotator, metric_)``: each annotator against the consensus
        of the others on the same candidates.

    Examples
    --------
    >>> from actsort_nb import feature_set
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.random(300) < 0.6
    >>> x = rng.normal(size=(300, 4)) + truth[:, None]
    >>> votes = np.stack([np.where(rng.random(300) < 0.9, truth, ~truth) for _ in range(3)])
    >>> ds = feature_set(x, annotations=votes.astype(np.int8))
    >>> out = simulate(ds, ["random"], seeds=[0], budgets=[5, 10])
    >>> out["balanced_accuracy"].dims
    ('strategy', 'annotator', 'seed', 'budget')
    """
    for var in ("features", "annotations"):
        if var not in dataset:
            raise InputError(f"simulate needs a dataset with a {var!r} variable; "
                             "read one with actsort_nb.io.read_actsort_benchmark.")
    named = dataset["features"].transpose("candidate", "feature")  # the names select the learner's directions
    ann = dataset["annotations"].transpose("annotator", ...).values
    if candidates is not None:
        named, ann = named.isel(candidate=candidates), ann[:, candidates]
    x = named.values
    if isinstance(strategies, str):
        strategies = [strategies]
    if isinstance(strategies, dict):
        factories = dict(strategies)
    else:
        # our learners take the named table (their feature directions come from the names); a
        # custom factory gets the plain array, as documented
        factories = {s: (lambda _array, seed, s=s: ActiveLearner(named, s, seed, **options))
                     for s in strategies}
    rot = list(range(ann.shape[0])) if annotators is None else list(annotators)
    bad = [a for a in rot if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not 0 <= a < ann.shape[0]]
    if bad:
        raise InputError(f"annotators are positions 0..{ann.shape[0] - 1} in the annotations, got {bad}.")
    res = np.full((len(factories), len(rot), len(seeds), len(budgets), len(METRICS)), np.nan)
    for a_i, a in enumerate(rot):
        truth = consensus(ann, exclude=a)
        for s_i, (name, factory) in enumerate(factories.items()):
            for k_i, seed in enumerate(seeds):
                res[s_i, a_i, k_i] = replay(lambda: factory(x, seed), ann[a], truth, budgets,
                                            batch=batch)
    names = (dataset["annotator"].values[rot] if "annotator" in dataset.coords
             else np.asarray(rot))
    coords = {"strategy": list(factories), "annotator": names, "seed": list(seeds),
              "budget": list(budgets)}
    data = {m: (("strategy", "annotator", "seed", "budget"), res[..., j])
            for j, m in enumerate(METRICS)}
    data["human"] = (("annotator", "metric_"), human_reference(ann)[rot])
    out = xr.Dataset(data, coords={**coords, "metric_": list(METRICS)})
    out.attrs.update(n_candidates=len(x), truth="majority of the other annotators, ties -> 0")
    return out
