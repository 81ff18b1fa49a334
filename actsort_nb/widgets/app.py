"""The sorting app: the candidate panel and the live plots, wired to a learner and a label log.

One decision, in order:

1. the label is appended to the label log and committed (:meth:`LabelLog.record`);
2. the panel moves on: it is sent the next candidate, whose payload was built
   after the previous decision (prefetched), so the browser is answered without
   waiting for a retrain;
3. the learner is taught the label (exactly one retrain);
4. P(cell), the plots and the map colours are updated, and the candidate after the
   shown one is queried and its payload built (the next prefetch).

So the candidate shown after decision *k* was chosen by the model trained on the
first *k - 1* labels (a one-step look-ahead, as in other interactive labelling
tools); the model shown for it (P(cell), decision) is the newest one. Re-running
the cell on the same sort set opens the same label log and replays it into a new
learner, so history and undo continue where the user stopped.
"""
from __future__ import annotations

import collections
import hashlib
import os
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np
import xarray as xr

from .._validation import InputError
from ._payload import CandidateSource, fov_map, map_state
from .panel import ACTION_KINDS, CandidatePanel
from .plots import LivePlots

__all__ = ["STRATEGY_ALIASES", "SortingApp", "dataset_key", "default_log_path", "sort"]

#: Names the panel accepts for the learner's strategies ("ours" is the learner's ``explore``).
STRATEGY_ALIASES = {"ours": "explore", "DCAL": "dcal", "CAL": "cal", "DAL": "dal"}


#: The open app of each (label log, annotator) in this kernel: a newer one (a re-run cell) closes it.
_OPEN: dict[tuple[str, str], SortingApp] = {}


def dataset_key(sortset: xr.Dataset) -> str:
    """A stable key of a sort set for its label log: its ``uuid`` attribute, else a content hash.

    Examples
    --------
    >>> from actsort_nb.synthetic import simulate_recording
    >>> from actsort_nb.preprocess import preprocess
    >>> sortset = preprocess(simulate_recording(n_cells=5, shape=(48, 48), n_frames=100, seed=0), progress=False)
    >>> dataset_key(sortset) == dataset_key(sortset.copy())
    True
    """
    if sortset.attrs.get("uuid"):
        return str(sortset.attrs["uuid"])
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(np.asarray(sortset["candidate"].values).astype(str)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(sortset["features"].values, dtype=np.float32)).tobytes())
    return "sha1:" + h.hexdigest()[:20]


def default_log_path(sortset: xr.Dataset) -> Path:
    """Where a sort set's label log lives unless one is given.

    Beside the sort set's file (``<name>.labels.sqlite``) when it was opened from
    disk, else ``actsort_labels/<key>.sqlite`` under the current directory.
    """
    src = sortset.attrs.get("sortset_path") or sortset.encoding.get("source")
    if src and Path(src).is_file():
        p = Path(src)
        return p.with_name(p.stem + ".labels.sqlite")
    key = dataset_key(sortset).replace(":", "-")
    fallback = Path("actsort_labels") / f"{key}.sqlite"
    if src:
        warnings.warn(
            f"the sort set's file {src} is gone (moved?), so its label log {Path(src).stem}.labels.sqlite is not "
            f"found beside it; using {fallback}. To resume, reopen the sort set where it is now, or pass log=.",
            stacklevel=3,
        )
    return fallback


