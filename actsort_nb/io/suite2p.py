"""A Suite2p plane folder: ``stat.npy``, ``F.npy``, ``Fneu.npy``, ``iscell.npy``, ``ops.npy``, ``data.bin``.

``stat.npy`` and ``ops.npy`` are pickles, and loading a pickle can run code, so they
are read only with ``trust=True``; even then a restricted unpickler rebuilds only
numpy arrays and plain containers, so a hostile file is refused instead of run.
The ``iscell`` columns are decoded once, here: column 0 is Suite2p's label
(``source_label``), column 1 its probability (``source_probability``).
"""
from __future__ import annotations

from pathlib import Path

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
    check_rate,
    load_npy,
    name,
    npy_header,
)
from .movie import open_movie, resolve_movie

__all__ = ["read", "guess_can_open", "BACKEND"]

REQUIRED = ("stat.npy", "F.npy")


def guess_can_open(path) -> bool:
    """True for a folder holding Suite2p's ``stat.npy`` and ``F.npy`` (or such a file inside it)."""
    path = as_path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_file() and path.name not in ("stat.npy", "F.npy", "iscell.npy", "ops.npy", "Fneu.npy"):
        return False
    return all((folder / f).is_file() for f in REQUIRED)


def _folder(path) -> Path:
    path = as_path(path)
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        raise InputError(f"{name(path)}: no such folder; pass a Suite2p plane folder (e.g. suite2p/plane0).")
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    if missing:
        raise InputError(
            f"{name(folder)}: is not a Suite2p plane folder ({' and '.join(missing)} missing); pass the plane0 folder Suite2p wrote."
        )
    return folder


def _ops(folder: Path, trust: bool) -> dict:
    ops_path = folder / "ops.npy"
    if not ops_path.is_file():
        return {}
    ops = load_npy(ops_path, trust=trust, what="ops")
    if ops.dtype.hasobject and ops.shape == ():
        ops = ops.item()
    if not isinstance(ops, dict):
        raise InputError(f"{name(ops_path)}: must hold a dict of settings, got {type(ops).__name__}; re-create it with Suite2p.")
    return ops


