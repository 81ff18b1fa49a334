"""The ActiveLearner: human labels in, P(cell) and the next candidate out.

The class only checks inputs and connects the pure pieces: standardisation and
logistic regression (:mod:`.classifier`), strategies (:mod:`.queries`) and the
label-free accuracy estimate (:mod:`.estimate`). One retrain per ``teach`` call;
``undo`` restores the exact state before the last ``teach`` (labels, model,
random-generator state, provenance).
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np

from .._validation import (
    InputError, check_finite, check_int, check_ndim, check_number, check_numeric, check_option,
)
from . import estimate as _estimate
from .classifier import (
    CLASSIFIERS, PSEUDO_SAMPLE, can_fit, fit_logistic, fit_model, predict_proba,
    prior_proba, standardize,
)
from .queries import DEFAULT_CLASSIFIER, STRATEGIES, PoolState, Query, WARMUP

#: The model that judges pretrained samples for ``drop_contradicted``, fitted on the new
#: labels alone: class-balanced L2 with C = 1, whatever the classifier. Weakly regularised
#: so that its confidence can reach ``contradiction_confidence`` with tens of labels (the
#: ``balanced`` preset's C = 0.02 kept P within 0.28-0.72 at 20 labels: nothing was dropped).
CONTRADICTION_JUDGE = {"penalty": "l2", "C": 1.0, "class_weight": "balanced"}


class HistoryEntry(NamedTuple):
    """One human label: which candidate, the label, who proposed it, P(cell) just before."""

    index: int
    label: int
    strategy: str
    p_cell_before: float


def _as_feature_table(features) -> np.ndarray:
    """(n, f) array from an array, a DataArray or a Dataset with ``features``."""
    if hasattr(features, "data_vars"):  # xarray.Dataset
        if "features" not in features.data_vars:
            from .._validation import did_you_mean

            raise InputError(
                "The dataset has no 'features' variable (candidate, feature);"
                f"{did_you_mean('features', features.data_vars)} Compute it with "
                "actsort_nb.features.compute_features or pass an (n, f) array."
            )
        features = features["features"]
    if hasattr(features, "dims") and hasattr(features, "transpose"):  # xarray.DataArray
        if set(features.dims) == {"candidate", "feature"}:
            features = features.transpose("candidate", "feature")
        features = features.values
    if hasattr(features, "toarray"):  # a scipy.sparse matrix
        features = features.toarray()
    return np.asarray(features)


def _feature_names(features) -> list[str] | None:
    """The ``feature`` coordinate's names of a Dataset or DataArray, None for a plain array."""
    if hasattr(features, "data_vars") and "features" in features.data_vars:
        features = features["features"]
    coords = getattr(features, "coords", None)
    if coords is None or "feature" not in coords or coords["feature"].dtype.kind not in "OUS":
        return None
    return [str(v) for v in coords["feature"].values]


