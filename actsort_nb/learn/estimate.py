"""Accuracy estimate without ground truth, and a suggested stopping point.

Pure functions of the label history; the learner feeds them and the panel plots
``(n_labels, estimate)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._validation import check_int, check_number


def prequential(
    labels: Sequence[int],
    p_before: Sequence[float],
    fitted_before: Sequence[bool],
    *,
    threshold: float = 0.5,
    window: int = 25,
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed agreement of the model's decision *before* each label with that label.

    Parameters
    ----------
    labels : sequence of int
        Human labels in the order given (1, 0; -1 removals are skipped).
    p_before : sequence of float
        P(cell) of that candidate just before its label was given.
    fitted_before : sequence of bool
        Whether a model (not the cold-start prior) produced ``p_before``.
    threshold : float
        Decision threshold.
    window : int
        Number of most recent scored labels averaged.

    Returns
    -------
    n_labels : ndarray of int, shape (len(labels),)
        1, 2, ... (labels given so far).
    estimate : ndarray of float
        Mean agreement over the last ``window`` scored labels; NaN until one exists.

    Examples
    --------
    >>> n, est = prequential([1, 0, 1, 1], [0.5, 0.2, 0.9, 0.1], [False, True, True, True],
    ...                      window=2)
    >>> n.tolist(), est.round(2).tolist()
    ([1, 2, 3, 4], [nan, 1.0, 1.0, 0.5])
    """
    window = check_int(window, "window", 1)
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(p_before, dtype=np.float64)
    ok = np.asarray(fitted_before, dtype=bool) & (y >= 0)
    agree = ((p >= threshold).astype(np.int64) == y).astype(np.float64)
    cs_a = np.concatenate([[0.0], np.cumsum(np.where(ok, agree, 0.0))])
    cs_n = np.concatenate([[0], np.cumsum(ok)])
    # the window covers the last `window` scored labels: find where it starts
    target = np.maximum(cs_n[1:] - int(window), 0)
    start = np.searchsorted(cs_n, target, side="left")
    count = cs_n[1:] - cs_n[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        est = (cs_a[1:] - cs_a[start]) / count
    est[count == 0] = np.nan
    return np.arange(1, len(y) + 1), est


def plateau(
    n_labels: np.ndarray,
    estimate: np.ndarray,
    *,
    patience: int = 40,
    tol: float = 0.02,
    min_labels: int = 50,
) -> int | None:
    """First label count where the estimate stopped improving, or None.

    The estimate has plateaued at ``n`` when ``n >= min_labels`` and it moved by
    at most ``tol`` over the last ``patience`` labels (max minus min).

    Examples
    --------
    >>> n = np.arange(1, 201)
    >>> est = np.minimum(n / 100, 0.9)
    >>> plateau(n, est, patience=40, tol=0.015)
    129
    >>> plateau(n[:100], est[:100]) is None
    True
    """
    patience, min_labels = check_int(patience, "patience", 1), check_int(min_labels, "min_labels", 0)
    check_number(tol, "tol", 0.0, np.inf)
    n_labels = np.asarray(n_labels)
    est = np.asarray(estimate, dtype=np.float64)
    for j in range(len(est)):
        if n_labels[j] < min_labels or j < patience:
            continue
        seg = est[j - patience: j + 1]
        if np.isfinite(seg).all() and seg.max() - seg.min() <= tol:
            return int(n_labels[j])
    return None