def read(
    path,
    *,
    trust: bool = False,
    movie=None,
    neuropil_coefficient: float | None = None,
    frame_rate: float | None = None,
    fov_shape: tuple[int, int] | None = None,
) -> xr.Dataset:
    """Read a Suite2p plane folder into a CandidateSet.

    Parameters
    ----------
    path : str or path-like
        The plane folder (``suite2p/plane0``) or a file inside it.
    trust : bool
        Required to read the pickled ``stat.npy`` / ``ops.npy``; pass True only for
        files you made. A restricted unpickler is used even then.
    movie : path, array or "data.bin", optional
        The registered movie; ``"data.bin"`` opens the folder's ``data.bin``
        lazily (int16, shape from ``ops``). Default: ``data.bin`` when present.
        Pass ``False`` to skip it.
    neuropil_coefficient : float, optional
        Traces are ``F - c * Fneu``; default ``ops["neucoeff"]`` or 0.7. Use 0 for raw ``F``.
    frame_rate : float, optional
        Override of ``ops["fs"]``.
    fov_shape : (int, int), optional
        ``(Ly, Lx)`` when ``ops.npy`` is absent.

    Returns
    -------
    xarray.Dataset
        CandidateSet with ``source_label`` (``iscell[:, 0]``) and
        ``source_probability`` (``iscell[:, 1]``) when ``iscell.npy`` exists.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> stat = np.array([{"ypix": np.array([1, 2]), "xpix": np.array([3, 3]), "lam": np.ones(2)}], dtype=object)
    >>> np.save(d / "stat.npy", stat); np.save(d / "F.npy", np.ones((1, 30), np.float32))
    >>> dict(read(d, trust=True, fov_shape=(8, 8)).sizes)
    {'candidate': 1, 'y': 8, 'x': 8, 'time': 30}
    """
    folder = _folder(path)
    stat_path = folder / "stat.npy"
    # Check the non-pickle arrays first: no pickle is touched if they are already wrong.
    npy_header(folder / "F.npy")
    if not trust:
        load_npy(stat_path, trust=False)  # raises the pickle sentence if stat.npy is a pickle
    ops = _ops(folder, trust)
    stat = load_npy(stat_path, trust=trust, what="stat")
    if stat.ndim != 1 or not all(isinstance(s, dict) for s in stat):
        raise InputError(
            f"{name(stat_path)}: must be a 1-D array of per-ROI dicts (ypix, xpix, lam), got shape {stat.shape}; "
            "pass the stat.npy Suite2p wrote."
        )
    n = len(stat)
    if n == 0:
        raise InputError(f"{name(stat_path)}: holds no ROIs; Suite2p found nothing to sort.")

    if fov_shape is not None:
        h, w = check_fov(fov_shape, "fov_shape", path=folder)
    elif "Ly" in ops and "Lx" in ops:
        h, w = check_fov((ops["Ly"], ops["Lx"]), "ops Ly/Lx", path=folder / "ops.npy")
    else:
        raise InputError(f"{name(folder)}: has no ops.npy to give the image size (Ly, Lx); pass fov_shape=(Ly, Lx).")

    fp = _footprints(stat, h, w, stat_path)

    F = load_npy(folder / "F.npy", what="F")
    if F.ndim != 2 or F.shape[0] != n:
        hint = " (it looks transposed: Suite2p writes (ROIs, frames))" if F.ndim == 2 and F.shape[1] == n else ""
        raise InputError(
            f"{name(folder / 'F.npy')}: has shape {F.shape} but stat.npy has {n} ROIs{hint}; pass F.npy and stat.npy from the same run."
        )
    c = float(ops.get("neucoeff", 0.7)) if neuropil_coefficient is None else float(neuropil_coefficient)
    traces = as_float32(F, "F", path=folder / "F.npy")
    if c != 0 and (folder / "Fneu.npy").is_file():
        Fneu = load_npy(folder / "Fneu.npy", what="Fneu")
        if Fneu.shape != F.shape:
            raise InputError(
                f"{name(folder / 'Fneu.npy')}: has shape {Fneu.shape} but F.npy has {F.shape}; pass files from the same run."
            )
        traces = as_float32(F - np.float32(c) * as_float32(Fneu, "Fneu", path=folder / "Fneu.npy"), "F - c * Fneu", path=folder / "F.npy")
    else:
        c = 0.0

    candidate_vars = {}
    iscell_path = folder / "iscell.npy"
    if iscell_path.is_file():
        iscell = load_npy(iscell_path, what="iscell")
        if iscell.ndim == 1:
            iscell = iscell[:, None]
        if iscell.ndim != 2 or iscell.shape[0] != n:
            raise InputError(
                f"{name(iscell_path)}: has shape {iscell.shape} but there are {n} ROIs; it must be (ROIs, 2) from the same run."
            )
        lab = iscell[:, 0]
        if not np.isin(lab, (0, 1)).all():
            raise InputError(f"{name(iscell_path)}: column 0 must be 0 or 1, got {np.unique(lab)[:5].tolist()}; re-save it.")
        candidate_vars["source_label"] = lab.astype(np.int8)
        if iscell.shape[1] > 1:
            candidate_vars["source_probability"] = iscell[:, 1].astype(np.float32)

    images = {}
    if "meanImg" in ops and np.shape(ops["meanImg"]) == (h, w):
        images["mean_image"] = np.asarray(ops["meanImg"], np.float32)
    if "max_proj" in ops and np.ndim(ops["max_proj"]) == 2:
        mp = np.asarray(ops["max_proj"], np.float32)
        y0, y1 = _range(ops.get("yrange"), h)
        x0, x1 = _range(ops.get("xrange"), w)
        if 0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w and mp.shape == (y1 - y0, x1 - x0):
            full = np.zeros((h, w), np.float32)
            full[y0:y1, x0:x1] = mp
            images["max_image"] = full

    mov = None
    if movie is None and (folder / "data.bin").is_file() and {"nframes", "Ly", "Lx"} <= set(ops):
        movie = "data.bin"
    if isinstance(movie, str) and movie == "data.bin":
        mov = open_movie(folder / "data.bin", shape=(ops.get("nframes", F.shape[1]), h, w), dtype=np.int16)
    elif movie is not None and movie is not False:
        mov = resolve_movie(movie, fov=(h, w), n_frames=traces.shape[1], source=folder)
    rate = frame_rate if frame_rate is not None else check_rate(ops.get("fs"), path=folder / "ops.npy", field="fs")
    return candidate_set(
        fp,
        traces,
        movie=mov,
        summary_images=images,
        frame_rate=None if rate is None else float(rate),
        fov_shape=(h, w),
        source=name(folder),
        source_format="suite2p",
        candidate_vars=candidate_vars,
        attrs={"neuropil_coefficient": c},
    )


