"""EXTRACT / ActSort extraction outputs in MATLAB ``.mat`` files (v7.3 via h5py, v5 via scipy.io).

Field names follow ActSort (see ``spec/actsort-reference.md``): footprints are the
first of ``spatial_weights``, ``filters``, ``spatialWeights`` found, in MATLAB order
``[H W N]``; traces are ``temporal_weights`` or ``traces``, ``[T N]``; an optional
summary image is ``max_image``, ``summary_image`` or ``max_im`` ``[H W]``. The
fields may sit at the top level or inside a struct (EXTRACT saves ``output``).

MATLAB order pitfalls handled here:

- h5py shows a v7.3 array reversed: MATLAB ``[H W N]`` arrives as ``(N, W, H)``.
- MATLAB drops trailing singleton dimensions: one footprint ``[H W 1]`` is ``[H W]``.
- Footprints saved ``[N H W]`` or traces saved ``[N T]`` are caught with a sentence
  naming ``footprint_order="NHW"`` / ``trace_order="NT"`` as the fix (never guessed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse
import xarray as xr

from ..candidates import candidate_set
from ._common import (
    MAX_BYTES,
    Backend,
    InputError,
    as_float32,
    as_path,
    check_fov,
    check_rate,
    check_size,
    guard,
    h5_open,
    mat_version,
    name,
    short_reason,
    text_key,
    where,
)
from .movie import resolve_movie

__all__ = ["read", "guess_can_open", "FOOTPRINT_FIELDS", "TRACE_FIELDS", "IMAGE_FIELDS", "BACKEND"]

FOOTPRINT_FIELDS = ("spatial_weights", "filters", "spatialWeights")
TRACE_FIELDS = ("temporal_weights", "traces")
IMAGE_FIELDS = ("max_image", "summary_image", "max_im")
RATE_FIELDS = ("frame_rate", "fps", "fs")
#: Footprint bytes decoded per block while streaming a dense v7.3 array into sparse form.
BLOCK_BYTES = 64 * 2**20
#: Dense footprint arrays are streamed, so they may exceed MAX_BYTES up to this limit.
MAX_FOOTPRINT_BYTES = 64 * 2**30


def guess_can_open(path) -> bool:
    """True for a MATLAB v5 or v7.3 ``.mat`` file (by header) holding EXTRACT-style fields."""
    path = as_path(path)
    version = mat_version(path)
    if version is None:
        return False
    try:
        return bool(_field_names(path, version) & set(FOOTPRINT_FIELDS))
    except Exception:  # noqa: BLE001 - guessing never raises
        return False


def _field_names(path: Path, version: str) -> set[str]:
    """Names of top-level variables and of fields one struct deep."""
    if version == "7.3":
        import h5py

        with h5py.File(path, "r") as fh:
            out = {text_key(k) for k in fh.keys()}
            for key in list(fh.keys()):
                if isinstance(fh[key], h5py.Group):
                    out |= {text_key(k) for k in fh[key].keys()}
            return out
    import scipy.io

    out = set()
    for var, _, cls in scipy.io.whosmat(path):
        out.add(var)
        if cls == "struct":
            s = scipy.io.loadmat(path, variable_names=[var], struct_as_record=True)[var]
            out |= set(s.dtype.names or ())
    return out


# --------------------------------------------------------------------------- containers
class _Node:
    """One MATLAB array, whatever the file version: its MATLAB shape and a block reader."""

    def __init__(self, field: str, matlab_shape: tuple[int, ...], dtype, reader, sparse=None):
        self.field = field
        self.matlab_shape = matlab_shape
        self.dtype = np.dtype(dtype)
        self._reader = reader  # reader() -> the whole array, in MATLAB order
        self.sparse = sparse  # True for MATLAB sparse matrices (read() gives a scipy CSC matrix)

    def read(self):
        return self._reader()


def _h5_nodes(fh, path) -> dict[str, dict[str, _Node]]:
    """Map container name ('' = top level) -> field -> node, for a v7.3 file."""
    import h5py

    def node(key: str, obj) -> _Node | None:
        if isinstance(obj, h5py.Dataset):
            mclass = obj.attrs.get("MATLAB_class", b"")
            mclass = mclass.decode("ascii", "replace") if isinstance(mclass, bytes) else str(mclass)
            if mclass in ("char", "cell", "struct", "function_handle"):
                # MATLAB text is stored as uint16 codes: never mistake it for numbers.
                return _Node(key, tuple(reversed(obj.shape)), np.dtype("U1") if mclass == "char" else object, lambda: None)
            if obj.attrs.get("MATLAB_empty", 0):
                return _Node(key, (0,), obj.dtype, lambda: np.zeros((0,), obj.dtype))
            if obj.dtype.kind not in "biuf":
                return _Node(key, tuple(reversed(obj.shape)), obj.dtype, lambda: obj[()])
            return _H5DenseNode(key, obj)
        if isinstance(obj, h5py.Group) and "MATLAB_sparse" in obj.attrs:
            nrows = int(obj.attrs["MATLAB_sparse"])
            for part in ("data", "ir", "jc"):
                if part not in obj:
                    raise InputError(
                        f"{where(path, key)}the MATLAB sparse matrix lacks its {part!r} part; re-save the file."
                    )
            jc = obj["jc"]
            ncols = int(jc.shape[0]) - 1
            check_size((obj["data"].shape[0],), obj["data"].dtype, key, path=path, field=key)

            def read_sparse():
                try:
                    m = scipy.sparse.csc_matrix(
                        (obj["data"][()], obj["ir"][()].astype(np.int64), obj["jc"][()].astype(np.int64)), shape=(nrows, ncols)
                    )
                    m.check_format(full_check=True)
                    return m
                except ValueError as exc:
                    raise InputError(
                        f"{where(path, key)}the MATLAB sparse matrix is inconsistent ({short_reason(str(exc))}); re-save the file."
                    ) from None

            return _Node(key, (nrows, ncols), obj["data"].dtype, read_sparse, sparse=True)
        return None

    out: dict[str, dict[str, _Node]] = {"": {}}
    for raw in fh:
        key = text_key(raw)
        if key.startswith("#"):
            continue
        obj = fh[raw]
        n = node(key, obj)
        if n is not None:
            out[""][key] = n
        elif isinstance(obj, h5py.Group):
            out[key] = {}
            for sub_raw in obj:
                sub = text_key(sub_raw)
                m = node(f"{key}.{sub}", obj[sub_raw])
                if m is not None:
                    out[key][sub] = m
    return out


class _H5DenseNode(_Node):
    def __init__(self, field: str, dset):
        super().__init__(field, tuple(reversed(dset.shape)), dset.dtype, None)
        self.dset = dset

    def read(self):
        return np.asarray(self.dset[()]).transpose()

    def blocks_last_axis(self, step: int):
        """Yield ``(start, block)`` along the MATLAB last axis, each block in MATLAB order."""
        n = self.dset.shape[0]
        for s in range(0, n, step):
            yield s, np.asarray(self.dset[s : s + step]).transpose()


def _v5_nodes(path: Path) -> dict[str, dict[str, _Node]]:
    import scipy.io

    with guard(path, ".mat file"):
        try:
            listing = scipy.io.whosmat(path)
        except (ValueError, TypeError, scipy.io.matlab.MatReadError) as exc:
            raise InputError(
                f"{name(path)}: is not a readable MATLAB v5 file ({short_reason(str(exc))}); "
                "it is truncated or corrupt, so re-save it."
            ) from None
        for var, shape, cls in listing:
            if cls not in ("struct", "cell", "char", "sparse", "object"):
                check_size(shape, np.float64, var, path=path, field=var, limit=MAX_BYTES)
        try:
            mat = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
        except (ValueError, TypeError, scipy.io.matlab.MatReadError, MemoryError) as exc:
            raise InputError(
                f"{name(path)}: the MATLAB v5 file could not be decoded ({short_reason(str(exc))}); "
                "it is truncated or corrupt, so re-save it."
            ) from None

    def node(key: str, value) -> _Node:
        if scipy.sparse.issparse(value):
            value = scipy.sparse.csc_matrix(value)
            return _Node(key, value.shape, value.dtype, lambda: value, sparse=True)
        value = np.asarray(value)
        return _Node(key, value.shape, value.dtype, lambda: value)

    out: dict[str, dict[str, _Node]] = {"": {}}
    for key, value in mat.items():
        if key.startswith("__"):
            continue
        if isinstance(value, np.ndarray) and value.dtype.names:
            if value.size != 1:
                continue
            rec = value.reshape(-1)[0]
            out[key] = {f: node(f"{key}.{f}", rec[f]) for f in value.dtype.names}
        else:
            out[""][key] = node(key, value)
    return out


def _locate(containers: dict[str, dict[str, _Node]], path) -> dict[str, _Node]:
    """Pick the container holding a footprint field (top level first, then ``output``, then any struct)."""
    order = [""] + (["output"] if "output" in containers else []) + sorted(k for k in containers if k not in ("", "output"))
    for cname in order:
        fields = containers[cname]
        if any(f in fields for f in FOOTPRINT_FIELDS):
            return fields
    seen = sorted({f for c in containers.values() for f in c})
    shown = ", ".join(seen[:12]) or "none"
    raise InputError(
        f"{name(path)}: no footprint field ({', '.join(FOOTPRINT_FIELDS)}) at the top level or in a struct "
        f"(found: {shown}); save EXTRACT's output struct or pass the arrays to actsort_nb.io.from_arrays."
    )


def _first(fields: dict[str, _Node], names: tuple[str, ...]) -> _Node | None:
    for f in names:
        if f in fields:
            return fields[f]
    return None


# --------------------------------------------------------------------------- reader
def read(
    path,
    *,
    movie=None,
    frame_rate: float | None = None,
    footprint_order: str = "HWN",
    trace_order: str = "TN",
    fov_shape: tuple[int, int] | None = None,
    movie_dataset: str | None = None,
) -> xr.Dataset:
    """Read an EXTRACT / ActSort ``.mat`` file (MATLAB v5 or v7.3) into a CandidateSet.

    Parameters
    ----------
    path : str or path-like
        The ``.mat`` file.
    movie : path or array, optional
        The motion-corrected movie the extraction ran on (kept lazy); its frame
        size must match the footprints and its length the traces.
    frame_rate : float, optional
        Frames per second; default a ``frame_rate``/``fps``/``fs`` field, else unknown.
    footprint_order : {"HWN", "NHW"}
        MATLAB order of the footprint array; EXTRACT writes ``HWN``.
    trace_order : {"TN", "NT"}
        MATLAB order of the trace array; EXTRACT writes ``TN``.
    fov_shape : (int, int), optional
        ``(H, W)`` for footprints saved flattened as ``[H*W N]`` (MATLAB column-major
        pixels) when the file has no summary image to tell the size.
    movie_dataset : str, optional
        HDF5 dataset of ``movie`` when it is a file holding several arrays.

    Returns
    -------
    xarray.Dataset
        CandidateSet with ``footprints``, ``traces`` and, if present, ``max_image``
        and ``movie``; ``source_format`` is ``"extract"``.

    Examples
    --------
    >>> import numpy as np, scipy.io, tempfile, os
    >>> S = np.zeros((6, 5, 2)); S[1, 1, 0] = 1; S[4, 3, 1] = 1
    >>> p = os.path.join(tempfile.mkdtemp(), "out.mat")
    >>> scipy.io.savemat(p, {"output": {"spatial_weights": S, "temporal_weights": np.ones((20, 2))}})
    >>> dict(read(p).sizes)
    {'candidate': 2, 'y': 6, 'x': 5, 'time': 20}
    """
    from .._validation import check_option

    check_option(footprint_order, "footprint_order", ["HWN", "NHW"])
    check_option(trace_order, "trace_order", ["TN", "NT"])
    path = as_path(path)
    if not path.is_file():
        raise InputError(f"{name(path)}: no such file; check the path.")
    version = mat_version(path)
    if version is None:
        raise InputError(
            f"{name(path)}: is not a MATLAB .mat file (no MATLAB header); save it from MATLAB with save(..., '-v7.3')."
        )
    if version == "7.3":
        with h5_open(path) as fh:
            return _read_fields(_locate(_h5_nodes(fh, path), path), path, version, movie, frame_rate,
                                footprint_order, trace_order, fov_shape, movie_dataset)
    return _read_fields(_locate(_v5_nodes(path), path), path, version, movie, frame_rate,
                        footprint_order, trace_order, fov_shape, movie_dataset)


def _read_fields(fields, path, version, movie, frame_rate, footprint_order, trace_order, fov_shape, movie_dataset):
    fp_node = _first(fields, FOOTPRINT_FIELDS)
    tr_node = _first(fields, TRACE_FIELDS)
    if tr_node is None:
        raise InputError(
            f"{where(path, fp_node.field)}the file has footprints but no trace field ({' or '.join(TRACE_FIELDS)}); "
            "save EXTRACT's temporal_weights with the footprints."
        )
    img_node = _first(fields, IMAGE_FIELDS)

    # --- traces, MATLAB [T N]
    for node, what in ((tr_node, "traces"), (fp_node, "footprints")):
        if node.dtype.kind not in "biuf":
            raise InputError(
                f"{where(path, node.field)}{what} must be a numeric array, got MATLAB data of dtype {node.dtype}; "
                "save them as single or double."
            )
        if 0 in node.matlab_shape:
            raise InputError(f"{where(path, node.field)}{what} are empty (shape {node.matlab_shape}); the extraction found nothing to sort.")
    tshape = tr_node.matlab_shape
    if len(tshape) != 2:
        raise InputError(
            f"{where(path, tr_node.field)}traces must be a 2-D [T N] matrix, got MATLAB shape {list(tshape)}; "
            "save temporal_weights as time x candidates."
        )
    check_size(tshape, np.float32, "traces", path=path, field=tr_node.field)
    n_from_traces = tshape[1] if trace_order == "TN" else tshape[0]

    # --- summary image (tells the field of view), MATLAB [H W]
    image = None
    if img_node is not None:
        if len(img_node.matlab_shape) != 2 or img_node.dtype.kind not in "biuf":
            raise InputError(
                f"{where(path, img_node.field)}the summary image must be a numeric 2-D [H W] array, "
                f"got shape {list(img_node.matlab_shape)} of {img_node.dtype}; fix or remove the field."
            )
        check_size(img_node.matlab_shape, np.float64, "summary image", path=path, field=img_node.field)
        image = np.asarray(img_node.read())
        check_fov(image.shape, "summary image size", path=path, field=img_node.field)
    if fov_shape is not None:
        fov_shape = check_fov(fov_shape, "fov_shape", path=path)

    # --- footprints
    fshape = fp_node.matlab_shape
    fp_field = fp_node.field
    if fp_node.sparse or len(fshape) == 2:
        hw = fov_shape or (image.shape if image is not None else None)
        if len(fshape) == 2 and not fp_node.sparse and n_from_traces == 1 and (hw is None or fshape[0] != hw[0] * hw[1]):
            # One candidate: MATLAB dropped the trailing singleton of [H W 1].
            check_fov(fshape, "footprint size", path=path, field=fp_field)
            fp = np.asarray(fp_node.read())[None]
            h, w = fp.shape[1:]
            fp_csr = scipy.sparse.csr_matrix(fp.reshape(1, -1))
        else:
            if hw is None:
                raise InputError(
                    f"{where(path, fp_field)}footprints are a 2-D [pixels N] matrix {list(fshape)} and the file has no "
                    "summary image to tell the image size; pass fov_shape=(H, W)."
                )
            h, w = hw
            if fshape[0] != h * w:
                raise InputError(
                    f"{where(path, fp_field)}footprints have {fshape[0]} pixels per candidate but the field of view "
                    f"{(h, w)} has {h * w}; pass the fov_shape the extraction used."
                )
            mat = fp_node.read()
            mat = scipy.sparse.csc_matrix(mat) if not scipy.sparse.issparse(mat) else mat
            # MATLAB pixel p = y + x*H (column-major); reorder to C order y*W + x.
            coo = mat.tocoo()
            y, x = coo.row % h, coo.row // h
            fp_csr = scipy.sparse.csr_matrix((coo.data, (coo.col, y * w + x)), shape=(fshape[1], h * w))
        n = fp_csr.shape[0]
    elif len(fshape) == 3:
        if footprint_order == "HWN":
            h, w, n = fshape
        else:
            n, h, w = fshape
        if n != n_from_traces:
            other = (fshape[0] if footprint_order == "HWN" else fshape[2])
            if other == n_from_traces:
                alt = "NHW" if footprint_order == "HWN" else "HWN"
                raise InputError(
                    f"{where(path, fp_field)}footprints of MATLAB shape {list(fshape)} do not end in the {n_from_traces} "
                    f"candidates of the traces but start with them, so they look saved as [{' '.join(alt)}]; "
                    f"pass footprint_order={alt!r} (actsort-nb preprocess: --footprint-order {alt})."
                )
        check_fov((h, w), "footprint size", path=path, field=fp_field)
        check_size(fshape, fp_node.dtype, "footprints", path=path, field=fp_field, limit=MAX_FOOTPRINT_BYTES)
        fp_csr = _dense_footprints(fp_node, footprint_order, n, h, w, path)
    else:
        raise InputError(
            f"{where(path, fp_field)}footprints must be a 3-D [H W N] array, got MATLAB shape {list(fshape)}; "
            "save spatial_weights as height x width x candidates."
        )

    fp_csr.data = as_float32(fp_csr.data, "footprints", path=path, field=fp_field)
    # --- traces vs candidates
    tr = np.asarray(tr_node.read())
    if trace_order == "NT":
        tr = tr.T
    if tr.shape[1] != n:
        if tr.shape[0] == n:
            alt = "NT" if trace_order == "TN" else "TN"
            raise InputError(
                f"{where(path, tr_node.field)}traces of MATLAB shape {list(tshape)} have the {n} candidates of the "
                f"footprints in the wrong axis, so they look transposed ([{' '.join(alt)}]); pass trace_order={alt!r} "
                f"(actsort-nb preprocess: --trace-order {alt})."
            )
        raise InputError(
            f"{where(path, tr_node.field)}traces of MATLAB shape {list(tshape)} do not match the {n} footprints; "
            "save footprints and traces from the same extraction run."
        )
    traces = tr.T  # (candidate, time)
    traces = as_float32(traces, "traces", path=path, field=tr_node.field)

    if image is not None and image.shape != (h, w):
        raise InputError(
            f"{where(path, img_node.field)}the summary image is {list(image.shape)} but the footprints are "
            f"{[h, w]} (MATLAB [H W]); save the image of the same field of view."
        )

    rate = frame_rate
    if rate is None:
        rnode = _first(fields, RATE_FIELDS)
        if rnode is not None and rnode.dtype.kind in "biuf" and int(np.prod(rnode.matlab_shape)) == 1:
            rate = check_rate(np.asarray(rnode.read()).ravel()[0], path=path, field=rnode.field)
    mov = resolve_movie(movie, movie_dataset, fov=(h, w), n_frames=traces.shape[1], source=path)
    return candidate_set(
        fp_csr,
        traces,
        movie=mov,
        summary_images=None if image is None else {"max_image": as_float32(image, "summary image", path=path, field=img_node.field)},
        frame_rate=rate,
        fov_shape=(h, w),
        source=name(path),
        source_format="extract",
        attrs={"mat_version": version, "footprint_field": fp_field, "trace_field": tr_node.field},
    )


def _dense_footprints(node: _Node, order: str, n: int, h: int, w: int, path) -> scipy.sparse.csr_matrix:
    """Stream a dense footprint array into a (candidate, y*x) CSR matrix, block by block."""
    step = max(1, BLOCK_BYTES // max(1, h * w * node.dtype.itemsize))
    parts = []
    if isinstance(node, _H5DenseNode) and order == "HWN":
        # h5py shows (N, W, H): blocks along axis 0 are whole candidates.
        for _, block in node.blocks_last_axis(step):  # block is MATLAB order (H, W, k)
            parts.append(scipy.sparse.csr_matrix(np.moveaxis(block, -1, 0).reshape(block.shape[-1], h * w)))
    else:
        check_size(node.matlab_shape, node.dtype, "footprints", path=path, field=node.field)
        arr = np.asarray(node.read())
        arr = np.moveaxis(arr, -1, 0) if order == "HWN" else arr
        for s in range(0, n, step):
            parts.append(scipy.sparse.csr_matrix(arr[s : s + step].reshape(-1, h * w)))
    return scipy.sparse.vstack(parts, format="csr")


BACKEND = Backend(
    name="extract",
    description="EXTRACT / ActSort .mat (MATLAB v5 or v7.3)",
    guess_can_open=guess_can_open,
    read=read,
    extensions=(".mat",),
)
