"""Tests for actsort_nb.learn.classifier: standardisation, solvers, cold start."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from actsort_nb import InputError
from actsort_nb.learn import classifier as C


def _data(n=300, f=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.8, size=n) > 0.3).astype(int)
    return x, y


def _objective(x, y, coef, C_, penalty, s=None):
    s = np.ones(len(y)) if s is None else s
    z = x @ coef[:-1] + coef[-1]
    loss = np.sum(s * (np.logaddexp(0, z) - y * z))
    pen = np.abs(coef[:-1]).sum() if penalty == "l1" else 0.5 * coef[:-1] @ coef[:-1]
    return C_ * loss + pen


def test_standardize_zscore_over_all_rows_and_constant_columns():
    x = np.c_[np.arange(10.0), np.full(10, 3.0)]
    z, mean, scale = C.standardize(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(z[:, 0].std(), 1, atol=1e-6)
    assert np.all(z[:, 1] == 0) and scale[1] == 1.0 and mean[1] == 3.0


def test_l2_newton_matches_sklearn_optimum():
    x, y = _data()
    coef = C.fit_logistic(x, y, penalty="l2", C=0.5)
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10000).fit(x, y)
    # sklearn's lbfgs does not penalise the intercept either: same problem, same optimum
    np.testing.assert_allclose(coef, np.r_[ref.coef_.ravel(), ref.intercept_], atol=1e-4)


def test_l2_warm_start_reaches_the_same_optimum():
    x, y = _data()
    cold = C.fit_logistic(x, y, C=0.3)
    warm = C.fit_logistic(x, y, C=0.3, coef_init=cold + 0.3)
    np.testing.assert_allclose(warm, cold, atol=1e-6)


def test_balanced_weights_change_the_intercept_toward_the_minority():
    x, y = _data()
    y = (x[:, 0] > 1.0).astype(int)  # ~16 % positives
    plain = C.fit_logistic(x, y, C=0.1)
    bal = C.fit_logistic(x, y, C=0.1, class_weight="balanced")
    assert C.predict_proba(x, bal).mean() > C.predict_proba(x, plain).mean()
    w = C.balanced_weights(y)
    assert w[y == 1].sum() == pytest.approx(w[y == 0].sum())


def test_l1_is_actsorts_liblinear_model():
    x, y = _data()
    coef = C.fit_logistic(x, y, penalty="l1", C=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LogisticRegression(penalty="l1", C=1.0, solver="liblinear").fit(x, y)
    ref_coef = np.r_[ref.coef_.ravel(), ref.intercept_]
    # liblinear's coordinate descent shuffles: compare the objective it minimises
    assert _objective(x, y, coef, 1.0, "l1") == pytest.approx(_objective(x, y, ref_coef, 1.0, "l1"), rel=1e-3)
    sparse = C.fit_logistic(x, y, penalty="l1", C=0.01)
    assert (sparse[:-1] == 0).sum() > (coef[:-1] == 0).sum()


def test_one_class_or_no_labels_cannot_fit_and_prior_is_honest():
    assert not C.can_fit(np.array([], int))
    assert not C.can_fit(np.array([1, 1, 1]))
    with pytest.raises(InputError, match="both classes"):
        C.fit_logistic(np.zeros((3, 2)), np.array([1, 1, 1]))
    assert C.prior_proba(np.full(5, -1)) == 0.5
    p = C.prior_proba(np.array([1, 1, 1, -1]))
    assert 0.5 < p < 1.0
    np.testing.assert_array_equal(C.predict_proba(np.zeros((4, 2)), None, p), np.full(4, p))


def test_self_training_uses_the_pool_and_keeps_the_prior_fit_otherwise():
    rng = np.random.default_rng(1)
    pool = np.r_[rng.normal(-2, 1, (200, 2)), rng.normal(2, 1, (200, 2))]
    x = np.array([[-0.2, 3.0], [0.2, -3.0]])  # two labels that suggest the wrong axis
    y = np.array([0, 1])
    plain = C.fit_model(x, y, pool, C=1.0, pseudo_weight=0.0)
    np.testing.assert_allclose(plain, C.fit_logistic(x, y, C=1.0))
    st = C.fit_model(x, y, pool, C=1.0, pseudo_weight=1.0)
    assert not np.allclose(st, plain)


def test_pseudo_labels_weigh_against_this_recordings_labels_only():
    rng = np.random.default_rng(2)
    pool = np.r_[rng.normal(-2, 1, (200, 2)), rng.normal(2, 1, (200, 2))]
    x = np.r_[[[-0.2, 3.0], [0.2, -3.0]], rng.normal(0, 1, (300, 2))]  # 2 own rows, 300 pretrained
    y = np.r_[0, 1, (x[2:, 1] < 0).astype(float)]
    plain = C.fit_logistic(x, y, C=1.0)
    # no label of this recording yet: the pseudo-labels weigh nothing, however many pretrained rows
    np.testing.assert_allclose(C.fit_model(x, y, pool, C=1.0, pseudo_weight=1.0, n_own=0), plain, atol=1e-6)
    default = C.fit_model(x, y, pool, C=1.0, pseudo_weight=1.0)
    np.testing.assert_allclose(C.fit_model(x, y, pool, C=1.0, pseudo_weight=1.0, n_own=len(y)), default)
    two = C.fit_model(x, y, pool, C=1.0, pseudo_weight=1.0, n_own=2)
    assert np.linalg.norm(two - plain) < np.linalg.norm(default - plain)


def test_noise_targets_soften_only_labels_the_model_doubts():
    y = np.array([1, 1, 0, 0])
    p = np.array([0.95, 0.2, 0.05, 0.8])
    t = C.noise_targets(y, p, 0.2)
    assert np.all((t >= 0) & (t <= 1))
    assert t[0] > 0.98 and t[2] < 0.02  # agreed labels stay (almost) hard
    assert 0.3 < t[1] < 0.9 and 0.1 < t[3] < 0.7  # doubted labels are softened
    np.testing.assert_allclose(t[1], 1 - t[3])  # symmetric in the two classes
    np.testing.assert_array_equal(C.noise_targets(y, p, 0.0), y)
    np.testing.assert_array_equal(y, [1, 1, 0, 0])  # human labels untouched


def test_label_noise_limits_the_pull_of_a_contradicted_label():
    rng = np.random.default_rng(0)
    pool = np.r_[rng.normal(-2, 1, (300, 2)), rng.normal(2, 1, (300, 2))]
    x = np.r_[rng.normal(-2, 1, (20, 2)), rng.normal(2, 1, (20, 2)), [[6.0, 6.0]]]
    y = np.r_[np.zeros(20), np.ones(20), 0]  # the last label contradicts everything
    clean = C.fit_model(x[:-1], y[:-1], pool, C=0.05, class_weight="balanced", pseudo_weight=1.0)
    kw = {"C": 0.05, "class_weight": "balanced", "pseudo_weight": 1.0, "coef_init": clean}
    plain = C.fit_model(x, y, pool, label_noise=0.0, **kw)
    robust = C.fit_model(x, y, pool, label_noise=0.2, **kw)
    assert np.linalg.norm(robust - clean) < 0.5 * np.linalg.norm(plain - clean)


def test_presets_split_into_logistic_and_model_options():
    for preset in C.CLASSIFIERS.values():
        opts = C.logistic_options(preset)
        assert set(opts) == {"penalty", "C", "class_weight"}
        assert set(preset) - set(opts) == {"pseudo_weight", "label_noise", "directions"}
    assert C.CLASSIFIERS["actsort"]["pseudo_weight"] == 0 == C.CLASSIFIERS["actsort"]["label_noise"]
    assert not C.CLASSIFIERS["actsort"]["directions"]  # ActSort's model as published


def test_sign_constraints_are_the_optimum_of_the_constrained_problem():
    # projected Newton against scipy's L-BFGS-B on the same objective with the same bounds
    from scipy.optimize import minimize

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 6))
    y = (x[:, 0] - x[:, 1] + 0.8 * x[:, 2] + rng.normal(size=60) > 0).astype(float)
    sign = np.array([1, 1, -1, 0, 1, -1])  # feature 1 and 2 held against their true effect
    coef = C.fit_logistic(x, y, C=0.5, class_weight="balanced", sign=sign)
    assert np.all(sign * coef[:-1] >= 0)
    assert coef[1] == 0 and coef[2] == 0 and coef[0] > 0
    s = C.balanced_weights(y)

    def obj(v):  # C * weighted log-loss + ||w||^2 / 2, C = 0.5, intercept free
        z = x @ v[:-1] + v[-1]
        return 0.5 * np.sum(s * (np.logaddexp(0, z) - y * z)) + 0.5 * v[:-1] @ v[:-1]

    bounds = [(0, None) if g > 0 else (None, 0) if g < 0 else (None, None) for g in sign] + [(None, None)]
    ref = minimize(obj, np.zeros(7), method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-14, "gtol": 1e-10}).x
    np.testing.assert_allclose(coef, ref, atol=1e-4)
    free = C.fit_logistic(x, y, C=0.5, class_weight="balanced")
    np.testing.assert_array_equal(C.fit_logistic(x, y, C=0.5, class_weight="balanced", sign=np.zeros(6)), free)
    with pytest.raises(InputError, match="penalty='l2'"):
        C.fit_logistic(x, y, penalty="l1", sign=sign)


def test_predict_proba_is_one_matvec():
    x, y = _data()
    coef = C.fit_logistic(x, y)
    np.testing.assert_allclose(C.predict_proba(x, coef), 1 / (1 + np.exp(-(x @ coef[:-1] + coef[-1]))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_prediction_matches_numpy_on_both_threads(dtype):
    from actsort_nb.learn import _kernels

    rng = np.random.default_rng(0)
    z = rng.standard_normal((_kernels.SPLIT_ROWS + 11, 7)).astype(dtype)
    coef = np.r_[rng.standard_normal(7) * 3, -0.5]
    want = 1 / (1 + np.exp(-(z.astype(np.float64) @ coef[:-1] + coef[-1])))
    got = C.predict_proba(z, coef)  # split in two halves on two threads
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(C.predict_proba(z[::-2], coef), want[::-2], rtol=1e-12)  # strided view
    extreme = C.predict_proba(np.array([[1e3], [-1e3]], dtype), np.array([1.0, 0.0]))
    assert extreme.tolist() == [1.0, 0.0]


def test_bad_penalty_is_one_sentence():
    x, y = _data(50)
    with pytest.raises(InputError, match="'penalty'"):
        C.fit_logistic(x, y, penalty="l3")


@pytest.mark.parametrize(("version", "expected"), [("1.3.2", {"penalty": "l1"}), ("1.7.0", {"penalty": "l1"}),
                                                   ("1.8.0", {"l1_ratio": 1.0}), ("1.10.dev0", {"l1_ratio": 1.0})])
def test_l1_keyword_follows_the_installed_scikit_learn(monkeypatch, version, expected):
    # before 1.8 scikit-learn ignores l1_ratio unless penalty="elasticnet": the fit would be L2
    import sklearn

    monkeypatch.setattr(sklearn, "__version__", version)
    assert C.l1_penalty() == expected
