"""Exports of sorted labels back into the tools labs use, and their re-import.

Every export starts from one *label table* (:func:`label_table`): per candidate
the final decision, whether a human or the model made it, the human label, the
model's P(cell), and the provenance of the human decision (annotator, UTC time,
strategy). Human labels always win over the model's.

=========  ===========================================================  =====================
format     what is written                                              the original file
=========  ===========================================================  =====================
csv        the label table                                              --
hdf5       the label table + the raw label log (``events`` group)      --
suite2p    ``iscell.npy`` (n × 2: decision, probability) in the plane   backed up to
           folder, as Suite2p reads it                                  ``iscell.actsort-backup-<UTC>.npy``
caiman     ``estimates/idx_components`` / ``idx_components_bad`` in a   never written
           COPY of the CaImAn results file
nwb        columns ``actsort_label``, ``actsort_p_cell``, ... on the    never written
           PlaneSegmentation of a COPY of the NWB file
=========  ===========================================================  =====================

Every file is written to a temporary name in the target folder, flushed to disk
(``fsync``) and moved into place with :func:`os.replace`, so a crash leaves
either the old file or the new one, never half of one. An existing target is
copied to a time-stamped backup first. :func:`read_labels` re-imports any of
them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from .._validation import InputError, check_number, check_option
from .log import CONSENSUS, LabelLog

__all__ = [
    "FORMATS",
    "Written",
    "export",
    "export_caiman",
    "export_csv",
    "export_hdf5",
    "export_nwb",
    "export_suite2p",
    "label_table",
    "read_labels",
]

FORMATS = ("csv", "hdf5", "suite2p", "caiman", "nwb")
LABELS_FORMAT = "actsort_nb.labels"
TABLE_COLUMNS = ("candidate_id", "label", "source", "human_label", "p_cell", "annotator", "time", "strategy")
_STR_COLUMNS = ("candidate_id", "source", "annotator", "time", "strategy")


class Written(NamedTuple):
    """What an export wrote: the file and the backup of what was there before (or None)."""

    path: Path
    backup: Path | None


# -- the label table ----------------------------------------------------------------

def _open_log(source: Any) -> tuple[LabelLog, bool]:
    if isinstance(source, LabelLog):
        return source, False
    text = str(source)
    if "://" not in text and not Path(text).is_file():
        raise InputError(f"Label log {text} does not exist; give the path of the log written while sorting.")
    return LabelLog(source, annotator="actsort-export"), True


def label_table(labels: Any, n: int | None = None, *, p_cell: Any = None, annotator: str | None = None,
                threshold: float = 0.5, candidate_ids: Any = None, ties: str = "not_cell") -> pd.DataFrame:
    """One row per candidate: final decision, its source and provenance.

    Parameters
    ----------
    labels : LabelLog, str, path-like, array-like or DataFrame
        A label log (object, file or URL), an ``(n,)`` array of human labels
        (1/0/−1), or a table made by this function (checked and returned).
    n : int, optional
        Number of candidates (default: from ``p_cell``, else from ``candidate_ids``,
        else the count the panel recorded in the log, else the highest labelled index + 1).
    p_cell : array-like, optional
        ``(n,)`` model P(cell); decides the candidates no human labelled.
    annotator : str, optional
        Whose labels: ``None`` the last decision by anyone, a name, or
        ``"consensus"`` (majority vote, ``ties`` as in :func:`consensus`).
    threshold : float, default 0.5
        The model calls a candidate a cell when ``p_cell >= threshold``.
    candidate_ids : array-like, optional
        ``(n,)`` source ids (default: those stored in the log, else empty).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``candidate`` (0..n-1) with columns ``candidate_id``, ``label``
        (int8 1/0/−1, final), ``source`` (``"human"``, ``"model"`` or ``"none"``),
        ``human_label`` (int8), ``p_cell`` (float, NaN if none), ``annotator``,
        ``time`` (ISO 8601 UTC) and ``strategy`` (``""`` where unknown).

    Examples
    --------
    >>> t = label_table([1, -1, 0, -1], p_cell=[0.9, 0.8, 0.7, 0.1])
    >>> t[["label", "source"]].values.tolist()
    [[1, 'human'], [1, 'model'], [0, 'human'], [0, 'model']]
    """
    if isinstance(labels, pd.DataFrame):
        return _check_table(labels, n)
    check_option(ties, "ties", ("not_cell", "cell", "unlabelled"))
    check_number(threshold, "threshold", 0.0, 1.0, exclusive=True)
    if p_cell is not None and np.ndim(p_cell) != 1:
        raise InputError(f"p_cell must be 1-D, one P(cell) per candidate; got shape {np.shape(p_cell)}.")
    prov: dict[int, Any] = {}
    if isinstance(labels, (LabelLog, str, os.PathLike)):
        log, opened = _open_log(labels)
        try:
            if annotator not in (None, CONSENSUS) and annotator not in log.annotators():
                raise InputError(f"No annotator {annotator!r} wrote to {log.path}; the log holds labels by "
                                 f"{log.annotators()}, or pass 'consensus'.")
            history = log.history(annotator=None if annotator == CONSENSUS else annotator)
            last = max((d.candidate for d in history), default=-1)
            if n is None and p_cell is not None and last >= len(p_cell):
                raise InputError(f"p_cell has {len(p_cell)} values but {log.path} holds a decision on candidate "
                                 f"{last}; pass one P(cell) per candidate of the dataset.")
            if n is None:
                n = len(p_cell) if p_cell is not None else len(candidate_ids) if candidate_ids is not None else None
                n = log.n_candidates if n is None else n  # as the panel recorded it
                n = last + 1 if n is None else n
            human = log.labels(n, annotator=annotator, ties=ties)
        finally:
            if opened:
                log.close()
        for d in history:  # later decisions overwrite earlier ones
            prov[d.candidate] = d
    else:
        human = np.asarray(labels)
        if human.ndim != 1 or (human.size and not np.isin(human, (1, 0, -1)).all()):
            raise InputError("The labels must be a label log or a 1-D array of 1 (cell), 0 (not), -1 (unlabelled); "
                             f"got shape {human.shape}.")
        human = human.astype(np.int8)
        if n is not None and int(n) != human.size:
            raise InputError(f"The labels hold {human.size} candidates but n={n}; pass labels for every candidate.")
        n = human.size
    n = int(n)
    if p_cell is None:
        prob = np.full(n, np.nan)
    else:
        try:
            prob = np.asarray(p_cell, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"p_cell must hold numbers, one P(cell) per candidate ({exc}).") from exc
        if prob.shape != (n,):
            raise InputError(f"p_cell has shape {prob.shape} but there are {n} candidates; pass one P(cell) each.")
        finite = np.isfinite(prob)
        if ((prob[finite] < 0) | (prob[finite] > 1)).any():
            raise InputError("p_cell must hold probabilities in [0, 1] (NaN where unknown).")
    model = np.where(np.isfinite(prob), (prob >= threshold).astype(np.int8), -1).astype(np.int8)
    label = np.where(human >= 0, human, model).astype(np.int8)
    source = np.where(human >= 0, "human", np.where(model >= 0, "model", "none"))
    ann = np.full(n, "", dtype=object)
    when = np.full(n, "", dtype=object)
    strat = np.full(n, "", dtype=object)
    ids = np.full(n, "", dtype=object)
    for c, d in prov.items():
        if human[c] < 0:
            continue
        ann[c] = CONSENSUS if annotator == CONSENSUS else d.annotator
        when[c] = d.time.isoformat()
        strat[c] = d.strategy or ""
        ids[c] = d.candidate_id or ""
    if candidate_ids is not None:
        given = np.asarray(candidate_ids)
        if given.shape != (n,):
            raise InputError(f"candidate_ids has shape {given.shape} but there are {n} candidates.")
        ids = given.astype(str).astype(object)
    table = pd.DataFrame({
        "candidate_id": ids, "label": label, "source": source.astype(object), "human_label": human,
        "p_cell": prob, "annotator": ann, "time": when, "strategy": strat,
    }, index=pd.RangeIndex(n, name="candidate"))
    return table


def _check_table(table: pd.DataFrame, n: int | None) -> pd.DataFrame:
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"The label table lacks columns {missing}; build it with actsort_nb.store.label_table.")
    if n is not None and len(table) != int(n):
        raise InputError(f"The label table has {len(table)} candidates but the target has {n}; "
                         "export the labels of this dataset.")
    return table


# -- atomic file writing ---------------------------------------------------------------

def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system allows it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and move it into place."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"Folder {path.parent} does not exist; create it or choose another target.")
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{path} is write-protected; make it writable (or choose another target) to export there.")
    try:
        yield tmp
        _fsync_file(tmp)
        if path.exists():
            shutil.copymode(path, tmp)  # the file keeps its permissions (e.g. group-writable)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except PermissionError as exc:
        raise InputError(f"cannot write in {path.parent} ({exc.strerror}); choose a folder you can write to, "
                         "or fix its permissions.") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _backup(path: Path) -> Path | None:
    """Copy an existing ``path`` to ``<stem>.actsort-backup-<UTC time><suffix>`` (atomic)."""
    path = Path(path)
    if not path.exists():
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    dest = path.with_name(f"{path.stem}.actsort-backup-{stamp}{path.suffix}")
    k = 1
    while dest.exists():
        dest = path.with_name(f"{path.stem}.actsort-backup-{stamp}-{k}{path.suffix}")
        k += 1
    try:
        with _atomic(dest) as tmp:
            shutil.copy2(path, tmp)
    except PermissionError as exc:
        raise InputError(f"cannot write the backup of {path.name} in {path.parent} ({exc.strerror}); choose a "
                         "folder you can write to, or fix its permissions.") from exc
    return dest


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[tuple[Path, Path | None]]:
    """:func:`_backup` of ``path`` then :func:`_atomic` on it; a failed write keeps no backup.

    Yields ``(temporary path to write, backup or None)``.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"The export target {path} is a folder; give a file name in it, e.g. {path / 'labels'}.")
    backup = _backup(path)
    try:
        with _atomic(path) as tmp:
            yield tmp, backup
    except BaseException:
        if backup is not None:  # the target is untouched: the copy is not needed
            backup.unlink(missing_ok=True)
        raise


