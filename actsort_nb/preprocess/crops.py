"""Fixed-size crops around candidates: one square size for all, so arrays stack.

ActSort crops each cell's bounding box ± 7 px (grown to include neighbours), so its
crops have ragged sizes. Here every candidate gets the same ``size × size`` crop:
the size is the bounding box ± ``margin`` of the median footprint (see
:func:`crop_size`), clipped to ``[min_size, max_size]``; each crop is centred on the
candidate centre and shifted to stay inside the field of view. Stacked crops chunk per candidate
on disk and need no per-candidate bookkeeping in the browser.

What ActSort's growth would cost (``benchmarks/crop_growth.py``): on the real Neurofinder
field (330 cells) its grown crops have a median side of 25 px against our 24 (1.15× the
bytes), so the fixed crop shows nearly the same neighbourhood; on the pre-processing
benchmark's 10,000 candidates in 512² they have a median side of 52 px against our 28
(3.9× the snapshot bytes, which would put the sort set far above 5 % of the movie).
Neighbours cut at a crop's edge are shown whole on the panel's field-of-view map.
"""
from __future__ import annotations

import numpy as np
import sparse

from .._validation import InputError

__all__ = [
    "MARGIN",
    "boundary_mask",
    "bounding_boxes",
    "crop_footprints",
    "crop_origins",
    "crop_size",
]

#: Pixels added on each side of a footprint's bounding box (ActSort's margin).
MARGIN = 7


def bounding_boxes(footprints: sparse.COO, level: float = 0.05) -> np.ndarray:
    """``(candidate, 4)`` inclusive boxes ``(y0, y1, x0, x1)`` of the pixels ≥ ``level × peak``.

    An empty footprint has ``y1 = x1 = -1`` (and ``y0``, ``x0`` the largest int64).

    Examples
    --------
    >>> fp = np.zeros((1, 8, 8), np.float32); fp[0, 2:4, 3:7] = 1
    >>> bounding_boxes(sparse.COO.from_numpy(fp)).tolist()
    [[2, 3, 3, 6]]
    """
    n = footprints.shape[0]
    c, y, x = footprints.coords
    v = footprints.data
    peak = np.zeros(n, np.float64)
    np.maximum.at(peak, c, v)
    on = v >= level * peak[c]
    c, y, x = c[on], y[on], x[on]
    box = np.empty((n, 4), np.int64)
    box[:, 0::2] = np.iinfo(np.int64).max
    box[:, 1::2] = -1
    np.minimum.at(box[:, 0], c, y)
    np.maximum.at(box[:, 1], c, y)
    np.minimum.at(box[:, 2], c, x)
    np.maximum.at(box[:, 3], c, x)
    return box


def _extents(footprints: sparse.COO, level: float) -> np.ndarray:
    """``(candidate,)`` larger side of each footprint's bounding box (pixels ≥ level·peak)."""
    y0, y1, x0, x1 = bounding_boxes(footprints, level).T
    return np.where(y1 >= 0, np.maximum(y1 - y0, x1 - x0) + 1, 0)


def crop_size(
    footprints: sparse.COO,
    fov_shape: tuple[int, int],
    *,
    margin: int = MARGIN,
    quantile: float = 0.5,
    min_size: int = 16,
    max_size: int = 48,
    level: float = 0.05,
) -> int:
    """One crop side for all candidates: bounding box ± ``margin`` of a typical footprint.

    Parameters
    ----------
    footprints : sparse.COO
        ``(candidate, y, x)`` footprints.
    fov_shape : (int, int)
        Field of view ``(height, width)``; the crop never exceeds it.
    margin : int
        Pixels around the bounding box (ActSort: 7).
    quantile : float
        Which quantile of the candidates' extents sets the size (1.0 = the largest).
        The default 0.5 (the median) fits a typical cell with ActSort's margin; a
        larger candidate (neuropil, merged cells) fills its crop and is cut at its
        edges in the snapshots (the panel's field-of-view map shows it whole). Higher
        quantiles show more of them, at the cost of side² bytes for every candidate.
    min_size, max_size : int
        Sane range of the side.
    level : float
        Pixels at or above ``level × peak`` count towards a footprint's extent.

    Returns
    -------
    int
        The side, an even number of pixels (so a crop has a well-defined centre pair).

    Examples
    --------
    >>> import numpy as np, sparse
    >>> fp = np.zeros((1, 64, 64), np.float32); fp[0, 10:20, 10:20] = 1
    >>> crop_size(sparse.COO.from_numpy(fp), (64, 64))
    24
    """
    if min_size < 1 or max_size < min_size:
        raise InputError(f"crop sizes need 1 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}.")
    ext = _extents(footprints, level)
    need = float(np.quantile(ext, quantile)) + 2 * margin if ext.size else min_size
    side = int(np.clip(2 * np.ceil(need / 2), min_size, max_size))
    return int(min(side, *fov_shape))


