"""Several annotators: consensus labels and inter-annotator agreement.

The numbers are those ActSort's benchmark reports: for each annotator, the
balanced accuracy and Cohen's κ against the majority vote of the *other*
annotators (so an annotator is never compared with a vote that includes
their own), and κ for every pair of annotators. The scores are pure numpy
functions over a confusion matrix; the tests check them against scikit-learn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._validation import InputError, check_option

__all__ = [
    "AgreementReport",
    "agreement_report",
    "balanced_accuracy",
    "cohen_kappa",
    "consensus",
]

TIES = ("not_cell", "cell", "unlabelled")


def consensus(votes: Any, *, ties: str = "not_cell") -> np.ndarray:
    """Majority vote over annotators, ignoring unlabelled (−1) entries.

    Parameters
    ----------
    votes : array-like
        ``(annotator, candidate)`` of 1 (cell), 0 (not a cell), −1 (unlabelled).
    ties : {"not_cell", "cell", "unlabelled"}, default "not_cell"
        What a tied vote becomes: 0, 1 or −1. ``"not_cell"`` is ActSort's
        behaviour (MATLAB's ``mode`` of ±1 votes picks −1 on a tie).

    Returns
    -------
    numpy.ndarray
        int8 ``(candidate,)``: 1, 0, or −1 where nobody voted (or a tie with
        ``ties="unlabelled"``).

    Examples
    --------
    >>> consensus([[1, 1, 0, -1], [1, 0, 0, -1]]).tolist()
    [1, 0, 0, -1]
    >>> consensus([[1, 1, 0, -1], [1, 0, 0, -1]], ties="unlabelled").tolist()
    [1, -1, 0, -1]
    """
    check_option(ties, "ties", TIES)
    votes = _as_votes(votes)
    cells = (votes == 1).sum(axis=0)
    not_cells = (votes == 0).sum(axis=0)
    out = np.where(cells > not_cells, 1, 0).astype(np.int8)
    tie = (cells == not_cells) & (cells > 0)
    out[tie] = {"not_cell": 0, "cell": 1, "unlabelled": -1}[ties]
    out[(cells + not_cells) == 0] = -1
    return out


def _as_votes(votes: Any, what: str = "annotations") -> np.ndarray:
    arr = np.asarray(votes)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"The {what} must be 2-D (annotator, candidate), got shape {arr.shape}; "
                         "stack one row of labels per annotator.")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int8)
    if arr.dtype.kind not in "iuf":
        raise InputError(f"The {what} must be numeric labels (1, 0, -1), got dtype {arr.dtype}.")
    bad = ~np.isin(arr, (1, 0, -1))
    if bad.any():
        raise InputError(
            f"The {what} must hold 1 (cell), 0 (not a cell) or -1 (unlabelled), got "
            f"{np.unique(arr[bad])[:5].tolist()}; map ActSort's ±1 votes with (votes > 0).astype(int)."
        )
    return arr.astype(np.int8)


def _confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(2 * y_true + y_pred, minlength=4).reshape(2, 2).astype(np.float64)


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean recall over the classes present in ``y_true`` (binary 0/1 labels).

    Examples
    --------
    >>> balanced_accuracy([1, 1, 1, 0], [1, 1, 0, 0])
    0.8333333333333333
    """
    cm = _confusion(y_true, y_pred)
    support = cm.sum(axis=1)
    if not support.any():
        return float("nan")
    recall = np.diag(cm)[support > 0] / support[support > 0]
    return float(recall.mean())


def cohen_kappa(a: Any, b: Any) -> float:
    """Cohen's κ between two binary (0/1) label vectors; NaN when undefined.

    Examples
    --------
    >>> round(cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]), 3)
    0.5
    """
    cm = _confusion(a, b)
    total = cm.sum()
    if total == 0:
        return float("nan")
    p_o = np.trace(cm) / total
    p_e = float((cm.sum(axis=1) / total) @ (cm.sum(axis=0) / total))
    if p_e >= 1.0:
        return float("nan")
    return float((p_o - p_e) / (1.0 - p_e))


@dataclass(frozen=True)
class AgreementReport:
    """Inter-annotator agreement.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per annotator: ``n_labelled``, ``cell_fraction``, ``n_compared``
        (candidates the annotator and the others' consensus both labelled),
        ``accuracy``, ``balanced_accuracy`` and ``kappa`` vs the consensus of the
        others.
    pairwise_kappa, pairwise_agreement : pandas.DataFrame
        annotator × annotator Cohen's κ and fraction of equal labels, over the
        candidates both labelled.
    ties : str
        How tied consensus votes were resolved.
    """

    table: pd.DataFrame
    pairwise_kappa: pd.DataFrame
    pairwise_agreement: pd.DataFrame
    ties: str

    def __str__(self) -> str:
        return (f"Agreement with the consensus of the other annotators (ties -> {self.ties}):\n"
                + self.table.to_string(float_format=lambda v: f"{v:.3f}")
                + "\n\nPairwise Cohen's kappa:\n"
                + self.pairwise_kappa.to_string(float_format=lambda v: f"{v:.3f}"))

    def _repr_html_(self) -> str:
        return ("<b>Agreement with the consensus of the others</b>" + self.table.to_html(float_format="%.3f")
                + "<b>Pairwise Cohen's κ</b>" + self.pairwise_kappa.to_html(float_format="%.3f"))


def _from_input(annotations: Any, annotators: Any, n: int | None) -> tuple[np.ndarray, list[str]]:
    from .log import LabelLog

    if isinstance(annotations, LabelLog):
        if n is None:
            events = annotations.history()
            n = 1 + max((d.candidate for d in events), default=-1)
        return annotations.annotations(n)
    try:
        import xarray as xr
    except ImportError:  # pragma: no cover - xarray is a dependency
        xr = None
    if xr is not None and isinstance(annotations, xr.Dataset):
        if "annotations" not in annotations:
            raise InputError("The Dataset has no 'annotations' variable (annotator, candidate); "
                             "pass a feature set from actsort_nb.feature_set or the array itself.")
        annotations = annotations["annotations"]
    if xr is not None and isinstance(annotations, xr.DataArray):
        if set(annotations.dims) != {"annotator", "candidate"}:
            raise InputError(f"The annotations must have dims ('annotator', 'candidate'), got {annotations.dims}.")
        da = annotations.transpose("annotator", "candidate")
        names = [str(a) for a in da["annotator"].values] if "annotator" in da.coords \
            else [f"annotator_{i}" for i in range(da.sizes["annotator"])]
        return _as_votes(da.values), names
    votes = _as_votes(annotations)
    if annotators is None:
        names = [f"annotator_{i}" for i in range(votes.shape[0])]
    else:
        names = [str(a) for a in annotators]
        if len(names) != votes.shape[0]:
            raise InputError(f"{len(names)} annotator names were given for {votes.shape[0]} rows of annotations; "
                             "give one name per row.")
    return votes, names


def agreement_report(annotations: Any, *, annotators: Any = None, ties: str = "not_cell",
                     n: int | None = None) -> AgreementReport:
    """Agreement of each annotator with the consensus of the others, and pairwise κ.

    Parameters
    ----------
    annotations : array-like, xarray.DataArray, xarray.Dataset or LabelLog
        ``(annotator, candidate)`` labels 1/0/−1; a DataArray with those dims; a
        feature set with an ``annotations`` variable; or a :class:`LabelLog`
        (each annotator's last effective decisions).
    annotators : sequence of str, optional
        Row names for a plain array.
    ties : {"not_cell", "cell", "unlabelled"}, default "not_cell"
        How a tied consensus of the others is resolved (see :func:`consensus`);
        ``"unlabelled"`` leaves tied candidates out of the comparison.
    n : int, optional
        Number of candidates, for a LabelLog (default: highest labelled index + 1).

    Returns
    -------
    AgreementReport

    Examples
    --------
    >>> votes = [[1, 1, 0, 0, 1, 0], [1, 1, 0, 0, 0, 0], [1, 0, 0, 1, 1, 0]]
    >>> rep = agreement_report(votes, annotators=["ana", "ben", "cy"])
    >>> rep.table["n_compared"].tolist()
    [6, 6, 6]
    >>> round(float(rep.pairwise_kappa.loc["ana", "ben"]), 3)
    0.667
    """
    check_option(ties, "ties", TIES)
    votes, names = _from_input(annotations, annotators, n)
    if votes.shape[0] < 2:
        raise InputError(f"Agreement needs at least 2 annotators, got {votes.shape[0]} ({names}).")
    if len(set(names)) != len(names):
        raise InputError(f"Annotator names must be unique, got {names}.")
    rows = []
    for i, name in enumerate(names):
        mine = votes[i]
        others = consensus(np.delete(votes, i, axis=0), ties=ties)
        keep = (mine >= 0) & (others >= 0)
        labelled = mine >= 0
        rows.append({
            "annotator": name,
            "n_labelled": int(labelled.sum()),
            "cell_fraction": float((mine[labelled] == 1).mean()) if labelled.any() else float("nan"),
            "n_compared": int(keep.sum()),
            "accuracy": float((mine[keep] == others[keep]).mean()) if keep.any() else float("nan"),
            "balanced_accuracy": balanced_accuracy(others[keep], mine[keep]),
            "kappa": cohen_kappa(mine[keep], others[keep]),
        })
    table = pd.DataFrame(rows).set_index("annotator")
    k = len(names)
    kappa = np.eye(k)
    agree = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            both = (votes[i] >= 0) & (votes[j] >= 0)
            kappa[i, j] = kappa[j, i] = cohen_kappa(votes[i][both], votes[j][both])
            agree[i, j] = agree[j, i] = float((votes[i][both] == votes[j][both]).mean()) if both.any() else np.nan
    frame = lambda m: pd.DataFrame(m, index=pd.Index(names, name="annotator"),  # noqa: E731
                                   columns=pd.Index(names, name="annotator"))
    return AgreementReport(table=table, pairwise_kappa=frame(kappa), pairwise_agreement=frame(agree), ties=ties)
