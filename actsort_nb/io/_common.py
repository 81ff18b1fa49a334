"""Shared plumbing of the readers: file sniffing, safe loading, one-sentence errors.

Every reader goes through these helpers so that hostile input (truncated files,
gigantic declared shapes, pickles, non-UTF-8 names) fails the same way: one
:class:`~actsort_nb.InputError` sentence naming the file, the field and the fix.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import InputError

__all__ = [
    "Backend",
    "InputError",
    "MAX_BYTES",
    "MAX_PIXELS",
    "READ_ERRORS",
    "as_float32",
    "as_path",
    "check_fov",
    "check_rate",
    "check_size",
    "guard",
    "h5_open",
    "h5_read",
    "is_hdf5",
    "leaf",
    "load_npy",
    "mat_version",
    "name",
    "npy_header",
    "read_json",
    "short_reason",
    "text_key",
    "where",
]

#: Largest array (bytes) a reader loads whole into memory; bigger declared shapes are refused
#: before allocating.  Override with the environment variable ``ACTSORT_MAX_BYTES``.
MAX_BYTES = int(os.environ.get("ACTSORT_MAX_BYTES", 4 * 2**30))

#: Largest plausible image (pixels per frame); refuses e.g. a declared 10^6 x 10^6 field of view.
MAX_PIXELS = 2**28

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class Backend:
    """One reader, in the style of xarray's ``BackendEntrypoint``.

    Attributes
    ----------
    name : str
        The ``format=`` value that selects it.
    description : str
        One line for error messages and :func:`actsort_nb.io.describe`.
    guess_can_open : callable
        ``guess_can_open(path) -> bool``; looks at magic bytes / contents first.
    read : callable or None
        ``read(path, **kw) -> xarray.Dataset``; None for movie-only formats.
    kind : str
        ``"candidates"``, ``"features"`` or ``"movie"``.
    """

    name: str
    description: str
    guess_can_open: Callable[[Path], bool]
    read: Callable[..., Any] | None = None
    kind: str = "candidates"
    extensions: tuple[str, ...] = field(default=())


def as_path(path) -> Path:
    """Return ``path`` as a :class:`pathlib.Path` (accepts str, bytes, PathLike)."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return Path(path)


def name(path) -> str:
    """Printable file name for messages (non-UTF-8 bytes shown as escapes, never a crash)."""
    if isinstance(path, (bytes, str)) or hasattr(path, "__fspath__"):
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def text_key(key) -> str:
    """An HDF5 member name as text: h5py hands back bytes for names that are not UTF-8."""
    return key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else str(key)


def leaf(key) -> str:
    """Last component of an HDF5 path, as text."""
    return text_key(key).rsplit("/", 1)[-1]


def head(path: Path, n: int = 2048) -> bytes:
    """First ``n`` bytes of a regular file (empty for folders and unreadable paths)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def is_hdf5(path: Path) -> bool:
    """True if ``path`` carries the HDF5 signature (at 0 or a power-of-two userblock offset)."""
    data = head(path, 4096)
    return any(data[off : off + 8] == HDF5_MAGIC for off in (0, 512, 1024, 2048))


def h5_matches(path, predicate) -> bool:
    """True if ``path`` is an HDF5 file (by magic bytes) whose open ``h5py.File`` satisfies ``predicate``.

    The shared body of the HDF5 readers' ``guess_can_open``: guessing never raises.
    """
    path = as_path(path)
    if not path.is_file() or not is_hdf5(path):
        return False
    try:
        import h5py

        with h5py.File(path, "r") as fh:
            return bool(predicate(fh))
    except Exception:  # noqa: BLE001 - guessing never raises
        return False


def mat_version(path: Path) -> str | None:
    """``"7.3"`` (HDF5-based), ``"5"`` or None for a MATLAB ``.mat`` file, from its 128-byte header."""
    data = head(path, 1024)
    if len(data) < 128 or not data.startswith(b"MATLAB"):
        return None
    if b"MATLAB 7.3 MAT-file" in data[:116] or data[512:520] == HDF5_MAGIC:
        return "7.3"
    if data[126:128] in (b"IM", b"MI"):
        return "5"
    return None


def check_size(shape, dtype, what: str, *, path=None, field=None, limit: int | None = None) -> None:
    """Refuse to allocate an array whose declared size is implausible, before allocating it."""
    limit = MAX_BYTES if limit is None else limit
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise InputError(f"{_where(path, field)}{what} declares a negative shape {shape}; the file is corrupt.")
    nbytes = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    if nbytes > limit:
        raise InputError(
            f"{_where(path, field)}{what} declares shape {shape} ({nbytes / 2**30:.3g} GiB), more than the "
            f"{limit / 2**30:.3g} GiB limit, so it was not loaded; check the file, or raise ACTSORT_MAX_BYTES if it is real."
        )


def check_fov(fov, what: str = "field of view", *, path=None, field=None) -> tuple[int, int]:
    """Validate a ``(height, width)`` pair read from a file."""
    try:
        h, w = (int(v) for v in np.asarray(fov).ravel()[:2])
        if np.asarray(fov).size != 2:
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(
            f"{_where(path, field)}{what} must be two integers (height, width), got {np.asarray(fov).tolist()!r}; "
            "fix the field in the file."
        ) from None
    if h <= 0 or w <= 0 or h * w > MAX_PIXELS:
        raise InputError(
            f"{_where(path, field)}{what} {(h, w)} is not a plausible image size (1..{MAX_PIXELS} pixels); "
            "the file is corrupt or the field holds something else."
        )
    return h, w


_F32_MAX = float(np.finfo(np.float32).max)


def as_float32(values, what: str, *, path=None, field=None) -> np.ndarray:
    """Cast to float32 after checking every value is finite and fits (no silent inf from overflow)."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{_where(path, field)}{what} must be numeric, got dtype {arr.dtype}; save numbers.")
    if arr.dtype.kind == "f" and arr.size:
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(
                f"{_where(path, field)}{what} holds {int(bad.sum())} NaN/inf value(s) of {arr.size}; "
                "replace them (e.g. with 0) or drop those candidates before loading."
            )
    if arr.size and arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        big = float(np.max(np.abs(arr), initial=0))
        if big > _F32_MAX:
            raise InputError(
                f"{_where(path, field)}{what} holds values up to {big:.3g}, beyond float32 range; the file is corrupt or needs rescaling."
            )
    return arr.astype(np.float32, copy=False)


