"""Pre-processing: one streaming pass from a movie + candidates to a compact sort set.

``preprocess(candidates)`` finds each candidate's top events in its trace
(:mod:`.events`), picks one fixed crop size and a crop per candidate (:mod:`.crops`),
streams the movie once in time chunks gathering every snapshot clip and the max,
mean and local-correlation images (:mod:`.stream`), quantises the clips to uint8,
adds the 76 features (:mod:`actsort_nb.features`) and optionally writes the result
as an HDF5 sort set (:mod:`.sortset`) that :func:`open_sortset` reopens lazily; with an
output file the pass saves its progress and an interrupted run resumes (:mod:`.checkpoint`).
"""
from __future__ import annotations

import errno
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import nullcontext

import numpy as np
import xarray as xr

from .._memory import release_free_memory
from .._validation import InputError, check_int
from .checkpoint import checkpoint_path
from .crops import MARGIN, boundary_mask, crop_footprints, crop_origins, crop_size
from .events import EDGE_FRAMES, N_EVENTS, top_events
from .sortset import (
    SORTSET_SCHEMA,
    SortsetWriter,
    check_trace_step,
    open_sortset,
    write_sortset,
)
from .stream import CLIP_HALF, prefetch, quantise_snapshots, stream

__all__ = [
    "SORTSET_SCHEMA",
    "add_features",
    "boundary_mask",
    "crop_footprints",
    "crop_origins",
    "crop_size",
    "first_run",
    "open_sortset",
    "preprocess",
    "top_events",
    "write_sortset",
]