def crop_origins(centers: np.ndarray, size: int, fov_shape: tuple[int, int]) -> np.ndarray:
    """``(candidate, corner)`` int32 top-left ``(y0, x0)`` of each centred crop inside the field of view.

    Parameters
    ----------
    centers : numpy.ndarray
        ``(candidate, 2)`` centres ``(y, x)`` in pixels.
    size : int
        Crop side.
    fov_shape : (int, int)
        Field of view ``(height, width)``.

    Returns
    -------
    numpy.ndarray
        Origins with ``0 <= y0 <= height - size`` and ``0 <= x0 <= width - size``.

    Examples
    --------
    >>> crop_origins(np.array([[0.0, 30.0], [10.0, 10.0]]), 8, (32, 32))
    array([[ 0, 24],
           [ 6,  6]], dtype=int32)
    """
    h, w = fov_shape
    if size > min(h, w):
        raise InputError(f"the crop side {size} is larger than the field of view {fov_shape}; pass a smaller crop (preprocess(..., crop=N)).")
    c = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    start = np.floor(c + 0.5) - size // 2  # centre pixel at index size // 2
    hi = np.array([h - size, w - size])
    return np.clip(start, 0, hi).astype(np.int32)


def crop_footprints(footprints: sparse.COO, origins: np.ndarray, size: int) -> np.ndarray:
    """Dense ``(candidate, cy, cx)`` float32 footprints inside each candidate's crop.

    Parameters
    ----------
    footprints : sparse.COO
        ``(candidate, y, x)`` footprints.
    origins : numpy.ndarray
        ``(candidate, 2)`` crop origins from :func:`crop_origins`.
    size : int
        Crop side.

    Returns
    -------
    numpy.ndarray
        Footprint weights inside the crops (pixels outside a crop are dropped).
    """
    n = footprints.shape[0]
    c, y, x = footprints.coords
    cy = y - origins[c, 0]
    cx = x - origins[c, 1]
    ok = (cy >= 0) & (cy < size) & (cx >= 0) & (cx < size)
    out = np.zeros((n, size, size), np.float32)
    np.add.at(out, (c[ok], cy[ok], cx[ok]), footprints.data[ok].astype(np.float32))
    return out


def boundary_mask(crop_footprint, level: float = 0.05) -> np.ndarray:
    """Boundary pixels of ``crop_footprint ≥ level × its peak`` (ActSort's 0.05 contour).

    A pixel is on the boundary when it is inside the region and one of its four
    neighbours (or the crop edge) is outside. Vectorised over any leading dims.

    Parameters
    ----------
    crop_footprint : array-like
        ``(..., cy, cx)`` footprints, e.g. the sort set's ``crop_footprint``.
    level : float
        Fraction of each footprint's peak that defines the region.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the same shape.

    Examples
    --------
    >>> f = np.zeros((5, 5)); f[1:4, 1:4] = 1
    >>> boundary_mask(f).astype(int)[2]
    array([0, 1, 0, 1, 0])
    """
    f = np.asarray(crop_footprint, dtype=np.float32)
    peak = f.max(axis=(-2, -1), keepdims=True)
    inside = (f >= level * peak) & (f > 0)
    pad = [(0, 0)] * (f.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(inside, pad)
    interior = p[..., :-2, 1:-1] & p[..., 2:, 1:-1] & p[..., 1:-1, :-2] & p[..., 1:-1, 2:]
    return inside & ~interior
