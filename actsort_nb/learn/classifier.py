"""The classifier behind the learner: per-dataset standardisation + logistic regression.

Everything here is a pure function of arrays. The learner keeps the fitted
coefficients (one vector ``coef`` of length ``f + 1``, intercept last) and calls
:func:`predict_proba` over the whole pool: one compiled pass (:mod:`._kernels`).

Three presets are offered (:data:`CLASSIFIERS`):

``"actsort"``
    ActSort's classifier: L1-regularised logistic regression with scikit-learn
    ``C = 1`` (MATLAB ``fitclinear`` with lambda = 1/n), no class weights. Fitted by
    scikit-learn's ``liblinear`` (as scikit-learn does, the intercept is penalised too).
``"balanced"``
    Ours (``explore``'s): class-balanced, strongly L2-regularised logistic
    regression (``C = 0.02``; each class carries half of the total sample weight),
    plus one round of self-training per click (:func:`fit_self_training`): the
    previous model pseudo-labels a fixed random sample of unlabelled candidates,
    weighted by its confidence, and the model is refitted on both
    (``pseudo_weight = 1``: the pseudo-labels weigh at most as much as the human
    labels). Fitted by a small exact Newton solver warm-started from the previous
    coefficients (1-3 Newton steps per click). Where the features are named as in
    the registry, each weight is held to its feature's known direction
    (:data:`~actsort_nb.features.registry.FEATURE_DIRECTIONS`, the sign it takes
    between cells and false positives on simulated recordings; ``sign`` of
    :func:`fit_logistic`): with ~100 labels and 76 correlated features, a weight
    fitted against its feature's meaning is mostly noise. On the ActSort benchmark
    it is markedly better than the L1 model at 0.5-5 % labels (see
    ``benchmarks/README.md``).
``"balanced-robust"``
    ``"balanced"`` with stronger self-training (``pseudo_weight = 3``) and the
    human labels treated as noisy in the same fit (``label_noise = 0.2``, see
    :func:`noise_targets`): a label the previous model finds very unlikely is
    softened toward the model's view. Same cost per click. ``explore-robust``'s
    classifier; better than ``"balanced"`` on the benchmark's tuning seeds at
    0.5-1 % labels, not reliably at 2 % (``benchmarks/README.md``).

Cold start: with no labels, or labels of one class only, nothing is fitted
(``coef is None``) and the probability of every candidate is the prior
:func:`prior_proba` (0.5 with no labels, otherwise the labelled fraction of cells
shrunk toward 0.5), so the model never claims a confidence it does not have.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
from scipy.special import expit

from .._validation import InputError
from ._kernels import buffer, logistic

#: Named classifier presets: keyword arguments for :func:`fit_logistic`.
CLASSIFIERS: dict[str, dict] = {
    "actsort": {"penalty": "l1", "C": 1.0, "class_weight": None, "pseudo_weight": 0.0,
                "label_noise": 0.0, "directions": False},
    "balanced": {"penalty": "l2", "C": 0.02, "class_weight": "balanced", "pseudo_weight": 1.0,
                 "label_noise": 0.0, "directions": True},
    "balanced-robust": {"penalty": "l2", "C": 0.02, "class_weight": "balanced",
                        "pseudo_weight": 3.0, "label_noise": 0.2, "directions": True},
}

#: Keys of a preset that :func:`fit_logistic` itself takes (the rest are :func:`fit_model`'s).
LOGISTIC_KEYS = ("penalty", "C", "class_weight")

_CONTROLLER = None


def _one_blas_thread():
    """Context limiting BLAS to one thread: the fits are small (m x 77 x 77), and
    multithreaded BLAS on a shared machine made them >10x slower (measured)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


#: Unlabelled candidates sampled once per learner for self-training.
PSEUDO_SAMPLE = 1000


