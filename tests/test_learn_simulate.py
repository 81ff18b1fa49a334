"""Tests for actsort_nb.learn.simulate: ground truth, metrics, replay, and a real-data run."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, roc_auc_score

from actsort_nb import InputError, feature_set
from actsort_nb.learn import ActiveLearner
from actsort_nb.learn import simulate as S


def _toy(n=400, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.6
    x = rng.normal(size=(n, 5)) + 1.5 * truth[:, None]
    votes = np.stack([np.where(rng.random(n) < 1 - noise, truth, ~truth) for _ in range(4)])
    return feature_set(x, annotations=votes.astype(np.int8), annotators=list("abcd")), truth


def test_consensus_majority_of_the_others_ties_are_not_cells():
    a = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [0, 1, 1, -1], [1, 0, 1, 0]])
    assert S.consensus(a, exclude=0).tolist() == [1, 0, 1, 0]  # col 3: one yes, one no -> 0
    assert S.consensus(a).tolist() == [1, 0, 0, 1]  # col 1: 2-2 tie -> 0


def test_score_matches_sklearn():
    rng = np.random.default_rng(0)
    t = rng.random(300) < 0.4
    p = np.clip(t * 0.3 + rng.random(300) * 0.7, 0, 1)
    d = p >= 0.5
    s = S.score(t, d, p)
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(t, d))
    assert s["precision"] == pytest.approx(precision_score(t, d))
    assert s["f1"] == pytest.approx(f1_score(t, d))
    assert s["auc"] == pytest.approx(roc_auc_score(t, p))
    assert s["tpr"] == pytest.approx((d & t).sum() / t.sum())
    assert s["tnr"] == pytest.approx((~d & ~t).sum() / (~t).sum())


def test_budget_counts_round_percent_of_candidates():
    assert S.budget_counts(5276).tolist() == [26, 53, 106, 158, 264]
    assert S.budget_counts(10, [0.5]).tolist() == [1]
    assert S.budget_counts(10, [0.0]).tolist() == [0]  # no label: the learner as it starts
    with pytest.raises(InputError, match="percentages"):
        S.budget_counts(10, [-1.0])
    with pytest.raises(InputError, match="must increase"):
        S.budget_counts(10, [10, 5])  # each budget is scored after the one before


def test_replay_is_seeded_and_reproducible():
    ds, truth = _toy()
    x, ann = ds.features.values, ds.annotations.values
    runs = [S.replay(lambda: ActiveLearner(x, "dcal", 3), ann[0], S.consensus(ann, 0), [2, 5])
            for _ in range(2)]
    np.testing.assert_array_equal(*runs)
    assert runs[0].shape == (2, len(S.METRICS))
    assert runs[0][-1, 0] > 0.8  # an easy toy set is learned


def test_replay_needs_a_complete_annotator():
    ds, _ = _toy(50)
    human = ds.annotations.values[0].copy()
    human[3] = -1
    with pytest.raises(InputError, match="every candidate"):
        S.replay(lambda: ActiveLearner(ds.features.values), human, human.clip(0), [10])


def test_human_reference_against_the_others():
    ds, truth = _toy(1000, noise=0.1)
    ref = S.human_reference(ds.annotations.values)
    assert ref.shape == (4, len(S.METRICS))
    assert np.all((ref[:, 0] > 0.8) & (ref[:, 0] < 0.95))  # 10 % noise each


def test_simulate_dims_coords_and_batches():
    ds, _ = _toy(300)
    out = S.simulate(ds, ["random", "explore"], seeds=[0, 1], budgets=[5, 10], annotators=[1, 2],
                     batch=3)
    assert out["f1"].dims == ("strategy", "annotator", "seed", "budget")
    assert out["f1"].shape == (2, 2, 2, 2)
    assert out.annotator.values.tolist() == ["b", "c"]
    assert np.isfinite(out["balanced_accuracy"].values).all()
    assert out["human"].shape == (2, len(S.METRICS))
    with pytest.raises(InputError, match="annotations"):
        S.simulate(ds.drop_vars("annotations"))
    with pytest.raises(InputError, match="positions 0..3"):
        S.simulate(ds, ["random"], annotators=[5])
    one = S.simulate(ds, "random", seeds=[0], budgets=[5], annotators=[0])  # one name, not its letters
    assert one.strategy.values.tolist() == ["random"]


@pytest.mark.realdata
@pytest.mark.slow
def test_dcal_beats_random_at_2_percent_on_real_annotations(real):
    ds = S.load_benchmark(real("actsort_benchmark", "twophoton_motion.mat"))
    assert ds.features.shape == (5276, 76) and ds.annotations.shape[0] == 4
    sub = np.arange(0, 5276, 2)  # every other candidate: 2,638, fast enough for a test
    out = S.simulate(ds, ["random", "dcal"], seeds=[0, 1], budgets=[2.0], annotators=[0, 2],
                     candidates=sub)
    ba = out["balanced_accuracy"].mean(("annotator", "seed")).squeeze("budget")
    assert float(ba.sel(strategy="dcal")) > float(ba.sel(strategy="random"))
    # and the human reference is the known one (annotator vs consensus 0.76-0.91)
    assert np.all((out["human"].sel(metric_="balanced_accuracy") > 0.7).values)


@pytest.mark.realdata
@pytest.mark.slow
def test_a_previous_recordings_labels_beat_the_annotator_at_1_percent(real):
    """Transfer: twophoton_motion sorted from ebrahimi_reanalysis's labels (one annotator's) and 1 % new labels."""
    target = S.load_benchmark(real("actsort_benchmark", "twophoton_motion.mat"))
    source = S.load_benchmark(real("actsort_benchmark", "ebrahimi_reanalysis.mat"))
    pretrained = (source.features.values, source.annotations.values[1])
    out = S.simulate(target, ["explore"], seeds=[0], budgets=[0.0, 1.0], pretrained=pretrained)
    ba = out["balanced_accuracy"].sel(strategy="explore", seed=0)
    human = out["human"].sel(metric_="balanced_accuracy")
    assert float(ba.sel(budget=1.0).mean()) > float(human.mean())
    # the previous labels alone give a model, and the new labels are used: each rotation moves from it
    assert np.all(ba.sel(budget=0.0).values > 0.7)
    assert np.all(ba.sel(budget=1.0).values != ba.sel(budget=0.0).values)
