"""Tests for actsort_nb.learn.queries: pure scores, each strategy's defining behaviour,
and a template every strategy inherits."""
from __future__ import annotations

import numpy as np
import pytest

from actsort_nb.learn import ActiveLearner, CLASSIFIERS, STRATEGIES
from actsort_nb.learn import queries as Q
from actsort_nb.learn.classifier import standardize


def _blobs(n=200, f=4, seed=0, shift=2.5):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3 != 0  # 2/3 cells
    x = rng.normal(size=(n, f)) + shift * y[:, None] * np.r_[1.0, np.zeros(f - 1)]
    return x, y


def _state(z, labels, proba, fitted=True, clf="actsort", w0=0.5):
    return Q.PoolState(np.asarray(z, np.float32), np.asarray(labels, np.int8),
                       np.asarray(proba, float), fitted, dict(CLASSIFIERS[clf]), w0, {})


# ----------------------------------------------------------------- pure scores
def test_uncertainty_is_one_at_half_and_symmetric():
    s = Q.uncertainty_scores(np.array([0.0, 0.25, 0.5, 0.75, 1.0]))
    np.testing.assert_allclose(s, [0, 0.5, 1, 0.5, 0])


def test_dcal_weight_formula_and_floor():
    assert Q.dcal_weight(0.9, 0.5) == pytest.approx(0.4)
    assert Q.dcal_weight(0.5, 0.5) == 0.0
    assert Q.dcal_weight(0.3, 0.5) == 0.0
    assert Q.dcal_weight(1.0, 1.0) == 1.0


def test_dcal_scores_blend():
    np.testing.assert_allclose(Q.dcal_scores(np.array([1.0, 0.2]), np.array([0.0, 1.0]), 0.5),
                               [0.5, 0.6])


def test_top_k_best_first_distinct_only_candidates():
    scores = np.array([5, 1, 9, 9, 3, 7.0])
    got = Q.top_k(scores, np.array([0, 1, 3, 4, 5]), 3)
    assert got.tolist() == [3, 5, 0]
    assert Q.top_k(scores, np.array([1, 4]), 5).tolist() == [4, 1]
    assert Q.top_k(scores, np.array([0, 2, 3, 5]), 1).tolist() == [2]  # tie 9/9: lowest index
    rng = np.random.default_rng(0)
    s = rng.random(1000)
    cand = np.flatnonzero(rng.random(1000) < 0.7)
    assert Q.top_k(s, cand, 1)[0] == Q.top_k(s, cand, 3)[0]


def test_discriminator_accuracy_counts_both_sides():
    labelled = np.array([True, True, False, False])
    assert Q.discriminator_accuracy(np.array([0.1, 0.2, 0.9, 0.8]), labelled) == 1.0
    assert Q.discriminator_accuracy(np.array([0.9, 0.9, 0.9, 0.9]), labelled) == 0.5


# -------------------------------------------------------- defining behaviours
def test_cal_picks_the_most_uncertain_unlabelled():
    z = np.zeros((10, 2))
    labels = np.r_[[1, 1, 1, 0, 0, 0], [-1] * 4]
    proba = np.array([.9, .9, .9, .1, .1, .1, 0.95, 0.52, 0.3, 0.49])
    q = Q.query_cal(_state(z, labels, proba), 2, np.random.default_rng(0))
    assert q.indices.tolist() == [9, 7] and q.proposer == "cal"
    # a labelled candidate at p = 0.5 is never proposed
    proba[0] = 0.5
    assert Q.query_cal(_state(z, labels, proba), 1, np.random.default_rng(0)).indices[0] == 9


def test_cal_and_dcal_warm_up_random_then_dal():
    x, _ = _blobs()
    z, _, _ = standardize(x)
    rng = np.random.default_rng(0)
    none = np.full(len(z), -1)
    assert Q.query_cal(_state(z, none, np.full(len(z), .5), False), 1, rng).proposer == "warmup-random"
    few = none.copy()
    few[[0, 1, 3]] = [1, 1, 0]  # 2 cells, 1 not-cell: still warming up
    for f in (Q.query_cal, Q.query_dcal):
        assert f(_state(z, few, np.full(len(z), .5)), 1, rng).proposer == "warmup-dal"


def test_dal_picks_the_most_unlabelled_looking():
    rng = np.random.default_rng(0)
    # labelled candidates all sit in one corner; one far-away outlier is the least "labelled-like"
    z = np.r_[rng.normal(0, 0.3, (40, 2)), rng.normal(0, 0.3, (59, 2)), [[6.0, 6.0]]]
    labels = np.r_[np.tile([1, 0], 20), np.full(60, -1)]
    z[:40] += [-2, -2]
    st = _state(z, labels, np.full(100, .5), clf="balanced")
    q = Q.query_dal(st, 1, np.random.default_rng(1))
    assert q.proposer == "dal" and q.indices[0] == 99
    assert "discriminator" in st.cache


def test_dcal_weight_falls_toward_zero_as_labels_become_representative():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 3))
    proba = np.full(2000, 0.5)
    # biased labelled set: only from one corner -> discriminator separates well
    biased = np.full(2000, -1)
    corner = np.flatnonzero(z[:, 0] > 1.0)[:100]
    biased[corner] = np.arange(100) % 2
    # representative labelled set: uniform random
    rep = np.full(2000, -1)
    rep[rng.choice(2000, 1000, replace=False)] = np.arange(1000) % 2
    w = {}
    for name, lab in (("biased", biased), ("representative", rep)):
        st = _state(z, lab, proba, clf="balanced")
        Q.query_dcal(st, 1, np.random.default_rng(0))
        w[name] = st.cache["dcal_weight"]
    assert w["biased"] > 0.2
    assert w["representative"] < 0.05


