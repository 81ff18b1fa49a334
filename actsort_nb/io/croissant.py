"""Allen Institute "croissant" ROI records: sparse footprint, trace snippet and a human label each.

Every ROI comes from its own experiment and field of view, so there is no shared
movie and no cross-candidate context. :func:`read` groups the ROIs by image shape and
returns one CandidateSet per shape (a list): the footprints of one set share an
image size, not a recording, so features that compare candidates with each other
(trace similarity, footprint overlap) mean nothing on them. Each set keeps the
human label as ``source_label`` and the experiment as ``experiment_id``; candidate
ids are the ROI ids. :func:`open_candidates` picks one shape with ``image_shape=``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse
import xarray as xr

from ..candidates import candidate_set
from ._common import (
    Backend,
    InputError,
    as_float32,
    as_path,
    check_fov,
    name,
    read_json,
    sniff_json,
)

__all__ = ["read", "read_shape", "guess_can_open", "BACKEND"]

FIELDS = ("coo_rows", "coo_cols", "coo_data", "image_shape", "trace", "roi_id")


def guess_can_open(path) -> bool:
    """True for a JSON list whose records have ``coo_rows`` (checked in the first bytes)."""
    path = as_path(path)
    if not path.is_file():
        return False
    text = sniff_json(path).lstrip()
    return text.startswith("[") and '"coo_rows"' in text


def _records(path) -> list[dict]:
    rois = read_json(path, "ROI file")
    if not isinstance(rois, list) or not rois:
        raise InputError(f"{name(path)}: must be a non-empty JSON list of ROI records; pass a croissant *_rois.json file.")
    for i, r in enumerate(rois):
        missing = [f for f in FIELDS if not isinstance(r, dict) or f not in r]
        if missing:
            raise InputError(f"{name(path)}: ROI record {i} lacks {', '.join(missing)}; pass a croissant *_rois.json file.")
    return rois


def read(path, *, frame_rate: float | None = None) -> list[xr.Dataset]:
    """Read a croissant ROI JSON into one CandidateSet per image shape.

    Parameters
    ----------
    path : str or path-like
        ``dev_train_rois.json`` or ``dev_test_rois.json``.
    frame_rate : float, optional
        Frames per second of the trace snippets (not stored in the file).

    Returns
    -------
    list of xarray.Dataset
        One CandidateSet per distinct ``image_shape``, in order of first appearance,
        each with ``source_label`` (1 cell, 0 not), ``experiment_id`` and attrs
        ``image_shape``; candidate ids are the ROI ids.

    Examples
    --------
    >>> import json, tempfile, os
    >>> roi = {"coo_rows": [1, 2], "coo_cols": [3, 3], "coo_data": [0.5, 1.0], "image_shape": [8, 6],
    ...        "trace": [1.0, 2.0, 3.0], "roi_id": 77, "experiment_id": 1, "label": 1}
    >>> p = os.path.join(tempfile.mkdtemp(), "rois.json")
    >>> with open(p, "w") as fh:
    ...     json.dump([roi], fh)
    >>> [dict(ds.sizes) for ds in read(p)]
    [{'candidate': 1, 'y': 8, 'x': 6, 'time': 3}]
    """
    path = as_path(path)
    rois = _records(path)
    shapes: list[tuple[int, int]] = []
    for i, r in enumerate(rois):
        shp = check_fov(r["image_shape"], f"ROI {i} image_shape", path=path, field="image_shape")
        if shp not in shapes:
            shapes.append(shp)
    return [_build(path, rois, shp, frame_rate) for shp in shapes]


def read_shape(path, *, image_shape: tuple[int, int] | None = None, frame_rate: float | None = None) -> xr.Dataset:
    """Read the ROIs of one image shape as a CandidateSet (the only shape when ``image_shape`` is None).

    Parameters
    ----------
    path : str or path-like
        A croissant ROI JSON file.
    image_shape : (int, int), optional
        Which field-of-view shape to return; required when the file holds several.
    frame_rate : float, optional
        Frames per second of the trace snippets.

    Returns
    -------
    xarray.Dataset
        The CandidateSet of the ROIs with that image shape (see :func:`read`).
    """
    sets = read(path, frame_rate=frame_rate)
    shapes = [tuple(ds.attrs["image_shape"]) for ds in sets]
    if image_shape is None:
        if len(sets) == 1:
            return sets[0]
        raise InputError(
            f"{name(path)}: the ROIs come from fields of view of {len(sets)} shapes {shapes}; pass image_shape=(H, W) "
            "to pick one, or use actsort_nb.io.croissant.read for all."
        )
    key = tuple(int(v) for v in image_shape)
    if key not in shapes:
        raise InputError(f"{name(path)}: no ROI has image_shape {key}; choose one of {shapes}.")
    return sets[shapes.index(key)]


def _build(path, rois, shape, frame_rate) -> xr.Dataset:
    h, w = shape
    chosen = [r for r in rois if tuple(int(v) for v in r["image_shape"]) == shape]
    rows, cols, data, owner, traces = [], [], [], [], []
    for k, r in enumerate(chosen):
        try:
            y = np.asarray(r["coo_rows"], dtype=np.int64)
            x = np.asarray(r["coo_cols"], dtype=np.int64)
            v = np.asarray(r["coo_data"], dtype=np.float64)
            t = np.asarray(r["trace"], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{name(path)}: ROI {r.get('roi_id')} holds non-numeric pixels or trace values; fix the file.") from None
        if not (y.ndim == x.ndim == v.ndim == 1 and y.size == x.size == v.size):
            raise InputError(
                f"{name(path)}: ROI {r.get('roi_id')} has {y.size} rows, {x.size} cols and {v.size} weights; they must match."
            )
        if y.size and (y.min() < 0 or x.min() < 0 or y.max() >= h or x.max() >= w):
            raise InputError(f"{name(path)}: ROI {r.get('roi_id')} has pixels outside its image_shape {shape}; fix the file.")
        rows.append(y)
        cols.append(x)
        data.append(v)
        owner.append(np.full(y.size, k))
        traces.append(t)
    lengths = {t.size for t in traces}
    if len(lengths) != 1:
        raise InputError(f"{name(path)}: trace snippets have different lengths {sorted(lengths)}; every ROI needs the same number of samples.")
    fp = scipy.sparse.csr_matrix(
        (as_float32(np.concatenate(data), "coo_data", path=path, field="coo_data"),
         (np.concatenate(owner), np.concatenate(rows) * w + np.concatenate(cols))),
        shape=(len(chosen), h * w),
    )
    label = np.array([r.get("label", -1) for r in chosen])
    cvars = {"experiment_id": np.array([int(r.get("experiment_id", -1)) for r in chosen])}
    if np.isin(label, (0, 1)).all():
        cvars["source_label"] = label.astype(np.int8)
    return candidate_set(
        fp,
        as_float32(np.stack(traces), "trace", path=path, field="trace"),
        ids=np.array([int(r["roi_id"]) for r in chosen]),
        frame_rate=frame_rate,
        fov_shape=(h, w),
        source=name(path),
        source_format="croissant",
        candidate_vars=cvars,
        attrs={"image_shape": [h, w], "note": "each ROI comes from its own experiment; no shared movie"},
    )


BACKEND = Backend(
    name="croissant",
    description="Allen croissant ROI JSON (footprint + trace + label per ROI)",
    guess_can_open=guess_can_open,
    read=read_shape,
    extensions=(".json",),
)