def _range(value, size: int) -> tuple[int, int]:
    """``(start, stop)`` of Suite2p's ``yrange``/``xrange`` (a list or a numpy array); the whole axis if absent or unusable."""
    try:
        start, stop = (int(v) for v in np.asarray(value).ravel()[:2])
    except (TypeError, ValueError):
        return 0, size
    return start, stop


def _footprints(stat, h: int, w: int, stat_path) -> scipy.sparse.csr_matrix:
    """Concatenate per-ROI pixel lists into one (ROI, y*x) CSR matrix (no dense image)."""
    ys, xs, lams, rows = [], [], [], []
    for i, s in enumerate(stat):
        missing = [k for k in ("ypix", "xpix") if k not in s]
        if missing:
            raise InputError(
                f"{name(stat_path)}: ROI {i} lacks {', '.join(missing)}; pass the stat.npy Suite2p wrote."
            )
        y = np.asarray(s["ypix"]).ravel()
        x = np.asarray(s["xpix"]).ravel()
        lam = np.asarray(s.get("lam", np.ones(y.size)), dtype=np.float64).ravel()
        if not (y.size == x.size == lam.size):
            raise InputError(
                f"{name(stat_path)}: ROI {i} has {y.size} ypix, {x.size} xpix and {lam.size} lam values; they must match."
            )
        if y.dtype.kind not in "iuf" or x.dtype.kind not in "iuf":
            raise InputError(f"{name(stat_path)}: ROI {i} pixel coordinates are not numbers; pass the stat.npy Suite2p wrote.")
        ys.append(y)
        xs.append(x)
        lams.append(lam)
        rows.append(np.full(y.size, i))
    y = np.concatenate(ys).astype(np.int64)
    x = np.concatenate(xs).astype(np.int64)
    lam = np.concatenate(lams)
    row = np.concatenate(rows)
    if y.size and (y.min() < 0 or x.min() < 0 or y.max() >= h or x.max() >= w):
        raise InputError(
            f"{name(stat_path)}: ROI pixels reach (y={int(y.max())}, x={int(x.max())}) outside the {h}x{w} field of view; "
            "pass the ops.npy (Ly, Lx) of the same run."
        )
    if not np.isfinite(lam).all():
        raise InputError(f"{name(stat_path)}: 'lam' weights hold NaN/inf; re-run Suite2p's detection.")
    lam = as_float32(lam, "lam weights", path=stat_path, field="lam")
    return scipy.sparse.csr_matrix((lam, (row, y * w + x)), shape=(len(stat), h * w))


BACKEND = Backend(
    name="suite2p",
    description="Suite2p plane folder (stat.npy, F.npy, Fneu.npy, iscell.npy, ops.npy, data.bin)",
    guess_can_open=guess_can_open,
    read=read,
)
