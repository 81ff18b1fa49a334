"""What the browser receives: one candidate at a time, and a compact field-of-view map.

Arrays travel as ``{"shape", "dtype", "data"}`` dicts whose ``data`` is ``bytes``;
anywidget lifts nested bytes out of a dict trait into binary websocket buffers,
so the ES module reads them as a ``DataView`` (never base64, never JSON lists).
Nothing here touches more than one candidate's crop, trace and clips, except
:func:`fov_map`, which summarises every candidate in a few bytes each.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse
import xarray as xr
from scipy.spatial import cKDTree

from .._validation import InputError, did_you_mean

__all__ = ["SORTSET_VARS", "CandidateSource", "array_payload", "fov_map", "map_state"]

#: Variables of the sort-set contract (CONTRIBUTING.md) that the panel reads.
SORTSET_VARS = (
    "features",
    "event_frame",
    "snapshots",
    "snapshot_scale",
    "snapshot_offset",
    "crop_origin",
    "crop_footprint",
    "traces",
    "footprints",
)
SUMMARY_NAMES = ("max_image", "mean_image", "corr_image")
_DTYPES = {"uint8", "int8", "int16", "uint16", "int32", "float32"}


def array_payload(values: np.ndarray, dtype: str | np.dtype | None = None) -> dict[str, Any]:
    """Pack an array as ``{"shape", "dtype", "data"}`` with little-endian, C-ordered bytes.

    Parameters
    ----------
    values : array-like
        The array to send.
    dtype : str or numpy dtype, optional
        Cast to this dtype first (one of uint8, int8, int16, uint16, int32, float32).

    Returns
    -------
    dict
        ``shape`` (list of int), ``dtype`` (str) and ``data`` (bytes).

    Examples
    --------
    >>> p = array_payload(np.arange(6).reshape(2, 3), "int16")
    >>> p["shape"], p["dtype"], len(p["data"])
    ([2, 3], 'int16', 12)
    """
    arr = np.asarray(values)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    name = arr.dtype.name
    if name not in _DTYPES:
        raise InputError(f"cannot send an array of dtype {name} to the browser; cast it to one of {sorted(_DTYPES)}.")
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
    return {"shape": [int(s) for s in arr.shape], "dtype": name, "data": arr.tobytes()}


def _require(ds: xr.Dataset, names) -> None:
    for name in names:
        if name not in ds.variables:
            fix = (
                "add them with actsort_nb.preprocess.add_features(sortset)"
                if name == "features"
                else "run actsort_nb.preprocess.preprocess(candidates) first"
            )
            raise InputError(
                f"the sort set has no variable {name!r}, which the labelling panel needs; {fix}."
                f"{did_you_mean(name, list(ds.data_vars))}"
            )


def _summary_images(ds: xr.Dataset) -> dict[str, np.ndarray]:
    h, w = int(ds.sizes["y"]), int(ds.sizes["x"])
    out = {}
    for name in SUMMARY_NAMES:
        if name in ds.variables:
            out[name] = np.asarray(ds[name].transpose("y", "x").values, dtype=np.float32)
    if not out:
        raise InputError(
            "the sort set has none of max_image, mean_image, corr_image; the panel needs one summary image "
            "to draw crops and the map (pre-processing computes them)."
        )
    for name in SUMMARY_NAMES:  # keep three layers so the browser's selector always works
        out.setdefault(name, next(iter(out.values())) if name != "corr_image" else np.zeros((h, w), np.float32))
    return out


def _footprints_csr(ds: xr.Dataset) -> scipy.sparse.csr_matrix:
    return ds.actsort.footprints_csr()


def _limits(values: np.ndarray, lo: float = 10.0, hi: float = 99.9) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [0.0, 1.0]
    a, b = np.percentile(finite, [lo, hi])
    if not b > a:
        b = a + 1.0
    return [float(a), float(b)]


class CandidateSource:
    """Builds the browser payload of one candidate from a sort set.

    Parameters
    ----------
    sortset : xarray.Dataset
        A sort set (CONTRIBUTING.md), in memory or lazily opened from HDF5.
    threshold_mask : float
        A footprint pixel belongs to a candidate's outline when its value is at least
        this fraction of the candidate's peak.

    Examples
    --------
    >>> from actsort_nb.synthetic import simulate_recording
    >>> from actsort_nb.preprocess import preprocess
    >>> sortset = preprocess(simulate_recording(n_cells=5, shape=(48, 48), n_frames=100, seed=0), progress=False)
    >>> src = CandidateSource(sortset)
    >>> p = src.payload(0, p_cell=0.7, threshold=0.5, label=-1)
    >>> p["snapshots"]["dtype"], p["snapshots"]["shape"][:2], type(p["snapshots"]["data"]).__name__
    ('uint8', [5, 11], 'bytes')
    """

    def __init__(self, sortset: xr.Dataset, *, threshold_mask: float = 0.2):
        _require(sortset, SORTSET_VARS)
        self.ds = sortset
        self.n = int(sortset.sizes["candidate"])
        self.ids = np.asarray(sortset["candidate"].values)
        self.id_strings = [str(v) for v in self.ids.tolist()]
        self._index_of = {s: i for i, s in enumerate(self.id_strings)}
        self.fov_shape = (int(sortset.sizes["y"]), int(sortset.sizes["x"]))
        self.images = _summary_images(sortset)
        self.stack = np.stack([self.images[k] for k in SUMMARY_NAMES])  # (3, y, x)
        self.origin = np.asarray(sortset["crop_origin"].transpose("candidate", "corner").values, dtype=np.int64)
        self.event_frame = np.asarray(sortset["event_frame"].transpose("candidate", "event").values, dtype=np.int64)
        self.scale = np.asarray(sortset["snapshot_scale"].values, dtype=np.float32)
        self.offset = np.asarray(sortset["snapshot_offset"].values, dtype=np.float32)
        self.crop_shape = (int(sortset.sizes["cy"]), int(sortset.sizes["cx"]))
        rate = float(sortset.attrs.get("frame_rate", float("nan")))
        self.frame_rate = rate if np.isfinite(rate) and rate > 0 else float("nan")
        csr = _footprints_csr(sortset)
        self.csr = csr
        row_max = np.maximum.reduceat(csr.data, csr.indptr[:-1]) if csr.nnz else np.zeros(self.n)
        row_max = np.where(np.diff(csr.indptr) > 0, row_max, 1.0)
        self.row_max = row_max.astype(np.float32)
        self.threshold_mask = float(threshold_mask)
        self.centers = sortset.actsort.centers()
        self.tree = cKDTree(self.centers)
        self._reach = 0.5 * float(np.hypot(*self.crop_shape)) + 12.0

    def index_of(self, candidate_id: str | int) -> int:
        """Index of the candidate whose id (the ``candidate`` coordinate) is ``candidate_id``."""
        key = str(candidate_id).strip()
        if key not in self._index_of:
            raise InputError(
                f"no candidate has id {key!r}; ids run from {self.id_strings[0]} to {self.id_strings[-1]}."
            )
        return self._index_of[key]

    def _crop(self, img: np.ndarray, y0: int, x0: int) -> np.ndarray:
        cy, cx = self.crop_shape
        h, w = img.shape[-2:]
        out = np.zeros(img.shape[:-2] + (cy, cx), img.dtype)
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + cy, h), min(x0 + cx, w)
        if ye > ys and xe > xs:
            out[..., ys - y0 : ye - y0, xs - x0 : xe - x0] = img[..., ys:ye, xs:xe]
        return out

    def neighbours(self, i: int) -> tuple[np.ndarray, list[int]]:
        """Label map ``(cy, cx)`` int16 of other candidates' masks inside ``i``'s crop, and their indices."""
        cy, cx = self.crop_shape
        y0, x0 = (int(v) for v in self.origin[i])
        w = self.fov_shape[1]
        near = self.tree.query_ball_point(self.centers[i], self._reach)
        near = sorted(j for j in near if j != i)
        lab = np.zeros((cy, cx), np.int16)
        kept: list[int] = []
        for j in near:
            s, e = self.csr.indptr[j], self.csr.indptr[j + 1]
            cols, vals = self.csr.indices[s:e], self.csr.data[s:e]
            on = vals >= self.threshold_mask * self.row_max[j]
            py, px = cols[on] // w - y0, cols[on] % w - x0
            inside = (py >= 0) & (py < cy) & (px >= 0) & (px < cx)
            if inside.any():
                kept.append(j)
                lab[py[inside], px[inside]] = len(kept)
        return lab, kept

    def payload(
        self,
        i: int,
        *,
        p_cell: float,
        threshold: float,
        label: int,
        labels: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """The browser payload of candidate ``i`` (crops, clips, trace, neighbours, P(cell)).

        Parameters
        ----------
        i : int
            Candidate index (position along ``candidate``).
        p_cell : float
            The model's P(cell) for ``i`` (NaN before the first model).
        threshold : float
            The decision threshold on P(cell).
        label : int
            The human label of ``i``: 1 cell, 0 not a cell, -1 unlabelled.
        labels : numpy.ndarray, optional
            All human labels, to colour the neighbours' contours.

        Returns
        -------
        dict
            JSON-able metadata plus array payloads (see :func:`array_payload`).
        """
        i = int(i)
        ds = self.ds
        y0, x0 = (int(v) for v in self.origin[i])
        summary = self._crop(self.stack, y0, x0)
        snaps = np.asarray(ds["snapshots"].isel(candidate=i).transpose("event", "frame", "cy", "cx").values, dtype=np.uint8)
        fp = np.asarray(ds["crop_footprint"].isel(candidate=i).transpose("cy", "cx").values, dtype=np.float32)
        trace = np.asarray(ds["traces"].isel(candidate=i).values, dtype=np.float32)
        nb, kept = self.neighbours(i)
        ev = [int(v) for v in self.event_frame[i]]
        snap_lim = _limits(snaps[np.asarray(ev) >= 0].astype(np.float32), 1.0, 99.9) if snaps.size else [0.0, 255.0]
        nb_labels = [int(labels[j]) for j in kept] if labels is not None else [-1] * len(kept)
        return {
            "index": i,
            "id": self.id_strings[i],
            "p_cell": None if not np.isfinite(p_cell) else float(p_cell),
            "threshold": float(threshold),
            "label": int(label),
            "origin": [y0, x0],
            "center": [float(self.centers[i, 0]), float(self.centers[i, 1])],
            "summary": array_payload(summary, "float32"),
            "summary_limits": [_limits(s) for s in summary],
            "footprint": array_payload(fp, "float32"),
            "footprint_level": float(self.threshold_mask * max(float(fp.max()), 1e-12)),
            "neighbors": array_payload(nb, "int16"),
            "neighbor_ids": [self.id_strings[j] for j in kept],
            "neighbor_labels": nb_labels,
            "snapshots": array_payload(snaps, "uint8"),
            "snapshot_limits": snap_lim,
            "snapshot_scale": float(self.scale[i]),
            "snapshot_offset": float(self.offset[i]),
            "event_frame": ev,
            "trace": array_payload(trace, "float32"),
            "frame_rate": None if not np.isfinite(self.frame_rate) else self.frame_rate,
        }


def _quantise(img: np.ndarray) -> np.ndarray:
    lo, hi = _limits(img, 1.0, 99.9)
    return np.clip((img - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)


def fov_map(source: CandidateSource, *, n_rays: int = 16, max_side: int = 1024) -> dict[str, Any]:
    """Compact map of every candidate: centre and a star-shaped outline, plus the summary images.

    Each candidate costs ``4 + n_rays`` bytes: its centre as two int16 (pixels) and
    its outline as ``n_rays`` radii (uint8, quarter pixels) at equal angles, the
    largest distance of a mask pixel in that direction (ActSort's 20 % of peak rule).

    Parameters
    ----------
    source : CandidateSource
        The candidate source of the sort set.
    n_rays : int
        Directions per outline.
    max_side : int
        Summary images are block-averaged down to at most this many pixels per side.

    Returns
    -------
    dict
        ``fov_shape``, ``image_shape`` (the sent images' shape), ``images`` (uint8
        ``(3, h', w')``), ``centers`` (int16 ``(n, 2)``), ``radii`` (uint8
        ``(n, n_rays)``), ``ids`` (int32, when the ids are integers, else None) and
        ``id_range`` (the first and last id).
    """
    csr = source.csr
    h, w = source.fov_shape
    n = source.n
    rows = np.repeat(np.arange(n), np.diff(csr.indptr))
    on = csr.data >= source.threshold_mask * source.row_max[rows]
    rows, cols = rows[on], csr.indices[on]
    py, px = cols // w, cols % w
    c = source.centers
    dy, dx = py - c[rows, 0], px - c[rows, 1]
    ang = np.mod(np.arctan2(dy, dx), 2 * np.pi)
    k = np.minimum((ang / (2 * np.pi) * n_rays).astype(np.int64), n_rays - 1)
    dist = np.hypot(dy, dx) + 0.5
    radii = np.full(n * n_rays, 0.5)
    np.maximum.at(radii, rows * n_rays + k, dist)
    radii = radii.reshape(n, n_rays)
    # Fill empty directions (thin shapes) from their neighbours so outlines stay closed.
    smooth = np.maximum(radii, 0.5 * (np.roll(radii, 1, 1) + np.roll(radii, -1, 1)))
    radii = np.where(radii <= 0.5, smooth, radii)
    radii_q = np.clip(np.round(radii * 4), 1, 255).astype(np.uint8)
    f = max(1, int(np.ceil(max(h, w) / max_side)))
    hh, ww = h // f, w // f
    imgs = source.stack[:, : hh * f, : ww * f].reshape(3, hh, f, ww, f).mean(axis=(2, 4))
    imgs = np.stack([_quantise(im) for im in imgs])
    return {
        "fov_shape": [h, w],
        "image_shape": [int(hh), int(ww)],
        "image_factor": int(f),
        "images": array_payload(imgs, "uint8"),
        "centers": array_payload(np.round(c), "int16"),
        "radii": array_payload(radii_q, "uint8"),
        "n": int(n),
        "n_rays": int(n_rays),
        "id_range": [source.id_strings[0], source.id_strings[-1]],
        # integer ids (the common case) ride along for the map's hover text; 4 bytes each
        "ids": array_payload(source.ids, "int32")
        if source.ids.dtype.kind in "iu" and source.ids.size and np.abs(source.ids).max() < 2**31
        else None,
    }


def map_state(labels: np.ndarray, p_cell: np.ndarray | None, threshold: float) -> dict[str, Any]:
    """Per-candidate colour data for the map: human labels (int8) and P(cell) (uint8, 0-255).

    Parameters
    ----------
    labels : numpy.ndarray
        ``(n,)`` human labels: 1 cell, 0 not a cell, -1 unlabelled.
    p_cell : numpy.ndarray or None
        ``(n,)`` model P(cell), or None before the first model.
    threshold : float
        Decision threshold on P(cell).

    Returns
    -------
    dict
        ``labels`` and ``p`` payloads, ``has_p`` and ``threshold``.

    Examples
    --------
    >>> s = map_state(np.array([1, -1, 0]), np.array([0.9, 0.5, 0.1]), 0.5)
    >>> np.frombuffer(s["p"]["data"], np.uint8).tolist()
    [230, 128, 26]
    """
    lab = np.asarray(labels).astype(np.int8)
    if p_cell is None:
        p = np.zeros(lab.shape, np.uint8)
    else:
        p = np.clip(np.round(np.nan_to_num(np.asarray(p_cell, dtype=np.float64), nan=0.5) * 255), 0, 255).astype(np.uint8)
    return {
        "labels": array_payload(lab, "int8"),
        "p": array_payload(p, "uint8"),
        "has_p": p_cell is not None,
        "threshold": float(threshold),
    }
