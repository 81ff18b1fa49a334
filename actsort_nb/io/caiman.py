"""CaImAn results saved by ``CNMF.save(...hdf5)`` (``caiman.utils.utils.save_dict_to_hdf5``).

Layout read here (as written by CaImAn's ``save_dict_to_hdf5`` and read back by ``load_CNMF``):

- ``estimates/A``: a group ``data``/``indices``/``indptr``/``shape`` of a CSC matrix
  ``(pixels, components)``; pixel ``p`` of component ``k`` is ``A[p, k]`` with the image
  flattened in Fortran order, i.e. ``A[:, k].reshape(dims, order="F")`` is the
  ``(d1, d2)`` = ``(y, x)`` footprint.
- ``estimates/C``: ``(components, T)`` denoised traces; ``estimates/YrA``: their
  residuals, so ``C + YrA`` is the raw trace.
- ``estimates/dims``: ``(d1, d2)``; ``estimates/idx_components``: accepted components
  (``'NoneType'`` when not evaluated); ``params/data/fr``: frame rate.
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
    check_rate,
    check_size,
    h5_matches,
    h5_open,
    h5_read,
    name,
    where,
)
from .movie import resolve_movie

__all__ = ["read", "guess_can_open", "BACKEND"]


def guess_can_open(path) -> bool:
    """True for an HDF5 file (by magic bytes) holding ``estimates/A`` as CaImAn saves it."""
    return h5_matches(path, lambda fh: "estimates" in fh and "A" in fh["estimates"])


def _is_none(obj) -> bool:
    """CaImAn writes None as the string 'NoneType'."""
    import h5py

    return isinstance(obj, h5py.Dataset) and obj.dtype.kind in "SOU" and obj.shape == ()


def read(path, *, movie=None, trace: str = "raw", frame_rate: float | None = None, movie_dataset: str | None = None) -> xr.Dataset:
    """Read a CaImAn results HDF5 file into a CandidateSet.

    Parameters
    ----------
    path : str or path-like
        The ``.hdf5`` written by ``cnm.save(...)``.
    movie : path or array, optional
        The movie the components were fitted on (kept lazy).
    trace : {"raw", "C"}
        ``"raw"`` = ``C + YrA`` (what a human judges: signal with its noise;
        falls back to ``C`` when ``YrA`` is absent), ``"C"`` = the denoised trace.
    frame_rate : float, optional
        Override of ``params/data/fr``.
    movie_dataset : str, optional
        Dataset name when ``movie`` is an HDF5 file with several arrays.

    Returns
    -------
    xarray.Dataset
        CandidateSet; ``source_label`` is 1 for ``idx_components`` and 0 for
        ``idx_components_bad`` when CaImAn evaluated the components.

    Examples
    --------
    >>> import h5py, numpy as np, scipy.sparse, tempfile, os
    >>> A = scipy.sparse.random(6 * 5, 3, density=0.3, format="csc", random_state=0)
    >>> p = os.path.join(tempfile.mkdtemp(), "cnm.hdf5")
    >>> with h5py.File(p, "w") as f:
    ...     for k in ("data", "indices", "indptr", "shape"):
    ...         f[f"estimates/A/{k}"] = getattr(A, k)
    ...     f["estimates/C"] = np.ones((3, 40)); f["estimates/dims"] = (6, 5)
    >>> dict(read(p).sizes)
    {'candidate': 3, 'y': 6, 'x': 5, 'time': 40}
    """
    from .._validation import check_option

    check_option(trace, "trace", ["raw", "C"])
    path = as_path(path)
    with h5_open(path) as fh:
        if "estimates" not in fh:
            raise InputError(
                f"{name(path)}: has no 'estimates' group, so it is not a CaImAn results file; save it with cnm.save('results.hdf5')."
            )
        est = fh["estimates"]
        for key in ("A", "C", "dims"):
            if key not in est or _is_none(est[key]):
                raise InputError(
                    f"{where(path, 'estimates/' + key)}is missing; save the fitted CNMF object (after fit) with cnm.save()."
                )
        dims = np.ravel(h5_read(est["dims"], "dims", path=path, field="estimates/dims"))
        if dims.size != 2:
            _dims_error(path, dims.shape)
        h, w = check_fov(dims, "estimates/dims", path=path, field="estimates/dims")
        A = _read_csc(est["A"], path)
        if A.shape[0] != h * w:
            raise InputError(
                f"{where(path, 'estimates/A')}A has {A.shape[0]} pixel rows but dims {(h, w)} has {h * w} pixels; "
                "the file mixes results of different movies, so re-save it."
            )
        n = A.shape[1]
        C = h5_read(est["C"], "C", path=path, field="estimates/C")
        if C.ndim != 2:
            raise InputError(f"{where(path, 'estimates/C')}C must be 2-D (components, time), got shape {C.shape}; re-save the file.")
        if C.shape[0] != n and C.shape[1] == n:
            raise InputError(
                f"{where(path, 'estimates/C')}C has shape {C.shape}, time first, but CaImAn stores (components, time) "
                f"for the {n} components of A; transpose C when writing the file."
            )
        if C.shape[0] != n:
            raise InputError(
                f"{where(path, 'estimates/C')}C has {C.shape[0]} rows but A has {n} components; re-save the file from one CNMF run."
            )
        traces = as_float32(C, "C", path=path, field="estimates/C")
        if trace == "raw" and "YrA" in est and not _is_none(est["YrA"]):
            YrA = h5_read(est["YrA"], "YrA", path=path, field="estimates/YrA")
            if YrA.shape != C.shape:
                raise InputError(
                    f"{where(path, 'estimates/YrA')}YrA has shape {YrA.shape} but C has {C.shape}; re-save the file from one CNMF run."
                )
            as_float32(YrA, "YrA", path=path, field="estimates/YrA")
            traces = as_float32(C.astype(np.float64) + YrA, "C + YrA", path=path, field="estimates/YrA")
        label = _labels(est, n, path)
        rate = frame_rate
        if rate is None and "params/data/fr" in fh and not _is_none(fh["params/data/fr"]):
            fr = h5_read(fh["params/data/fr"], "fr", path=path, field="params/data/fr")
            rate = check_rate(fr, path=path, field="params/data/fr")
        images = {}
        for key, var in (("Cn", "corr_image"),):
            if key in est and not _is_none(est[key]):
                img = h5_read(est[key], key, path=path, field=f"estimates/{key}")
                if img.shape == (h, w):
                    images[var] = as_float32(img, key, path=path, field=f"estimates/{key}")

    # Fortran pixel order p = y + x*h  ->  C order y*w + x.
    coo = A.tocoo()
    y, x = coo.row % h, coo.row // h
    data = as_float32(coo.data, "A", path=path, field="estimates/A/data")
    fp = scipy.sparse.csr_matrix((data, (coo.col, y * w + x)), shape=(n, h * w))
    mov = resolve_movie(movie, movie_dataset, fov=(h, w), n_frames=traces.shape[1], source=path)
    return candidate_set(
        fp,
        traces,
        movie=mov,
        summary_images=images,
        frame_rate=rate,
        fov_shape=(h, w),
        source=name(path),
        source_format="caiman",
        candidate_vars=None if label is None else {"source_label": label},
        attrs={"trace": "C+YrA" if trace == "raw" else "C"},
    )


def _dims_error(path, shape):
    raise InputError(
        f"{where(path, 'estimates/dims')}dims must be the two image sizes (d1, d2), got an array of shape {shape}; "
        "3-D (volumetric) CaImAn results are not supported."
    )


def _read_csc(group, path) -> scipy.sparse.csc_matrix:
    import h5py

    field = "estimates/A"
    if isinstance(group, h5py.Dataset):
        raise InputError(
            f"{where(path, field)}A is a dense dataset, but CaImAn saves A as a sparse group (data, indices, indptr, shape); "
            "save with cnm.save()."
        )
    missing = [k for k in ("data", "indices", "indptr", "shape") if k not in group]
    if missing:
        raise InputError(
            f"{where(path, field)}the sparse matrix lacks {', '.join(missing)}; the file is incomplete, so re-save it."
        )
    shape = h5_read(group["shape"], "A shape", path=path, field=field + "/shape")
    if shape.shape != (2,):
        raise InputError(f"{where(path, field + '/shape')}must hold 2 numbers (pixels, components), got {shape.tolist()}; re-save the file.")
    npix, n = (int(s) for s in shape)
    check_fov((npix, 1), "A pixel count", path=path, field=field + "/shape")
    if n <= 0:
        raise InputError(f"{where(path, field)}A holds no components; the extraction found nothing to sort.")
    check_size((n + 1,), np.int64, "A indptr", path=path, field=field + "/shape")
    data = h5_read(group["data"], "A data", path=path, field=field + "/data")
    indices = h5_read(group["indices"], "A indices", path=path, field=field + "/indices")
    indptr = h5_read(group["indptr"], "A indptr", path=path, field=field + "/indptr")
    if indptr.shape != (n + 1,) or data.shape != indices.shape or (indptr.size and int(indptr[-1]) != data.size):
        raise InputError(
            f"{where(path, field)}data/indices/indptr do not form a CSC matrix of shape {(npix, n)} "
            f"(indptr has {indptr.size} entries, data {data.size}); the file is corrupt, so re-save it."
        )
    if indices.size and (indices.min() < 0 or indices.max() >= npix):
        raise InputError(f"{where(path, field + '/indices')}pixel indices fall outside 0..{npix - 1}; the file is corrupt, so re-save it.")
    if np.any(np.diff(indptr) < 0):
        raise InputError(f"{where(path, field + '/indptr')}indptr is not non-decreasing; the file is corrupt, so re-save it.")
    return scipy.sparse.csc_matrix((data, indices, indptr), shape=(npix, n))


def _labels(est, n: int, path):
    good = est.get("idx_components")
    if good is None or _is_none(good):
        return None
    idx = np.asarray(h5_read(good, "idx_components", path=path, field="estimates/idx_components")).ravel()
    if idx.dtype.kind not in "iu" and not np.all(np.equal(np.mod(idx, 1), 0)):
        raise InputError(f"{where(path, 'estimates/idx_components')}must hold integer component indices; re-save the file.")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InputError(
            f"{where(path, 'estimates/idx_components')}holds indices outside 0..{n - 1}; re-run evaluate_components and save again."
        )
    label = np.zeros(n, np.int8)
    label[idx] = 1
    return label


BACKEND = Backend(
    name="caiman",
    description="CaImAn results HDF5 (estimates/A, C, YrA, dims, idx_components)",
    guess_can_open=guess_can_open,
    read=read,
    extensions=(".hdf5", ".h5"),
)