def standardize(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score every feature over all candidates (computed once per dataset).

    Constant columns get scale 1 (they become 0), so no division by zero.

    Parameters
    ----------
    features : ndarray, shape (n, f)
        Finite feature table of every candidate of one recording.

    Returns
    -------
    z : ndarray of float32, shape (n, f)
        Standardised features.
    mean, scale : ndarray of float64, shape (f,)
        The statistics used, so ``z = (features - mean) / scale``.

    Examples
    --------
    >>> import numpy as np
    >>> z, mean, scale = standardize(np.array([[0.0, 1.0], [2.0, 1.0]]))
    >>> z.tolist(), mean.tolist(), scale.tolist()
    ([[-1.0, 0.0], [1.0, 0.0]], [1.0, 1.0], [1.0, 1.0])
    """
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return ((x - mean) / scale).astype(np.float32), mean, scale


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Sample weights giving each class half of the total weight ``len(y)``.

    Examples
    --------
    >>> balanced_weights(np.array([1, 1, 1, 0])).tolist()
    [0.6666666666666666, 0.6666666666666666, 0.6666666666666666, 2.0]
    """
    y = np.asarray(y)
    n1 = max(int((y == 1).sum()), 1)
    n0 = max(int((y == 0).sum()), 1)
    return np.where(y == 1, len(y) / (2.0 * n1), len(y) / (2.0 * n0))


def prior_proba(labels: np.ndarray) -> float:
    """Probability of a cell before any model is fitted (cold start).

    The labelled fraction of cells with one pseudo-count of each class
    (Laplace's rule), so no labels give 0.5 and a few cells give a value
    above 0.5 that is never 0 or 1.

    Parameters
    ----------
    labels : ndarray of int
        Human labels, 1 cell, 0 not a cell, -1 unlabelled (ignored).

    Examples
    --------
    >>> prior_proba(np.array([-1, -1])), prior_proba(np.array([1, 1, -1]))
    (0.5, 0.75)
    """
    labels = np.asarray(labels)
    n1 = int((labels == 1).sum())
    n0 = int((labels == 0).sum())
    return (n1 + 1.0) / (n1 + n0 + 2.0)


def logistic_options(preset: dict) -> dict:
    """The :func:`fit_logistic` options of a preset (no self-training, no noise model).

    Used where a plain fit is wanted with a preset's penalty, e.g. DAL's
    discriminator or the contradiction check of a transfer.

    Examples
    --------
    >>> sorted(logistic_options(CLASSIFIERS["balanced"]))
    ['C', 'class_weight', 'penalty']
    """
    return {k: preset[k] for k in LOGISTIC_KEYS if k in preset}


def noise_targets(y: np.ndarray, p: np.ndarray, label_noise: float) -> np.ndarray:
    """Soft training targets for labels flipped with probability ``label_noise``.

    Symmetric label-noise model (one EM step): each observed label is wrong with
    prior probability ``eps = label_noise``; given the model's P(cell) ``p``, the
    posterior probability that label ``y`` was flipped is
    ``r = eps q / (eps q + (1 - eps)(1 - q))`` with ``q`` the model's probability
    of the *other* class. The target is ``1 - r`` for a cell label and ``r`` for a
    not-cell label. Labels the model agrees with stay close to 0/1; labels it
    finds unlikely are softened toward its view (with ``eps = 0.2``, a cell label
    the model gives P(cell) = 0.1 becomes the target 0.31).

    Parameters
    ----------
    y : ndarray of 0/1, shape (m,)
        Human labels (never modified).
    p : ndarray, shape (m,)
        The current model's P(cell) of the same rows.
    label_noise : float
        Prior flip probability in [0, 0.5); 0 returns ``y`` unchanged.

    Returns
    -------
    ndarray of float64, shape (m,)

    Examples
    --------
    >>> noise_targets(np.array([1, 1, 0]), np.array([0.9, 0.1, 0.5]), 0.2).round(3).tolist()
    [0.973, 0.308, 0.2]
    >>> noise_targets(np.array([1, 0]), np.array([0.1, 0.9]), 0.0).tolist()
    [1.0, 0.0]
    """
    y = np.asarray(y, dtype=np.float64)
    eps = float(label_noise)
    if eps <= 0.0:
        return y.copy()
    p = np.asarray(p, dtype=np.float64)
    q = np.where(y == 1, 1.0 - p, p)  # model's probability of the other class
    flipped = eps * q / (eps * q + (1.0 - eps) * (1.0 - q))
    return np.where(y == 1, 1.0 - flipped, flipped)


def can_fit(y: np.ndarray) -> bool:
    """True when ``y`` (0/1 labels) holds both classes, so a model can be fitted.

    Examples
    --------
    >>> can_fit(np.array([1, 1])), can_fit(np.array([0, 1]))
    (False, True)
    """
    y = np.asarray(y)
    return bool(y.size) and 0 < int(y.sum()) < y.size


def _objective(xa, y, s, w, lam):
    z = xa @ w
    return float(np.sum(s * (np.logaddexp(0.0, z) - y * z)) + 0.5 * lam * (w[:-1] @ w[:-1]))


def _design(*blocks: np.ndarray) -> np.ndarray:
    """The rows of ``blocks`` stacked, float64, with a column of ones (the intercept) appended."""
    m = sum(len(b) for b in blocks)
    xa = np.empty((m, blocks[0].shape[1] + 1))
    xa[:, -1] = 1.0
    i = 0
    for b in blocks:
        xa[i:i + len(b), :-1] = b
        i += len(b)
    return xa


def _fit_l2_newton(xa, y, s, C, coef_init, tol, max_iter, sign=None):
    # One (m, f + 1) work array for every iteration's Hessian: fresh pages are costly
    # on virtual machines (~3 us each, measured), and a click is a few milliseconds.
    # With ``sign``: weights held to sign[j] * w[j] >= 0 where sign[j] != 0, by projected
    # Newton (Bertsekas 1982): weights at their bound whose gradient pushes them past it
    # stay there; the Newton step is taken in the others and projected back.
    f = xa.shape[1] - 1
    lam = 1.0 / C
    w = np.zeros(f + 1) if coef_init is None else np.array(coef_init, dtype=np.float64)
    bound = None if sign is None else np.r_[np.asarray(sign, dtype=np.float64), 0.0]
    if bound is not None:
        w[bound * w < 0] = 0.0
    fo = _objective(xa, y, s, w, lam)
    diag = np.arange(f)
    q = np.empty_like(xa)
    for _ in range(max_iter):
        p = expit(xa @ w)
        g = xa.T @ (s * (p - y))
        g[:f] += lam * w[:f]
        np.multiply(xa, np.sqrt(s * p * (1.0 - p))[:, None], out=q)
        h = q.T @ q  # numpy hands X'X to BLAS syrk: half the work of (X' * v) @ X
        h[diag, diag] += lam
        h[f, f] += 1e-10
        if bound is None:
            d = -np.linalg.solve(h, g)
        else:
            free = (bound == 0) | (bound * w > 0) | (bound * g <= 0)
            d = np.zeros(f + 1)
            d[free] = -np.linalg.solve(h[np.ix_(free, free)], g[free])
        dec = float(g @ d)
        if dec > -1e-14:
            break
        a = 1.0
        while True:
            wn = w + a * d
            if bound is not None:
                wn[bound * wn < 0] = 0.0
            fn = _objective(xa, y, s, wn, lam)
            if fn <= fo + 1e-4 * (a * dec if bound is None else float(g @ (wn - w))) or a < 1e-8:
                break
            a *= 0.5
        done = fo - fn <= tol * max(1.0, abs(fn))
        w, fo = wn, fn
        if done:
            break
    return w


def l1_penalty() -> dict:
    """scikit-learn's keyword for an L1 penalty: ``l1_ratio=1`` from 1.8 (``penalty`` is deprecated there);
    before 1.8 ``l1_ratio`` is ignored unless ``penalty="elasticnet"``, so ``penalty="l1"``."""
    import sklearn

    version = tuple(int(v) for v in re.findall(r"\d+", sklearn.__version__)[:2])
    return {"l1_ratio": 1.0} if version >= (1, 8) else {"penalty": "l1"}


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    *,
    penalty: str = "l2",
    C: float = 1.0,
    class_weight: str | None = None,
    coef_init: np.ndarray | None = None,
    sign: np.ndarray | None = None,
    tol: float = 1e-7,
    max_iter: int = 50,
) -> np.ndarray:
    """Fit a regularised logistic regression and return ``coef`` (weights, intercept last).

    Minimises ``C * sum_i s_i * logloss_i + penalty(w)`` as scikit-learn does,
    with ``penalty(w) = ||w||_1`` (``"l1"``, liblinear) or ``||w||^2 / 2``
    (``"l2"``, exact Newton, intercept not penalised, warm-started from
    ``coef_init``).

    Parameters
    ----------
    x : ndarray, shape (m, f)
        Standardised features of the labelled rows.
    y : ndarray, shape (m,)
        0/1 labels holding both classes (check with :func:`can_fit`).
    penalty : {"l1", "l2"}
    C : float
        Inverse regularisation strength.
    class_weight : {None, "balanced"}
        ``"balanced"`` weights each class to half of the total weight.
    coef_init : ndarray, shape (f + 1,), optional
        Starting point for the L2 solver (the previous click's coefficients).
    sign : ndarray, shape (f,), optional
        Known directions (L2 only): where ``sign[j]`` is +1 (or -1) the weight of
        feature ``j`` is held >= 0 (or <= 0); 0 leaves it free. See
        :data:`actsort_nb.features.registry.FEATURE_DIRECTIONS`.

    Returns
    -------
    ndarray of float64, shape (f + 1,)

    Examples
    --------
    >>> x = np.array([[-2.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [2.0, 1.0]])
    >>> y = np.array([0, 0, 1, 1])
    >>> round(float(fit_logistic(x, y, C=10.0)[1]), 2)         # free: the 2nd feature helps
    0.87
    >>> float(fit_logistic(x, y, C=10.0, sign=np.array([0, -1]))[1])  # held <= 0
    0.0
    >>> x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    >>> coef = fit_logistic(x, np.array([0, 0, 1, 1]), C=10.0)
    >>> bool(coef[0] > 0), abs(round(float(coef[1]), 6))
    (True, 0.0)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not can_fit(y):
        raise InputError(
            f"fit_logistic needs labels of both classes, got {int(y.sum())} cells of {y.size}; "
            "check can_fit(y) first and use prior_proba(labels) otherwise."
        )
    s = balanced_weights(y) if class_weight == "balanced" else np.ones(len(y))
    if penalty == "l2":
        with _one_blas_thread():
            return _fit_l2_newton(_design(x), y, s, float(C), coef_init, tol, max_iter, sign)
    if sign is not None:
        raise InputError("fit_logistic's sign constraints need penalty='l2'.")
    if penalty == "l1":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(**l1_penalty(), C=float(C), solver="liblinear", tol=1e-4, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x, y, sample_weight=s)
        return np.r_[model.coef_.ravel(), model.intercept_]
    raise InputError(f"The 'penalty' parameter must be 'l1' or 'l2', got {penalty!r}.")


def fit_model(
    x: np.ndarray,
    y: np.ndarray,
    pool: np.ndarray | None = None,
    *,
    penalty: str = "l2",
    C: float = 1.0,
    class_weight: str | None = None,
    pseudo_weight: float = 0.0,
    label_noise: float = 0.0,
    coef_init: np.ndarray | None = None,
    n_own: int | None = None,
    sign: np.ndarray | None = None,
) -> np.ndarray:
    """Fit a preset: :func:`fit_logistic`, then self-training on ``pool`` if ``pseudo_weight``.

    Self-training (one round): a model (``coef_init``, the previous click's, or
    a first fit on the human labels when there is none) labels every row of
    ``pool`` (unlabelled candidates) by its decision; each pseudo-label is weighted by the
    model's confidence ``|2p - 1|``, class-balanced among the pseudo-labels, and
    scaled by ``pseudo_weight * n_own / len(pool)``, so that all pseudo-labels
    together weigh at most ``pseudo_weight`` times this recording's human labels
    (``n_own``: the first rows of ``x``; default all of them; the rest are a previous
    recording's labels, see the learner's ``pretrained``). The model is
    refitted on both (L2 only), warm-started. In that fit the human labels are
    replaced by :func:`noise_targets` of the same model when ``label_noise > 0``.
    Human labels are never changed; the pseudo-labels and soft targets only shape
    the decision boundary. ``sign``: known feature directions, as in :func:`fit_logistic`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pool = np.r_[rng.normal(-2, 1, (100, 1)), rng.normal(2, 1, (100, 1))]
    >>> coef = fit_model(np.array([[-1.0], [1.0]]), np.array([0, 1]), pool, C=1.0,
    ...                  pseudo_weight=1.0)
    >>> bool(coef[0] > 0)
    True
    """
    if not pseudo_weight or pool is None or len(pool) == 0 or penalty != "l2":
        return fit_logistic(x, y, penalty=penalty, C=C, class_weight=class_weight,
                            coef_init=coef_init, sign=sign)
    if coef_init is None:  # cold: fit on the human labels first, to have a model to trust
        coef_init = fit_logistic(x, y, penalty=penalty, C=C, class_weight=class_weight, sign=sign)
    return fit_self_training(x, y, pool, coef_init, C=C, class_weight=class_weight,
                             pseudo_weight=pseudo_weight, label_noise=label_noise, n_own=n_own,
                             sign=sign)


def fit_self_training(
    x: np.ndarray,
    y: np.ndarray,
    pool: np.ndarray,
    coef: np.ndarray,
    *,
    C: float,
    class_weight: str | None,
    pseudo_weight: float,
    label_noise: float = 0.0,
    n_own: int | None = None,
    sign: np.ndarray | None = None,
) -> np.ndarray:
    """One round of confidence-weighted self-training with noisy labels (see :func:`fit_model`).

    ``coef`` (the previous model) gives both the pseudo-labels of ``pool`` and,
    with ``label_noise > 0``, the soft targets of the human labels
    (:func:`noise_targets`); one warm-started fit, so the cost per click does not
    change. Over successive clicks this is an EM iteration.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    t = noise_targets(y, predict_proba(x, coef), label_noise) if label_noise > 0 else y
    p = predict_proba(pool, coef)
    yp = (p >= 0.5).astype(np.float64)
    conf = np.abs(2.0 * p - 1.0)
    s_h = balanced_weights(y) if class_weight == "balanced" else np.ones(len(y))
    s_p = conf * (balanced_weights(yp) if class_weight == "balanced" else 1.0)
    s_p *= pseudo_weight * (len(y) if n_own is None else n_own) / len(yp)
    with _one_blas_thread():
        return _fit_l2_newton(_design(x, pool), np.r_[t, yp], np.r_[s_h, s_p], float(C), coef, 1e-7, 50, sign)


def predict_proba(z: np.ndarray, coef: np.ndarray | None, prior: float = 0.5,
                  out: np.ndarray | None = None) -> np.ndarray:
    """P(cell) for every row of ``z``: ``sigmoid(z @ w + b)``, or ``prior`` if not fitted.

    Parameters
    ----------
    z : ndarray, shape (n, f)
        Standardised features.
    coef : ndarray, shape (f + 1,), or None
        Fitted coefficients; None means "not fitted".
    prior : float
        Probability returned everywhere when ``coef`` is None.
    out : ndarray of float64, shape (n,), optional
        Buffer to write into (returned); a new array if it does not fit.

    Examples
    --------
    >>> predict_proba(np.zeros((2, 1)), None, prior=0.7).tolist()
    [0.7, 0.7]
    >>> predict_proba(np.array([[1.0], [-1.0]]), np.array([2.0, 0.0])).round(3).tolist()
    [0.881, 0.119]
    """
    z = np.asarray(z)
    if coef is None:
        out = buffer(out, len(z))
        out.fill(float(prior))
        return out
    return logistic(z, coef[:-1], float(coef[-1]), out=out)
