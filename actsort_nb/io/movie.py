"""Lazy movies ``(time, y, x)`` from HDF5, multi-page TIFF, ``.npy`` and Suite2p ``data.bin``.

Nothing here reads a whole movie: every opener returns a :class:`dask.array.Array`
chunked in time, backed by a memory map or by per-chunk reads of the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from ._common import (
    MAX_PIXELS,
    Backend,
    InputError,
    as_path,
    guard,
    h5_open,
    head,
    is_hdf5,
    leaf,
    load_npy,
    mat_version,
    name,
    npy_header,
    text_key,
)

__all__ = ["open_movie", "resolve_movie", "guess_can_open", "movie_format", "BACKEND"]

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
NPY_MAGIC = b"\x93NUMPY"
#: Target bytes per time chunk of a lazy movie.
CHUNK_BYTES = 32 * 2**20


class FileFrames:
    """A read-only array view of raw samples in a file, opened on each access.

    It has ``shape``/``dtype``/``__getitem__`` but no ``copy``, so
    :func:`dask.array.from_array` neither copies nor hashes it (recent dask copies
    anything with ``.copy()``, which for a memory map would read the whole movie),
    and it pickles as a path, so it travels to ``dask.distributed`` workers.
    """

    def __init__(self, path, dtype, shape, offset: int = 0, order: str = "C"):
        self.path = os.fspath(path)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.offset = int(offset)
        self.order = order

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key):
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape, order=self.order)
        return np.array(mm[key])


def _from_frames(frames: FileFrames, tag: str) -> da.Array:
    from dask.base import tokenize

    st = os.stat(frames.path)
    token = tokenize(frames.path, st.st_mtime_ns, st.st_size, frames.shape, str(frames.dtype), frames.offset, frames.order)
    chunks = (_time_chunks(frames.shape[0], frames.shape[1] * frames.shape[2] * frames.dtype.itemsize), -1, -1)
    return da.from_array(frames, chunks=chunks, name=f"{tag}-{token}", asarray=True, meta=np.empty((0, 0, 0), frames.dtype))


def movie_format(path, *, strict: bool = False) -> str | None:
    """Name the movie container of ``path`` from its magic bytes (then its extension), or None.

    With ``strict=True`` (used for format guessing) an HDF5 file counts only when it
    looks like a movie: exactly one 3-D numeric dataset and nothing of higher rank.
    """
    path = as_path(path)
    if path.is_dir():
        return "suite2p-bin" if (path / "data.bin").is_file() else None
    data = head(path, 8)
    if data[:4] in TIFF_MAGICS:
        return "tiff"
    if data[:6] == NPY_MAGIC:
        return "npy"
    if is_hdf5(path):
        return "hdf5" if not strict or _h5_looks_like_movie(path) else None
    if path.suffix.lower() == ".bin":
        return "suite2p-bin"
    return None


def _h5_looks_like_movie(path: Path) -> bool:
    """An HDF5 file is taken for a movie when it has exactly one 3-D numeric dataset and no deeper one."""
    try:
        import h5py

        with h5py.File(path, "r") as fh:
            if "schema" in fh.attrs:
                return False
            ndims: list[int] = []
            fh.visititems(lambda k, o: ndims.append(o.ndim) if isinstance(o, h5py.Dataset) and leaf(k) != "F_per_pixel" else None)
            return len(_h5_movie_candidates(fh)) == 1 and max(ndims, default=0) == 3
    except Exception:  # noqa: BLE001 - guessing never raises
        return False


def guess_can_open(path) -> bool:
    """True if ``path`` looks like a movie this module can open lazily."""
    return movie_format(path, strict=True) is not None


def _time_chunks(n_frames: int, frame_bytes: int) -> int:
    return int(max(1, min(n_frames, CHUNK_BYTES // max(1, frame_bytes))))


def _check_movie_shape(shape, dtype, path, what="movie", field=None) -> None:
    prefix = f"{name(path)}: " + (f"field {field!r}: " if field else "")
    if len(shape) != 3:
        raise InputError(
            f"{prefix}the {what} must be 3-D (time, y, x), got shape {tuple(shape)}; pass the right dataset or reshape it."
        )
    if min(shape) <= 0:
        raise InputError(f"{prefix}the {what} is empty (shape {tuple(shape)}); pass a movie with frames.")
    if int(shape[1]) * int(shape[2]) > MAX_PIXELS:
        raise InputError(
            f"{prefix}the {what} declares frames of {shape[1]}x{shape[2]} pixels, which is not a plausible image; "
            "the file is corrupt or the axes are wrong."
        )
    if np.dtype(dtype).kind not in "biuf":
        raise InputError(f"{prefix}the {what} must be numeric, got dtype {dtype}; convert it to integers or floats.")


def open_movie(
    path,
    *,
    dataset: str | None = None,
    shape: tuple[int, int, int] | None = None,
    dtype="int16",
    matlab_order: bool | None = None,
    trust: bool = False,
) -> da.Array:
    """Open a movie lazily as a ``(time, y, x)`` dask array.

    Parameters
    ----------
    path : str or path-like
        An HDF5 file, a multi-page TIFF, a ``.npy`` file, a Suite2p ``data.bin``
        or a Suite2p plane folder holding ``data.bin``.
    dataset : str, optional
        HDF5 only: the dataset holding the movie. Default: the only 3-D numeric
        dataset (``F_per_pixel`` is ignored, as in ActSort).
    shape : (int, int, int), optional
        Suite2p ``data.bin`` only: ``(nframes, Ly, Lx)``; read from ``ops.npy``
        beside it (with ``trust=True``) when not given.
    dtype : str, optional
        Suite2p ``data.bin`` only: sample type, ``int16`` by default.
    matlab_order : bool, optional
        HDF5 only: True if the dataset was written by MATLAB as ``[H W T]``
        (h5py shows ``(T, W, H)``) and must be transposed. Default: True for
        MATLAB v7.3 files, datasets with a ``MATLAB_class`` attribute, and files
        with ActSort's ``F_per_pixel`` dataset; False otherwise.
    trust : bool
        Allow reading Suite2p's pickled ``ops.npy`` to find the shape of ``data.bin``.

    Returns
    -------
    dask.array.Array
        ``(time, y, x)``, chunked in time; nothing is read until computed.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.npy"); np.save(p, np.zeros((5, 4, 3), np.uint16))
    >>> open_movie(p).shape
    (5, 4, 3)
    """
    path = as_path(path)
    if not path.exists():
        raise InputError(f"{name(path)}: no such movie file; check the path.")
    fmt = movie_format(path)
    if fmt == "tiff":
        return _open_tiff(path)
    if fmt == "npy":
        return _open_npy(path)
    if fmt == "hdf5":
        return _open_hdf5(path, dataset=dataset, matlab_order=matlab_order)
    if fmt == "suite2p-bin":
        return _open_bin(path, shape=shape, dtype=dtype, trust=trust)
    raise InputError(
        f"{name(path)}: is not a movie format actsort_nb reads; supported movies are HDF5, multi-page TIFF, "
        ".npy and Suite2p data.bin."
    )


def _open_npy(path: Path) -> da.Array:
    shp, fortran, dtype, offset = npy_header(path)
    if dtype.hasobject:  # a pickle (e.g. a Suite2p classifier.npy) is never a movie, and is not loaded
        raise InputError(f"{name(path)}: holds pickled Python objects, not movie frames; a movie .npy holds "
                         "a numeric (time, y, x) array.")
    _check_movie_shape(shp, dtype, path)
    return _from_frames(FileFrames(path, dtype, shp, offset, "F" if fortran else "C"), "npy-movie")


def _open_tiff(path: Path) -> da.Array:
    import tifffile

    with guard(path, "TIFF file", extra=(ValueError, RuntimeError, IndexError, KeyError, TypeError)):
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(f"{name(path)}: the TIFF holds no images; pass a movie file.")
            series = tif.series[0]
            shp = tuple(series.shape)
            # tifffile gives the native-order dtype; the raw bytes a contiguous series is mapped
            # from are in the file's order (ImageJ saves big-endian)
            dtype = series.dtype.newbyteorder(tif.byteorder)
            contiguous = series.dataoffset is not None
            offset = series.dataoffset
            n_pages = len(series.pages) if hasattr(series, "pages") else len(tif.pages)
            last = series.pages[-1] if n_pages else None
            declared = _declared_frames(tif)
            if len(tif.series) > 1 and len(shp) == 2 and all(
                tuple(s.shape) == shp and s.dtype == series.dtype for s in tif.series
            ):  # one frame per series (a TIFF written frame by frame): every page is a frame, and
                # the metadata describes one frame each, so it declares no frame count
                shp, n_pages, contiguous, declared = (len(tif.series), *shp), len(tif.series), False, None
                last = tif.series[-1].pages[-1]
            ends = [int(o) + int(c) for o, c in zip(getattr(last, "dataoffsets", ()), getattr(last, "databytecounts", ()))]
    size = path.stat().st_size
    n_found = int(np.prod(shp[:-2])) if len(shp) > 2 else 1
    if (declared is not None and declared != n_found) or (ends and max(ends) > size):
        raise InputError(
            f"{name(path)}: the TIFF is cut short (its metadata declares {declared or 'more'} frames, {n_found} are readable); "
            "the file is truncated, so re-save it."
        )
    if len(shp) == 2:
        shp = (1, *shp)
    _check_movie_shape(shp, dtype, path)
    if n_pages != shp[0] and not contiguous:
        raise InputError(
            f"{name(path)}: the TIFF series has shape {shp} in {n_pages} pages; save one 2-D frame per page "
            "(time, y, x) so it can be read lazily."
        )
    if contiguous:
        if path.stat().st_size < offset + int(np.prod(shp)) * dtype.itemsize:
            raise InputError(f"{name(path)}: the TIFF image data is cut short; the file is truncated, so re-save it.")
        return _from_frames(FileFrames(path, dtype, shp, offset), "tiff-movie")
    dtype = dtype.newbyteorder("=")  # tifffile decodes pages to native order
    step = _time_chunks(shp[0], shp[1] * shp[2] * dtype.itemsize)
    fname = os.fspath(path)

    def read_pages(start: int, stop: int) -> np.ndarray:
        # Runs inside dask: a damaged page surfaces as one InputError sentence, not a codec traceback.
        with guard(fname, f"TIFF frames {start}-{stop - 1}", extra=(ValueError, RuntimeError, IndexError, KeyError, TypeError)):
            out = tifffile.imread(fname, key=range(start, stop))
            return out.reshape(stop - start, shp[1], shp[2])

    from dask.base import tokenize

    st = path.stat()  # names from the file, the same in every process: a rerun's checkpoint recognises the movie
    token = tokenize(fname, st.st_mtime_ns, st.st_size, shp, str(dtype))
    blocks = [
        da.from_delayed(
            dask.delayed(read_pages)(s, min(s + step, shp[0]), dask_key_name=f"tiff-pages-{token}-{s}"),
            (min(s + step, shp[0]) - s, shp[1], shp[2]), dtype, name=f"tiff-block-{token}-{s}",
        )
        for s in range(0, shp[0], step)
    ]
    return da.concatenate(blocks, axis=0)


def _declared_frames(tif) -> int | None:
    """Frame count a TIFF's own metadata promises (tifffile 'shaped' JSON or ImageJ), if any."""
    try:
        if tif.shaped_metadata:
            shape = tuple(tif.shaped_metadata[0].get("shape", ()))
            if len(shape) >= 3:
                return int(np.prod(shape[:-2]))
            return 1 if len(shape) == 2 else None
        if tif.imagej_metadata:
            return int(tif.imagej_metadata.get("images", 0)) or None
    except (TypeError, ValueError, AttributeError):
        return None
    return None


