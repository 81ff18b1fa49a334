"""Plain arrays with explicit dimension names: the caller names the axes, we transpose.

Like xarray's string accessor, anything ambiguous is named by the caller rather
than guessed: ``dims=("y", "x", "candidate")`` says a MATLAB-style ``[H W N]`` array.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from ..candidates import candidate_set
from ._common import InputError

__all__ = ["from_arrays"]

FOOTPRINT_DIMS = ("candidate", "y", "x")
TRACE_DIMS = ("candidate", "time")
MOVIE_DIMS = ("time", "y", "x")


_PARAM = {"footprints": "dims", "traces": "trace_dims", "movie": "movie_dims"}


def _order(dims: Sequence[str], want: tuple[str, ...], what: str, shape) -> tuple[int, ...]:
    dims = tuple(str(d) for d in dims)
    if len(dims) != len(shape):
        raise InputError(
            f"{what} has {len(shape)} axes (shape {tuple(shape)}) but {len(dims)} dim names {dims}; "
            f"name every axis with {_PARAM[what]}=, e.g. {want}."
        )
    if sorted(dims) != sorted(want):
        raise InputError(f"{_PARAM[what]} for the {what} must be a permutation of {want}, got {dims}; rename the axes.")
    return tuple(dims.index(d) for d in want)


def from_arrays(
    footprints,
    traces,
    *,
    dims: Sequence[str] = FOOTPRINT_DIMS,
    trace_dims: Sequence[str] = TRACE_DIMS,
    movie=None,
    movie_dims: Sequence[str] = MOVIE_DIMS,
    **kwargs,
) -> xr.Dataset:
    """Build a CandidateSet from numpy arrays whose axes are named by the caller.

    Parameters
    ----------
    footprints : array-like
        3-D footprints, any axis order named by ``dims``.
    traces : array-like
        2-D traces, any axis order named by ``trace_dims``.
    dims : sequence of str
        Names of the footprint axes, a permutation of ``("candidate", "y", "x")``.
    trace_dims : sequence of str
        Names of the trace axes, a permutation of ``("candidate", "time")``.
    movie : array-like, optional
        The movie, axes named by ``movie_dims``; kept lazy (a dask array is not loaded).
    movie_dims : sequence of str
        A permutation of ``("time", "y", "x")``.
    **kwargs
        Passed to :func:`actsort_nb.candidates.candidate_set` (``frame_rate``,
        ``summary_images``, ``ids``, ``candidate_vars``, ``source`` ...).

    Returns
    -------
    xarray.Dataset
        The CandidateSet.

    Examples
    --------
    >>> import numpy as np
    >>> S = np.zeros((8, 6, 2), np.float32); S[1, 1, 0] = 1; S[5, 4, 1] = 1   # MATLAB [H W N]
    >>> T = np.ones((40, 2), np.float32)                                       # [T N]
    >>> ds = from_arrays(S, T, dims=("y", "x", "candidate"), trace_dims=("time", "candidate"))
    >>> dict(ds.sizes)
    {'candidate': 2, 'y': 8, 'x': 6, 'time': 40}
    """
    fp = footprints if hasattr(footprints, "transpose") and hasattr(footprints, "shape") else np.asarray(footprints)
    tr = traces if hasattr(traces, "transpose") and hasattr(traces, "shape") else np.asarray(traces)
    fp = fp.transpose(_order(dims, FOOTPRINT_DIMS, "footprints", fp.shape))
    tr = tr.transpose(_order(trace_dims, TRACE_DIMS, "traces", tr.shape))
    if movie is not None:
        if isinstance(movie, xr.DataArray):
            movie = movie.transpose(*MOVIE_DIMS).data
        else:
            mv = movie if hasattr(movie, "transpose") and hasattr(movie, "shape") else np.asarray(movie)
            movie = mv.transpose(_order(movie_dims, MOVIE_DIMS, "movie", mv.shape))
    kwargs.setdefault("source_format", "arrays")
    return candidate_set(fp, np.asarray(tr), movie=movie, **kwargs)