def _copy_target(source: Path, out: Path | None, suffix: str) -> Path:
    source = Path(source)
    if not source.is_file():
        raise InputError(f"{source} does not exist; give the results file to export into a copy of.")
    out = Path(out) if out is not None else source.with_name(f"{source.stem}.actsort{source.suffix or suffix}")
    if out.resolve() == source.resolve():
        raise InputError(f"The export target {out} is the original file; choose another --out, the original "
                         "is never written.")
    return out


def _provenance(table: pd.DataFrame, extra: dict | None = None) -> str:
    from .. import __version__

    info = {
        "program": "actsort_nb", "version": __version__,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_candidates": int(len(table)),
        "n_human": int((table["source"] == "human").sum()),
        "n_model": int((table["source"] == "model").sum()),
    }
    info.update(extra or {})
    return json.dumps(info)


# -- CSV and HDF5 -------------------------------------------------------------------------

def export_csv(labels: Any, target: str | os.PathLike, **kw: Any) -> Written:
    """Write the label table as CSV (one row per candidate).

    ``labels`` and ``**kw`` as in :func:`label_table`.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.csv")
    >>> _ = export_csv([1, 0, -1], path, p_cell=[0.9, 0.2, 0.6])
    >>> read_labels(path)["label"].tolist()
    [1, 0, 1]
    """
    target = Path(target)
    table = label_table(labels, **kw)
    _check_replaceable(target, "csv")
    with _replacing(target) as (tmp, backup):
        table.to_csv(tmp, index=True, float_format="%.17g")
    return Written(target, backup)