class SortingApp:
    """Label candidates of a sort set with an active learner, in a notebook cell.

    Parameters
    ----------
    sortset : xarray.Dataset
        A sort set (see CONTRIBUTING.md): features, event snapshots, crops, traces,
        footprints and summary images.
    log : str, path-like or LabelLog, optional
        The label log; default :func:`default_log_path`. An existing log of the
        same sort set is replayed (the session resumes). An app already open in
        this kernel on the same log and annotator (a re-run cell) is closed.
        Panels of other annotators (or kernels) on one log are not shown the same
        candidate at once (:meth:`actsort_nb.store.LabelLog.claim_next`).
    annotator : str, optional
        Who labels; default the login name (the log's default).
    strategy : str, optional
        Query strategy of the learner: ``"explore"`` (ours, the learner's default,
        chosen by the label-efficiency benchmark; also ``"ours"``), ``"dcal"``,
        ``"cal"``, ``"dal"`` or ``"random"``.
    seed : int
        Random seed of the learner.
    threshold : float, optional
        Decision threshold on P(cell); default the one this annotator last set in
        the panel on this log (the strategy and DCAL weight too), else the learner's.
    pretrained : (features, labels), optional
        A previous recording's labelled set to start from (the learner's
        ``pretrained``): e.g. ``(old["features"], old_log.labels(old.sizes["candidate"]))``
        for an earlier sort set ``old`` and its label log.

    Attributes
    ----------
    widget : ipywidgets.VBox
        The panel, the plots and an error output, as one widget.
    panel : CandidatePanel
        The candidate view, decision buttons and map (anywidget).
    plots : LivePlots
        Accuracy, P(cell) histogram, counts and the strategy / threshold controls.
    learner : actsort_nb.learn.ActiveLearner
    log : actsort_nb.store.LabelLog
    errors : list of str
        Tracebacks of failed requests (also shown in :attr:`output`).

    Examples
    --------
    >>> import tempfile, os
    >>> from actsort_nb.synthetic import simulate_recording
    >>> from actsort_nb.preprocess import preprocess
    >>> sortset = preprocess(simulate_recording(n_cells=10, shape=(64, 64), n_frames=200, seed=0), progress=False)
    >>> app = SortingApp(sortset, log=os.path.join(tempfile.mkdtemp(), "l.sqlite"), annotator="ana")
    >>> i = app.shown
    >>> app.label(1)                       # what the Cell button does
    >>> int(app.learner.labels[i]), [d.candidate for d in app.log.history()] == [i]
    (1, True)
    """

    def __init__(
        self,
        sortset: xr.Dataset,
        *,
        log: Any = None,
        annotator: str | None = None,
        strategy: str | None = None,
        seed: int = 0,
        threshold: float | None = None,
        pretrained: tuple | None = None,
    ) -> None:
        from ..learn import ActiveLearner
        from ..store import LabelLog

        if not isinstance(sortset, xr.Dataset):
            raise InputError(
                f"SortingApp needs a sort set (an xarray.Dataset), got {type(sortset).__name__}; "
                "open one with actsort_nb.preprocess.open_sortset(path) or make one with preprocess(candidates)."
            )
        self.sortset = sortset
        self.source = CandidateSource(sortset)
        self.n = self.source.n
        features = sortset["features"].transpose("candidate", "feature")  # named: the learner's feature directions
        kwargs = {"strategy": STRATEGY_ALIASES.get(strategy, strategy)} if strategy else {}
        self.learner = ActiveLearner(features, seed=seed, pretrained=pretrained, **kwargs)
        if threshold is not None:
            self.learner.threshold = float(threshold)
        if isinstance(log, LabelLog):
            key = dataset_key(sortset)
            if log.dataset is not None and log.dataset != key:
                raise InputError(
                    f"The label log {log.path} belongs to dataset {log.dataset!r}, not {key!r}; pass this sort "
                    "set's log (or a new log=...)."
                )
            if annotator is not None and annotator != log.annotator:
                raise InputError(
                    f"annotator={annotator!r} but the label log was opened as {log.annotator!r}; pass one of them "
                    "(LabelLog(path, annotator=...) or log=path with annotator=...)."
                )
            self.log = log
        else:
            path = Path(log) if log is not None else default_log_path(sortset)
            if not str(path).startswith("postgresql:"):
                path.parent.mkdir(parents=True, exist_ok=True)
            self.log = LabelLog(path, annotator=annotator, dataset=dataset_key(sortset))
        self.log.n_candidates = self.n  # so that an export of the log alone covers every candidate
        self._restore_settings(strategy is None, threshold is None)
        self.errors: list[str] = []
        #: Per decision, milliseconds spent logging, answering the page, retraining,
        #: prefetching and updating the views (the page is answered after ``log + show``).
        self.timings: collections.deque = collections.deque(maxlen=10_000)
        self.output = W.Output(layout=W.Layout(max_height="160px", overflow="auto"))
        self.panel = CandidatePanel()
        self.plots = LivePlots(
            strategy=self.learner.strategy,
            dcal_weight=float(self.learner.dcal_weight),
            threshold=float(self.learner.threshold),
        )
        self.shown: int | None = None  # candidate on screen
        self.live: int | None = None  # the queried candidate awaiting a label
        self._prefetch: tuple[int, dict] | None = None
        self._skipped: set[int] = set()
        self._history: list[int] = []  # candidates of this annotator's effective decisions, in order
        self._hist_pos: int | None = None
        self._hist_end = 0  # history entries when browsing began: relabels append after it
        self._p: np.ndarray | None = None
        self._seq = 0

        from ..store._backends import is_url

        where = str(self.log.path) if is_url(self.log.path) else str(Path(self.log.path).resolve())
        key = (where, self.log.annotator)
        earlier = _OPEN.get(key)
        if earlier is not None and earlier is not self:
            earlier.close()  # the cell was re-run: the new panel takes over (the old one no longer follows the log)
        _OPEN[key] = self
        self._open_key = key

        self._replay()
        self._refresh_model()
        self.panel.fov = fov_map(self.source)
        self.live = self._query(set())
        if self.live is not None:
            self._show(self.live)
        self._refill_prefetch()
        self._refresh_views()

        self.panel.observe(self._on_action, names=["action"])
        self.plots.threshold.observe(self._on_threshold, names=["value"])
        self.plots.strategy.observe(self._on_strategy, names=["value"])
        self.plots.dcal_weight.observe(self._on_dcal_weight, names=["value"])
        self.widget = W.VBox([self.panel, self.plots, self.output])
        self.widget.add_class("actsort-app")

    def _repr_mimebundle_(self, **kwargs):
        """Show the app when it is a cell's value (``app`` or ``actsort_nb.sort(...)``)."""
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        n_lab = int(np.sum(self.labels >= 0))
        return f"SortingApp({self.n} candidates, {n_lab} labelled, log={str(self.log.path)!r})"

    # ------------------------------------------------------------------ state
    @property
    def labels(self) -> np.ndarray:
        """``(n,)`` human labels of this session's annotator (1, 0, -1), as the learner holds them."""
        return np.asarray(self.learner.labels)

    @property
    def history(self) -> list[int]:
        """Candidates of this annotator's effective decisions, oldest first."""
        return list(self._history)

    def _replay(self) -> None:
        """Teach the learner this annotator's effective decisions from the log, in order (resume)."""
        for d in self.log.history(annotator=self.log.annotator):
            if d.candidate >= self.n:
                raise InputError(
                    f"the label log {self.log.path} has a decision on candidate {d.candidate} but the sort set has "
                    f"{self.n} candidates; pass the log of this sort set (or a new log=...)."
                )
            self.learner.teach(int(d.candidate), bool(d.label))  # one at a time: undo stays per decision
            self._history.append(int(d.candidate))

    def _predict(self) -> np.ndarray | None:
        """P(cell) of every candidate, or None while the learner has no fitted model."""
        if not self.learner.fitted:
            return None
        return np.asarray(self.learner.predict_proba(), dtype=np.float64)

    def _refresh_model(self) -> None:
        self._p = self._predict()

    def _threshold(self) -> float:
        return float(self.learner.threshold)

    def _query(self, exclude: set[int]) -> int | None:
        """The learner's best unlabelled candidate that is not in ``exclude`` (nor skipped).

        Asks the learner for its ``len(exclude) + 1`` best and keeps the first that is
        not excluded, so the strategy decides even when its favourite is on screen.
        """
        shown = set(exclude)
        exclude = shown | self._skipped
        labels = self.labels
        n_free = int(np.sum(labels < 0))
        if n_free == 0:
            return None
        k = min(n_free, len(exclude) + 1 + len(self.log.claims()))  # room to step past other panels' claims
        ranked = [i for i in np.atleast_1d(self.learner.query(k=k)).tolist() if i not in exclude]
        if ranked:
            # claim it, so another panel on this log is not shown it at the same time (claims are advisory:
            # when others hold all of these, the best is shown anyway)
            got = self.log.claim_next(ranked, skip_labelled=False)
            return int(ranked[0] if got is None else got)
        if self._skipped:  # only skipped candidates are left: offer them again
            self._skipped.clear()
            return self._query(shown)
        return None

    def _p_of(self, i: int) -> float:
        return float(self._p[i]) if self._p is not None else float("nan")

    def _build(self, i: int) -> dict:
        return self.source.payload(i, p_cell=self._p_of(i), threshold=self._threshold(),
                                   label=int(self.labels[i]), labels=self.labels)

    def _show(self, i: int, payload: dict | None = None) -> None:
        """Send candidate ``i`` to the browser (a prefetched payload is refreshed, not rebuilt)."""
        if payload is None or payload["index"] != i:
            payload = self._build(i)
        else:
            labels = self.labels
            payload = dict(payload, label=int(labels[i]), p_cell=None if self._p is None else self._p_of(i),
                           threshold=self._threshold(),
                           neighbor_labels=[int(labels[self.source.index_of(j)]) for j in payload["neighbor_ids"]])
        self._seq += 1
        payload["seq"] = self._seq
        self.shown = i
        self.panel.current = payload

    def _refill_prefetch(self) -> None:
        exclude = {self.live} if self.live is not None else set()
        old = None if self._prefetch is None else self._prefetch[0]
        nxt = self._query(exclude)
        self._prefetch = None if nxt is None else (nxt, self._build(nxt))
        if old is not None and old not in (nxt, self.live) and self.labels[old] < 0:
            self.log.release(old)  # the replaced look-ahead: free it for the other panels

    def _take_prefetch(self) -> int | None:
        if self._prefetch is not None:
            i = self._prefetch[0]
            if self.labels[i] < 0 and i not in self._skipped:
                return i
        return None

    def _refresh_views(self) -> None:
        labels = self.labels
        thr = self._threshold()
        self.panel.map_state = map_state(labels, self._p, thr)
        if self.shown is not None:
            self.panel.model_view = {"index": int(self.shown), "p_cell": None if self._p is None else self._p_of(self.shown),
                                     "threshold": thr}
        unl = labels < 0
        self.panel.counts = {
            "n": int(self.n),
            "labelled": int(np.sum(~unl)),
            "cells": int(np.sum(labels == 1)),
            "not_cells": int(np.sum(labels == 0)),
            "model_cells": None if self._p is None else int(np.sum(self._p[unl] >= thr)),
            "history_pos": self._hist_pos,
            "history_len": len(self._history),
            "skipped": len(self._skipped),
        }
        x, y = self.learner.accuracy_estimate()
        self.plots.update(n_labels=x, accuracy=y, p_cell=self._p, labels=labels, threshold=thr)

    # ---------------------------------------------------------------- actions
    def label(self, value: int | bool, index: int | None = None) -> None:
        """Label the shown candidate (or ``index``): 1/True cell, 0/False not a cell.

        The decision is committed to the log first; then the panel moves on, the
        learner retrains once and the views update.
        """
        t0 = time.perf_counter()
        i = self.shown if index is None else self._position(index, "a label", "; nothing was recorded")
        if i is None:
            raise InputError("there is no candidate on screen to label; every candidate is labelled.")
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
            value = int(value)
        else:
            raise InputError(f"a label is 1 (cell) or 0 (not a cell), got {value!r}; nothing was recorded.")
        by_query = i == self.live and self._hist_pos is None
        strategy = (self.learner.proposed_by(i) or self.learner.strategy).split(":")[0] if by_query else "user"
        p = self._p_of(i)
        self.log.record(i, value, candidate_id=self.source.id_strings[i], strategy=strategy,
                        p_cell=None if not np.isfinite(p) else min(max(p, 0.0), 1.0))
        self._history.append(i)
        t_log = time.perf_counter()
        # 2. move on before retraining; the learner is taught what was logged even if showing fails
        retrained = False
        try:
            if self._hist_pos is not None:
                self._hist_pos += 1
                if self._hist_pos >= self._hist_end:  # past the entries browsed (relabels append after them)
                    self._hist_pos = None
            if self._hist_pos is not None:
                self._show(self._history[self._hist_pos])
            elif i == self.live:
                nxt = self._take_prefetch()
                if nxt is None:  # nothing prefetched: this click pays for its retrain first
                    self.learner.teach(i, value)
                    retrained = True
                    self._refresh_model()
                    nxt = self._query(set())
                    self._prefetch = None
                self.live = nxt
                if nxt is not None:
                    self._show(nxt, self._prefetch[1] if self._prefetch and self._prefetch[0] == nxt else None)
            elif self.live is not None:
                self._show(self.live, None)
        finally:
            t_show = time.perf_counter()
            # 3. one retrain
            if not retrained:
                self.learner.teach(i, value)
                self._refresh_model()
        t_teach = time.perf_counter()
        # 4. views and the next prefetch
        if self.live is None and np.any(self.labels < 0):
            self.live = self._query(set())
            if self.live is not None:
                self._show(self.live)
        self._refill_prefetch()
        t_prefetch = time.perf_counter()
        if self.live is None and self._hist_pos is None:
            self._show(i)  # nothing left to label: the last decision stays on screen, with its label,
            self.shown = None  # but a stray key must not relabel it (z undoes it, ← browses)
        self._refresh_views()
        t_end = time.perf_counter()
        self.timings.append({
            "log_ms": 1e3 * (t_log - t0), "show_ms": 1e3 * (t_show - t_log), "retrain_ms": 1e3 * (t_teach - t_show),
            "prefetch_ms": 1e3 * (t_prefetch - t_teach), "views_ms": 1e3 * (t_end - t_prefetch),
            "answered_after_retrain": retrained,
        })
        if self.live is None and self._hist_pos is None:
            self.panel.status = "Every candidate is labelled."

    def export(self, format: str, target: str | os.PathLike, **kw: Any):
        """Export the sorting as this panel shows it (:func:`actsort_nb.store.export`).

        This annotator's labels (not another annotator's on a shared log), the model's
        P(cell) at the panel's threshold for the others (none before the first model:
        they are exported unlabelled), and the candidates' ids, by which Suite2p,
        CaImAn and NWB targets get each label on its own ROI (a sort set of a subset
        of the ROIs, or in another order, included).

        Parameters
        ----------
        format : {"csv", "hdf5", "suite2p", "caiman", "nwb"}
        target : str or PathLike
            As for :func:`actsort_nb.store.export` (e.g. the Suite2p plane folder).
        **kw
            More options of the format's writer (e.g. ``out=`` for CaImAn and NWB);
            they override the defaults above.

        Returns
        -------
        actsort_nb.store.Written
        """
        from ..store import export

        mine = self.log.annotator in self.log.annotators()
        options = {"p_cell": self._p, "threshold": self._threshold(), "candidate_ids": list(self.source.id_strings)}
        if mine:
            options["annotator"] = self.log.annotator
        options.update(kw)
        return export(self.log if mine else self.labels, format, target, **options)

    def skip(self) -> None:
        """Leave the shown candidate unlabelled and show the next one (no retrain)."""
        i = self.shown
        if i is None or i != self.live:
            self.next()
            return
        self._skipped.add(i)
        nxt = self._take_prefetch()
        if nxt is None:
            nxt = self._query(set())
        self.live = nxt
        if nxt is not None:
            self._show(nxt, self._prefetch[1] if self._prefetch and self._prefetch[0] == nxt else None)
        self._refill_prefetch()
        self._refresh_views()

    def undo(self) -> None:
        """Take back this annotator's last decision (log retraction + learner undo) and show it again."""
        d = self.log.retract()
        if d is None:
            self.panel.status = "Nothing to undo."
            return
        hist = self.learner.history
        now = int(self.log.labels(self.n, annotator=self.log.annotator)[d.candidate])
        before = next((int(e.label) for e in reversed(hist[:-1]) if e.index == d.candidate), -1)
        if hist and hist[-1].index == d.candidate and int(hist[-1].label) == int(d.label) and before == now:
            self.learner.undo()  # the learner's last teach was this decision (this session's, or replayed on resume)
        else:  # a decision of another kernel on this log: the learner follows the log
            self.learner.teach(int(d.candidate), now)
        if self._history and self._history[-1] == d.candidate:
            self._history.pop()
        else:  # the log is the truth: rebuild the mirror
            self._history = [int(e.candidate) for e in self.log.history(annotator=self.log.annotator)]
        self._refresh_model()
        i = int(d.candidate)
        self._hist_pos = None
        if self.labels[i] < 0:
            self._skipped.discard(i)
            if self.live is not None and self.live != i:
                self._prefetch = (self.live, self._build(self.live))
            self.live = i
        self._show(i)
        self._refresh_views()
        where = "" if d.session == self.log.session else " (given in another session on this log)"
        self.panel.status = f"Undid your label on candidate {d.candidate_id or i}{where}."

    def prev(self) -> None:
        """Show the previous candidate in this annotator's history."""
        if not self._history:
            self.panel.status = "No history yet."
            return
        if self._hist_pos is None:
            self._hist_end = len(self._history)
            self._hist_pos = self._hist_end - 1
        else:
            self._hist_pos = max(0, self._hist_pos - 1)
        self._show(self._history[self._hist_pos])
        self._refresh_views()

    def next(self) -> None:
        """Show the next candidate in the history, or the queried one after the newest."""
        if self._hist_pos is None:
            if self.shown != self.live and self.live is not None:
                self._show(self.live)
                self._refresh_views()
            else:
                self.panel.status = "This is the newest candidate."
            return
        self._hist_pos += 1
        if self._hist_pos >= self._hist_end:
            self._hist_pos = None
            if self.live is not None:
                self._show(self.live)
        else:
            self._show(self._history[self._hist_pos])
        self._refresh_views()

    def _position(self, index: Any, what: str, outcome: str = "") -> int:
        """``index`` as a candidate position (an int in ``0 .. n-1``), else one sentence (``what`` needs it)."""
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise InputError(f"{what} needs a candidate index (an int) or, with goto, a candidate id, "
                             f"got index={index!r}{outcome}.")
        if not 0 <= index < self.n:
            raise InputError(f"candidate index {index} is out of range; the sort set has {self.n} candidates{outcome}.")
        return int(index)

    def goto(self, index: int | None = None, candidate_id: str | int | None = None) -> None:
        """Show any candidate, by index (map click) or by its id (the id box)."""
        i = self.source.index_of(candidate_id) if candidate_id is not None else self._position(index, "go to")
        self._hist_pos = None
        self._show(i)
        self._refresh_views()

    # ---------------------------------------------------------------- events
    def _on_action(self, change: dict) -> None:
        act = change["new"] if isinstance(change["new"], dict) else {}
        kind = act.get("kind")
        seq = act.get("seq", 0)
        seq = int(seq) if isinstance(seq, (int, np.integer)) and not isinstance(seq, bool) else 0
        self.panel.status = ""
        try:
            if kind not in ACTION_KINDS:
                raise InputError(f"unknown panel action {kind!r}; expected one of {ACTION_KINDS}.")
            index = act.get("index", -1)
            if kind in ("label", "skip") and index != self.shown:
                # a request about a candidate no longer on screen (double press): ignore it
                if self.shown is None and self.live is None:
                    self.panel.status = "Every candidate is labelled; z undoes the last label, ← shows the earlier ones."
                return
            if kind == "label":
                if "label" not in act:
                    raise InputError("a label request carries no label (1 cell, 0 not a cell); nothing was recorded.")
                self.label(act["label"])
            elif kind == "skip":
                self.skip()
            elif kind == "undo":
                self.undo()
            elif kind == "prev":
                self.prev()
            elif kind == "next":
                self.next()
            elif kind == "goto":
                self.goto(index=act.get("index") if act.get("id") is None else None, candidate_id=act.get("id"))
        except InputError as exc:
            self.panel.status = str(exc)
        except Exception as exc:  # noqa: BLE001 - show it, keep the panel alive, keep the traceback
            tb = traceback.format_exc()
            self.errors.append(tb)
            self.panel.status = f"Error: {exc} (details below the panel)"
            with self.output:
                print(tb)
        finally:
            self.panel.ack = max(self.panel.ack, seq)

    def _restore_settings(self, strategy: bool, threshold: bool) -> None:
        """Take this annotator's saved strategy, threshold and DCAL weight (those not passed explicitly)."""
        saved = self.log.settings()
        wanted = {"strategy": strategy, "threshold": threshold, "dcal_weight": True}
        for name, value in saved.items():
            if wanted.get(name):
                try:
                    setattr(self.learner, name, value)  # no labels yet: nothing is refitted
                except InputError as exc:  # e.g. a strategy this version does not have
                    warnings.warn(f"the label log's saved {name} {value!r} was not used: {exc}", stacklevel=3)

    def _on_threshold(self, change: dict) -> None:
        self.learner.threshold = float(change["new"])
        self.log.save_settings(threshold=float(self.learner.threshold))
        self._refresh_views()

    def _on_strategy(self, change: dict) -> None:
        self.learner.strategy = str(change["new"])  # refits if the classifier changes
        self.log.save_settings(strategy=str(self.learner.strategy))
        self._refresh_model()
        self._refill_prefetch()
        self._refresh_views()

    def _on_dcal_weight(self, change: dict) -> None:
        self.learner.dcal_weight = float(change["new"])
        self.log.save_settings(dcal_weight=float(self.learner.dcal_weight))
        self._refill_prefetch()

    def close(self) -> None:
        """Close the widgets and the label log."""
        if _OPEN.get(getattr(self, "_open_key", None)) is self:
            del _OPEN[self._open_key]
        try:
            self.log.close()
        finally:
            self.widget.close()
            self.panel.close()
            self.plots.close()


def sort(sortset: xr.Dataset, **kwargs: Any) -> SortingApp:
    """Open the labelling app on a sort set; the notebook shows it when it is a cell's last value.

    Parameters
    ----------
    sortset : xarray.Dataset
        The sort set to label.
    **kwargs
        Passed to :class:`SortingApp` (``log``, ``annotator``, ``strategy``, ...).

    Returns
    -------
    SortingApp
    """
    return SortingApp(sortset, **kwargs)
