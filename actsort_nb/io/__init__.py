"""Readers: every supported extraction output becomes one CandidateSet (an ``xarray.Dataset``).

One module per format, in the style of xarray's backends: each has a
``guess_can_open(path)`` that looks at magic bytes and contents before the extension,
and a ``read(path, ...)`` that validates its input and builds the CandidateSet through
:func:`actsort_nb.candidates.candidate_set`. :func:`open_candidates` picks the reader.

======================  ==============================================================
format                  reader
======================  ==============================================================
``extract``             EXTRACT / ActSort ``.mat`` (MATLAB v5 and v7.3)
``caiman``              CaImAn results ``.hdf5``
``suite2p``             Suite2p plane folder (pickles need ``trust=True``)
``nwb``                 NWB PlaneSegmentation + RoiResponseSeries (optional pynwb)
``neurofinder``         Neurofinder ``regions.json`` + movie
``croissant``           Allen croissant ROI JSON (one image shape at a time)
``actsort-benchmark``   features + labels: :func:`read_actsort_benchmark`
movies                  :func:`open_movie`: HDF5, multi-page TIFF, ``.npy``, ``data.bin``
arrays                  :func:`from_arrays`: numpy arrays with named dims
======================  ==============================================================
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from .._validation import check_option
from . import benchmark, caiman, croissant, extract, neurofinder, nwb, suite2p
from . import movie as _movie_mod
from ._common import Backend, InputError, as_path, h5_open, is_hdf5, name
from .arrays import from_arrays
from .benchmark import read_actsort_benchmark
from .movie import open_movie

__all__ = [
    "BACKENDS",
    "describe",
    "from_arrays",
    "guess_format",
    "open_candidates",
    "open_movie",
    "read_actsort_benchmark",
]

#: Readers in the order their ``guess_can_open`` is tried (most specific first).
BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        suite2p.BACKEND,
        nwb.BACKEND,
        caiman.BACKEND,
        benchmark.BACKEND,
        extract.BACKEND,
        croissant.BACKEND,
        neurofinder.BACKEND,
        _movie_mod.BACKEND,
    )
}

SUPPORTED = (
    "EXTRACT/ActSort .mat (v5 or v7.3), CaImAn .hdf5, a Suite2p plane folder, NWB, "
    "Neurofinder regions JSON and Allen croissant ROI JSON"
)


def guess_format(path) -> str | None:
    """Name the format of ``path`` by asking each backend's ``guess_can_open``; None if none claims it.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.npy"); np.save(p, np.zeros((2, 3, 3)))
    >>> guess_format(p)
    'movie'
    """
    path = as_path(path)
    for backend in BACKENDS.values():
        if backend.guess_can_open(path):
            return backend.name
    return None


def open_candidates(path, *, format: str | None = None, movie=None, trust: bool = False, **kwargs) -> xr.Dataset:
    """Open an extraction output as a CandidateSet, guessing its format from its contents.

    Parameters
    ----------
    path : str or path-like
        A file or a Suite2p plane folder.
    format : str, optional
        One of ``extract``, ``caiman``, ``suite2p``, ``nwb``, ``neurofinder``,
        ``croissant``; guessed when None.
    movie : path or array, optional
        The motion-corrected movie (opened lazily with :func:`open_movie` when a path;
        ``movie_dataset=`` and ``matlab_order=`` are its ``dataset`` and ``matlab_order``).
    trust : bool
        Allow Suite2p's pickled ``stat.npy`` / ``ops.npy`` (only for files you made).
    **kwargs
        Passed to the reader (e.g. ``frame_rate``, ``trace_order``, ``image_shape``).

    Returns
    -------
    xarray.Dataset
        The CandidateSet.

    Examples
    --------
    >>> import numpy as np, scipy.io, tempfile, os
    >>> S = np.zeros((6, 5, 2)); S[1, 1, 0] = 1; S[4, 3, 1] = 1
    >>> p = os.path.join(tempfile.mkdtemp(), "out.mat")
    >>> scipy.io.savemat(p, {"spatial_weights": S, "temporal_weights": np.ones((20, 2))})
    >>> ds = open_candidates(p)
    >>> ds.attrs["source_format"], ds.sizes["candidate"]
    ('extract', 2)
    """
    path = as_path(path)
    if not path.exists():
        raise InputError(f"{name(path)}: no such file or folder; check the path.")
    readers = [k for k, b in BACKENDS.items() if b.kind == "candidates"]
    if format is None:
        format = guess_format(path)
    else:
        check_option(format, "format", readers)
    if format is None and path.is_dir():
        _suite2p_root_hint(path)
        if (path / "stat.npy").is_file() or (path / "F.npy").is_file():
            missing = [f for f in ("stat.npy", "F.npy") if not (path / f).is_file()]
            raise InputError(f"{name(path)}: looks like a Suite2p plane folder but has no {' or '.join(missing)}; "
                             "copy the whole plane folder that Suite2p wrote.")
    if format is None:
        raise InputError(
            f"{name(path)}: is not a format actsort_nb recognises; supported are {SUPPORTED} (pass format= if the guess failed)."
        )
    if format == "movie":
        raise InputError(
            f"{name(path)}: is a movie, not an extraction output; pass the extraction output there, and this file as "
            "the movie (movie= in Python; actsort-nb preprocess takes MOVIE first, then EXTRACTION)."
        )
    if format == "actsort-benchmark":
        raise InputError(
            f"{name(path)}: holds ActSort benchmark features and labels, not candidates; read it with read_actsort_benchmark()."
        )
    if format == "suite2p":
        kwargs["trust"] = trust
    movie_path = None
    if movie is not None:
        if format == "croissant":
            raise InputError(f"{name(path)}: croissant ROIs come from many experiments and have no movie, so they cannot "
                             "be pre-processed; open them without a movie (open_candidates(path)) to inspect them.")
        movie_path = as_path(movie) if isinstance(movie, (str, bytes, os.PathLike)) else None
        if movie_path is not None:  # opened here for every reader: one set of movie options
            movie = open_movie(movie_path, dataset=kwargs.pop("movie_dataset", None),
                               matlab_order=kwargs.pop("matlab_order", None), trust=trust)
        elif "movie_dataset" in kwargs or "matlab_order" in kwargs:
            raise InputError("movie_dataset= and matlab_order= apply to a movie given as a path; this movie is an array.")
        kwargs["movie"] = movie
    if movie_path is None and "matlab_order" in kwargs:
        raise InputError("matlab_order= applies to a movie given as a path (movie=PATH); there is none here.")
    _check_reader_options(format, kwargs)
    ds = BACKENDS[format].read(path, **kwargs)
    if movie_path is not None and "movie" in ds.variables:
        ds["movie"].attrs["source"] = str(movie_path)  # so that an output never replaces it
    return ds


def _suite2p_root_hint(path: Path) -> None:
    """Raise the "open one plane folder" sentence when ``path`` is a Suite2p output folder (plane0, plane1, ...)."""
    planes = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name.startswith("plane"))
    if planes:
        raise InputError(f"{name(path)}: is a Suite2p output folder with {', '.join(planes)}; open one plane "
                         f"folder, e.g. {name(path / planes[0])}.")


def _check_reader_options(format: str, options: dict) -> None:
    """Refuse keyword options the ``format`` reader does not take, naming the ones it does."""
    import inspect

    from .._validation import did_you_mean

    params = inspect.signature(BACKENDS[format].read).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [k for k in params if k != "path"]
    for key in options:
        if key not in known:
            offered = list(dict.fromkeys([k for k in known if k != "movie"] + ["movie_dataset", "matlab_order"]))
            hint = did_you_mean(key, offered).strip()
            raise InputError(f"open_candidates: the {format} reader has no option {key!r}; it takes "
                             f"{', '.join(offered)}. {hint}".strip())


# --------------------------------------------------------------------------- describe
def _fmt_rate(rate) -> str:
    return "unknown" if rate is None or not np.isfinite(rate) else f"{float(rate):g} Hz"


def _describe_set(ds: xr.Dataset) -> list[str]:
    lines = [
        f"candidates: {ds.sizes['candidate']}",
        f"field of view: {ds.sizes['y']} x {ds.sizes['x']} (height x width)",
        f"frames: {ds.sizes['time']}",
        f"frame rate: {_fmt_rate(ds.attrs.get('frame_rate'))}",
    ]
    if "source_label" in ds:
        lab = ds["source_label"].values
        lines.append(f"source labels: {int((lab == 1).sum())} cells, {int((lab == 0).sum())} not cells")
    lines.append("variables: " + ", ".join(f"{k} ({', '.join(map(str, v.dims))}) {v.dtype}" for k, v in ds.data_vars.items()))
    return lines


def _is_sortset(path: Path) -> bool:
    from ..preprocess.sortset import FORMAT

    with h5_open(path) as fh:
        return fh.attrs.get("format") == FORMAT


def _describe_h5(path: Path) -> list[str]:
    import h5py

    lines: list[str] = []
    with h5_open(path) as fh:
        attrs = {k: fh.attrs[k] for k in list(fh.attrs)[:8]}
        if attrs:
            lines.append("attributes: " + ", ".join(f"{k}={_short(v)}" for k, v in attrs.items()))
        entries: list[str] = []

        def visit(key, obj):
            if isinstance(obj, h5py.Dataset) and len(entries) < 40:
                entries.append(f"  {name(key)}: {tuple(obj.shape)} {obj.dtype}")

        fh.visititems(visit)
    lines.append("datasets:" if entries else "datasets: none")
    return lines + entries


def _short(value) -> str:
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe_labels(path: Path) -> list[str]:
    """Lines on actsort_nb's own label files (a label log, a CSV or HDF5 labels export); [] for anything else."""
    from ..store import LabelLog, read_labels
    from ..store.export import is_labels_csv

    if not path.is_file():
        return []
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head == b"SQLite format 3\x00":
        try:
            log = LabelLog(path)
        except InputError:
            return []
        with log:
            lines = ["format: actsort_nb label log (SQLite)", f"dataset: {log.dataset}",
                     f"candidates: {log.n_candidates if log.n_candidates is not None else 'not recorded'}"]
            for who in log.annotators():
                mine = log.history(annotator=who)
                cells = sum(d.label == 1 for d in mine)
                lines.append(f"annotator {who}: {len(mine)} labelled ({cells} cells, {len(mine) - cells} not cells)")
        return lines
    kind = "HDF5" if is_hdf5(path) else "CSV"
    if kind == "CSV" and not is_labels_csv(path):
        return []
    try:
        table = read_labels(path, format=kind.lower())
    except (InputError, OSError, ValueError, KeyError):
        return []
    human = int((table["source"] == "human").sum())
    model = int((table["source"] == "model").sum())
    return [f"format: actsort_nb labels ({kind} export)", f"candidates: {len(table)}",
            f"decided by a human: {human}, by the model: {model}, undecided: {len(table) - human - model}",
            f"cells: {int((table['label'] == 1).sum())}"]


