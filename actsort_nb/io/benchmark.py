"""ActSort's benchmark feature files: ``metrics`` (N x 76) plus one ``<annotator>_choices`` vector each.

The files are MATLAB v7.3 (HDF5). h5py already shows ``metrics`` as (candidate, feature)
because MATLAB's ``[76 N]`` is reversed. Choices are +1 (cell) / -1 (not a cell);
anything else (0, NaN) is treated as unlabelled (-1 in our annotations).
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from ..candidates import feature_set
from ._common import (
    Backend,
    InputError,
    as_float32,
    as_path,
    h5_matches,
    h5_open,
    h5_read,
    name,
    text_key,
    where,
)

__all__ = ["read_actsort_benchmark", "guess_can_open", "BACKEND"]

SUFFIX = "_choices"


def guess_can_open(path) -> bool:
    """True for an HDF5 / MATLAB v7.3 file with ``metrics`` and at least one ``*_choices`` dataset."""
    return h5_matches(path, lambda fh: "metrics" in fh and any(text_key(k).endswith(SUFFIX) for k in fh))


def read_actsort_benchmark(path) -> xr.Dataset:
    """Read an ActSort benchmark ``.mat`` file as a features-and-labels set.

    Parameters
    ----------
    path : str or path-like
        E.g. ``ebrahimi_reanalysis.mat`` or ``twophoton_motion.mat``.

    Returns
    -------
    xarray.Dataset
        ``features(candidate, feature)`` float32 with the 76 names of
        :data:`actsort_nb.features.registry.FEATURE_NAMES`, and
        ``annotations(annotator, candidate)`` int8 (1 cell, 0 not a cell,
        -1 unlabelled), annotators named from the keys (``cheetah_choices`` → ``cheetah``).

    Examples
    --------
    >>> import h5py, numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "b.mat")
    >>> with h5py.File(p, "w") as f:
    ...     f["metrics"] = np.ones((3, 76), np.float32); f["ann_choices"] = np.array([[1], [-1], [1]], np.float32)
    >>> read_actsort_benchmark(p).annotations.values.tolist()
    [[1, 0, 1]]
    """
    from ..features.registry import FEATURE_NAMES

    path = as_path(path)
    with h5_open(path) as fh:
        if "metrics" not in fh:
            raise InputError(
                f"{name(path)}: has no 'metrics' dataset, so it is not an ActSort benchmark file; pass one of benchmark-data/*.mat."
            )
        X = h5_read(fh["metrics"], "metrics", path=path, field="metrics")
        if X.ndim != 2 or len(FEATURE_NAMES) not in X.shape:
            raise InputError(
                f"{where(path, 'metrics')}must be a (candidate, {len(FEATURE_NAMES)}) table, got shape {X.shape}; "
                "pass an ActSort benchmark file."
            )
        if X.shape[1] != len(FEATURE_NAMES):
            X = X.T  # saved [N 76] in MATLAB instead of [76 N]
        n = X.shape[0]
        keys = sorted(k for k in fh if isinstance(k, str) and k.endswith(SUFFIX))
        votes = []
        for k in keys:
            v = h5_read(fh[k], k, path=path, field=k).ravel()
            if v.size != n:
                raise InputError(
                    f"{where(path, k)}has {v.size} choices but metrics has {n} candidates; the file is inconsistent, so re-export it."
                )
            votes.append(np.where(v > 0, 1, np.where(v < 0, 0, -1)).astype(np.int8))
    if not np.isfinite(X).all():
        raise InputError(
            f"{where(path, 'metrics')}holds {int((~np.isfinite(X)).sum())} NaN/inf values; "
            "replace them (ActSort uses the column mean) before loading."
        )
    return feature_set(
        as_float32(X, "metrics", path=path, field="metrics"),
        feature_names=list(FEATURE_NAMES),
        annotations=np.stack(votes) if votes else None,
        annotators=[k[: -len(SUFFIX)] for k in keys] if votes else None,
        source=name(path),
        source_format="actsort-benchmark",
    )


BACKEND = Backend(
    name="actsort-benchmark",
    description="ActSort benchmark features + annotator choices (.mat v7.3)",
    guess_can_open=guess_can_open,
    read=read_actsort_benchmark,
    kind="features",
    extensions=(".mat",),
)
