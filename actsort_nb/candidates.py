"""The data model: a ``CandidateSet`` is an :class:`xarray.Dataset` with named dims.

Dimension names are the contract (see DESIGN.md): ``candidate``, ``y``, ``x``,
``time`` and, for feature tables, ``feature`` and ``annotator``.

Variables of a CandidateSet
---------------------------
footprints : (candidate, y, x) float32, a :class:`sparse.COO` array (never dense)
traces : (candidate, time) float32
movie : (time, y, x), optional, a lazy :class:`dask.array.Array` (never loaded whole)
max_image, mean_image, ... : (y, x), optional summary images
source_label : (candidate,) int8, optional, the source's own cell decision (1/0)
kind / is_cell : (candidate,), optional, ground truth of simulated sets

Attributes: ``frame_rate`` (Hz, NaN if unknown), ``source`` (path or description),
``source_format`` (reader name), ``schema`` (data-model version).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np
import scipy.sparse
import sparse
import xarray as xr

from ._validation import InputError, by_dims, check_finite, check_ndim, check_numeric, where

SCHEMA_VERSION = 1

__all__ = [
    "SCHEMA_VERSION",
    "candidate_set",
    "feature_set",
    "to_coo",
]


def to_coo(footprints, fov_shape: tuple[int, int] | None = None, *, path=None, field=None) -> sparse.COO:
    """Convert footprints to a 3-D ``sparse.COO`` (candidate, y, x) of float32.

    Parameters
    ----------
    footprints : array-like, sparse.COO, or scipy.sparse matrix
        Dense ``(n, y, x)`` array, a 3-D ``sparse.COO``, or a 2-D scipy sparse
        matrix ``(n, y*x)`` in C (row-major) pixel order, which needs ``fov_shape``.
    fov_shape : (int, int), optional
        Field-of-view ``(height, width)`` for a 2-D scipy sparse input.

    Returns
    -------
    sparse.COO
        Footprints with shape ``(n, height, width)``.
    """
    if scipy.sparse.issparse(footprints):
        if fov_shape is None:
            raise InputError(
                f"{where(path, field)}footprints given as a 2-D sparse matrix need fov_shape=(height, width) "
                "to know the image size."
            )
        m = footprints.tocoo()
        try:
            h, w = (int(s) for s in fov_shape)
        except (TypeError, ValueError):
            h = w = 0
        if h < 1 or w < 1:
            raise InputError(
                f"{where(path, field)}fov_shape must be two positive integers (height, width), got {fov_shape!r}."
            )
        if m.shape[1] != h * w:
            raise InputError(
                f"{where(path, field)}footprints have {m.shape[1]} pixels per candidate but fov_shape "
                f"{(h, w)} has {h * w}; pass the field of view the footprints were extracted on."
            )
        # Canonical order with scipy, so sparse.COO need not sort (which compiles numba code).
        m = m.tocsr()
        m.sum_duplicates()
        m = m.tocoo()
        coords = np.stack([m.row, m.col // w, m.col % w])
        out = sparse.COO(coords, m.data.astype(np.float32), shape=(m.shape[0], h, w), has_duplicates=False, sorted=True)
    elif isinstance(footprints, sparse.SparseArray):
        check_ndim(footprints, 3, "footprints", path=path, field=field, dims=("candidate", "y", "x"))
        src = sparse.COO(footprints)
        # Cast the values directly: COO.astype goes through numba (seconds of JIT per process).
        out = src if src.dtype == np.float32 else sparse.COO(
            src.coords, src.data.astype(np.float32), shape=src.shape, has_duplicates=False, sorted=True,
            fill_value=np.float32(src.fill_value),
        )
    else:
        arr = np.asarray(footprints)
        check_ndim(arr, 3, "footprints", path=path, field=field, dims=("candidate", "y", "x"))
        check_numeric(arr, "footprints", path=path, field=field)
        out = sparse.COO.from_numpy(arr.astype(np.float32, copy=False))
    check_finite(out.data, "footprints", path=path, field=field)
    return out


def _lazy_movie(movie, path=None):
    if isinstance(movie, xr.DataArray):
        movie = movie.data
    if not hasattr(movie, "shape") or not hasattr(movie, "dtype"):
        movie = np.asarray(movie)
    check_ndim(movie, 3, "movie", path=path, dims=("time", "y", "x"))
    check_numeric(movie, "movie", path=path)
    if isinstance(movie, np.memmap) and movie.filename:
        # dask copies arrays it is given (reading a whole memory map); hand it the file instead.
        from .io.movie import FileFrames, _from_frames

        order = "F" if movie.flags.f_contiguous and not movie.flags.c_contiguous else "C"
        movie = _from_frames(FileFrames(movie.filename, movie.dtype, movie.shape, movie.offset, order), "movie")
    if not isinstance(movie, da.Array):
        # Chunk by time so that nothing downstream reads the whole movie at once.
        movie = da.from_array(movie, chunks=(max(1, min(movie.shape[0], 100)), -1, -1), asarray=False)
    return movie


def _check_ids(ids, n: int, source) -> np.ndarray:
    """Candidate ids: ``0..n-1`` by default, else one unique entry per candidate."""
    ids = np.arange(n) if ids is None else np.asarray(ids)
    if ids.shape != (n,):
        raise InputError(f"{where(source)}ids must have one entry per candidate ({n}), got shape {ids.shape}.")
    if len(np.unique(ids)) != n:
        raise InputError(f"{where(source)}candidate ids must be unique; found duplicates.")
    return ids


def candidate_set(
    footprints,
    traces,
    *,
    movie=None,
    summary_images: Mapping[str, Any] | None = None,
    ids=None,
    frame_rate: float | None = None,
    fov_shape: tuple[int, int] | None = None,
    source: str | None = None,
    source_format: str = "arrays",
    candidate_vars: Mapping[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Build and validate a CandidateSet from arrays.

    Parameters
    ----------
    footprints : array-like
        Spatial footprints ``(candidate, y, x)``; dense, ``sparse.COO``, or a
        scipy sparse ``(candidate, y*x)`` matrix with ``fov_shape``.
    traces : array-like
        Temporal traces ``(candidate, time)``.
    movie : array-like, optional
        The motion-corrected movie ``(time, y, x)``; kept lazy (dask).
    summary_images : mapping of str to array, optional
        Images ``(y, x)`` such as ``max_image`` and ``mean_image``.
    ids : array-like, optional
        Candidate ids from the source; default ``0..n-1``.
    frame_rate : float, optional
        Frames per second of the traces; NaN if unknown.
    fov_shape : (int, int), optional
        Needed only for 2-D sparse footprints.
    source, source_format : str
        Where the data came from and which reader read it (kept in attrs).
    candidate_vars : mapping, optional
        Extra per-candidate variables (1-D, length ``n``), e.g. ``source_label``.
    attrs : mapping, optional
        Extra dataset attributes.

    Returns
    -------
    xarray.Dataset
        The CandidateSet.

    Examples
    --------
    >>> import numpy as np
    >>> fp = np.zeros((2, 8, 8), np.float32); fp[0, 1:3, 1:3] = 1; fp[1, 5:7, 5:7] = 1
    >>> ds = candidate_set(fp, np.random.default_rng(0).random((2, 50)), frame_rate=10)
    >>> dict(ds.sizes)
    {'candidate': 2, 'y': 8, 'x': 8, 'time': 50}
    """
    footprints = by_dims(footprints, ("candidate", "y", "x"), "footprints", source)
    traces = by_dims(traces, ("candidate", "time"), "traces", source)
    reserved = {"footprints", "traces", "movie", "candidate", "time", "y", "x"}
    for what, given in (("summary_images", summary_images), ("candidate_vars", candidate_vars)):
        clash = sorted(reserved & set(given or {}))
        if clash:
            raise InputError(f"{what} cannot be named {clash}: those names are the CandidateSet's own; rename them.")
    fp = to_coo(footprints, fov_shape, path=source, field="footprints")
    tr = np.asarray(traces)
    check_ndim(tr, 2, "traces", path=source, field="traces", dims=("candidate", "time"))
    check_numeric(tr, "traces", path=source, field="traces")
    if tr.dtype.kind == "f" and tr.dtype.itemsize > 4 and np.isfinite(tr).all() \
            and np.abs(tr).max(initial=0) > np.finfo(np.float32).max:
        raise InputError(f"{where(source, 'traces')}traces exceed the float32 range (|value| up to "
                         f"{np.abs(tr).max():.3g}); rescale them before loading.")
    tr = tr.astype(np.float32, copy=False)
    n = fp.shape[0]
    if tr.shape[0] != n:
        hint = (
            "they look transposed, so pass traces as (candidate, time)."
            if tr.shape[1] == n
            else "check that both come from the same extraction run."
        )
        raise InputError(
            f"{where(source)}there are {n} footprints but {tr.shape[0]} traces (traces shape {tr.shape}); {hint}"
        )
    if n == 0:
        raise InputError(f"{where(source)}the extraction output holds no candidates; nothing to sort.")
    if tr.shape[1] == 0:
        raise InputError(f"{where(source, 'traces')}traces have no time points; check the trace field.")
    check_finite(tr, "traces", path=source, field="traces")
    nnz_per = np.bincount(fp.coords[0][fp.data > 0], minlength=n)  # ActSort counts the pixels > 0
    empty = np.flatnonzero(nnz_per == 0)
    if empty.size:
        raise InputError(
            f"{where(source, 'footprints')}{empty.size} candidate(s) have an all-zero footprint "
            f"(first at index {int(empty[0])}), or no weight above zero; remove them from the extraction output first (e.g. load its "
            "arrays yourself and pass the non-empty candidates to actsort_nb.io.from_arrays)."
        )
    h, w = fp.shape[1:]
    ids = _check_ids(ids, n, source)
    try:
        rate = float("nan") if frame_rate is None else -1.0 if isinstance(frame_rate, bool) else float(frame_rate)
    except (TypeError, ValueError):
        rate = -1.0
    if not (np.isnan(rate) or 0 < rate < np.inf):
        raise InputError(f"frame_rate must be a positive number of frames per second, got {frame_rate!r}.")

    data_vars: dict[str, Any] = {
        "footprints": (("candidate", "y", "x"), fp),
        "traces": (("candidate", "time"), tr),
    }
    if movie is not None:
        mov = _lazy_movie(movie, path=source)
        if tuple(mov.shape[1:]) != (h, w):
            swapped = tuple(mov.shape[1:]) == (w, h) and h != w
            raise InputError(
                f"{where(source)}the movie frames are {tuple(mov.shape[1:])} but the footprints are {(h, w)}; "
                + (
                    "the movie's y and x axes look swapped (transpose it to (time, y, x))."
                    if swapped
                    else "use the movie the extraction was run on (same crop and binning)."
                )
            )
        if mov.shape[0] != tr.shape[1]:
            raise InputError(
                f"{where(source)}the movie has {mov.shape[0]} frames but the traces have {tr.shape[1]} time points; "
                "use the matching movie or trim both to the same frames."
            )
        data_vars["movie"] = (("time", "y", "x"), mov)
    for name, img in (summary_images or {}).items():
        img = np.asarray(img)
        check_ndim(img, 2, name, path=source, field=name, dims=("y", "x"))
        check_numeric(img, name, path=source, field=name)
        if img.shape != (h, w):
            raise InputError(
                f"{where(source, name)}the summary image is {img.shape} but the footprints are {(h, w)}; "
                "pass an image of the same field of view."
            )
        data_vars[name] = (("y", "x"), img)
    for name, values in (candidate_vars or {}).items():
        values = np.asarray(values)
        if values.shape[:1] != (n,):
            raise InputError(f"{where(source, name)}must have one value per candidate ({n}), got shape {values.shape}.")
        data_vars[name] = (("candidate",) + tuple(f"{name}_dim{i}" for i in range(1, values.ndim)), values)

    coords: dict[str, Any] = {"candidate": ids}
    if not np.isnan(rate):
        coords["time"] = ("time", np.arange(tr.shape[1]) / rate, {"units": "s"})
    ds_attrs = {
        "frame_rate": rate,
        "source": "" if source is None else str(source),
        "source_format": source_format,
        "schema": SCHEMA_VERSION,
    }
    ds_attrs.update(attrs or {})
    return xr.Dataset(data_vars, coords=coords, attrs=ds_attrs)


