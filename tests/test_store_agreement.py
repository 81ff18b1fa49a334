"""Consensus and inter-annotator agreement, checked against scikit-learn and the real ActSort labels."""
from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

from actsort_nb import InputError
from actsort_nb.store import LabelLog, agreement_report, balanced_accuracy, cohen_kappa, consensus

BENCHMARK = ("ebrahimi_reanalysis.mat", "twophoton_motion.mat")


def _read_votes(path):
    """Independent reader, as in the data README: ±1 per annotator -> 1/0."""
    with h5py.File(path, "r") as h:
        keys = sorted(k for k in h if k.endswith("_choices"))
        pm = np.stack([h[k][()].ravel() for k in keys])
    return pm, [k[: -len("_choices")] for k in keys]


# -- pure functions --------------------------------------------------------------------------

def test_consensus_majority_ties_and_unlabelled():
    votes = [[1, 1, 0, -1, 1, -1],
             [1, 0, 0, -1, -1, -1],
             [0, -1, 1, -1, -1, -1]]
    assert consensus(votes).tolist() == [1, 0, 0, -1, 1, -1]
    assert consensus(votes, ties="cell").tolist() == [1, 1, 0, -1, 1, -1]
    assert consensus(votes, ties="unlabelled").tolist() == [1, -1, 0, -1, 1, -1]
    assert consensus([1, 0, -1]).tolist() == [1, 0, -1]     # one annotator
    assert consensus(np.array([[True, False]])).dtype == np.int8


@pytest.mark.parametrize("seed", range(8))
def test_scores_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    a = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < 0.7, a, 1 - a)
    if seed == 0:
        b[:] = 1          # one class only in y_true
    if seed == 1:
        a[:] = 0
    with warnings.catch_warnings():           # sklearn warns on one-class inputs
        warnings.simplefilter("ignore")
        expected_ba = balanced_accuracy_score(b, a)
        expected_k = cohen_kappa_score(a, b)
    assert balanced_accuracy(b, a) == pytest.approx(expected_ba)
    if np.isnan(expected_k):
        assert np.isnan(cohen_kappa(a, b))
    else:
        assert cohen_kappa(a, b) == pytest.approx(expected_k)


@pytest.mark.parametrize("bad, message", [
    ([[1, 2, 0], [1, 0, 0]], "must hold 1 \\(cell\\), 0"),
    ([[1, -1, 1]], "at least 2 annotators"),
    (np.zeros((2, 2, 2)), "2-D"),
    ([["a", "b"], ["c", "d"]], "numeric"),
])
def test_agreement_report_refuses_bad_input(bad, message):
    with pytest.raises(InputError, match=message):
        agreement_report(bad)


def test_agreement_report_on_a_tiny_example():
    votes = np.array([[1, 1, 0, 0, 1, -1],
                      [1, 1, 0, 0, 0, 0],
                      [1, 0, 0, 1, 1, 0]])
    rep = agreement_report(votes, annotators=["ana", "ben", "cy"])
    # ana vs consensus of (ben, cy) = [1, 0, 0, 0, 0] (ben/cy tie on 1, 3, 4 -> not a cell);
    # candidate 5 is unlabelled by ana. ana = [1, 1, 0, 0, 1]: right on 0, 2, 3.
    assert rep.table.loc["ana", "n_compared"] == 5
    assert rep.table.loc["ana", "accuracy"] == pytest.approx(3 / 5)
    assert rep.table.loc["ana", "balanced_accuracy"] == pytest.approx((1 / 1 + 2 / 4) / 2)
    # with ties left out, only the untied candidates 0 and 2 are compared
    assert agreement_report(votes, ties="unlabelled").table["n_compared"].iloc[0] == 2
    assert rep.pairwise_kappa.loc["ana", "ben"] == pytest.approx(cohen_kappa_score(votes[0, :5], votes[1, :5]))
    assert "Pairwise Cohen's kappa" in str(rep) and "<table" in rep._repr_html_()


# -- the real ActSort benchmark annotations ------------------------------------------------------

@pytest.mark.realdata
@pytest.mark.parametrize("name", BENCHMARK)
def test_agreement_on_actsort_benchmark_matches_independent_computation(real, name):
    pm, names = _read_votes(real("actsort_benchmark", name))
    votes = (pm > 0).astype(np.int8)
    rep = agreement_report(votes, annotators=names)
    assert list(rep.table.index) == names
    for i, who in enumerate(names):
        others = np.delete(pm, i, axis=0)
        truth = (others.sum(axis=0) > 0).astype(int)       # majority of the other 3 (ActSort's mode)
        mine = (pm[i] > 0).astype(int)
        assert rep.table.loc[who, "balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, mine))
        assert rep.table.loc[who, "kappa"] == pytest.approx(cohen_kappa_score(mine, truth))
        assert rep.table.loc[who, "n_compared"] == pm.shape[1]
        for j, other in enumerate(names):
            if j != i:
                assert rep.pairwise_kappa.loc[who, other] == pytest.approx(
                    cohen_kappa_score(mine, (pm[j] > 0).astype(int)))
    # the data README: pairwise agreement 0.71-0.89 (ebrahimi) and 0.79-0.90 (twophoton)
    off = rep.pairwise_agreement.to_numpy()[~np.eye(len(names), dtype=bool)]
    lo, hi = {"ebrahimi_reanalysis.mat": (0.71, 0.89), "twophoton_motion.mat": (0.79, 0.90)}[name]
    assert (round(off.min(), 2), round(off.max(), 2)) == (lo, hi)


@pytest.mark.realdata
def test_agreement_from_the_package_reader(real):
    io = pytest.importorskip("actsort_nb.io")
    if not hasattr(io, "read_actsort_benchmark"):
        pytest.skip("actsort_nb.io.read_actsort_benchmark is not there yet")
    path = real("actsort_benchmark", "twophoton_motion.mat")
    ds = io.read_actsort_benchmark(path)
    pm, names = _read_votes(path)
    from_ds = agreement_report(ds)
    from_array = agreement_report((pm > 0).astype(np.int8), annotators=names)
    assert sorted(from_ds.table.index) == sorted(names)
    np.testing.assert_allclose(from_ds.table.loc[names, "kappa"], from_array.table["kappa"])


@pytest.mark.realdata
def test_agreement_from_a_label_log_of_real_annotations(real, tmp_path):
    pm, names = _read_votes(real("actsort_benchmark", "ebrahimi_reanalysis.mat"))
    n = 800
    votes = (pm[:, :n] > 0).astype(np.int8)
    path = tmp_path / "team.sqlite"
    for who, row in zip(names, votes):
        with LabelLog(path, annotator=who, dataset="ebrahimi") as log:
            log.record_many(range(n), row, strategy="import")
            log.record(0, 1 - row[0])      # a slip ...
            log.retract()                  # ... taken back
    with LabelLog(path, annotator="lead", dataset="ebrahimi") as log:
        got, got_names = log.annotations(n)
        assert got_names == names
        np.testing.assert_array_equal(got, votes)
        from_log = agreement_report(log, n=n)
        np.testing.assert_array_equal(log.labels(n, annotator="consensus"), consensus(votes))
    from_array = agreement_report(votes, annotators=names)
    np.testing.assert_allclose(from_log.table.to_numpy(float), from_array.table.to_numpy(float))
    np.testing.assert_allclose(from_log.pairwise_kappa.to_numpy(), from_array.pairwise_kappa.to_numpy())