def check_rate(rate, *, path=None, field=None) -> float | None:
    """Validate a frame rate read from a file (None stays unknown); names the file and the field."""
    if rate is None:
        return None
    try:
        value = float(np.asarray(rate).ravel()[0]) if np.size(rate) == 1 else float("nan")
    except (TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise InputError(
            f"{_where(path, field)}the frame rate must be a positive number of frames per second, got {rate!r}; "
            "fix the file or pass frame_rate= explicitly."
        )
    return value


def _where(path, fld=None) -> str:
    parts = []
    if path is not None:
        parts.append(name(path))
    if fld is not None:
        parts.append(f"field {fld!r}")
    return (": ".join(parts) + ": ") if parts else ""


where = _where


#: Exceptions that mean "this file is damaged" whatever library raised them.
READ_ERRORS = (OSError, EOFError, struct.error, zipfile.BadZipFile, UnicodeDecodeError, pickle.UnpicklingError, zlib.error)


@contextlib.contextmanager
def guard(path, what: str = "file", extra: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn low-level read failures (truncated, corrupt, undecodable) into one InputError sentence.

    ``extra`` adds exception types a particular parser uses for damaged input (h5py raises
    ``RuntimeError``/``KeyError`` on corrupt B-trees and object headers).
    """
    try:
        yield
    except InputError:
        raise
    except READ_ERRORS + tuple(extra) as exc:
        if isinstance(exc, FileNotFoundError):
            raise InputError(f"{name(path)}: no such file or folder; check the path.") from None
        if isinstance(exc, UnicodeDecodeError):
            raise InputError(
                f"{name(path)}: the {what} holds text that is not valid UTF-8 (byte {exc.start}); "
                "re-save it with UTF-8 names and strings."
            ) from None
        text = str(exc).strip("'\"")
        reason = short_reason(text.splitlines()[0]) if text else type(exc).__name__
        raise InputError(
            f"{name(path)}: could not read the {what} ({reason}); it is truncated or corrupt, so re-export it."
        ) from None


@contextlib.contextmanager
def h5_open(path) -> Iterator[Any]:
    """Open an HDF5 file read-only; a truncated or non-HDF5 file raises InputError, not OSError."""
    import h5py

    path = as_path(path)
    if not path.exists():
        raise InputError(f"{name(path)}: no such file; check the path.")
    if not path.is_file():
        raise InputError(f"{name(path)}: is not a file; pass the HDF5 file itself.")
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise InputError(
            f"{name(path)}: is not a readable HDF5 file ({short_reason(reason)}); it is truncated or corrupt, so re-export it."
        ) from None
    try:
        with guard(path, "HDF5 file", extra=(RuntimeError, KeyError)):
            yield fh
    finally:
        with contextlib.suppress(Exception):
            fh.close()


def short_reason(reason: str) -> str:
    """A library's error text squeezed into a parenthesis of our one sentence."""
    reason = reason.replace("Unable to synchronously open file", "unable to open").strip().rstrip(".")
    reason = reason.replace(". ", "; ").replace("\n", " ")
    return reason[:1].lower() + reason[1:160]


def h5_read(dset, what: str, *, path, field, limit: int | None = None) -> np.ndarray:
    """Read an HDF5 dataset whole, after checking its declared size and dtype."""
    import h5py

    if not isinstance(dset, h5py.Dataset):
        raise InputError(f"{_where(path, field)}{what} is an HDF5 group, not an array; point to the array inside it.")
    check_size(dset.shape, dset.dtype if dset.dtype.kind in "biufc" else np.dtype("u1"), what, path=path, field=field, limit=limit)
    if dset.dtype.kind not in "biuf":
        raise InputError(
            f"{_where(path, field)}{what} must be numeric, got HDF5 dtype {dset.dtype}; save it as a numeric array."
        )
    return dset[()]


def npy_header(path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Read a ``.npy`` header: ``(shape, fortran_order, dtype, data_offset)``; checks the file is complete."""
    path = as_path(path)
    with guard(path, ".npy file"), open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=100_000)
        except ValueError as exc:
            raise InputError(
                f"{name(path)}: is not a valid .npy file ({short_reason(str(exc))}); re-save it with numpy.save."
            ) from None
        offset = fh.tell()
    if not dtype.hasobject:
        expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
        actual = path.stat().st_size - offset
        if actual < expected:
            raise InputError(
                f"{name(path)}: the .npy header declares shape {tuple(shape)} {dtype} ({expected} bytes) but the file "
                f"holds {actual}; it is truncated, so re-save it."
            )
    return tuple(int(s) for s in shape), bool(fortran), dtype, offset


# Globals a numpy object-array pickle (Suite2p's stat.npy / ops.npy) legitimately needs.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy", "bool_"),
    ("numpy.dtypes", "ObjectDType"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    # Suite2p's ops holds e.g. date_proc = datetime.now(); these rebuild values, they run nothing.
    ("datetime", "datetime"),
    ("datetime", "date"),
    ("datetime", "time"),
    ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
}


class _Refused(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (it would call arbitrary code)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and plain containers (never calls other code)."""

    def find_class(self, module: str, name_: str):  # noqa: D401
        if (module, name_) in _SAFE_GLOBALS or (module.startswith("numpy.dtypes") and name_.endswith("DType")):
            return super().find_class(module, name_)
        raise _Refused(f"refused to load the global {module}.{name_}")


def load_npy(path, *, trust: bool = False, what: str = "array", limit: int | None = None, mmap: bool = False):
    """Load a ``.npy`` file safely.

    Plain numeric arrays load without pickle. Object arrays (pickles) need
    ``trust=True`` and even then go through a restricted unpickler that only
    rebuilds numpy arrays and plain containers, so a hostile pickle cannot run code.
    """
    path = as_path(path)
    if not path.is_file():
        raise InputError(f"{name(path)}: no such file; check the path.")
    shape, fortran, dtype, offset = npy_header(path)
    if dtype.hasobject:
        if not trust:
            raise InputError(
                f"{name(path)}: is a pickle, and loading a pickle can run arbitrary code, so it was not loaded; "
                "pass trust=True (CLI: --trust) only for files you made yourself."
            )
        check_size(shape, np.dtype(object), what, path=path)
        with guard(path, ".npy file"), open(path, "rb") as fh:
            fh.seek(offset)
            try:
                obj = _RestrictedUnpickler(fh, encoding="latin1").load()
            except _Refused as exc:
                raise InputError(
                    f"{name(path)}: the pickle asks to run code ({exc}), so it was refused; "
                    "re-create the file with Suite2p itself."
                ) from None
            except (pickle.UnpicklingError, EOFError) as exc:
                raise InputError(
                    f"{name(path)}: the pickle is truncated or corrupt ({short_reason(str(exc))}); re-create it with Suite2p."
                ) from None
            except (AttributeError, TypeError, ValueError, IndexError, KeyError, ImportError, NotImplementedError) as exc:
                raise InputError(
                    f"{name(path)}: the pickled array could not be rebuilt ({type(exc).__name__}); "
                    "it is corrupt, so re-create it with Suite2p."
                ) from None
        arr = np.asarray(obj) if not isinstance(obj, np.ndarray) else obj
        return arr
    if dtype.kind not in "biufc":
        raise InputError(f"{name(path)}: the array has dtype {dtype}, which is not numeric; re-save it as numbers.")
    if mmap:
        with guard(path, ".npy file"):
            return np.load(path, mmap_mode="r", allow_pickle=False)
    check_size(shape, dtype, what, path=path, limit=limit)
    with guard(path, ".npy file"):
        return np.load(path, allow_pickle=False)


def read_json(path, what: str = "JSON file") -> Any:
    """Parse a JSON file; invalid UTF-8 or JSON raises one InputError sentence."""
    path = as_path(path)
    if not path.is_file():
        raise InputError(f"{name(path)}: no such file; check the path.")
    with guard(path, what):
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name(path)}: the {what} is not valid UTF-8 (byte {exc.start}); re-save it as UTF-8."
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name(path)}: is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "it is truncated or corrupt, so re-export it."
        ) from None


def sniff_json(path: Path, n: int = 4096) -> str:
    """The first ``n`` bytes of a file as text (for content-based format guessing)."""
    return head(path, n).decode("utf-8", "replace")