def feature_set(
    features,
    *,
    feature_names=None,
    annotations=None,
    annotators=None,
    ids=None,
    source: str | None = None,
    source_format: str = "arrays",
) -> xr.Dataset:
    """Build a features-and-labels set: ``features(candidate, feature)`` plus annotations.

    Parameters
    ----------
    features : array-like
        ``(candidate, feature)`` numeric table.
    feature_names : sequence of str, optional
        Names for the ``feature`` coordinate; default ``f0, f1, ...``.
    annotations : array-like, optional
        ``(annotator, candidate)`` human labels, 1 = cell, 0 = not a cell, -1 = not labelled.
    annotators : sequence of str, optional
        Names for the ``annotator`` coordinate.
    ids : array-like, optional
        Candidate ids; default ``0..n-1``.

    Returns
    -------
    xarray.Dataset
        With ``features`` and, if given, ``annotations`` (int8).
    """
    X = np.asarray(by_dims(features, ("candidate", "feature"), "features", source))
    check_ndim(X, 2, "features", path=source, field="features", dims=("candidate", "feature"))
    check_numeric(X, "features", path=source, field="features")
    check_finite(X, "features", path=source, field="features")
    n, f = X.shape
    if n == 0 or f == 0:
        raise InputError(f"{where(source, 'features')}the feature table is empty (shape {X.shape}).")
    if feature_names is None:
        feature_names = [f"f{i}" for i in range(f)]
    if isinstance(feature_names, (str, bytes)) or not hasattr(feature_names, "__iter__"):
        raise InputError(f"{where(source)}feature_names must be a sequence of {f} names, got {feature_names!r}.")
    feature_names = [str(v) for v in feature_names]
    if len(set(feature_names)) != len(feature_names):
        raise InputError(f"{where(source)}feature_names repeat a name; give each of the {f} features its own.")
    if len(feature_names) != f:
        raise InputError(
            f"{where(source)}there are {f} feature columns but {len(feature_names)} feature names; "
            "pass one name per column."
        )
    ids = _check_ids(ids, n, source)
    data_vars: dict[str, Any] = {"features": (("candidate", "feature"), X)}
    coords: dict[str, Any] = {
        "candidate": ids,
        "feature": feature_names,
    }
    if annotations is not None:
        A = np.asarray(annotations)
        if A.ndim == 1:
            A = A[None]
        if A.ndim != 2:
            raise InputError(
                f"{where(source)}annotations must be (annotator, candidate) or one row per candidate, "
                f"got shape {A.shape}."
            )
        if A.shape[1] != n:
            raise InputError(
                f"{where(source)}annotations have {A.shape[1]} candidates but features have {n}; "
                "they must describe the same candidates in the same order."
            )
        if not np.isin(A, (-1, 0, 1)).all():
            raise InputError(
                f"{where(source)}annotations must be 1 (cell), 0 (not a cell) or -1 (unlabelled); "
                f"found values {np.unique(A)[:6].tolist()}."
            )
        data_vars["annotations"] = (("annotator", "candidate"), A.astype(np.int8))
        coords["annotator"] = (
            [f"annotator{i}" for i in range(A.shape[0])] if annotators is None else [str(a) for a in annotators]
        )
        if len(coords["annotator"]) != A.shape[0]:
            raise InputError(
                f"{where(source)}there are {A.shape[0]} annotator rows but {len(coords['annotator'])} annotator "
                "names; pass one name per row."
            )
        if len(set(coords["annotator"])) != A.shape[0]:
            raise InputError(f"{where(source)}annotator names repeat; give each annotator row its own name.")
    return xr.Dataset(
        data_vars,
        coords=coords,
        attrs={"source": "" if source is None else str(source), "source_format": source_format, "schema": SCHEMA_VERSION},
    )
