"""The sort set on disk: one HDF5 file, chunked per candidate, reopened lazily.

Layout (``schema`` 1)::

    /                      attrs: format="actsort_nb.sortset", schema=1, complete=1,
                                  sizes (JSON dim -> length), attrs (JSON dataset attrs)
    /vars/<name>           one HDF5 dataset (or group) per variable and coordinate, with
                           attrs dims (JSON list), role ("data"|"coord"), encoding, attrs (JSON)

Encodings: ``array`` (as is), ``bool`` (uint8), ``str`` (UTF-8), ``coo`` (a group
with ``coords`` (ndim, nnz) and ``data`` (nnz,): sparse footprints stay sparse) and
``uint16`` (a group with ``q`` (candidate, ...) uint16 and per-candidate float64
``scale``/``offset``; used for ``traces``, error ≤ range/131070). Per-candidate
variables are chunked so one candidate's snapshots are one HDF5 chunk; every dataset
but the snapshots is gzip-compressed, and all carry Fletcher-32 checksums so corruption is detected on read.
The movie is never stored.

Writes go to a temporary file beside the target, which is renamed over it only
once complete (``complete`` is the last attribute written): an interrupted run
never leaves a half-written sort set under the requested name.
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
import sparse
import xarray as xr

from .._validation import InputError
from ._kernels import quantise_u16
from .stream import _array_source

__all__ = ["FORMAT", "REQUIRED", "SORTSET_SCHEMA", "open_sortset", "write_sortset"]

#: Version of the on-disk layout; bump on any incompatible change.
SORTSET_SCHEMA = 1
#: Value of the root ``format`` attribute.
FORMAT = "actsort_nb.sortset"
#: Variables every sort set holds.
REQUIRED = (
    "footprints",
    "traces",
    "event_frame",
    "snapshots",
    "snapshot_scale",
    "snapshot_offset",
    "crop_origin",
    "crop_footprint",
    "max_image",
    "mean_image",
    "corr_image",
)
#: Float variables stored quantised to uint16 per candidate.
_QUANTISED = ("traces",)
#: Variables read lazily on open (everything else is small and read eagerly).
_LAZY = ("snapshots", "traces", "crop_footprint")
#: Variables stored without gzip: quantised camera noise barely compresses (~7 %),
#: and gzip would cost more time than the streaming pass itself.
_UNCOMPRESSED = ("snapshots",)

_H5_LOCK = threading.RLock()  # HDF5 is not thread-safe
_FILES: dict[tuple, h5py.File] = {}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _attrs_json(attrs) -> str:
    return json.dumps({str(k): _jsonable(v) for k, v in attrs.items()})


def _chunks(shape: tuple[int, ...], itemsize: int, dims: tuple[str, ...]) -> tuple[int, ...] | None:
    """Per-candidate chunks for big rows, groups of candidates for small ones."""
    if not shape or 0 in shape:
        return None
    if dims[0] == "candidate":
        row = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
        if row >= 16_384:
            return (1,) + tuple(shape[1:])
        return (int(min(shape[0], max(1, 65_536 // max(row, 1)))),) + tuple(shape[1:])
    if len(shape) == 2 and dims == ("y", "x"):
        return tuple(shape)
    return None  # h5py's auto-chunking


def _create(group: h5py.Group, name: str, data: np.ndarray | da.Array, dims, dtype=None) -> h5py.Dataset:
    dtype = np.dtype(dtype or data.dtype)
    chunks = _chunks(tuple(data.shape), dtype.itemsize, tuple(dims))
    kw: dict[str, Any] = {}
    if data.size:
        kw = {"chunks": chunks or True, "fletcher32": True}
        if name not in _UNCOMPRESSED:
            kw.update(compression="gzip", compression_opts=1, shuffle=dtype.itemsize > 1)
    return group.create_dataset(name, shape=data.shape, dtype=dtype, **kw)


def _write_blocks(dset: h5py.Dataset, data, convert=None) -> None:
    """Copy ``data`` into ``dset`` a block of leading-axis rows at a time (bounded memory)."""
    if not data.size:
        return
    row = int(np.prod(data.shape[1:], dtype=np.int64)) * max(1, np.dtype(dset.dtype).itemsize) if data.ndim else 1
    block = max(1, int(2**25 // max(row, 1)))
    if data.ndim == 0:
        dset[()] = np.asarray(data)
        return
    for s in range(0, data.shape[0], block):
        x = np.asarray(data[s : s + block])
        dset[s : s + block] = convert(x) if convert is not None else x


def _write_var(group: h5py.Group, name: str, var: xr.Variable, role: str) -> None:
    dims = tuple(var.dims)
    data = var.data
    if isinstance(data, sparse.SparseArray):
        coo = sparse.COO(data)
        g = group.create_group(name)
        g.attrs["encoding"] = "coo"
        g.attrs["shape"] = np.asarray(coo.shape, np.int64)
        kw = {"compression": "gzip", "compression_opts": 1, "shuffle": True, "fletcher32": True} if coo.nnz else {}
        g.create_dataset("coords", data=coo.coords.astype(np.int32 if max(coo.shape) < 2**31 else np.int64), **kw)
        g.create_dataset("data", data=coo.data, **kw)
        obj = g
    elif name in _QUANTISED and np.dtype(data.dtype).kind == "f" and dims and dims[0] == "candidate" and data.ndim == 2:
        g = group.create_group(name)
        g.attrs["encoding"] = "uint16"
        n = data.shape[0]
        scale = np.ones(n)
        offset = np.zeros(n)
        q = _create(g, "q", data, dims, np.uint16)
        row = max(1, int(data.shape[1]) * 8)
        block = max(1, int(2**25 // row))
        source = _array_source(data) if isinstance(data, da.Array) else None  # skip dask per block
        source = data if source is None else source
        for s in range(0, n, block):
            x = np.array(np.asarray(source[s : s + block]), dtype=np.float64)
            if not np.isfinite(x.sum(axis=1)).all() and not np.isfinite(x).all():  # the sum is a cheap first test
                raise InputError(f"{name} holds NaN/inf values; replace them before saving the sort set.")
            if x.shape[1]:
                # compiled form of clip(rint((x - lo) / sc), 0, 65535) per row, same bytes
                qb = np.empty(x.shape, np.uint16)
                quantise_u16(x, qb, scale[s : s + block], offset[s : s + block])
                q[s : s + block] = qb
            else:
                q[s : s + block] = np.zeros(x.shape, np.uint16)
        g.create_dataset("scale", data=scale)
        g.create_dataset("offset", data=offset)
        g.attrs["dtype"] = str(np.dtype(data.dtype))
        obj = g
    elif np.dtype(data.dtype).kind in "UO":
        values = np.asarray(data).astype(str)
        obj = group.create_dataset(name, data=values.astype(object), dtype=h5py.string_dtype("utf-8"))
        obj.attrs["encoding"] = "str"
    elif np.dtype(data.dtype).kind == "b":
        obj = _create(group, name, data, dims, np.uint8)
        _write_blocks(obj, data, lambda x: x.astype(np.uint8))
        obj.attrs["encoding"] = "bool"
    else:
        obj = _create(group, name, data, dims)
        _write_blocks(obj, data)
        obj.attrs["encoding"] = "array"
    obj.attrs["dims"] = json.dumps(list(dims))
    obj.attrs["role"] = role
    obj.attrs["attrs"] = _attrs_json(var.attrs)


def write_sortset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write a sort set to ``path`` (HDF5) atomically; the ``movie`` is left out.

    Parameters
    ----------
    ds : xarray.Dataset
        The sort set (see CONTRIBUTING.md); variables may be numpy, dask or sparse.
    path : str or PathLike
        Target file; replaced only once the new file is complete.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    path = Path(path)
    missing = [v for v in REQUIRED if v not in ds.variables]
    if missing:
        raise InputError(f"this dataset is not a sort set: it lacks {missing}; build it with actsort_nb.preprocess.preprocess().")
    if not path.parent.exists():
        raise InputError(f"{path}: the folder {path.parent} does not exist; create it or choose another output path.")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["schema"] = SORTSET_SCHEMA
            f.attrs["sizes"] = json.dumps({str(k): int(v) for k, v in ds.sizes.items()})
            f.attrs["attrs"] = _attrs_json(ds.attrs)
            group = f.create_group("vars")
            names = [str(k) for k in ds.variables if k != "movie"]
            f.attrs["order"] = json.dumps(names)
            for name in names:
                _write_var(group, name, ds[name].variable, "coord" if name in ds.coords else "data")
            f.attrs["complete"] = 1
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class _Lazy:
    """Array-like view of one HDF5 dataset, opened on demand (picklable for dask workers)."""

    def __init__(self, path: str, name: str, shape, dtype, key):
        self.path, self.name, self.key = path, name, key
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)

    def _file(self) -> h5py.File:
        f = _FILES.get(self.key)
        if f is None or not f.id.valid:
            f = _FILES[self.key] = h5py.File(self.path, "r")
        return f

    def __getitem__(self, item):
        with _H5_LOCK:
            try:
                return self._file()[self.name][item]
            except (OSError, KeyError) as exc:
                raise InputError(
                    f"{self.path}: variable {self.name!r} cannot be read ({exc}); the sort set is corrupt, "
                    "re-run `actsort-nb preprocess` to rebuild it."
                ) from None


def _refuse(path: Path, why: str) -> InputError:
    return InputError(f"{path}: {why}; re-run `actsort-nb preprocess` to rebuild it.")


def open_sortset(path: str | os.PathLike, *, chunk_candidates: int = 256) -> xr.Dataset:
    """Reopen a sort set written by :func:`write_sortset`, lazily.

    Small variables are read (and checksum-verified) now; ``snapshots``, ``traces``
    and ``crop_footprint`` become dask arrays over the file, so one candidate's
    snapshots are read only when asked for.

    Parameters
    ----------
    path : str or PathLike
        The ``.h5`` sort set.
    chunk_candidates : int
        Candidates per dask chunk of the lazy variables.

    Returns
    -------
    xarray.Dataset
        The sort set with the same variables and dims as in memory.

    Raises
    ------
    InputError
        If the file is not a sort set, has another schema, or is truncated/corrupt.

    Examples
    --------
    >>> ds = open_sortset("sortset.h5")  # doctest: +SKIP
    >>> ds.snapshots.isel(candidate=0).values.shape  # doctest: +SKIP
    (5, 11, 24, 24)
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such sort set file; check the path or run `actsort-nb preprocess` first.")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise _refuse(path, f"is not a readable HDF5 file (truncated or corrupt: {exc})") from None
    with f:
        try:
            return _read(f, path, chunk_candidates)
        except InputError:
            raise
        except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
            raise _refuse(path, f"is damaged ({type(exc).__name__}: {exc})") from None


