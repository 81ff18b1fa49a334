"""The feature engine: ActSort's 76 features, vectorised, named, always finite.

``compute_features(ds)`` turns a CandidateSet (temporal + spatial features) or a
sort set (all three groups) into ``features(candidate, feature)``, float32,
addressed by the stable names of :mod:`.registry`:

* :mod:`.temporal` — features 1–36 from the traces,
* :mod:`.spatial` — features 37–46 from the footprints (sparse, never dense),
* :mod:`.spatiotemporal` — features 47–76 from the event snapshots of a sort set.

Every function documents where it departs from ActSort and why (mixed units in the
event metrics, offsets, NaN means, the costly ε estimator, …).

Speed: each input variable is read once, in blocks of candidates; the per-trace
and per-clip loops are compiled (numba, ``_*_kernels.py``) and run over blocks in
a few threads; feature 35 bounds most trace pairs instead of correlating them
(:mod:`._similarity`); the spatial group runs beside the others. 10,000
candidates × 8,192 frames take a few seconds on two cores.

NaN and inf never leave this module. Each feature has a *defined* value for the
cases where ActSort's formula is undefined (no events → spacing = trace length,
no overlap → correlation 0, …), chosen inside the feature code; :func:`sanitize`
is the last guard and replaces anything non-finite that might still appear with
the feature's fixed fallback (NaN) or the column's finite extreme (±inf), and
warns. ActSort instead replaces NaN with the column mean (so one candidate's
feature depends on all the others, and changes when candidates are added) and
inf with 10× the finite maximum (an outlier that dominates z-scoring).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import xarray as xr

from .._memory import release_free_memory
from .._validation import InputError, check_int, check_option
from ._parallel import default_workers
from .registry import FEATURE_GROUPS, FEATURE_NAMES, FEATURES
from .spatial import SPATIAL_NAMES, spatial_features
from .spatiotemporal import (
    SPATIOTEMPORAL_NAMES,
    block_features,
    spatiotemporal_features,
    trace_snippets,
)
from .temporal import (
    TEMPORAL_NAMES,
    _as_traces,
    noise_level,
    temporal_and_noise,
    temporal_features,
)

__all__ = [
    "FALLBACKS",
    "FEATURE_GROUPS",
    "FEATURE_NAMES",
    "GROUPS",
    "compute_features",
    "describe_features",
    "sanitize",
    "spatial_features",
    "spatiotemporal_features",
    "temporal_features",
]

GROUPS: tuple[str, ...] = ("temporal", "spatial", "spatiotemporal")
_NAMES = {"temporal": TEMPORAL_NAMES, "spatial": SPATIAL_NAMES, "spatiotemporal": SPATIOTEMPORAL_NAMES}
#: Sort-set variables the spatiotemporal group reads.
SNAPSHOT_VARS = ("snapshots", "snapshot_scale", "snapshot_offset", "crop_footprint", "event_frame")

#: Value of each feature where it is undefined (used by :func:`sanitize` for NaN):
#: 0 ("nothing measured") except the axis ratio, whose neutral value is 1.
FALLBACKS: dict[str, float] = {name: 0.0 for name in FEATURE_NAMES}
FALLBACKS["eccentricity"] = 1.0


def sanitize(X, feature_names: Sequence[str] | None = None):
    """Return ``X`` as finite float32: NaN → the feature's fallback, ±inf → the column's finite extreme.

    Parameters
    ----------
    X : xarray.DataArray or array-like
        ``(candidate, feature)`` table. A DataArray is addressed by its
        ``feature`` coordinate; a plain array by ``feature_names`` (default: the
        registry order, which needs all 76 columns).
    feature_names : sequence of str, optional
        Names of the columns of a plain array.

    Returns
    -------
    xarray.DataArray or numpy.ndarray
        Same type and shape as the input, float32, finite. A DataArray gets the
        number of replaced values in ``attrs["n_sanitized"]``.

    Warns
    -----
    RuntimeWarning
        When any value had to be replaced (the feature code should not produce any).

    Examples
    --------
    >>> X = np.zeros((3, 76)); X[0, 0] = np.nan; X[1, 0] = np.inf; X[2, 0] = 5.0
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     sanitize(X)[:, 0].tolist()
    [0.0, 5.0, 5.0]
    """
    is_da = isinstance(X, xr.DataArray)
    if is_da:
        if "feature" not in X.dims or X.ndim != 2:
            raise InputError(f"sanitize needs a (candidate, feature) DataArray, got dims {X.dims}.")
        da_ = X.transpose(..., "feature")
        names = [str(s) for s in da_["feature"].values] if "feature" in da_.coords else None
        values = np.array(da_.values, dtype=np.float64)
    else:
        values = np.array(X, dtype=np.float64)
        if values.ndim != 2:
            raise InputError(f"sanitize needs a 2-D (candidate, feature) table, got shape {values.shape}.")
        names = list(feature_names) if feature_names is not None else None
    if names is None:
        if values.shape[1] != len(FEATURE_NAMES):
            raise InputError(
                f"a table with {values.shape[1]} columns needs feature_names (the registry has {len(FEATURE_NAMES)})."
            )
        names = list(FEATURE_NAMES)
    if len(names) != values.shape[1]:
        raise InputError(f"{values.shape[1]} columns but {len(names)} feature names; pass one name per column.")
    fallback = np.array([FALLBACKS.get(n, 0.0) for n in names])
    nan = np.isnan(values)
    pos = np.isposinf(values)
    neg = np.isneginf(values)
    finite = np.isfinite(values)
    big = np.finfo(np.float32).max
    values = np.clip(values, -big, big, where=finite, out=values)  # float32-representable
    n_bad = int(nan.sum() + pos.sum() + neg.sum())
    if n_bad:
        with np.errstate(all="ignore"):
            hi = np.where(finite.any(axis=0), np.where(finite, values, -np.inf).max(axis=0), fallback)
            lo = np.where(finite.any(axis=0), np.where(finite, values, np.inf).min(axis=0), fallback)
        values = np.where(nan, fallback[None, :], values)
        values = np.where(pos, hi[None, :], values)
        values = np.where(neg, lo[None, :], values)
        bad_cols = sorted({names[j] for j in np.flatnonzero((nan | pos | neg).any(axis=0))})
        warnings.warn(
            f"sanitize replaced {n_bad} non-finite feature value(s) in {', '.join(bad_cols[:6])}"
            + (" ..." if len(bad_cols) > 6 else ""),
            RuntimeWarning,
            stacklevel=2,
        )
    out = values.astype(np.float32)
    if is_da:
        res = da_.copy(data=out)
        res.attrs = dict(X.attrs, n_sanitized=n_bad)
        return res.transpose(*X.dims)
    return out


def describe_features(group: str | None = None):
    """The feature table: number (ActSort's 1-based column), name, group and description.

    Parameters
    ----------
    group : str, optional
        Keep only ``"temporal"``, ``"spatial"`` or ``"spatiotemporal"``.

    Returns
    -------
    pandas.DataFrame
        Indexed by the 1-based ActSort feature number.

    Examples
    --------
    >>> describe_features().loc[1, "name"]
    'snr'
    >>> len(describe_features("spatial"))
    10
    """
    import pandas as pd

    df = pd.DataFrame(
        [(i + 1, f.name, f.group, f.description) for i, f in enumerate(FEATURES)],
        columns=["number", "name", "group", "description"],
    ).set_index("number")
    if group is not None:
        check_option(group, "group", GROUPS)
        df = df[df["group"] == group]
    return df


def _read(var: xr.DataArray, sl: slice | None = None) -> np.ndarray:
    """The values of ``var[sl]`` (along ``candidate``) as numpy: one read, in large blocks if lazy."""
    return np.asarray((var if sl is None else var.isel(candidate=sl)).values)


class _TraceRows:
    """``(candidate, time)`` traces read on demand, float32 and checked, never held whole.

    ``rows[a:b]`` reads a block of candidates. The feature passes read in blocks
    (feature 35 too: it picks the rows it needs out of each block), so memory
    follows the block size, not the number of candidates times the movie's length.
    """

    def __init__(self, var: xr.DataArray):
        self._var = var.transpose("candidate", "time")
        self.shape = (int(self._var.sizes["candidate"]), int(self._var.sizes["time"]))
        self.ndim = 2
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, sl: slice) -> np.ndarray:
        rows = _as_traces(_read(self._var, sl))
        try:
            with np.errstate(over="raise"):
                return rows.astype(np.float32, copy=False)
        except FloatingPointError:  # as candidate_set refuses them
            raise InputError(
                f"traces exceed the float32 range (|value| up to {np.abs(rows).max():.3g}); rescale them first."
            ) from None


def _spatial(ds: xr.Dataset) -> np.ndarray:
    return spatial_features(ds.actsort.footprints_csr(), ds.actsort.fov_shape)


def _spatiotemporal_from_sortset(
    ds: xr.Dataset, traces: np.ndarray, sigma: np.ndarray, block: int, workers: int
) -> np.ndarray:
    """Features 47–76 of a sort set, block by block: this thread reads, ``workers`` threads compute."""
    n = ds.sizes["candidate"]
    n_f = int(ds.sizes["frame"])
    ev_all = _read(ds["event_frame"].transpose("candidate", "event"))
    scale_all = _read(ds["snapshot_scale"]).astype(np.float32)
    offset_all = _read(ds["snapshot_offset"]).astype(np.float32)
    snaps = ds["snapshots"].transpose("candidate", "event", "frame", "cy", "cx")
    fp = ds["crop_footprint"].transpose("candidate", "cy", "cx")
    out = np.zeros((n, len(SPATIOTEMPORAL_NAMES)), np.float32)

    def run(sl: slice, q: np.ndarray, a: np.ndarray) -> None:
        ev = ev_all[sl]
        snip = trace_snippets(traces[sl], ev, n_f)
        out[sl] = block_features(a, q, scale_all[sl], offset_all[sl], snip, ev, sigma[sl])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list = []
        for s in range(0, n, block):
            sl = slice(s, min(n, s + block))
            pending.append(pool.submit(run, sl, _read(snaps, sl), _read(fp, sl)))
            while len(pending) > workers:  # at most workers + 1 blocks in memory
                pending.pop(0).result()
        for f in pending:
            f.result()
    return out


def compute_features(
    ds: xr.Dataset,
    *,
    groups: Sequence[str] | None = None,
    block: int = 512,
    workers: int | None = None,
) -> xr.DataArray:
    """Compute the ActSort features of a CandidateSet or sort set.

    Parameters
    ----------
    ds : xarray.Dataset
        A CandidateSet (``footprints``, ``traces``) or a sort set, which also has
        the snapshot variables (``snapshots``, ``snapshot_scale``,
        ``snapshot_offset``, ``crop_footprint``, ``event_frame``).
    groups : sequence of str, optional
        Which feature groups to compute, among ``"temporal"``, ``"spatial"``,
        ``"spatiotemporal"``. By default all of them, skipping (and listing in
        ``attrs["missing_groups"]``) the spatiotemporal group of a CandidateSet
        without snapshots. A group asked for by name that cannot be computed is
        skipped with a warning, or raises :class:`InputError` if no other is left.
    block : int
        Candidates per block when reading snapshots (bounds memory).
    workers : int, optional
        Threads computing blocks of candidates (default: up to 2). Each variable
        is read once, in blocks of ``block`` candidates, by the calling thread.

    Returns
    -------
    xarray.DataArray
        ``features(candidate, feature)`` float32, finite, with the registry names
        (in registry order) as the ``feature`` coordinate, a ``group`` coordinate
        along ``feature``, and ``attrs`` ``groups`` (computed), ``missing_groups``
        and ``note``.

    Warns
    -----
    UserWarning
        When some of the groups asked for by name were skipped (see ``groups``).

    Examples
    --------
    >>> from actsort_nb.synthetic import simulate_recording
    >>> ds = simulate_recording(n_cells=6, shape=(48, 48), n_frames=200, seed=0)
    >>> f = compute_features(ds)
    >>> f.dims, f.sizes["feature"], f.attrs["missing_groups"]
    (('candidate', 'feature'), 46, ['spatiotemporal'])
    """
    if not isinstance(ds, xr.Dataset):
        raise InputError(
            f"compute_features needs a CandidateSet or sort set (xarray.Dataset), got {type(ds).__name__}."
        )
    explicit = groups is not None
    groups = list(GROUPS) if groups is None else [groups] if isinstance(groups, str) else list(groups)
    if not groups:
        raise InputError(f"groups is empty; pass one or more of {list(GROUPS)}.")
    for g in groups:
        check_option(g, "groups", GROUPS)
    block = check_int(block, "block", 1)
    workers = default_workers() if workers is None else check_int(workers, "workers", 1)
    blocks: dict[str, np.ndarray] = {}
    missing: list[str] = []
    st_inputs = all(v in ds.variables for v in SNAPSHOT_VARS)
    if "spatiotemporal" in groups and not st_inputs:
        missing.append("spatiotemporal")
        if explicit and set(groups) <= {"spatiotemporal"}:
            raise InputError(
                "the spatiotemporal features need the event snapshots of a sort set, which this dataset lacks; "
                "run actsort_nb.preprocess.preprocess(candidates) first, or ask for groups=['temporal', 'spatial']."
            )
    need_traces = "temporal" in groups or ("spatiotemporal" in groups and st_inputs)
    if need_traces:
        ds.actsort.require("traces")
    if "spatial" in groups:
        ds.actsort.require("footprints")
    if explicit and missing:
        warnings.warn(
            "skipping the spatiotemporal features: they need the event snapshots of a sort set "
            "(actsort_nb.preprocess.preprocess), which this dataset lacks.",
            stacklevel=2,
        )
    release_free_memory()  # what the caller freed (e.g. a writer's buffers) is not our peak
    with ThreadPoolExecutor(max_workers=1) as side:
        # the spatial group is mostly numpy on one core: with threads to spare it runs beside the rest
        spatial = None
        if "spatial" in groups and workers > 1:
            spatial = side.submit(_spatial, ds)
        if need_traces:
            traces = _TraceRows(ds["traces"])
            _ = traces[:0]  # checks the shape (at least 3 time points) before any work
        if "temporal" in groups:
            blocks["temporal"], sigma = temporal_and_noise(traces, workers=workers)
        if "spatiotemporal" in groups and st_inputs:
            if "temporal" not in groups:
                sigma = noise_level(traces)
            blocks["spatiotemporal"] = _spatiotemporal_from_sortset(ds, traces, sigma, block, workers)
        if "spatial" in groups:
            blocks["spatial"] = _spatial(ds) if spatial is None else spatial.result()
    done = [g for g in GROUPS if g in blocks]
    names = [n for g in done for n in _NAMES[g]]
    n = ds.sizes["candidate"]
    values = np.concatenate([blocks[g] for g in done], axis=1) if done else np.zeros((n, 0), np.float32)
    note = (
        "spatiotemporal features need the event snapshots of a sort set (actsort_nb.preprocess.preprocess); "
        "they were not computed"
        if missing
        else ""
    )
    out = xr.DataArray(
        values,
        dims=("candidate", "feature"),
        coords={
            "candidate": ds["candidate"].values,
            "feature": names,
            "group": ("feature", [FEATURE_GROUPS[FEATURE_NAMES.index(n)] for n in names]),
        },
        name="features",
        attrs={"groups": done, "missing_groups": missing, "note": note},
    )
    return sanitize(out)