def _h5_movie_candidates(fh) -> list[str]:
    import h5py

    found: list[str] = []

    def visit(key, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim == 3 and obj.dtype.kind in "biuf":
            if leaf(key) != "F_per_pixel":
                found.append(key)

    fh.visititems(visit)
    return found


def _open_hdf5(path: Path, *, dataset: str | None, matlab_order: bool | None) -> da.Array:
    import h5py

    from .._validation import did_you_mean

    with h5_open(path) as probe:
        names = _h5_movie_candidates(probe)
        has_fpp = any(leaf(k) == "F_per_pixel" for k in _all_keys(probe))
        if dataset is None:
            if len(names) != 1:
                listed = ", ".join(repr(text_key(n)) for n in names[:8]) or "none"
                raise InputError(
                    f"{name(path)}: the HDF5 file holds {len(names)} 3-D numeric datasets ({listed}); "
                    "pass dataset='name' (open_candidates: movie_dataset='name'; CLI: --movie-dataset name) to say which one is the movie."
                )
            dataset = names[0]
        if dataset not in probe or not isinstance(probe[dataset], h5py.Dataset):
            hint = did_you_mean(text_key(dataset), [text_key(n) for n in names]).strip().rstrip(".?")
            hint = hint[:1].lower() + hint[1:]
            raise InputError(
                f"{name(path)}: has no dataset {text_key(dataset)!r}" + (f" ({hint})" if hint else "")
                + "; pass the name of the movie dataset."
            )
        dset = probe[dataset]
        shp, dtype = dset.shape, dset.dtype
        is_matlab = "MATLAB_class" in dset.attrs
    _check_movie_shape(shp, dtype, path, field=text_key(dataset))
    if matlab_order is None:
        matlab_order = is_matlab or has_fpp or mat_version(path) == "7.3"
    # Keep our own handle open for the lazy array's lifetime (closed when garbage-collected).
    fh = h5py.File(path, "r")
    from dask.base import tokenize

    st = os.stat(path)
    token = tokenize(os.fspath(path), st.st_mtime_ns, st.st_size, dataset)
    arr = da.from_array(
        fh[dataset], chunks=(_time_chunks(shp[0], shp[1] * shp[2] * dtype.itemsize), -1, -1), name=f"h5-movie-{token}"
    )
    return arr.transpose(0, 2, 1) if matlab_order else arr


def _all_keys(fh) -> list[str]:
    keys: list[str] = []
    fh.visit(keys.append)
    return keys


def _open_bin(path: Path, *, shape, dtype, trust: bool) -> da.Array:
    folder = path if path.is_dir() else path.parent
    binfile = path / "data.bin" if path.is_dir() else path
    dtype = np.dtype(dtype)
    if shape is None:
        ops_path = folder / "ops.npy"
        if not ops_path.is_file():
            raise InputError(
                f"{name(binfile)}: a raw data.bin has no header, and there is no ops.npy beside it; "
                "pass shape=(nframes, Ly, Lx)."
            )
        ops = load_npy(ops_path, trust=trust, what="ops")
        ops = ops.item() if ops.dtype.hasobject and ops.shape == () else ops
        if not isinstance(ops, dict):
            raise InputError(f"{name(ops_path)}: ops.npy must hold a dict; re-create it with Suite2p.")
        missing = [k for k in ("nframes", "Ly", "Lx") if k not in ops]
        if missing:
            raise InputError(
                f"{name(ops_path)}: ops lacks {', '.join(missing)}, needed for the shape of data.bin; pass shape=(nframes, Ly, Lx)."
            )
        shape = (ops["nframes"], ops["Ly"], ops["Lx"])
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"{name(binfile)}: shape must be three integers (nframes, Ly, Lx), got {shape!r}.") from None
    _check_movie_shape(shape, dtype, binfile)
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    actual = binfile.stat().st_size
    if actual < expected:
        raise InputError(
            f"{name(binfile)}: holds {actual} bytes but shape {shape} of {dtype} needs {expected}; "
            "the file is truncated or the shape is wrong."
        )
    return _from_frames(FileFrames(binfile, dtype, shape), "suite2p-bin")