def _read(f: h5py.File, path: Path, chunk_candidates: int) -> xr.Dataset:
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT:
        raise InputError(f"{path}: is an HDF5 file but not an actsort_nb sort set; pass a file written by `actsort-nb preprocess`.")
    schema = int(f.attrs.get("schema", -1))
    if schema != SORTSET_SCHEMA:
        raise InputError(
            f"{path}: has sort-set schema {schema} but this actsort_nb reads schema {SORTSET_SCHEMA}; "
            "re-run `actsort-nb preprocess` with this version (or use the version that wrote it)."
        )
    if int(f.attrs.get("complete", 0)) != 1:
        raise _refuse(path, "was not completely written")
    sizes = json.loads(f.attrs["sizes"])
    group = f["vars"]
    missing = [v for v in REQUIRED if v not in group]
    if missing:
        raise _refuse(path, f"lacks the variables {missing}")
    st = os.stat(path)
    key = (str(path.resolve()), st.st_ino, st.st_mtime_ns)
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    order = json.loads(f.attrs["order"])
    if sorted(order) != sorted(group):
        raise _refuse(path, "lists variables that do not match its contents")
    for name in order:
        obj = group[name]
        dims = tuple(json.loads(obj.attrs["dims"]))
        enc = obj.attrs["encoding"]
        enc = enc.decode() if isinstance(enc, bytes) else enc
        if enc == "coo":
            shape = tuple(int(s) for s in obj.attrs["shape"])
            values: Any = sparse.COO(obj["coords"][...].astype(np.int64), obj["data"][...], shape=shape)
        elif enc == "uint16":
            scale = obj["scale"][...]
            offset = obj["offset"][...]
            q = obj["q"]
            shape = q.shape
            lazy = da.from_array(
                _Lazy(str(path), q.name, q.shape, q.dtype, key), chunks=(chunk_candidates,) + shape[1:], asarray=True
            )
            dtype = np.dtype(obj.attrs.get("dtype", "float32"))
            values = (lazy * scale[:, None] + offset[:, None]).astype(dtype)
        elif name in _LAZY:
            shape = obj.shape
            values = da.from_array(
                _Lazy(str(path), obj.name, obj.shape, obj.dtype, key),
                chunks=(min(chunk_candidates, shape[0] or 1) if name != "snapshots" else 1,) + tuple(shape[1:]),
                asarray=True,
            )
        elif enc == "str":
            values = obj.asstr()[...].astype(str)
            shape = values.shape
        else:
            values = obj[...]
            shape = values.shape
            if enc == "bool":
                values = values.astype(bool)
        want = tuple(sizes.get(d, -1) for d in dims)
        if tuple(shape) != want:
            raise _refuse(path, f"variable {name!r} has shape {tuple(shape)} but its dims {dims} say {want}")
        var = xr.Variable(dims, values, attrs=json.loads(obj.attrs["attrs"]))
        role = obj.attrs["role"]
        (coords if (role.decode() if isinstance(role, bytes) else role) == "coord" else data_vars)[name] = var
    ds = xr.Dataset(data_vars, coords=coords, attrs=json.loads(f.attrs["attrs"]))
    ds.attrs["sortset_path"] = str(path)
    return ds