def describe(path, trust: bool = False) -> str:
    """Say in a few lines what a file holds: format, candidates, field of view, frames, frame rate, variables.

    Works for every reader's format, for movies, and for any HDF5 file (its datasets).

    Parameters
    ----------
    path : str or path-like
        A file or a Suite2p plane folder.
    trust : bool
        Allow reading Suite2p's pickled files.

    Returns
    -------
    str
        A human-readable, multi-line summary.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.npy"); np.save(p, np.zeros((5, 4, 3), np.uint16))
    >>> print(describe(p).splitlines()[1])
    format: movie (npy)
    """
    path = as_path(path)
    if not path.exists():
        raise InputError(f"{name(path)}: no such file or folder; check the path.")
    fmt = guess_format(path)
    lines = [f"path: {name(path)}"]
    if fmt is None:
        if is_hdf5(path) and _is_sortset(path):
            from ..preprocess import open_sortset

            ss = open_sortset(path)
            with h5_open(path) as fh:  # the file's layout version (``ss.attrs["schema"]`` is its candidate set's)
                schema = int(fh.attrs["schema"])
            lines.append(f"format: actsort_nb sort set (schema {schema})")
            lines += _describe_set(ss)
            if "features" in ss:
                lines.insert(3, f"features: {ss.sizes['feature']}")
            return "\n".join(lines)
        own = _describe_labels(path)
        if own:
            return "\n".join(lines + own)
        if is_hdf5(path):
            return "\n".join(lines + ["format: HDF5 (not a known extraction output)"] + _describe_h5(path))
        if path.is_dir():
            _suite2p_root_hint(path)
        raise InputError(f"{name(path)}: is not a format actsort_nb recognises; supported are {SUPPORTED}, and movies.")
    desc = BACKENDS[fmt].description
    if fmt == "movie":
        kind = _movie_mod.movie_format(path)
        lines.append(f"format: movie ({kind})")
        try:
            mov = open_movie(path, trust=trust)
        except InputError as exc:
            lines.append(f"movie: not opened ({exc})")
            if kind == "hdf5":
                lines += _describe_h5(path)
            return "\n".join(lines)
        nbytes = int(np.prod(mov.shape)) * mov.dtype.itemsize
        lines += [
            f"frames: {mov.shape[0]}",
            f"field of view: {mov.shape[1]} x {mov.shape[2]} (height x width)",
            f"dtype: {mov.dtype} ({nbytes / 2**20:.1f} MiB, opened lazily in chunks of {mov.chunks[0][0]} frames)",
        ]
        if kind == "hdf5":
            lines += _describe_h5(path)
        return "\n".join(lines)
    lines.append(f"format: {fmt} ({desc})")
    if fmt == "actsort-benchmark":
        fs = read_actsort_benchmark(path)
        lines += [f"candidates: {fs.sizes['candidate']}", f"features: {fs.sizes['feature']}"]
        if "annotations" in fs:
            counts = (fs["annotations"] == 1).sum("candidate").values
            lines.append(
                "annotators: " + ", ".join(f"{a} ({int(c)} cells)" for a, c in zip(fs["annotator"].values, counts))
            )
        return "\n".join(lines)
    if fmt == "croissant":
        for ds in croissant.read(path):
            h, w = ds.attrs["image_shape"]
            lab = ds["source_label"].values if "source_label" in ds else np.array([])
            lines.append(
                f"image shape {h} x {w}: {ds.sizes['candidate']} ROIs ({int((lab == 1).sum())} cells), "
                f"{ds.sizes['time']} samples each"
            )
        return "\n".join(lines)
    if fmt == "neurofinder":
        from ._common import read_json

        regions = read_json(path, "regions file")
        n = len(regions) if isinstance(regions, list) else 0
        lines.append(f"regions: {n} (traces need the movie: open_candidates(path, movie=...))")
        return "\n".join(lines)
    if fmt == "suite2p" and not trust:
        folder = path if path.is_dir() else path.parent
        from ._common import npy_header

        shp = npy_header(folder / "F.npy")[0]
        lines += [
            f"candidates: {shp[0]}",
            f"frames: {shp[1] if len(shp) > 1 else '?'}",
            "stat.npy/ops.npy are pickles and were not read (pass --trust / trust=True for files you made)",
        ]
        return "\n".join(lines)
    try:
        ds = open_candidates(path, format=fmt, trust=trust)
    except nwb.NoFieldOfView as exc:  # pixel masks with no image size: the ROIs can still be counted
        return "\n".join(lines + [f"candidates: {exc.n_rois}", f"field of view: unknown ({exc})"])
    lines += _describe_set(ds)
    return "\n".join(lines)