def resolve_movie(movie, dataset: str | None = None, *, fov=None, n_frames: int | None = None, source=None):
    """Open ``movie`` lazily when it is a path, and check it fits the candidates it goes with.

    Parameters
    ----------
    movie : path, array or None
        A movie file (opened with :func:`open_movie`) or an array ``(time, y, x)``.
    dataset : str, optional
        HDF5 dataset name for :func:`open_movie`.
    fov : (int, int), optional
        ``(height, width)`` of the footprints the movie must match.
    n_frames : int, optional
        Length of the traces the movie must match.
    source : str, optional
        The extraction output, named in error messages.

    Returns
    -------
    dask.array.Array or array-like or None
        The movie, untouched when it was already an array.
    """
    if movie is None:
        return None
    if isinstance(movie, (str, bytes, Path)) or hasattr(movie, "__fspath__"):
        movie = open_movie(movie, dataset=dataset)
    shape = tuple(np.shape(movie))
    label = f"{name(source)}: " if source is not None else ""
    if len(shape) != 3:
        raise InputError(f"{label}the movie must be 3-D (time, y, x), got shape {shape}; pass the motion-corrected movie.")
    if fov is not None and shape[1:] != tuple(fov):
        if shape[1:] == tuple(fov)[::-1]:
            raise InputError(
                f"{label}the movie frames are {shape[1:]} but the footprints are {tuple(fov)}, so the movie's y and x look "
                "swapped; a movie MATLAB wrote as [H W T] opens right with open_movie(path, matlab_order=True) "
                "(open_candidates: matlab_order=True; CLI: --matlab-order)."
            )
        raise InputError(
            f"{label}the movie frames are {shape[1:]} but the footprints are {tuple(fov)}; "
            "pass the movie the extraction ran on (same crop and binning)."
        )
    if n_frames is not None and shape[0] != n_frames:
        raise InputError(
            f"{label}the movie has {shape[0]} frames but the traces have {n_frames}; "
            "pass the matching movie or trim both to the same frames."
        )
    return movie


BACKEND = Backend(
    name="movie",
    description="a movie (HDF5, multi-page TIFF, .npy or Suite2p data.bin)",
    guess_can_open=guess_can_open,
    read=None,
    kind="movie",
    extensions=(".h5", ".hdf5", ".tif", ".tiff", ".npy", ".bin"),
)
