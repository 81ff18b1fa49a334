"""Tests for actsort_nb.learn.learner.ActiveLearner: API, undo, cold start, transfer, estimate."""
from __future__ import annotations

import numpy as np
import pytest

from actsort_nb import InputError, feature_set
from actsort_nb.learn import ActiveLearner, HistoryEntry


def _blobs(n=240, f=5, seed=0, shift=2.5):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.6
    x = rng.normal(size=(n, f)) + shift * y[:, None] * np.r_[1.0, 0.5, np.zeros(f - 2)]
    return x, y.astype(int)


def _label(learner, truth, n):
    """``n`` clicks of a simulated annotator who answers ``truth``: query, then teach."""
    for _ in range(n):
        i = learner.query()
        learner.teach(i, truth[i])


def _state(learner):
    return (learner.labels, learner.predict_proba(), learner.coef_, list(learner.history),
            learner._rng.bit_generator.state, learner.accuracy_estimate())


def _assert_same_state(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert (a[2] is None and b[2] is None) or np.array_equal(a[2], b[2])
    assert a[3] == b[3] and a[4] == b[4]
    np.testing.assert_array_equal(a[5][1], b[5][1])


def test_api_shapes_and_dtypes():
    x, y = _blobs()
    learner = ActiveLearner(x, strategy="dcal", seed=0)
    assert learner.labels.dtype == np.int8 and (learner.labels == -1).all()
    i = learner.query()
    assert isinstance(i, int)
    learner.teach(i, True)
    batch = learner.query(4)
    assert batch.shape == (4,)
    learner.teach(batch, y[batch])
    p = learner.predict_proba()
    assert p.shape == (len(x),) and np.all((p >= 0) & (p <= 1))
    out = learner.sorted_labels()
    assert out.dtype == np.int8 and set(np.unique(out)) <= {0, 1}


def test_accepts_xarray_dataset_and_dataarray():
    x, y = _blobs(60)
    ds = feature_set(x)
    a = ActiveLearner(ds, seed=1)
    b = ActiveLearner(ds["features"], seed=1)
    c = ActiveLearner(x, seed=1)
    assert a.query(3).tolist() == b.query(3).tolist() == c.query(3).tolist()


def test_human_labels_are_never_changed_and_sorted_labels_use_them():
    x, y = _blobs()
    learner = ActiveLearner(x, strategy="explore", seed=0)
    idx = np.arange(40)
    wrong = 1 - y[idx]  # adversarial human: the model will disagree
    learner.teach(idx, wrong)
    np.testing.assert_array_equal(learner.labels[idx], wrong)
    np.testing.assert_array_equal(learner.sorted_labels()[idx], wrong)
    model = (learner.predict_proba() >= 0.5).astype(int)
    rest = np.arange(40, len(x))
    np.testing.assert_array_equal(learner.sorted_labels()[rest], model[rest])


def test_relabelling_replaces_and_minus_one_removes():
    x, y = _blobs()
    learner = ActiveLearner(x, seed=0)
    learner.teach(5, True)
    learner.teach(5, False)
    assert learner.labels[5] == 0
    learner.teach(5, -1)
    assert learner.labels[5] == -1
    assert [h.label for h in learner.history] == [1, 0, -1]


def test_teach_retrains_once_per_call(monkeypatch):
    x, y = _blobs()
    learner = ActiveLearner(x, seed=0)
    calls = []
    orig = learner._retrain
    monkeypatch.setattr(learner, "_retrain", lambda: (calls.append(1), orig()))
    learner.teach(np.arange(30), y[:30])
    assert len(calls) == 1


@pytest.mark.parametrize("strategy", ["dcal", "explore", "explore-robust", "random"])
def test_undo_restores_the_exact_previous_state(strategy):
    x, y = _blobs()
    learner = ActiveLearner(x, strategy=strategy, seed=4)
    _label(learner, y, 12)
    before = _state(learner)
    next_query = learner.query(3)
    learner.query()  # consumes random state, not undone: undo is about teach
    before = _state(learner)
    learner.teach(next_query, y[next_query])
    assert not np.array_equal(learner.labels, before[0])
    learner.undo()
    _assert_same_state(_state(learner), before)
    # the same query comes back after undo (same RNG state, same model)
    learner2 = ActiveLearner(x, strategy=strategy, seed=4)
    for h in learner.history:
        learner2.query()
        learner2.teach(h.index, h.label)
    learner2.query(3), learner2.query()
    assert learner.query(2).tolist() == learner2.query(2).tolist()


def test_undo_all_the_way_back_and_nothing_to_undo():
    x, y = _blobs()
    learner = ActiveLearner(x, seed=0)
    first = learner.query()
    fresh = _state(learner)  # undo restores the state just before each teach
    learner.teach(first, y[first])
    _label(learner, y, 9)
    for _ in range(10):
        learner.undo()
    _assert_same_state(_state(learner), fresh)
    with pytest.raises(InputError, match="Nothing to undo"):
        learner.undo()


def test_cold_start_and_one_class_are_honest():
    x, y = _blobs()
    learner = ActiveLearner(x, strategy="cal", seed=0)
    assert not learner.fitted
    np.testing.assert_array_equal(learner.predict_proba(), np.full(len(x), 0.5))
    learner.teach([0, 1, 2], [1, 1, 1])  # one class only
    assert not learner.fitted and learner.coef_ is None
    p = learner.predict_proba()
    assert np.ptp(p) == 0 and 0.5 < p[0] < 1.0  # a prior, not a confident model
    assert learner.query() not in (0, 1, 2)
    learner.teach(3, 0)
    assert learner.fitted


def test_explore_robust_cold_start_is_honest_and_records_novelty_queries():
    x, y = _blobs()
    learner = ActiveLearner(x, strategy="explore-robust", seed=0)
    assert learner.classifier == "balanced-robust"
    cells = np.flatnonzero(y == 1)[:4]
    learner.teach(cells, 1)  # one class only: no model, the prior everywhere
    assert not learner.fitted and np.ptp(learner.predict_proba()) == 0
    i = learner.query()
    assert learner.labels[i] == -1
    learner.teach(i, y[i])
    assert learner.history[-1].strategy == "explore-robust:explore-novel"
    learner.undo()  # undo in the cold start restores the prior exactly
    assert not learner.fitted and (learner.labels >= 0).sum() == 4
    np.testing.assert_array_equal(learner.predict_proba(), np.full(len(x), 5 / 6))


def test_threshold_strategy_and_weight_are_settable_and_checked():
    x, y = _blobs()
    learner = ActiveLearner(x, seed=0)
    learner.teach(np.arange(50), y[:50])
    p = learner.predict_proba()
    learner.threshold = 0.9
    np.testing.assert_array_equal(learner.sorted_labels()[50:], (p[50:] >= 0.9).astype(int))
    learner.dcal_weight = 0.2
    assert learner.dcal_weight == 0.2
    learner.strategy = "explore"
    assert learner.classifier == "balanced" and learner.fitted
    for bad in ({"threshold": 1.5}, {"dcal_weight": -1}, {"strategy": "dcall"},
                {"classifier": "svm"}, {"seed": "x"}):
        with pytest.raises(InputError):
            ActiveLearner(x, **bad)
    with pytest.raises(InputError, match="Did you mean 'dcal'"):
        learner.strategy = "dcall"


def test_bad_inputs_are_one_sentence():
    x, y = _blobs(30)
    with pytest.raises(InputError, match="2-D"):
        ActiveLearner(x[:, 0])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        ActiveLearner(bad)
    learner = ActiveLearner(x)
    with pytest.raises(InputError, match="out of range"):
        learner.teach(30, 1)
    with pytest.raises(InputError, match="one label per index"):
        learner.teach([1, 2], [1, 0, 1])
    with pytest.raises(InputError, match="twice"):
        learner.teach([1, 1], [1, 0])
    with pytest.raises(InputError, match="positive int"):
        learner.query(0)
    with pytest.raises(InputError, match="seed.*>= 0"):
        ActiveLearner(x, seed=-1)
    learner.teach(np.arange(6), y[:6])
    for call in (lambda: learner.accuracy_estimate(window=0), lambda: learner.suggest_stop(patience=-1),
                 lambda: learner.suggest_stop(tol=None)):
        with pytest.raises(InputError, match="parameter must be"):
            call()


def test_undo_after_a_strategy_change_uses_the_current_classifier():
    # the strategy switch refits with another classifier; undoing a label taught before it must not
    # bring back the old classifier's model
    x, y = _blobs()
    learner = ActiveLearner(x, strategy="dcal", seed=0)
    _label(learner, y, 20)
    learner.strategy = "explore"
    learner.undo()
    fresh = ActiveLearner(x, strategy="explore", seed=0)
    lab = np.flatnonzero(learner.labels >= 0)
    fresh.teach(lab, learner.labels[lab])
    assert learner.classifier == "balanced"
    np.testing.assert_allclose(learner.predict_proba(), fresh.predict_proba(), atol=1e-6)


def test_history_records_provenance():
    x, y = _blobs()
    learner = ActiveLearner(x, strategy="dcal", seed=0)
    _label(learner, y, 10)
    learner.teach(0 if learner.labels[0] < 0 else 1, 1)  # a click the user chose
    h = learner.history
    assert isinstance(h[0], HistoryEntry)
    assert h[0].strategy == "dcal:warmup-random"
    assert {e.strategy for e in h[1:10]} <= {"dcal:warmup-dal", "dcal"}
    assert h[-1].strategy == "user"
    assert all(0 <= e.p_cell_before <= 1 for e in h)


def test_accuracy_estimate_and_stop_suggestion():
    x, y = _blobs(600, shift=4.0)
    learner = ActiveLearner(x, strategy="random", seed=0)
    _label(learner, y, 150)
    n, est = learner.accuracy_estimate()
    assert n.tolist() == list(range(1, 151))
    assert np.isnan(est[0]) and est[-1] > 0.85  # separable data, random queries
    stop = learner.suggest_stop()
    assert stop is not None and 50 <= stop <= 150


def test_transfer_from_a_previous_session_and_drop_contradicted():
    x_old, y_old = _blobs(400, seed=1)
    x_new, y_new = _blobs(300, seed=2)
    # a pretrained model alone (no new labels) already sorts the new recording
    learner = ActiveLearner(x_new, strategy="cal", seed=0, pretrained=(x_old, y_old))
    assert learner.fitted
    assert ((learner.predict_proba() >= 0.5) == y_new).mean() > 0.85
    # corrupt 25 % of the old labels: those the new labels contradict get dropped
    flip = np.random.default_rng(0).random(400) < 0.25
    y_bad = np.where(flip, 1 - y_old, y_old)
    learner = ActiveLearner(x_new, "random", 0, pretrained=(x_old, y_bad), drop_contradicted=True)
    idx = np.arange(40)
    learner.teach(idx, y_new[idx])
    kept = learner.pretrained_kept
    assert kept.sum() < 400
    assert flip[~kept].mean() > 0.8 and flip[kept].mean() < 0.25
    keep_all = ActiveLearner(x_new, "random", 0, pretrained=(x_old, y_bad))
    keep_all.teach(idx, y_new[idx])
    assert keep_all.pretrained_kept.all()
    with pytest.raises(InputError, match="features"):
        ActiveLearner(x_new, pretrained=(x_old[:, :3], y_old))
    for bad in (np.full(400, 0.9), np.array(["cell"] * 400), np.r_[np.nan, y_old[1:]], y_old[:-1]):
        with pytest.raises(InputError, match="one 1/0/-1 .* not probabilities"):
            ActiveLearner(x_new, pretrained=(x_old, bad))  # P(cell) by mistake would be truncated to 0
    assert ActiveLearner(x_new, pretrained=(x_old, y_old.astype(float))).fitted
    names = [f"f{j}" for j in range(x_old.shape[1])]
    new = feature_set(x_new, feature_names=names)
    old = feature_set(x_old, feature_names=names)
    assert ActiveLearner(new, pretrained=(old, y_old)).fitted
    with pytest.raises(InputError, match="same order: feature 0 is 'f4' there and 'f0' here"):
        ActiveLearner(new, pretrained=(old.isel(feature=slice(None, None, -1)), y_old))


@pytest.mark.parametrize("strategy", ["explore", "explore-robust", "dcal"])
def test_drop_contradicted_works_with_every_classifier(strategy):
    # a previous recording labelled the other way round: with the default, strongly regularised
    # classifier too, 50 new labels drop most of it and the model follows the new labels
    rng = np.random.default_rng(0)
    truth = rng.random(1000) < 0.3
    x = rng.normal(size=(1000, 6)) + 2.0 * truth[:, None]
    t_old = rng.random(500) < 0.3
    x_old = rng.normal(size=(500, 6)) + 2.0 * t_old[:, None]
    learner = ActiveLearner(x, strategy, 0, pretrained=(x_old, (~t_old).astype(int)), drop_contradicted=True)
    _label(learner, truth, 50)
    assert learner.pretrained_kept.sum() < 100
    assert ((learner.predict_proba() >= 0.5) == truth).mean() > 0.7


def test_directions_hold_named_features_to_the_registry_sign():
    from actsort_nb.features.registry import FEATURE_DIRECTIONS, FEATURE_NAMES

    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.5
    x = rng.normal(size=(400, 76))
    j = FEATURE_NAMES.index("snr")                 # direction +1: here cells have *lower* snr
    x[:, j] -= 2.0 * y
    named = feature_set(x, feature_names=list(FEATURE_NAMES))
    idx = np.arange(60)
    auto = ActiveLearner(named, seed=0)            # "auto": the registry's directions
    plain = ActiveLearner(x, seed=0)               # a plain array has no names: no directions
    for learner in (auto, plain):
        learner.teach(idx, y[idx])
    sign = np.array([FEATURE_DIRECTIONS[n] for n in FEATURE_NAMES])
    assert np.all(sign * auto.coef_[:-1] >= 0) and auto.coef_[j] == 0
    assert plain.coef_[j] < 0
    off = ActiveLearner(named, seed=0, directions=None)
    off.teach(idx, y[idx])
    np.testing.assert_array_equal(off.coef_, plain.coef_)
    mine = np.zeros(76)
    mine[j] = -1
    own = ActiveLearner(x, seed=0, directions=mine)  # the user's own
    own.teach(idx, y[idx])
    assert own.coef_[j] < 0
    dcal = ActiveLearner(named, "dcal", seed=0)    # ActSort's classifier as published: free
    dcal.teach(idx, y[idx])
    assert dcal.coef_[j] < 0
    for bad in ([1, 0], np.full(76, 2), "yes"):
        with pytest.raises(InputError, match="'directions' parameter"):
            ActiveLearner(x, directions=bad)


def test_pretrained_set_without_a_label_is_refused():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    with pytest.raises(InputError, match="no labelled row"):
        ActiveLearner(x, pretrained=(x, np.full(30, -1)))