class ActiveLearner:
    """Active learning over one recording's candidates.

    Parameters
    ----------
    features : ndarray (n, f), xarray.DataArray (candidate, feature) or Dataset
        The feature table of every candidate (a sort set's ``features`` variable).
        Standardised once (z-score over all candidates).
    strategy : {"explore", "explore-robust", "dcal", "cal", "dal", "random"}
        Query strategy (see :mod:`actsort_nb.learn.queries`). Settable later.
        Default ``explore``: on both ActSort benchmark sets it beats ActSort's
        ``dcal`` at 1-5 % labels (``benchmarks/README.md``, section "learner").
        ``explore-robust`` is a candidate successor (other cold start and
        classifier), measured there too.
    seed : int
        Seed of the learner's random generator (queries, DAL subsamples).
    classifier : {None, "actsort", "balanced", "balanced-robust"}
        Classifier preset (:data:`~actsort_nb.learn.classifier.CLASSIFIERS`);
        None uses the strategy's own (ActSort's L1 model for ActSort's
        strategies, the class-balanced L2 model for ``explore``, its
        ``"balanced-robust"`` variant for ``explore-robust``).
    threshold : float
        Decision threshold on P(cell) for :meth:`sorted_labels`, in (0, 1).
    dcal_weight : float
        DCAL's ``w0`` in [0, 1].
    pretrained : (ndarray (m, f), ndarray (m,)), optional
        A previous session's labelled set (another recording's features and its
        labels, 1/0, -1 ignored), added to the training set (each sample weighs as
        much as a new label, as in ActSort). Its features are standardised over that
        recording, as the new ones are over this one. The model exists from the first
        query; self-training's pseudo-labels weigh against this recording's labels
        only. On the ActSort benchmark sets one annotator's labels of the other set
        alone sort as well as or better than the labelling annotator agrees with the
        others; with 1-5 % new labels, better still (``benchmarks/README.md``, "transfer"). With thousands of pretrained samples, a few new labels move the
        model little: for a recording unlike the previous one, use
        ``drop_contradicted`` or start without ``pretrained``.
    drop_contradicted : bool
        Leave out pretrained samples the new labels contradict: once the new
        labels alone hold >= 3 cells and >= 3 not-cells, a model fitted on them
        alone scores every pretrained sample, and those it calls the other class
        with P >= ``contradiction_confidence`` are dropped for that fit
        (re-decided at every retrain; see :attr:`pretrained_kept`).
    contradiction_confidence : float
        Confidence above which a pretrained sample counts as contradicted.
    directions : "auto", None or array of +1/-1/0, shape (f,)
        Known feature directions for the ``balanced`` classifiers: the weight of a
        feature with direction +1 (-1) is held >= 0 (<= 0), 0 leaves it free.
        ``"auto"``: for features named as in the registry (a sort set's
        ``features``, or an ActSort benchmark table), their
        :data:`~actsort_nb.features.registry.FEATURE_DIRECTIONS` (the direction
        each takes between true cells and false positives on simulated
        recordings); none for a plain array. On the ActSort benchmark ``explore``
        gains up to +0.008 of balanced accuracy at 1-5 % labels and +0.005 to
        +0.041 at 0.5 % with them (``benchmarks/README.md``). None: no constraint.
        ActSort's classifier ignores them.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.normal(0, 1, (50, 3)), rng.normal(3, 1, (50, 3))]
    >>> learner = ActiveLearner(x, strategy="cal", seed=0)
    >>> for _ in range(12):
    ...     i = learner.query()
    ...     learner.teach(i, bool(i >= 50))
    >>> learner.fitted, learner.labels.shape, int((learner.labels >= 0).sum())
    (True, (100,), 12)
    >>> float(((learner.predict_proba() >= 0.5) == (np.arange(100) >= 50)).mean()) > 0.9
    True
    >>> learner.undo(); int((learner.labels >= 0).sum())
    11
    """

    def __init__(
        self,
        features,
        strategy: str = "explore",
        seed: int = 0,
        *,
        classifier: str | None = None,
        threshold: float = 0.5,
        dcal_weight: float = 0.5,
        pretrained: tuple | None = None,
        drop_contradicted: bool = False,
        contradiction_confidence: float = 0.9,
        directions="auto",
    ) -> None:
        x = _as_feature_table(features)
        check_ndim(x, 2, "features", dims=("candidate", "feature"))
        check_numeric(x, "features")
        check_finite(x, "features")
        if x.shape[0] < 2 or x.shape[1] < 1:
            raise InputError(
                f"features must hold at least 2 candidates and 1 feature, got shape {x.shape}."
            )
        check_option(strategy, "strategy", STRATEGIES)
        if classifier is not None:
            check_option(classifier, "classifier", CLASSIFIERS)
        check_int(seed, "seed", 0)
        self._strategy = strategy
        self._classifier = classifier
        self._threshold = check_number(threshold, "threshold", 0.0, 1.0, exclusive=True)
        self._dcal_weight = check_number(dcal_weight, "dcal_weight", 0.0, 1.0, exclusive=False)
        self._confidence = check_number(
            contradiction_confidence, "contradiction_confidence", 0.5, 1.0, exclusive=True
        )
        self.seed = int(seed)
        self._feature_names = _feature_names(features)
        self._directions = self._check_directions(directions, x.shape[1])
        self._z, _, _ = standardize(x)
        self.n_candidates, self.n_features = x.shape
        self._old_z = self._old_y = None
        self.drop_contradicted = bool(drop_contradicted)
        if pretrained is not None:
            self._old_z, self._old_y = self._check_pretrained(pretrained)
        self._labels = np.full(self.n_candidates, -1, dtype=np.int8)
        self._rng = np.random.default_rng(self.seed)
        n_pool = min(self.n_candidates, PSEUDO_SAMPLE)
        self._pool_sample = np.sort(
            np.random.default_rng([self.seed, 1]).choice(self.n_candidates, n_pool, replace=False)
        )
        self._cache: dict = {}
        self._proposed: dict[int, str] = {}
        self.history: list[HistoryEntry] = []
        self._fitted_before: list[bool] = []
        self._undo: list[dict] = []
        self._coef = None
        self._proba = np.empty(self.n_candidates)  # reused by every retrain (see predict_proba)
        self._kept = None if self._old_y is None else np.ones(len(self._old_y), bool)
        self._retrain()

    # ------------------------------------------------------------------ checks
    def _check_directions(self, directions, n_features: int) -> np.ndarray | None:
        if isinstance(directions, str) and directions == "auto":
            if self._feature_names is None:
                return None
            from ..features.registry import FEATURE_DIRECTIONS

            known = np.array([FEATURE_DIRECTIONS.get(name, 0) for name in self._feature_names], dtype=np.float64)
            return known if known.any() else None
        if directions is None:
            return None
        d = np.asarray(directions)
        if d.shape != (n_features,) or d.dtype.kind not in "iuf" or not np.isin(d, (-1, 0, 1)).all():
            raise InputError(
                f"The 'directions' parameter must be 'auto', None or one of +1/-1/0 per feature ({n_features}), "
                f"got {directions!r:.80}."
            )
        return d.astype(np.float64) if d.any() else None

    def _check_pretrained(self, pretrained):
        if not isinstance(pretrained, (tuple, list)) or len(pretrained) != 2:
            raise InputError(
                "The 'pretrained' parameter must be a pair (features, labels) of a previous "
                f"session, got {type(pretrained).__name__}."
            )
        xo = _as_feature_table(pretrained[0])
        check_ndim(xo, 2, "pretrained features", dims=("candidate", "feature"))
        check_numeric(xo, "pretrained features")
        check_finite(xo, "pretrained features")
        if xo.shape[1] != self.n_features:
            raise InputError(
                f"pretrained features have {xo.shape[1]} features but this recording has "
                f"{self.n_features}; use the same feature set (same names, same order)."
            )
        names = _feature_names(pretrained[0])
        if names is not None and self._feature_names is not None and names != self._feature_names:
            diff = next(j for j, (a, b) in enumerate(zip(names, self._feature_names)) if a != b)
            raise InputError(
                f"pretrained features are not this recording's features in the same order: feature {diff} "
                f"is {names[diff]!r} there and {self._feature_names[diff]!r} here; select them in this "
                "recording's order (features.sel(feature=...))."
            )
        raw = np.asarray(pretrained[1]).ravel()
        if raw.dtype == bool:
            raw = raw.astype(np.int8)
        whole = raw.dtype.kind in "iu" or (raw.dtype.kind == "f" and bool(np.all(np.isfinite(raw) & (raw == np.round(raw)))))
        yo = raw.astype(np.int64) if whole else None
        if yo is None or len(yo) != len(xo) or not np.isin(yo, (-1, 0, 1)).all():
            shown = np.unique(raw)[:5].tolist() if raw.dtype.kind in "iufUS" else f"of dtype {raw.dtype}"
            raise InputError(
                f"pretrained labels must be one 1/0/-1 (or True/False) label per pretrained row ({len(xo)}), "
                f"got {len(raw)} values {shown}; pass the human labels (e.g. LabelLog.labels(n)), "
                "not probabilities."
            )
        keep = yo >= 0
        if not keep.any():
            raise InputError(
                f"the pretrained set has no labelled row (all {len(yo)} labels are -1), so there is nothing to "
                "transfer; check the label log and annotator it came from, or leave out pretrained."
            )
        zo, _, _ = standardize(xo)
        return zo[keep], yo[keep].astype(np.int8)

    def _indices_labels(self, i, label):
        idx = np.atleast_1d(np.asarray(i))
        if idx.dtype.kind not in "iu" or idx.ndim != 1:
            raise InputError(f"teach needs an int index or a 1-D array of ints, got {i!r}.")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_candidates):
            raise InputError(
                f"candidate index out of range 0..{self.n_candidates - 1}: got "
                f"{idx[(idx < 0) | (idx >= self.n_candidates)][:3].tolist()}."
            )
        if len(np.unique(idx)) != len(idx):
            raise InputError("teach got the same candidate twice in one call; give each once.")
        lab = np.atleast_1d(np.asarray(label))
        if lab.dtype == bool:
            lab = lab.astype(np.int8)
        if lab.size == 1 and idx.size > 1:
            lab = np.repeat(lab, idx.size)
        if lab.shape != idx.shape or lab.dtype.kind not in "iub" or not np.isin(lab, (-1, 0, 1)).all():
            raise InputError(
                f"teach needs one label per index (True/1 cell, False/0 not a cell, -1 remove), "
                f"got {label!r} for {idx.size} index(es)."
            )
        return idx.astype(np.intp), lab.astype(np.int8)

    # ---------------------------------------------------------------- settable
    @property
    def strategy(self) -> str:
        """The query strategy's name; setting it refits if its classifier differs."""
        return self._strategy

    @strategy.setter
    def strategy(self, value: str) -> None:
        check_option(value, "strategy", STRATEGIES)
        before = self.classifier
        self._strategy = value
        if self.classifier != before:
            self._coef = None
            self._cache.pop("discriminator", None)
            self._retrain()

    @property
    def classifier(self) -> str:
        """The classifier preset in use (explicit, or the strategy's default)."""
        return self._classifier or DEFAULT_CLASSIFIER[self._strategy]

    @property
    def threshold(self) -> float:
        """Decision threshold on P(cell) for :meth:`sorted_labels`."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = check_number(value, "threshold", 0.0, 1.0, exclusive=True)

    @property
    def dcal_weight(self) -> float:
        """DCAL's ``w0``."""
        return self._dcal_weight

    @dcal_weight.setter
    def dcal_weight(self, value: float) -> None:
        self._dcal_weight = check_number(value, "dcal_weight", 0.0, 1.0, exclusive=False)

    # ------------------------------------------------------------------- state
    @property
    def labels(self) -> np.ndarray:
        """(n,) int8 human labels: 1 cell, 0 not a cell, -1 unlabelled (a copy)."""
        return self._labels.copy()

    @property
    def fitted(self) -> bool:
        """Whether P(cell) comes from a fitted model (False: the cold-start prior)."""
        return self._coef is not None

    @property
    def coef_(self) -> np.ndarray | None:
        """Fitted weights on the standardised features, intercept last (None: not fitted)."""
        return None if self._coef is None else self._coef.copy()

    @property
    def pretrained_kept(self) -> np.ndarray | None:
        """Boolean mask of the pretrained samples used in the last fit (None: no transfer)."""
        return None if self._kept is None else self._kept.copy()

    def predict_proba(self) -> np.ndarray:
        """(n,) P(cell) of every candidate (the prior everywhere until a model is fitted)."""
        return self._proba.copy()

    def sorted_labels(self) -> np.ndarray:
        """(n,) int8 sorted output: the human label where given, else ``P(cell) >= threshold``."""
        model = (self._proba >= self._threshold).astype(np.int8)
        return np.where(self._labels >= 0, self._labels, model).astype(np.int8)

    # ---------------------------------------------------------------- training
    def _training_set(self):
        lab = np.flatnonzero(self._labels >= 0)
        z, y = self._z[lab], self._labels[lab].astype(np.float64)
        if self._old_y is None:
            return z, y
        kept = np.ones(len(self._old_y), bool)
        if self.drop_contradicted and (y == 1).sum() >= WARMUP and (y == 0).sum() >= WARMUP:
            own = fit_logistic(z, y, **CONTRADICTION_JUDGE, coef_init=self._cache.get("new_only"))
            self._cache["new_only"] = own
            p_old = predict_proba(self._old_z, own)
            wrong = np.where(self._old_y == 1, 1.0 - p_old, p_old)
            kept = wrong < self._confidence
        self._kept = kept
        return np.concatenate([z, self._old_z[kept]]), np.r_[y, self._old_y[kept]]

    def _retrain(self) -> None:
        z, y = self._training_set()
        if can_fit(y):
            opts = dict(CLASSIFIERS[self.classifier])
            sign = self._directions if opts.pop("directions") else None
            pool = None
            n_own = len(y) if self._old_y is None else len(y) - int(self._kept.sum())  # then pretrained rows
            n1, n0 = int((y == 1).sum()), int((y == 0).sum())
            if opts["pseudo_weight"] and n_own and min(n1, n0) >= WARMUP:  # trust a model first
                sample = self._pool_sample[self._labels[self._pool_sample] < 0]
                pool = self._z[sample]
            self._coef = fit_model(z, y, pool, coef_init=self._coef, n_own=n_own, sign=sign, **opts)
        else:
            self._coef = None
        self._prior = prior_proba(y)
        self._proba = predict_proba(self._z, self._coef, self._prior, out=self._proba)

    # ------------------------------------------------------------------ public
    def query(self, k: int | None = None):
        """The next candidate to label (int), or ``k`` distinct ones (array), best first.

        Never returns a labelled candidate. Records which rule proposed each
        index (see :attr:`history`).
        """
        n_unl = int((self._labels < 0).sum())
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise InputError(f"query(k) needs a positive int k, got {k!r}.")
        if n_unl == 0:
            raise InputError("Every candidate is labelled; there is nothing left to query.")
        state = PoolState(
            self._z, self._labels, self._proba, self.fitted,
            dict(CLASSIFIERS[self.classifier]), self._dcal_weight, self._cache,
        )
        q: Query = STRATEGIES[self._strategy](state, 1 if k is None else int(k), self._rng)
        name = self._strategy if q.proposer == self._strategy else f"{self._strategy}:{q.proposer}"
        for i in q.indices.tolist():
            self._proposed[i] = name
        return int(q.indices[0]) if k is None else np.asarray(q.indices, dtype=np.intp)

    def proposed_by(self, i: int) -> str | None:
        """The strategy whose query proposed candidate ``i`` (not yet labelled), None if none did.

        As :attr:`history` will record it (e.g. ``"dcal:warmup-random"``): the strategy
        at the time of the query, even if :attr:`strategy` changed since.
        """
        return self._proposed.get(int(i))

    def teach(self, i, label) -> None:
        """Record human label(s) and retrain once.

        Parameters
        ----------
        i : int or array of int
            Candidate index(es).
        label : bool, int or array
            True/1 cell, False/0 not a cell, -1 removes the human label; one per
            index (or one for all). Relabelling replaces the earlier human label.
        """
        idx, lab = self._indices_labels(i, label)
        self._undo.append({
            "idx": idx, "old": self._labels[idx].copy(), "coef": self._coef,
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "cache": {k: copy.copy(v) for k, v in self._cache.items()},
            "history": len(self.history), "kept": self._kept,
            "proposed": dict(self._proposed), "classifier": self.classifier,
        })
        fitted = self.fitted
        for j, y in zip(idx.tolist(), lab.tolist()):
            self.history.append(
                HistoryEntry(j, y, self._proposed.pop(j, "user"), float(self._proba[j]))
            )
            self._fitted_before.append(fitted)
        self._labels[idx] = lab
        self._retrain()

    def undo(self) -> None:
        """Take back the last :meth:`teach` call, restoring the exact state before it."""
        if not self._undo:
            raise InputError("Nothing to undo: no label has been taught yet.")
        s = self._undo.pop()
        self._labels[s["idx"]] = s["old"]
        self._coef = s["coef"]
        self._rng.bit_generator.state = s["rng"]
        self._cache.clear()
        self._cache.update(s["cache"])
        del self.history[s["history"]:]
        del self._fitted_before[s["history"]:]
        self._kept = s["kept"]
        self._proposed = s["proposed"]
        if s["classifier"] != self.classifier:  # the strategy changed since: refit with the current classifier
            self._coef = None
            self._cache.pop("discriminator", None)
            self._retrain()
            return
        y = self._labels[self._labels >= 0]
        if self._old_y is not None:
            y = np.r_[y, self._old_y[self._kept]]
        self._prior = prior_proba(y)
        self._proba = predict_proba(self._z, self._coef, self._prior, out=self._proba)

    def accuracy_estimate(self, window: int = 25) -> tuple[np.ndarray, np.ndarray]:
        """Running accuracy estimate without ground truth, for plotting.

        Prequential: each human label is compared with the model's decision
        *before* that label was given (only where a model was fitted), and the
        agreement is averaged over the last ``window`` such labels. Because
        strategies query hard candidates, this is a pessimistic estimate of the
        accuracy over the whole pool.

        Returns
        -------
        n_labels : ndarray of int
            Number of labels given when each estimate was made (1, 2, ...).
        estimate : ndarray of float
            Smoothed agreement (NaN until one fitted prediction exists).
        """
        return _estimate.prequential(
            [h.label for h in self.history], [h.p_cell_before for h in self.history],
            self._fitted_before, threshold=self._threshold, window=window,
        )

    def suggest_stop(self, window: int = 25, patience: int = 40, tol: float = 0.02,
                     min_labels: int = 50) -> int | None:
        """Number of labels at which the accuracy estimate plateaued, or None if not yet.

        See :func:`actsort_nb.learn.estimate.plateau`.
        """
        n, est = self.accuracy_estimate(window)
        return _estimate.plateau(n, est, patience=patience, tol=tol, min_labels=min_labels)

    def __repr__(self) -> str:
        n_lab = int((self._labels >= 0).sum())
        return (f"ActiveLearner(n_candidates={self.n_candidates}, labelled={n_lab}, "
                f"strategy={self._strategy!r}, classifier={self.classifier!r}, "
                f"fitted={self.fitted})")