def is_labels_csv(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a CSV written by :func:`export_csv` (its header)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().strip().split(",")[:2] == ["candidate", "candidate_id"]
    except (OSError, UnicodeDecodeError):
        return False


def _check_replaceable(target: Path, fmt: str) -> None:
    """Refuse to replace an existing file that is not an earlier labels export of ``fmt`` (a results file given by mistake)."""
    if not target.is_file():
        return
    try:
        ours = is_labels_csv(target) if fmt == "csv" else _guess_format(target) == fmt
    except (InputError, OSError):
        ours = False
    if not ours:
        raise InputError(f"{target} exists and is not a labels file written by actsort_nb's {fmt} export; "
                         f"choose a new file name (a results file of another tool is exported to with "
                         f"--format suite2p, caiman or nwb).")


def _events_arrays(labels: Any) -> dict[str, np.ndarray] | None:
    if not isinstance(labels, (LabelLog, str, os.PathLike)):
        return None
    log, opened = _open_log(labels)
    try:
        events = log.events()
        meta = {"log": log.path, "dataset": log.dataset or ""}
    finally:
        if opened:
            log.close()
    out = {
        "id": np.array([e.id for e in events], dtype=np.int64),
        "kind": np.array([e.kind for e in events], dtype=object),
        "candidate": np.array([e.candidate for e in events], dtype=np.int64),
        "candidate_id": np.array([e.candidate_id or "" for e in events], dtype=object),
        "label": np.array([-1 if e.label is None else e.label for e in events], dtype=np.int8),
        "annotator": np.array([e.annotator for e in events], dtype=object),
        "time": np.array([e.time.isoformat() for e in events], dtype=object),
        "strategy": np.array([e.strategy or "" for e in events], dtype=object),
        "p_cell": np.array([np.nan if e.p_cell is None else e.p_cell for e in events], dtype=np.float64),
        "session": np.array([e.session for e in events], dtype=object),
        "retracts": np.array([-1 if e.retracts is None else e.retracts for e in events], dtype=np.int64),
    }
    out["_meta"] = meta  # type: ignore[assignment]
    return out


def export_hdf5(labels: Any, target: str | os.PathLike, **kw: Any) -> Written:
    """Write the label table (and, from a log, every raw event) to an HDF5 file.

    Layout: one dataset per table column at the root (``candidate``, ``label``,
    ``p_cell``, ...; strings as UTF-8), attribute ``format = "actsort_nb.labels"``,
    and an ``events`` group holding the whole append-only log.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.h5")
    >>> _ = export_hdf5([1, -1, 0], path)
    >>> read_labels(path)["label"].tolist()
    [1, -1, 0]
    """
    import h5py

    target = Path(target)
    table = label_table(labels, **kw)
    events = _events_arrays(labels)
    string = h5py.string_dtype("utf-8")
    _check_replaceable(target, "hdf5")
    with _replacing(target) as (tmp, backup):
        with h5py.File(tmp, "w") as h:
            h.attrs["format"] = LABELS_FORMAT
            h.attrs["schema"] = 1
            h.attrs["provenance"] = _provenance(table, events and events.pop("_meta"))  # type: ignore[arg-type]
            h.create_dataset("candidate", data=np.arange(len(table), dtype=np.int64))
            for col in TABLE_COLUMNS:
                values = table[col].to_numpy()
                if col in _STR_COLUMNS:
                    h.create_dataset(col, data=values.astype(object), dtype=string)
                else:
                    h.create_dataset(col, data=values)
            if events is not None:
                g = h.create_group("events")
                for key, values in events.items():
                    g.create_dataset(key, data=values, dtype=string if values.dtype == object else values.dtype)
    return Written(target, backup)


# -- placing labels in the target's rows -------------------------------------------------------

def _target_table(labels: Any, n_target: int, target_ids: Any, source: Path, what: str, **kw: Any) -> pd.DataFrame:
    """The label table in the target's row order: each decided candidate placed by its id.

    The ids come from the log (the panel records them) or ``candidate_ids=``, and are
    the source's own (Suite2p and CaImAn: the ROI index; NWB: the ROI table's ids), so
    a sort set of a subset, or in another order, lands on the right rows; target rows
    nobody decided are undecided. Without ids, candidate ``k`` is row ``k``.
    """
    table = label_table(labels, None, **kw)
    ids = table["candidate_id"].astype(str).to_numpy()
    needed = (table["label"].to_numpy() >= 0) | np.isfinite(table["p_cell"].to_numpy(dtype=np.float64))
    if not needed.any() or (ids[needed] == "").any():
        return label_table(labels, n_target, **kw)
    position = {str(v): k for k, v in enumerate(np.asarray(target_ids).tolist())}
    rows = np.array([position.get(v, -1) for v in ids], dtype=np.int64)
    lost = needed & (rows < 0)
    if lost.any():
        raise InputError(
            f"{source} has no {what} with the id(s) {ids[lost][:5].tolist()} of these labels (its ids: "
            f"{_id_range(target_ids)}); export to the file the candidates came from, or pass candidate_ids= "
            "with its ids."
        )
    out = label_table(np.full(n_target, -1, np.int8), candidate_ids=[str(v) for v in np.asarray(target_ids).tolist()])
    keep = rows >= 0
    for column in TABLE_COLUMNS:
        if column == "candidate_id":
            continue
        values = out[column].to_numpy().copy()
        values[rows[keep]] = table[column].to_numpy()[keep]
        out[column] = values
    return out


def _id_range(ids: Any) -> str:
    ids = np.asarray(ids).tolist()
    return f"{ids[0]} .. {ids[-1]}" if len(ids) > 3 else str(ids)


# -- Suite2p -------------------------------------------------------------------------------

def _suite2p_paths(target: str | os.PathLike) -> tuple[Path, Path]:
    target = Path(target)
    if target.suffix == ".npy":
        return target.parent, target
    if not target.is_dir():
        raise InputError(f"Suite2p target {target} is neither a plane folder nor an iscell.npy path; "
                         "give the folder holding stat.npy/F.npy (e.g. suite2p/plane0).")
    return target, target / "iscell.npy"


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        raise InputError(f"{path}: {what} holds Python objects (a pickle), which actsort_nb never loads; "
                         "give a plain numeric array file.") from exc
    except OSError as exc:
        raise InputError(f"{path}: {what} is not a readable .npy file ({exc}); restore it from Suite2p.") from exc


def export_suite2p(labels: Any, target: str | os.PathLike, *, n: int | None = None, **kw: Any) -> Written:
    """Write Suite2p's ``iscell.npy`` (n × 2: decision, probability) into a plane folder.

    An existing ``iscell.npy`` is first copied to
    ``iscell.actsort-backup-<UTC time>.npy``; then the new file replaces it
    atomically. Candidates nobody decided keep Suite2p's row (or get 0 and
    probability 0 where there was none); column 1 is the model's P(cell) where
    known, else Suite2p's probability, else the decision. ``iscell.actsort.json``
    records what was written and which backup holds Suite2p's own file, so a
    later export takes the undecided rows from Suite2p's file, not from the
    earlier export (a label undone since does not stay).

    Parameters
    ----------
    labels : LabelLog, path, array-like or DataFrame
        As in :func:`label_table` (``**kw`` too).
    target : path
        Suite2p plane folder (``.../suite2p/plane0``) or an ``iscell.npy`` path.
    n : int, optional
        Number of ROIs; default from the original ``iscell.npy`` or ``F.npy``.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> plane = tempfile.mkdtemp()
    >>> np.save(os.path.join(plane, "iscell.npy"), np.array([[1., .9], [1., .6], [0., .2]]))
    >>> w = export_suite2p([0, -1, 1], plane)
    >>> np.load(w.path)[:, 0].tolist(), w.backup.name.startswith("iscell.actsort-backup-")
    ([0.0, 1.0, 1.0], True)
    """
    folder, path = _suite2p_paths(target)
    original = _load_npy(path, "iscell.npy") if path.exists() else None
    if original is not None and (original.ndim != 2 or original.shape[1] != 2 or original.dtype.kind not in "biuf"):
        raise InputError(f"{path}: iscell.npy must be a numeric (n, 2) array, got {original.dtype} "
                         f"{original.shape}; restore it from Suite2p's output.")
    n_target = None
    if original is not None:
        n_target = original.shape[0]
    elif (folder / "F.npy").exists():
        n_target = _load_npy(folder / "F.npy", "F.npy").shape[0]
    if n is not None and n_target is not None and int(n) != n_target:
        raise InputError(f"{folder} holds {n_target} ROIs but n={n}; export the labels of this plane.")
    if n_target is not None:
        table = _target_table(labels, n_target, np.arange(n_target), folder, "ROI", **kw)
    else:
        table = label_table(labels, n, **kw)
    if n_target is not None and len(table) != n_target:
        raise InputError(f"{folder} holds {n_target} ROIs but the labels cover {len(table)}; "
                         "export the labels of this plane (or pass n).")
    label = table["label"].to_numpy()
    prob = table["p_cell"].to_numpy(dtype=np.float64)
    decided = label >= 0
    # the undecided rows come from Suite2p's own classification: if iscell.npy is still what an
    # earlier export wrote, from the backup of Suite2p's file that export made (not from its output,
    # which would keep a label undone since)
    record = _suite2p_record(path)
    ours = original is not None and record.get("written") == _sha256(path)
    kept = record.get("suite2p") if ours else None
    base = original
    if ours and kept is None:  # the first export made iscell.npy: there was no Suite2p file
        base = None
    elif ours and (folder / kept).is_file():
        base = _load_npy(folder / kept, "the backup of Suite2p's iscell.npy")
        if base.shape != original.shape:
            base = original
    out = np.zeros((len(table), 2), dtype=np.float64)
    if base is not None:
        out[:] = np.asarray(base, dtype=np.float64)
    out[decided, 0] = label[decided]
    out[:, 1] = np.where(np.isfinite(prob), prob, out[:, 1] if base is not None else out[:, 0])
    with _replacing(path) as (tmp, backup):
        with open(tmp, "wb") as fh:
            np.save(fh, out, allow_pickle=False)
    suite2p = record.get("suite2p") if ours else (backup.name if backup is not None else None)
    with _atomic(_suite2p_record_path(path)) as tmp:
        tmp.write_text(json.dumps({"written": _sha256(path), "suite2p": suite2p}))
    return Written(path, backup)


def _suite2p_record_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.actsort.json")


def _suite2p_record(path: Path) -> dict:
    """What the last export to ``path`` wrote (its digest) and which backup holds Suite2p's own file; {} if none."""
    try:
        record = json.loads(_suite2p_record_path(path).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


# -- CaImAn ----------------------------------------------------------------------------------

def _caiman_n(h, path: Path) -> int:
    import h5py

    est = h["estimates"]
    a = est.get("A")
    if isinstance(a, h5py.Group) and "shape" in a:  # scipy.sparse saved by CaImAn: data/indices/indptr/shape
        return int(np.asarray(a["shape"][()]).ravel()[1])
    if isinstance(a, h5py.Dataset) and a.ndim == 2:  # dense (pixels, components)
        return int(a.shape[1])
    for key in ("C", "YrA", "S", "F_dff"):
        if isinstance(est.get(key), h5py.Dataset) and est[key].ndim == 2:
            return int(est[key].shape[0])
    raise InputError(f"{path}: field 'estimates' has neither A (with shape) nor C; "
                     "give a results file saved by CaImAn's cnm.save().")


def _caiman_indices(h, key: str) -> np.ndarray | None:
    est = h["estimates"]
    if key not in est or not hasattr(est[key], "dtype"):
        return None
    if est[key].dtype.kind in "SOU":  # CaImAn stores None as the string 'NoneType'
        return None
    if est[key].dtype.kind not in "iuf":
        raise InputError(f"{h.filename}: field 'estimates/{key}' has dtype {est[key].dtype}, not integer "
                         "indices; restore the file from CaImAn's output.")
    return np.asarray(est[key][()], dtype=np.int64).ravel()


def _check_indices(idx: np.ndarray | None, n: int, key: str, path: Path) -> np.ndarray | None:
    if idx is not None and idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InputError(f"{path}: field 'estimates/{key}' holds indices outside 0..{n - 1} "
                         f"(min {idx.min()}, max {idx.max()}); the file does not match its own components.")
    return idx


def _open_caiman(path: Path, mode: str = "r"):
    import h5py

    if not h5py.is_hdf5(path):
        raise InputError(f"{path} is not an HDF5 file; give the .hdf5 results file CaImAn saved.")
    h = h5py.File(path, mode)
    if "estimates" not in h:
        h.close()
        raise InputError(f"{path} has no 'estimates' group, so it is not a CaImAn results file; "
                         "give the file written by cnm.save().")
    return h


def export_caiman(labels: Any, target: str | os.PathLike, *, out: str | os.PathLike | None = None,
                  n: int | None = None, **kw: Any) -> Written:
    """Write ``idx_components`` / ``idx_components_bad`` into a COPY of a CaImAn results file.

    The original is only read. Candidates nobody decided keep their original
    membership, or are left out of both lists if the original has none.

    Parameters
    ----------
    labels : LabelLog, path, array-like or DataFrame
        As in :func:`label_table` (``**kw`` too).
    target : path
        The CaImAn ``.hdf5`` results file (``cnm.save(...)``).
    out : path, optional
        The copy to write (default ``<name>.actsort.hdf5`` beside the original; an
        existing file there is backed up first).

    Examples
    --------
    >>> import tempfile, os, h5py, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "cnm.hdf5")
    >>> with h5py.File(path, "w") as h:
    ...     _ = h.create_dataset("estimates/C", data=np.zeros((4, 10)))
    >>> w = export_caiman([1, 0, -1, 1], path)
    >>> read_labels(w.path)["label"].tolist()
    [1, 0, -1, 1]
    """
    source = Path(target)
    out = _copy_target(source, out, ".hdf5")
    with _open_caiman(source) as h:
        n_target = _caiman_n(h, source)
        good0 = _check_indices(_caiman_indices(h, "idx_components"), n_target, "idx_components", source)
        bad0 = _check_indices(_caiman_indices(h, "idx_components_bad"), n_target, "idx_components_bad", source)
    if n is not None and int(n) != n_target:
        raise InputError(f"{source} holds {n_target} components but n={n}; export the labels of this file.")
    table = _target_table(labels, n_target, np.arange(n_target), source, "component", **kw)
    label = table["label"].to_numpy().copy()
    prior = np.full(n_target, -1, dtype=np.int8)
    if good0 is not None:
        prior[good0] = 1
    if bad0 is not None:
        prior[bad0] = 0
    if good0 is not None and bad0 is None:
        prior[prior < 0] = 0  # CaImAn: everything not accepted is rejected
    label[label < 0] = prior[label < 0]
    with _replacing(out) as (tmp, backup):
        shutil.copyfile(source, tmp)
        with _open_caiman(tmp, "r+") as h:
            est = h["estimates"]
            for key, idx in (("idx_components", np.flatnonzero(label == 1)),
                             ("idx_components_bad", np.flatnonzero(label == 0))):
                if key in est:
                    del est[key]
                est.create_dataset(key, data=idx.astype(np.int64))
            h.attrs["actsort_nb_export"] = _provenance(table, {"original": str(source)})
    return Written(out, backup)


# -- NWB ---------------------------------------------------------------------------------------

NWB_COLUMNS = {
    "actsort_label": "actsort_nb decision: 1 cell, 0 not a cell, -1 undecided",
    "actsort_p_cell": "actsort_nb model P(cell) (NaN where unknown)",
    "actsort_source": "who decided: human, model or none",
    "actsort_annotator": "annotator of the human decision ('' if none)",
}


def _plane_segmentations(nwbfile) -> list:
    from pynwb.ophys import PlaneSegmentation

    return [o for o in nwbfile.objects.values() if isinstance(o, PlaneSegmentation)]


def _pick_plane(nwbfile, name: str | None, path: Path, *, need_column: bool = False):
    planes = _plane_segmentations(nwbfile)
    if need_column:
        planes = [p for p in planes if "actsort_label" in p.colnames]
    if name is not None:
        planes = [p for p in planes if p.name == name]
    if len(planes) != 1:
        names = [p.name for p in _plane_segmentations(nwbfile)]
        what = "with an actsort_label column " if need_column else ""
        raise InputError(f"{path} holds {len(planes)} PlaneSegmentation(s) {what}matching {name!r} "
                         f"(all: {names}); pass plane_segmentation=<name>.")
    return planes[0]


def export_nwb(labels: Any, target: str | os.PathLike, *, out: str | os.PathLike | None = None,
               n: int | None = None, plane_segmentation: str | None = None, **kw: Any) -> Written:
    """Add the labels as columns of the PlaneSegmentation in a COPY of an NWB file.

    Columns: ``actsort_label`` (int8 1/0/−1), ``actsort_p_cell``,
    ``actsort_source`` and ``actsort_annotator``. The original is only read.
    Needs ``pynwb`` (the ``nwb`` extra).

    Parameters
    ----------
    labels : LabelLog, path, array-like or DataFrame
        As in :func:`label_table` (``**kw`` too).
    target : path
        The NWB file holding the ROIs.
    out : path, optional
        The copy to write (default ``<name>.actsort.nwb`` beside the original).
    plane_segmentation : str, optional
        Name of the PlaneSegmentation when the file holds several.
    """
    try:
        from pynwb import NWBHDF5IO
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError("Exporting to NWB needs pynwb; install it with 'pip install actsort_nb[nwb]'.") from exc
    source = Path(target)
    out = _copy_target(source, out, ".nwb")
    import h5py

    if not h5py.is_hdf5(source):
        raise InputError(f"{source} is not an NWB (HDF5) file; give the .nwb file holding the ROIs.")
    with _replacing(out) as (tmp, backup):
        shutil.copyfile(source, tmp)
        with NWBHDF5IO(str(tmp), "a") as io:
            try:
                nwbfile = io.read()
            except (TypeError, ValueError, KeyError) as exc:  # e.g. "Missing NWB version in file"
                raise InputError(f"{source} is an HDF5 file but not an NWB file ({exc}); give the .nwb file "
                                 "holding the ROIs (a CaImAn results file is exported to with --format caiman).") from exc
            plane = _pick_plane(nwbfile, plane_segmentation, source)
            n_target = len(plane.id)
            if n is not None and int(n) != n_target:
                raise InputError(f"{source} holds {n_target} ROIs but n={n}; export the labels of this file.")
            clash = [c for c in NWB_COLUMNS if c in plane.colnames]
            if clash:
                raise InputError(f"{source} already has the column(s) {clash} on {plane.name!r}; export from "
                                 "the original NWB file, not from an earlier export.")
            table = _target_table(labels, n_target, plane.id[:], source, "ROI", **kw)
            data = {
                "actsort_label": table["label"].to_numpy(dtype=np.int8),
                "actsort_p_cell": table["p_cell"].to_numpy(dtype=np.float64),
                "actsort_source": table["source"].astype(str).tolist(),
                "actsort_annotator": table["annotator"].astype(str).tolist(),
            }
            for name, description in NWB_COLUMNS.items():
                plane.add_column(name=name, description=description, data=data[name])
            io.write(nwbfile)
    return Written(out, backup)


# -- dispatcher and re-import --------------------------------------------------------------------

def export(labels: Any, format: str, target: str | os.PathLike, **kw: Any) -> Written:
    """Export labels in ``format`` (one of :data:`FORMATS`) to ``target``.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.csv")
    >>> export([1, 0], "csv", path).path.name
    'labels.csv'
    """
    check_option(format, "format", FORMATS)
    writer = {"csv": export_csv, "hdf5": export_hdf5, "suite2p": export_suite2p,
              "caiman": export_caiman, "nwb": export_nwb}[format]
    return writer(labels, target, **kw)


def _guess_format(path: Path) -> str:
    import h5py

    if path.is_dir() or path.suffix == ".npy":
        return "suite2p"
    if path.suffix.lower() == ".csv":
        return "csv"
    if not path.is_file():
        raise InputError(f"{path} does not exist; give an exported labels file or Suite2p plane folder.")
    if not h5py.is_hdf5(path):
        raise InputError(f"{path} is neither CSV, .npy nor HDF5; give a file written by actsort_nb's export.")
    with h5py.File(path, "r") as h:
        if h.attrs.get("format") == LABELS_FORMAT:
            return "hdf5"
        if "estimates" in h:
            return "caiman"
        if "general" in h or "processing" in h or h.attrs.get("neurodata_type") == "NWBFile":
            return "nwb"
    raise InputError(f"{path} is an HDF5 file of no known labels layout; give an actsort_nb HDF5 export, "
                     "a CaImAn results file or an NWB file.")


def read_labels(path: str | os.PathLike, *, format: str | None = None,
                plane_segmentation: str | None = None) -> pd.DataFrame:
    """Re-import labels from any export (or from Suite2p / CaImAn / NWB files).

    Parameters
    ----------
    path : path
        A CSV or HDF5 export, a Suite2p plane folder or ``iscell.npy``, a CaImAn
        results file, or an NWB file with ``actsort_label``.
    format : {"csv", "hdf5", "suite2p", "caiman", "nwb"}, optional
        Guessed from the path when omitted.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``candidate``; always a ``label`` column (int8 1/0/−1) and,
        where the format holds them, ``p_cell`` and the provenance columns.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.csv")
    >>> _ = export_csv([1, 0, -1], path)
    >>> read_labels(path)["label"].tolist()
    [1, 0, -1]
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; give an exported labels file or Suite2p plane folder.")
    fmt = check_option(format, "format", FORMATS) if format is not None else _guess_format(path)
    index = lambda k: pd.RangeIndex(k, name="candidate")  # noqa: E731
    if fmt == "csv":
        try:
            table = pd.read_csv(path, index_col="candidate", keep_default_na=False,
                                dtype={c: str for c in _STR_COLUMNS}, na_values={"p_cell": ["", "nan", "NaN"]})
        except (ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"{path} is not an actsort_nb labels CSV ({exc}); export it again.") from exc
        if "label" not in table.columns:
            raise InputError(f"{path} has no 'label' column; give a CSV written by actsort_nb's export.")
        table["label"] = table["label"].astype(np.int8)
        if "human_label" in table:
            table["human_label"] = table["human_label"].astype(np.int8)
        return table
    if fmt == "hdf5":
        import h5py

        with h5py.File(path, "r") as h:
            cols = {}
            for col in TABLE_COLUMNS:
                if col in h:
                    values = h[col][()]
                    cols[col] = [v.decode() if isinstance(v, bytes) else v for v in values] \
                        if col in _STR_COLUMNS else values
            n = len(h["label"])
        return pd.DataFrame(cols, index=index(n))
    if fmt == "suite2p":
        _, npy = _suite2p_paths(path)
        arr = np.asarray(_load_npy(npy, "iscell.npy"), dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InputError(f"{npy}: iscell.npy must be (n, 2), got {arr.shape}.")
        return pd.DataFrame({"label": arr[:, 0].astype(np.int8), "p_cell": arr[:, 1]}, index=index(len(arr)))
    if fmt == "caiman":
        with _open_caiman(path) as h:
            n = _caiman_n(h, path)
            good = _check_indices(_caiman_indices(h, "idx_components"), n, "idx_components", path)
            bad = _check_indices(_caiman_indices(h, "idx_components_bad"), n, "idx_components_bad", path)
        label = np.full(n, -1, dtype=np.int8)
        if good is not None:
            label[good] = 1
        if bad is not None:
            label[bad] = 0
        return pd.DataFrame({"label": label}, index=index(n))
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "r") as io:
        plane = _pick_plane(io.read(), plane_segmentation, path, need_column=True)
        data = {"label": np.asarray(plane["actsort_label"].data[:], dtype=np.int8),
                "p_cell": np.asarray(plane["actsort_p_cell"].data[:], dtype=np.float64),
                "source": [s.decode() if isinstance(s, bytes) else str(s) for s in plane["actsort_source"].data[:]],
                "annotator": [s.decode() if isinstance(s, bytes) else str(s)
                              for s in plane["actsort_annotator"].data[:]]}
    return pd.DataFrame(data, index=index(len(data["label"])))
