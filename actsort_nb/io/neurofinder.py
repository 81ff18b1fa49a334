"""Neurofinder ground-truth regions (``regions.json``) as candidates, with traces from the movie.

Each region is ``{"id", "coordinates": [[row, col], ...]}`` (row = y); the crop
files of ``../shared`` add ``fully_inside`` and ``frac_inside``. Regions carry no
traces, so the movie is required: each trace is the mean of the movie over the
region's pixels, computed in one streaming pass over time chunks (never the whole movie).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse
import xarray as xr

from ..candidates import candidate_set
from ._common import (
    Backend,
    InputError,
    as_path,
    check_fov,
    name,
    read_json,
    sniff_json,
)
from .movie import resolve_movie

__all__ = ["read", "guess_can_open", "region_footprints", "BACKEND"]


def guess_can_open(path) -> bool:
    """True for a JSON list whose records have ``coordinates`` (checked in the first bytes)."""
    path = as_path(path)
    if not path.is_file():
        return False
    text = sniff_json(path).lstrip()
    return text.startswith("[") and '"coordinates"' in text


def region_footprints(regions, fov_shape: tuple[int, int], *, path=None) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """Turn Neurofinder regions into a binary ``(region, y*x)`` CSR matrix and their ids.

    Parameters
    ----------
    regions : list of dict
        Records with ``coordinates`` ``[[row, col], ...]`` and optionally ``id``.
    fov_shape : (int, int)
        ``(height, width)`` of the movie.

    Returns
    -------
    (scipy.sparse.csr_matrix, numpy.ndarray)
        Footprints in C pixel order and the region ids.

    Examples
    --------
    >>> fp, ids = region_footprints([{"id": 7, "coordinates": [[0, 1], [1, 1]]}], (3, 3))
    >>> fp.toarray().reshape(3, 3).astype(int).tolist(), ids.tolist()
    ([[0, 1, 0], [0, 1, 0], [0, 0, 0]], [7])
    """
    h, w = fov_shape
    src = name(path) if path is not None else "regions"
    if not isinstance(regions, list) or not regions:
        raise InputError(f"{src}: must be a non-empty JSON list of regions; pass a Neurofinder regions.json.")
    rows, cols, owner, ids = [], [], [], []
    for i, r in enumerate(regions):
        if not isinstance(r, dict) or "coordinates" not in r:
            raise InputError(f"{src}: region {i} has no 'coordinates'; each region must be {{'id', 'coordinates': [[row, col], ...]}}.")
        try:
            c = np.asarray(r["coordinates"], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{src}: region {i} coordinates are not numbers; fix the file.") from None
        if c.ndim != 2 or c.shape[1] != 2 or c.shape[0] == 0:
            raise InputError(
                f"{src}: region {i} coordinates must be a non-empty list of [row, col] pairs, got shape {c.shape}; fix the file."
            )
        if not np.isfinite(c).all() or np.any(c != np.round(c)):
            raise InputError(f"{src}: region {i} coordinates must be whole pixel indices; fix the file.")
        rows.append(c[:, 0].astype(np.int64))
        cols.append(c[:, 1].astype(np.int64))
        owner.append(np.full(c.shape[0], i))
        ids.append(r.get("id", i))
    y, x, k = np.concatenate(rows), np.concatenate(cols), np.concatenate(owner)
    if y.min() < 0 or x.min() < 0 or y.max() >= h or x.max() >= w:
        raise InputError(
            f"{src}: region pixels reach (row {int(y.max())}, col {int(x.max())}) outside the {h}x{w} movie; "
            "use the regions of this crop (regions_crop.json) or the full-size movie."
        )
    fp = scipy.sparse.csr_matrix((np.ones(y.size, np.float32), (k, y * w + x)), shape=(len(regions), h * w))
    fp.data[:] = 1.0  # duplicate pixels count once
    return fp, np.asarray(ids)


def _mean_traces(fp: scipy.sparse.csr_matrix, movie) -> np.ndarray:
    """Mean of the movie over each footprint ``(region, time)``, streamed over the movie's time chunks."""
    import dask.array as da

    weights = (scipy.sparse.diags(1.0 / np.asarray(fp.sum(axis=1)).ravel()) @ fp).astype(np.float32)
    weights_t = weights.T.tocsr()  # (pixels, regions)
    n_t, h, w = movie.shape

    def project(frames: np.ndarray) -> np.ndarray:
        return np.asarray(weights_t.T @ frames.reshape(frames.shape[0], h * w).astype(np.float32).T).T

    if isinstance(movie, da.Array):
        out = movie.map_blocks(
            project, dtype=np.float32, drop_axis=[1, 2], new_axis=[1], chunks=(movie.chunks[0], (weights.shape[0],))
        )
        return out.compute().T
    return project(np.asarray(movie)).T


def read(path, *, movie=None, frame_rate: float | None = None, fully_inside_only: bool = False, movie_dataset: str | None = None) -> xr.Dataset:
    """Read Neurofinder regions plus their movie into a CandidateSet.

    Parameters
    ----------
    path : str or path-like
        ``regions.json`` (or the crop's ``regions_crop.json``).
    movie : path or array
        The movie the regions were drawn on, required because regions have no traces.
    frame_rate : float, optional
        Frames per second (Neurofinder's 00.xx series is about 7 Hz); unknown by default.
    fully_inside_only : bool
        Keep only regions marked ``fully_inside`` (crop files).
    movie_dataset : str, optional
        HDF5 dataset name when ``movie`` is an HDF5 file with several arrays.

    Returns
    -------
    xarray.Dataset
        CandidateSet with binary footprints, mean traces, the lazy movie, candidate ids
        from the regions and, for crop files, ``fully_inside``.

    Examples
    --------
    >>> import json, numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "regions.json")
    >>> with open(p, "w") as fh:
    ...     json.dump([{"id": 5, "coordinates": [[1, 1], [1, 2]]}], fh)
    >>> movie = np.arange(4 * 3 * 4, dtype=np.uint16).reshape(4, 3, 4)
    >>> ds = read(p, movie=movie)
    >>> ds.traces.values.tolist()   # mean of pixels (1, 1) and (1, 2) in each frame
    [[5.5, 17.5, 29.5, 41.5]]
    """
    path = as_path(path)
    regions = read_json(path, "regions file")
    if movie is None:
        raise InputError(
            f"{name(path)}: Neurofinder regions hold no traces, so the movie is needed to compute them; pass movie='movie.tif'."
        )
    if isinstance(regions, list) and fully_inside_only:
        regions = [r for r in regions if isinstance(r, dict) and r.get("fully_inside", True)]
    mov = resolve_movie(movie, movie_dataset, source=path)
    h, w = check_fov(mov.shape[1:], "movie frame size", path=path)
    fp, ids = region_footprints(regions, (h, w), path=path)
    if len(np.unique(ids)) != len(ids):
        raise InputError(f"{name(path)}: region ids are not unique; fix the file so each region has its own id.")
    traces = _mean_traces(fp, mov)
    cvars = {}
    if all("fully_inside" in r for r in regions):
        cvars["fully_inside"] = np.array([bool(r["fully_inside"]) for r in regions])
    return candidate_set(
        fp,
        traces,
        movie=mov,
        ids=ids,
        frame_rate=frame_rate,
        fov_shape=(h, w),
        source=name(path),
        source_format="neurofinder",
        candidate_vars=cvars,
        attrs={"trace": "mean of the movie over the region"},
    )


BACKEND = Backend(
    name="neurofinder",
    description="Neurofinder regions JSON (needs movie=)",
    guess_can_open=guess_can_open,
    read=read,
    extensions=(".json",),
)
