"""The feature engine: ActSort's 76 features, vectorised, named, always finite.

``compute_features(ds)`` turns a CandidateSet (temporal + spatial features) or a
sort set (all three groups) into ``features(candidate, feature)``, float32,
addressed by the stable names of :mod:`.registry`:

* :mod:`.temporal` — features 1–36 from the traces,
* :mod:`.spatial` — features 37–46 from the footprints (sparse, never dense),
* :mod:`.spatiotemporal` — features 47–76 from the event snapshots of a sort set.

Every function documents where it departs from ActSort and why (mixed units in the
event metrics, offsets, NaN means, the costly ε estimator, …).

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

import numpy as np
import xarray as xr

from .._validation import InputError, check_option
from .registry import FEATURE_GROUPS, FEATURE_NAMES, FEATURES
from .spatial import SPATIAL_NAMES, spatial_features
from .spatiotemporal import SPATIOTEMPORAL_NAMES, spatiotemporal_features, trace_snippets
from .temporal import TEMPORAL_NAMES, noise_level, temporal_features

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


def _spatiotemporal_from_sortset(ds: xr.Dataset, traces: np.ndarray, block: int) -> np.ndarray:
    n = ds.sizes["candidate"]
    n_f = int(ds.sizes["frame"])
    ev_all = np.asarray(ds["event_frame"].transpose("candidate", "event").values)
    sigma = noise_level(traces)
    out = np.zeros((n, len(SPATIOTEMPORAL_NAMES)), np.float32)
    snaps = ds["snapshots"].transpose("candidate", "event", "frame", "cy", "cx")
    fp = ds["crop_footprint"].transpose("candidate", "cy", "cx")
    for s in range(0, n, block):
        sl = slice(s, min(n, s + block))
        q = np.asarray(snaps[sl].values)
        scale = np.asarray(ds["snapshot_scale"][sl].values, np.float32)
        offset = np.asarray(ds["snapshot_offset"][sl].values, np.float32)
        clips = q.astype(np.float32) * scale[:, None, None, None, None] + offset[:, None, None, None, None]
        ev = ev_all[sl]
        snip = trace_snippets(traces[sl], ev, n_f)
        out[sl] = spatiotemporal_features(np.asarray(fp[sl].values), clips, snip, ev, trace_noise=sigma[sl])
    return out


def compute_features(
    ds: xr.Dataset,
    *,
    groups: Sequence[str] = GROUPS,
    block: int = 1024,
) -> xr.DataArray:
    """Compute the ActSort features of a CandidateSet or sort set.

    Parameters
    ----------
    ds : xarray.Dataset
        A CandidateSet (``footprints``, ``traces``) or a sort set, which also has
        the snapshot variables (``snapshots``, ``snapshot_scale``,
        ``snapshot_offset``, ``crop_footprint``, ``event_frame``).
    groups : sequence of str
        Which feature groups to compute, among ``"temporal"``, ``"spatial"``,
        ``"spatiotemporal"``. A requested group whose inputs are absent (the
        spatiotemporal group of a CandidateSet without snapshots) is skipped and
        listed in ``attrs["missing_groups"]``.
    block : int
        Candidates per block when reading snapshots (bounds memory).

    Returns
    -------
    xarray.DataArray
        ``features(candidate, feature)`` float32, finite, with the registry names
        (in registry order) as the ``feature`` coordinate, a ``group`` coordinate
        along ``feature``, and ``attrs`` ``groups`` (computed), ``missing_groups``
        and ``note``.

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
    groups = list(groups)
    if not groups:
        raise InputError(f"groups is empty; pass one or more of {list(GROUPS)}.")
    for g in groups:
        check_option(g, "groups", GROUPS)
    if block < 1:
        raise InputError(f"block must be a positive number of candidates, got {block}.")
    ds.actsort.require("traces")
    traces = np.asarray(ds["traces"].transpose("candidate", "time").values, dtype=np.float32)

    blocks: dict[str, np.ndarray] = {}
    missing: list[str] = []
    if "temporal" in groups:
        blocks["temporal"] = temporal_features(traces)
    if "spatial" in groups:
        ds.actsort.require("footprints")
        blocks["spatial"] = spatial_features(ds.actsort.footprints_csr(), ds.actsort.fov_shape)
    if "spatiotemporal" in groups:
        if all(v in ds.variables for v in SNAPSHOT_VARS):
            blocks["spatiotemporal"] = _spatiotemporal_from_sortset(ds, traces, block)
        else:
            missing.append("spatiotemporal")
    done = [g for g in GROUPS if g in blocks]
    names = [n for g in done for n in _NAMES[g]]
    values = np.concatenate([blocks[g] for g in done], axis=1) if done else np.zeros((traces.shape[0], 0), np.float32)
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
