"""Query strategies: which candidate a human should label next.

The maths is in small pure functions (:func:`uncertainty_scores`,
:func:`dcal_weight`, :func:`dcal_scores`, :func:`discriminator_accuracy`,
:func:`top_k`). Every strategy has the same signature::

    strategy(state: PoolState, k: int, rng: numpy.random.Generator) -> Query

and returns ``k`` distinct unlabelled indices plus the name of the rule that
proposed them (the learner's provenance). They never modify ``state`` except the
warm-start cache ``state.cache``.

ActSort's strategies, as in ``../shared/spec/actsort-reference.md``:

``random``  uniform among unlabelled candidates.
``cal``     the unlabelled candidate with the smallest ``|p - 0.5|``.
``dal``     a labelled-vs-unlabelled discriminator, fitted on a balanced random
            subsample (``k = min(#labelled, #unlabelled)`` each side); query the
            candidate that looks most "unlabelled".
``dcal``    ``w = w0 * 2 (acc - 0.5)``, ``score = w * dal + (1 - w) * cal`` with
            ``acc`` the discriminator's accuracy over all candidates.

``cal`` and ``dcal`` warm up until >= 3 cells and >= 3 not-cells are labelled:
random while nothing is labelled, then DAL.

Ours, ``explore``: with noisy annotators, the most uncertain candidates are the
ones the annotator is least reliable on, so uncertainty sampling spends labels on
noise. ``explore`` samples unlabelled candidates at random with probability
proportional to ``cal + floor`` (mildly favouring the uncertain band while keeping
the coverage of random sampling) and is paired with the class-balanced L2
classifier; see ``benchmarks/README.md`` for the measured gain. Before a model
is fitted (no labels, or one class only) it samples uniformly.

``explore-robust``: ``explore`` with another cold start and classifier. While
every label is of one class (no model can be fitted) it samples with
probability proportional to the squared distance from the labelled candidates'
mean (:func:`novelty_weights`), so the other class, often the rarer one, is
found sooner than by chance; its classifier is ``"balanced-robust"`` (stronger
self-training, label-noise model). A candidate for the default: better on the
benchmark's tuning seeds at 0.5-1 % labels, mixed on the evaluation seeds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from ._kernels import race_winner
from .classifier import fit_logistic, logistic_options, predict_proba

#: Cells and not-cells needed before CAL/DCAL leave the warm-up (ActSort: 3 each).
WARMUP = 3


@dataclass
class PoolState:
    """What a strategy may look at: the pool, the labels and the current model.

    Attributes
    ----------
    z : ndarray, shape (n, f)
        Standardised features of every candidate.
    labels : ndarray of int8, shape (n,)
        Human labels, 1 cell, 0 not a cell, -1 unlabelled.
    proba : ndarray, shape (n,)
        Current P(cell) of every candidate (the prior where not fitted).
    fitted : bool
        Whether ``proba`` comes from a fitted model (both classes labelled).
    classifier : dict
        :func:`~actsort_nb.learn.classifier.fit_logistic` options, reused by the
        DAL discriminator.
    dcal_weight : float
        DCAL's ``w0``.
    cache : dict
        Warm-start coefficients kept between calls (the discriminator's).
    """

    z: np.ndarray
    labels: np.ndarray
    proba: np.ndarray
    fitted: bool
    classifier: dict
    dcal_weight: float = 0.5
    cache: dict = field(default_factory=dict)


class Query(NamedTuple):
    """Indices proposed by a strategy and the rule that proposed them."""

    indices: np.ndarray
    proposer: str


# ----------------------------------------------------------------------------- scores
def uncertainty_scores(proba: np.ndarray) -> np.ndarray:
    """CAL's score ``1 - 2 |p - 0.5|``: 1 at p = 0.5, 0 at p = 0 or 1.

    Examples
    --------
    >>> uncertainty_scores(np.array([0.5, 0.75, 1.0])).tolist()
    [1.0, 0.5, 0.0]
    """
    return 1.0 - 2.0 * np.abs(np.asarray(proba, dtype=np.float64) - 0.5)


def discriminator_accuracy(p_unlabelled: np.ndarray, labelled: np.ndarray) -> float:
    """Accuracy of the labelled-vs-unlabelled discriminator over all candidates.

    Examples
    --------
    >>> discriminator_accuracy(np.array([0.9, 0.2, 0.6]), np.array([False, True, True]))
    0.6666666666666666
    """
    predicted_unlabelled = np.asarray(p_unlabelled) >= 0.5
    return float(np.mean(predicted_unlabelled != np.asarray(labelled, dtype=bool)))


def dcal_weight(accuracy: float, w0: float = 0.5) -> float:
    """DCAL's adaptive weight ``w0 * 2 (acc - 0.5)``, floored at 0.

    A discriminator at chance (acc 0.5: the labelled set looks like the pool)
    gives weight 0 and DCAL becomes CAL. Below chance the formula would go
    negative (favour labelled-looking candidates), which is meaningless; it is
    floored at 0.

    Examples
    --------
    >>> dcal_weight(1.0), dcal_weight(0.75), dcal_weight(0.5), dcal_weight(0.4)
    (0.5, 0.25, 0.0, 0.0)
    """
    return max(0.0, float(w0) * 2.0 * (float(accuracy) - 0.5))


def dcal_scores(cal: np.ndarray, dal: np.ndarray, weight: float) -> np.ndarray:
    """DCAL's score ``weight * dal + (1 - weight) * cal``.

    Examples
    --------
    >>> dcal_scores(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.25).tolist()
    [0.75, 0.25]
    """
    return weight * np.asarray(dal) + (1.0 - weight) * np.asarray(cal)


def top_k(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` candidates with the highest scores, best first (ties: lowest index).

    Parameters
    ----------
    scores : ndarray, shape (n,)
        Score of every candidate of the pool.
    candidates : ndarray of int
        Indices eligible (the unlabelled ones), increasing.
    k : int
        How many to return (at most ``len(candidates)``).

    Examples
    --------
    >>> top_k(np.array([0.1, 0.9, 0.5, 0.9]), np.array([0, 2, 3]), 2).tolist()
    [3, 2]
    """
    s = np.asarray(scores)[candidates]
    k = min(int(k), len(candidates))
    if k == 1 and len(s):  # the per-click case: argmax keeps the lowest index among ties
        part = np.array([np.argmax(s)])
    elif k < len(s):
        part = np.argpartition(-s, k - 1)[:k]
    else:
        part = np.arange(len(s))
    order = part[np.lexsort((part, -s[part]))]
    return np.asarray(candidates)[order]


# ------------------------------------------------------------------------- helpers
def _unlabelled(state: PoolState) -> np.ndarray:
    return np.flatnonzero(state.labels < 0)


def _in_warmup(labels: np.ndarray) -> bool:
    return int((labels == 1).sum()) < WARMUP or int((labels == 0).sum()) < WARMUP


def discriminator(state: PoolState, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Fit DAL's labelled-vs-unlabelled discriminator; return P(unlabelled) and its accuracy.

    The training set is balanced as specified: all ``m`` labelled candidates
    (class 0) and a random ``k = min(m, #unlabelled)`` of the unlabelled ones
    (class 1); labelled candidates are subsampled to ``k`` too when fewer remain
    unlabelled. The classifier is the learner's (``state.classifier``, without
    class weights: the sample is balanced), warm-started from the previous
    discriminator in ``state.cache``. Cost: one fit on ``2k`` rows plus one
    matrix-vector product over the pool.
    """
    lab = np.flatnonzero(state.labels >= 0)
    unl = _unlabelled(state)
    k = min(len(lab), len(unl))
    xs_u = unl[np.sort(rng.choice(len(unl), k, replace=False))] if k < len(unl) else unl
    xs_l = lab[np.sort(rng.choice(len(lab), k, replace=False))] if k < len(lab) else lab
    x = np.concatenate([state.z[xs_l], state.z[xs_u]])
    y = np.r_[np.zeros(len(xs_l)), np.ones(len(xs_u))]
    opts = dict(logistic_options(state.classifier), class_weight=None)
    coef = fit_logistic(x, y, coef_init=state.cache.get("discriminator"), **opts)
    state.cache["discriminator"] = coef
    p_unl = predict_proba(state.z, coef)
    return p_unl, discriminator_accuracy(p_unl, state.labels >= 0)


# ----------------------------------------------------------------------- strategies
def query_random(state: PoolState, k: int, rng: np.random.Generator) -> Query:
    """``k`` unlabelled candidates uniformly at random, without replacement.

    Examples
    --------
    >>> st = PoolState(np.zeros((5, 1)), np.array([1, -1, -1, 0, -1], np.int8),
    ...                np.full(5, 0.5), False, {})
    >>> q = query_random(st, 2, np.random.default_rng(0))
    >>> sorted(set(q.indices.tolist()) - {1, 2, 4}), len(q.indices), q.proposer
    ([], 2, 'random')
    """
    unl = _unlabelled(state)
    k = min(int(k), len(unl))
    return Query(unl[rng.choice(len(unl), k, replace=False)], "random")


def query_dal(state: PoolState, k: int, rng: np.random.Generator) -> Query:
    """DAL: the unlabelled candidates the discriminator finds most "unlabelled-looking".

    Random while nothing is labelled (the discriminator needs a labelled set).
    """
    if not (state.labels >= 0).any():
        return Query(query_random(state, k, rng).indices, "random")
    p_unl, _ = discriminator(state, rng)
    return Query(top_k(p_unl, _unlabelled(state), k), "dal")


def _warmup(state: PoolState, k: int, rng: np.random.Generator) -> Query | None:
    if not _in_warmup(state.labels) and state.fitted:
        return None
    q = query_dal(state, k, rng)
    return Query(q.indices, f"warmup-{q.proposer}")


def query_cal(state: PoolState, k: int, rng: np.random.Generator) -> Query:
    """CAL: the unlabelled candidates with the smallest ``|p - 0.5|`` (after the warm-up)."""
    q = _warmup(state, k, rng)
    if q is not None:
        return q
    return Query(top_k(uncertainty_scores(state.proba), _unlabelled(state), k), "cal")


def query_dcal(state: PoolState, k: int, rng: np.random.Generator) -> Query:
    """DCAL: ``w * dal + (1 - w) * cal`` with ``w = w0 * 2 (acc - 0.5)`` (after the warm-up)."""
    q = _warmup(state, k, rng)
    if q is not None:
        return q
    p_unl, acc = discriminator(state, rng)
    w = dcal_weight(acc, state.dcal_weight)
    state.cache["dcal_weight"] = w
    state.cache["discriminator_accuracy"] = acc
    scores = dcal_scores(uncertainty_scores(state.proba), p_unl, w)
    return Query(top_k(scores, _unlabelled(state), k), "dcal")


def explore_weights(proba: np.ndarray, floor: float = 0.5) -> np.ndarray:
    """``explore``'s sampling weights ``cal + floor`` (uncertain candidates up to 3x likelier).

    Examples
    --------
    >>> explore_weights(np.array([0.5, 1.0])).tolist()
    [1.5, 0.5]
    """
    return uncertainty_scores(proba) + float(floor)


def novelty_weights(z: np.ndarray, labelled: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Squared distance of each candidate from the mean of the labelled rows.

    ``explore-robust``'s sampling weights while every label is of one class: candidates
    unlike what has been labelled are likelier to be of the other class. One
    pass over the candidates' features (as one prediction). A small floor keeps
    every weight positive.

    Parameters
    ----------
    z : ndarray, shape (n, f)
        Standardised features of every candidate.
    labelled : ndarray of bool, shape (n,)
        Which candidates carry a human label (at least one).
    candidates : ndarray of int
        Indices to weight.

    Examples
    --------
    >>> z = np.array([[0.0], [1.0], [3.0]])
    >>> novelty_weights(z, np.array([True, False, False]), np.array([1, 2])).round(3).tolist()
    [1.0, 9.0]
    """
    z = np.asarray(z)
    centre = z[np.asarray(labelled, dtype=bool)].mean(axis=0)
    d = z[candidates] - centre.astype(z.dtype)
    d2 = np.einsum("ij,ij->i", d, d, dtype=np.float64)
    return d2 + 1e-6 * max(float(d2.mean()), 1e-12)


def _weighted_sample(weights: np.ndarray, candidates: np.ndarray, k: int,
                     rng: np.random.Generator) -> np.ndarray:
    """``k`` of ``candidates`` sampled without replacement with probability ~ ``weights``.

    Efraimidis-Spirakis: the top ``k`` of ``log(u) / w``; for one candidate, the
    compiled :func:`~actsort_nb.learn._kernels.race_winner` (same winner, ~1/10 of
    the logarithms).
    """
    u = rng.random(len(candidates))
    if k == 1:
        return candidates[[race_winner(u, np.asarray(weights, dtype=np.float64))]]
    keys = np.log(u) / weights
    return candidates[top_k(keys, np.arange(len(candidates)), k)]


def _explore(state: PoolState, k: int, rng: np.random.Generator, novelty: bool) -> Query:
    """``explore``'s rule; ``novelty`` selects the one-class cold start of ``explore-robust``."""
    unl = _unlabelled(state)
    k = min(int(k), len(unl))
    if state.fitted:
        return Query(_weighted_sample(explore_weights(state.proba[unl]), unl, k, rng), "explore")
    labelled = state.labels >= 0
    if novelty and labelled.any():  # one class only
        return Query(_weighted_sample(novelty_weights(state.z, labelled, unl), unl, k, rng),
                     "explore-novel")
    return Query(unl[rng.choice(len(unl), k, replace=False)], "explore-random")


def query_explore(state: PoolState, k: int, rng: np.random.Generator) -> Query:
    """Ours: sample unlabelled candidates with probability proportional to ``cal + 0.5``.

    Before a model is fitted every candidate is equally likely (plain random).
    """
    return _explore(state, k, rng, novelty=False)


def query_explore_robust(state: PoolState, k: int, rng: np.random.Generator) -> Query:
    """``explore``, but while every label is of one class, sample by :func:`novelty_weights`.

    Plain random before the first label; uncertainty-weighted once fitted.
    """
    return _explore(state, k, rng, novelty=True)


Strategy = Callable[[PoolState, int, np.random.Generator], Query]

#: Every strategy by name, and the classifier preset it uses unless told otherwise.
STRATEGIES: dict[str, Strategy] = {
    "random": query_random,
    "cal": query_cal,
    "dal": query_dal,
    "dcal": query_dcal,
    "explore": query_explore,
    "explore-robust": query_explore_robust,
}
DEFAULT_CLASSIFIER: dict[str, str] = {
    "random": "actsort",
    "cal": "actsort",
    "dal": "actsort",
    "dcal": "actsort",
    "explore": "balanced",
    "explore-robust": "balanced-robust",
}