def test_explore_prefers_uncertain_but_keeps_coverage():
    z = np.zeros((1000, 1))
    labels = np.full(1000, -1)
    proba = np.r_[np.full(500, 0.5), np.full(500, 0.999)]
    st = _state(z, labels, proba, clf="balanced")
    picks = Q.query_explore(st, 200, np.random.default_rng(0)).indices
    frac_uncertain = (picks < 500).mean()
    assert 0.6 < frac_uncertain < 0.9  # weights 1.5 vs ~0.5: ~3/4 uncertain, never all


def test_race_winner_is_the_argmax_of_the_keys_and_samples_by_weight():
    from actsort_nb.learn._kernels import race_winner

    rng = np.random.default_rng(0)
    for n in (1, 2, 17, 5000):
        for _ in range(20):
            u, w = rng.random(n), rng.random(n) + 0.05
            assert race_winner(u, w) == int(np.argmax(np.log(u) / w))
    w = np.array([1.0, 2.0, 7.0])
    wins = np.bincount([race_winner(rng.random(3), w) for _ in range(20000)], minlength=3) / 20000
    np.testing.assert_allclose(wins, w / w.sum(), atol=0.015)


def test_novelty_weights_grow_with_distance_from_the_labelled_mean():
    z = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [4.0, 3.0]])
    lab = np.array([True, True, False, False])
    w = Q.novelty_weights(z, lab, np.array([2, 3]))
    np.testing.assert_allclose(w, [1.0, 18.0], rtol=1e-5)  # centre (1, 0)
    assert (Q.novelty_weights(z, lab, np.array([0, 1])) > 0).all()  # never zero


def test_explore_robust_seeks_the_other_class_while_one_class_is_labelled():
    rng = np.random.default_rng(0)
    z = np.r_[rng.normal(0, 1, (900, 3)), rng.normal(6, 1, (100, 3))]  # rare, distinct class
    labels = np.full(1000, -1)
    labels[:5] = 1  # five labels, all of the common class: no model yet
    st = _state(z, labels, np.full(1000, 6 / 7), fitted=False, clf="balanced-robust")
    q = Q.query_explore_robust(st, 50, np.random.default_rng(1))
    assert q.proposer == "explore-novel"
    assert not set(q.indices.tolist()) & set(range(5))
    assert (q.indices >= 900).mean() > 0.5  # random would give ~10 %
    plain = Q.query_explore(st, 50, np.random.default_rng(1))  # explore: uniform here
    assert plain.proposer == "explore-random" and (plain.indices >= 900).mean() < 0.3
    # before any label: plain random; once fitted: the same rule as explore
    st0 = _state(z, np.full(1000, -1), np.full(1000, 0.5), fitted=False, clf="balanced-robust")
    assert Q.query_explore_robust(st0, 3, np.random.default_rng(1)).proposer == "explore-random"
    st1 = _state(z, labels, np.linspace(0.01, 0.99, 1000), fitted=True, clf="balanced-robust")
    a = Q.query_explore_robust(st1, 5, np.random.default_rng(1))
    b = Q.query_explore(st1, 5, np.random.default_rng(1))
    assert a.proposer == "explore" and a.indices.tolist() == b.indices.tolist()


# ------------------------------------------------------------------- template
@pytest.fixture(scope="module")
def pool():
    x, y = _blobs(n=150)
    return x, y


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
class TestEveryStrategy:
    """Shared behaviour every strategy inherits (scikit-activeml's template idea)."""

    def _learner(self, pool, strategy, seed=0, n_labels=0):
        x, y = pool
        learner = ActiveLearner(x, strategy, seed)
        if n_labels:
            idx = np.random.default_rng(99).permutation(len(y))[:n_labels]
            learner.teach(idx, y[idx])
        return learner

    def test_same_seed_same_queries(self, pool, strategy):
        a, b = (self._learner(pool, strategy, seed=3) for _ in range(2))
        x, y = pool
        for _ in range(8):
            i, j = a.query(), b.query()
            assert i == j
            a.teach(i, y[i])
            b.teach(j, y[j])
        assert a.query(5).tolist() == b.query(5).tolist()

    @pytest.mark.parametrize("n_labels", [0, 1, 7, 149])
    def test_from_0_1_and_n_minus_1_labels(self, pool, strategy, n_labels):
        learner = self._learner(pool, strategy, n_labels=n_labels)
        i = learner.query()
        assert learner.labels[i] == -1
        k = min(5, len(pool[1]) - n_labels)
        batch = learner.query(k)
        assert len(batch) == k == len(set(batch.tolist()))
        assert (learner.labels[batch] == -1).all()

    def test_never_queries_a_labelled_index_in_a_loop(self, pool, strategy):
        x, y = pool
        learner = self._learner(pool, strategy, seed=1)
        seen = set()
        for _ in range(25):
            batch = learner.query(2)
            assert not seen & set(batch.tolist())
            seen |= set(batch.tolist())
            learner.teach(batch, y[batch])
        assert len(seen) == 50