def _inputs(candidates: xr.Dataset, movie) -> dict[str, str]:
    """The files this run reads, by role: the extraction output and the movie (where known)."""
    from .stream import _array_source

    found = {"extraction output": str(candidates.attrs.get("source") or ""),
             "movie": str(candidates["movie"].attrs.get("source") or "")}
    source = _array_source(movie)
    if source is not None and not isinstance(source, np.ndarray) and not found["movie"]:
        found["movie"] = str(getattr(source.file, "filename", "") or "")
    return {role: path for role, path in found.items() if path}


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is "no space left on device"."""
    while exc is not None:
        if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc) or "errno = 28" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def first_run() -> bool:
    """Whether the pass's compiled kernels are not in numba's cache yet (the first run after installing).

    That run compiles them (~40 s on 2 cores with the features); numba caches them for
    the next ones. False where this cannot be told (numba's cache layout is not public).
    """
    try:
        from ._kernels import _chunk_moments

        return not os.path.exists(_chunk_moments._cache._cache_file._index_path)
    except Exception:  # noqa: BLE001 - no note rather than an error
        return False


def _check_out(out, candidates: xr.Dataset, movie) -> None:
    """Refuse an output path that is one of the run's inputs (writing it would replace that file)."""
    target = os.path.realpath(out)
    for role, path in _inputs(candidates, movie).items():
        if os.path.realpath(path) == target:
            stem = os.path.splitext(os.path.basename(os.fspath(out)))[0]
            raise InputError(
                f"{out} is this run's {role}; writing the sort set there would replace it: choose another "
                f"output file, e.g. {stem}_sortset.h5."
            )


def add_features(sortset: xr.Dataset) -> xr.Dataset:
    """Add ``features(candidate, feature)`` (float32, finite) from :mod:`actsort_nb.features`.

    This is the one place the pre-processing calls the feature engine.

    Parameters
    ----------
    sortset : xarray.Dataset
        A sort set without (or with stale) features.

    Returns
    -------
    xarray.Dataset
        The same dataset with ``features`` and the ``feature`` coordinate.
    """
    from ..features import compute_features

    feats = compute_features(sortset)
    values = np.asarray(feats.transpose("candidate", "feature").values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise RuntimeError(
            "the feature engine returned NaN/inf values; this is a bug in actsort_nb.features, please report it."
        )
    sortset = sortset.drop_vars(["features", "feature"], errors="ignore")
    sortset = sortset.assign_coords(feature=[str(s) for s in feats["feature"].values])
    sortset["features"] = (("candidate", "feature"), values)
    return sortset


def preprocess(
    candidates: xr.Dataset,
    *,
    out: str | os.PathLike | None = None,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    chunk_frames: int | None = None,
    crop: int | None = None,
    progress: bool = True,
    features: bool = True,
    trace_step: float | None = None,
) -> xr.Dataset:
    """Turn a CandidateSet with its movie into a sort set, in one pass over the movie.

    Parameters
    ----------
    candidates : xarray.Dataset
        A CandidateSet with ``footprints``, ``traces`` and a lazy ``movie``.
    out : str or PathLike, optional
        Write the sort set here (HDF5, replaced atomically once complete; its folder
        is checked before the pass, and the traces are written while the pass runs).
        The pass saves its progress beside it every minute (``.<name>.pass.h5``); a
        rerun after an interruption resumes from there (:mod:`.checkpoint`).
    client : dask.distributed.Client, optional
        Spread the time chunks over this cluster's workers.
    scheduler : str, optional
        A dask scheduler name instead (``"threads"``, ``"processes"``, ``"synchronous"``).
    workers : int, optional
        Threads of the default local executor (default: up to 2).
    chunk_frames : int, optional
        Frames per time chunk; default keeps the reader's chunks or uses ~32 MB chunks.
        Memory is bounded by the chunk size, not by the movie's length.
    crop : int, optional
        Crop side in pixels; default from the footprints' extents (:func:`crop_size`).
    progress : bool
        Show a tqdm progress bar.
    features : bool
        Compute the 76 features (``features(candidate, feature)``).
    trace_step : float, optional
        With ``out``: store each trace to this fraction of its noise s.d.
        (default 1/2: error 0.14 σ RMS; ``0``: 1/65,535 of its range, ~4× the
        bytes; see :func:`write_sortset`). The features are computed from the
        full-precision traces either way.

    Returns
    -------
    xarray.Dataset
        The sort set: the CandidateSet (movie kept lazily, never saved) plus
        ``event_frame``, ``snapshots``, ``snapshot_scale``, ``snapshot_offset``,
        ``crop_origin``, ``crop_footprint``, ``max_image``, ``mean_image``,
        ``corr_image`` and, with ``features=True``, ``features``.

    Examples
    --------
    >>> import numpy as np
    >>> from actsort_nb import candidate_set
    >>> rng = np.random.default_rng(0)
    >>> fp = np.zeros((2, 40, 40), np.float32); fp[0, 5:10, 5:10] = 1; fp[1, 25:31, 20:26] = 1
    >>> ds = candidate_set(fp, rng.random((2, 120)), movie=rng.random((120, 40, 40)).astype(np.float32))
    >>> ss = preprocess(ds, progress=False, features=False)
    >>> ss.snapshots.dims, ss.snapshots.dtype
    (('candidate', 'event', 'frame', 'cy', 'cx'), dtype('uint8'))
    """
    if not isinstance(candidates, xr.Dataset):
        raise InputError(
            f"preprocess needs a CandidateSet (xarray.Dataset), got {type(candidates).__name__}; "
            "build one with actsort_nb.io.open_candidates()."
        )
    if "movie" not in candidates.variables:
        raise InputError(
            "this CandidateSet has no movie, which pre-processing streams; open it with "
            "actsort_nb.io.open_candidates(path, movie=MOVIE)."
        )
    candidates.actsort.require("footprints", "traces")
    fov = candidates.actsort.fov_shape
    n = candidates.actsort.n_candidates
    if n == 0:
        raise InputError("this CandidateSet has no candidates; there is nothing to pre-process.")
    check_trace_step(trace_step)  # before the pass, not after it
    n_t = candidates.sizes["time"]
    if features and n_t < 3:
        raise InputError(f"the recording has {n_t} frames; the temporal features need at least 3: pass features=False "
                         "(CLI: --no-features) or a longer recording.")
    if n_t <= 2 * EDGE_FRAMES:
        warnings.warn(f"the recording has only {n_t} frames: ActSort's event rule ignores the first and last "
                      f"{EDGE_FRAMES}, so every candidate's events are frame 0.", stacklevel=2)
    if progress and first_run():
        print("actsort_nb: the first run after installing compiles the kernels (about 40 s, once; numba caches "
              "them for later runs).", file=sys.stderr, flush=True)
    fp = candidates.actsort.footprints_coo()
    traces = candidates["traces"].transpose("candidate", "time").data
    movie = candidates["movie"].transpose("time", "y", "x").data

    if workers is not None:
        check_int(workers, "workers", 1)
    if crop is not None:
        check_int(crop, "crop", 1)
    if out is not None:
        _check_out(out, candidates, movie)
    writer = SortsetWriter(out, trace_step=trace_step) if out is not None else None  # a bad path fails now
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="actsort-write")
    early = None
    try:
        t0 = time.perf_counter()
        with prefetch(movie) if client is None and scheduler is None else nullcontext():
            event_frame = top_events(traces)  # the disk reads the movie's start meanwhile (see prefetch)
        side = int(crop) if crop is not None else crop_size(fp, fov)
        origins = crop_origins(candidates.actsort.centers(), side, fov)
        if writer is not None:  # the traces are written while the pass runs (its threads wait on the disk at times)
            early = pool.submit(writer.add, "traces", candidates["traces"].variable)
        t1 = time.perf_counter()
        result = stream(
            movie,
            event_frame,
            origins,
            side,
            client=client,
            scheduler=scheduler,
            workers=workers,
            chunk_frames=chunk_frames,
            progress=progress,
            checkpoint=None if out is None else checkpoint_path(out),
        )
        t2 = time.perf_counter()
        if early is not None:
            early.result()  # done by now, unless the pass was quicker than the traces' encoding
        t3 = time.perf_counter()
        snapshots, scale, offset = quantise_snapshots(result, event_frame)

        ds = candidates.drop_vars(["max_image", "mean_image", "corr_image"], errors="ignore")
        ds = ds.assign_coords(corner=["y", "x"])
        ds["event_frame"] = (("candidate", "event"), event_frame)
        ds["snapshots"] = (("candidate", "event", "frame", "cy", "cx"), snapshots)
        ds["snapshot_scale"] = (("candidate",), scale)
        ds["snapshot_offset"] = (("candidate",), offset)
        ds["crop_origin"] = (("candidate", "corner"), origins)
        ds["crop_footprint"] = (("candidate", "cy", "cx"), crop_footprints(fp, origins, side))
        ds["max_image"] = (("y", "x"), result.max_image)
        ds["mean_image"] = (("y", "x"), result.mean_image)
        ds["corr_image"] = (("y", "x"), result.corr_image)
        ds.attrs.update(
            sortset_schema=SORTSET_SCHEMA,
            crop_size=side,
            crop_margin=MARGIN,
            clip_half=CLIP_HALF,
            n_events=N_EVENTS,
            seconds_events=round(t1 - t0, 3),
            seconds_stream=round(t2 - t1, 3),
            seconds_quantise=round(time.perf_counter() - t3, 3),
        )
        release_free_memory()  # the pass's temporaries, before the features or the write
        if features:
            try:
                ds = add_features(ds)
            except ImportError as exc:  # the feature engine is an optional part of a partial install
                warnings.warn(
                    f"features were not computed ({exc}); call add_features(sortset) once actsort_nb.features is installed.",
                    stacklevel=2,
                )
        if writer is not None:
            writer.finish(ds)
            checkpoint_path(out).unlink(missing_ok=True)  # the pass's progress is in the sort set now
            ds.attrs["sortset_path"] = str(out)  # as open_sortset gives it: the same default label log
    except BaseException as exc:
        if early is not None:
            early.cancel()
            wait([early])  # the writer is this thread's again
        if writer is not None:
            writer.abort()
        if isinstance(exc, OSError) and writer is not None and _disk_full(exc):
            raise InputError(
                f"{out}: no space left on the disk of {os.path.dirname(os.path.abspath(out))} while writing the sort "
                "set (nothing was written there); free some space or choose another folder, then run again."
            ) from exc
        raise
    finally:
        pool.shutdown()
    return ds
