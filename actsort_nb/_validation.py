"""Input checks shared by every module: one error type, one sentence each.

Every check names the thing that is wrong, the value it got and how to fix it,
in the style of scikit-learn's ``check_array``.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from os import PathLike

import numpy as np


class InputError(ValueError):
    """Raised when user input (a file, an array, a parameter) is unusable.

    The message is one sentence saying what is wrong and how to fix it.
    """


def where(path: str | PathLike | None, field: str | None = None) -> str:
    """Return a short prefix naming a file and a field, for error messages."""
    parts = []
    if path is not None:
        parts.append(f"{str(path)!s}")
    if field is not None:
        parts.append(f"field {field!r}")
    return (": ".join(parts) + ": ") if parts else ""


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """Suggest the closest names to ``name`` among ``options`` (xarray's idea)."""
    options = [str(o) for o in options]
    close = difflib.get_close_matches(str(name), options, n=3)
    if close:
        return f" Did you mean {', '.join(map(repr, close))}?"
    shown = ", ".join(map(repr, options[:12])) + (" ..." if len(options) > 12 else "")
    return f" Available: {shown}." if options else ""


def check_finite(
    values: np.ndarray, what: str, *, path=None, field=None, fix: str = ""
) -> None:
    """Raise :class:`InputError` if ``values`` holds NaN or inf."""
    values = np.asarray(values)
    if values.dtype.kind in "fc" and values.size:
        bad = ~np.isfinite(values)
        if bad.any():
            n = int(bad.sum())
            raise InputError(
                f"{where(path, field)}{what} holds {n} NaN/inf value(s) of {values.size}; "
                + (fix or "replace them (e.g. with 0) or drop those candidates before loading.")
            )


def check_ndim(values, ndim: int, what: str, *, path=None, field=None, dims=None) -> None:
    """Raise :class:`InputError` unless ``values`` has ``ndim`` dimensions."""
    got = np.ndim(values)
    if got != ndim:
        names = f" ({', '.join(dims)})" if dims else ""
        raise InputError(
            f"{where(path, field)}{what} must be {ndim}-D{names}, got {got}-D with shape "
            f"{tuple(np.shape(values))}; reshape it or pass the right variable."
        )


def check_numeric(values, what: str, *, path=None, field=None) -> None:
    """Raise :class:`InputError` unless ``values`` has a real numeric or bool dtype."""
    dtype = np.asarray(values).dtype if not hasattr(values, "dtype") else values.dtype
    if np.dtype(dtype).kind not in "biuf":
        raise InputError(
            f"{where(path, field)}{what} must be numeric, got dtype {dtype}; "
            "convert it with .astype(np.float32)."
        )


def check_option(value, name: str, options: Iterable[str]) -> str:
    """Raise :class:`InputError` unless ``value`` is one of ``options``."""
    options = list(options)
    if value not in options:
        hint = did_you_mean(value, options) if isinstance(value, str) else ""
        if hint.startswith(" Available"):
            hint = ""
        raise InputError(f"The {name!r} parameter must be one of {options}, got {value!r}.{hint}")
    return value


def check_int(value, name: str, minimum: int = 0) -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``minimum``, else :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"The {name!r} parameter must be an int >= {minimum}, got {value!r}.")
    return int(value)


def check_number(value, name: str, low: float, high: float, *, exclusive: bool = False) -> float:
    """``value`` as a float in ``(low, high)`` (``exclusive``) or ``[low, high]``, else :class:`InputError`.

    A bool or a string is not a number here.
    """
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))
    v = float(value) if ok else float("nan")
    if not ((low < v < high) if exclusive else (low <= v <= high)):
        bounds = f"({low}, {high})" if exclusive else f"[{low}, {high}]"
        raise InputError(f"The {name!r} parameter must be a number in {bounds}, got {value!r}.")
    return v


def by_dims(values, dims: tuple[str, ...], what: str, source=None):
    """The data of an ``xarray.DataArray`` in ``dims`` order, by dimension name; anything else unchanged."""
    if not hasattr(values, "dims") or not hasattr(values, "transpose"):
        return values
    if set(values.dims) != set(dims):
        raise InputError(f"{where(source, what)}{what} has dims {values.dims}; expected {dims} (rename its dims, "
                         "or pass a plain array in that order).")
    return values.transpose(*dims).data
