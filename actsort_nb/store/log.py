"""The label log: an append-only, transactional record of every human decision.

Sorting a recording is hours of expert time, so a label is written to disk and
committed before :meth:`LabelLog.record` returns (SQLite in WAL mode with
``synchronous=FULL``; or a PostgreSQL server for a team). Nothing is ever
updated or deleted: undo appends a *retraction*, and the labels are a replay of
the log (the last effective decision per candidate wins). A crash, a browser
refresh or a second kernel on the same log therefore cannot lose a label.

Several annotators share one log; each decision carries its annotator, the
strategy that proposed the candidate, the model's P(cell) at that moment, the
UTC time and the session (one :class:`LabelLog` object). Claims keep two
annotators from being shown the same candidate at the same moment.
"""
from __future__ import annotations

import getpass
import json
import math
import numbers
import os
import time as _time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import numpy as np

from .._validation import InputError, check_int, check_option
from ._backends import EVENT_COLUMNS, open_backend

__all__ = ["Decision", "Event", "LabelLog", "CONSENSUS"]

CONSENSUS = "consensus"
"""Pass as ``annotator=`` to get the majority vote of the annotators."""


@dataclass(frozen=True)
class Decision:
    """One human decision in the label log.

    Attributes
    ----------
    id : int
        Position in the log (increasing).
    candidate : int
        Candidate index (0-based position in the sort set).
    candidate_id : str or None
        The candidate's id in the source (stored as text), if given.
    label : int
        1 = cell, 0 = not a cell.
    annotator : str
        Who decided.
    time : datetime
        When (timezone-aware, UTC).
    strategy : str or None
        Query strategy that proposed the candidate (``"dcal"``, ``"random"``, ...).
    p_cell : float or None
        The model's P(cell) for the candidate when it was shown.
    session : str
        Id of the :class:`LabelLog` object (one kernel's session) that wrote it.
    """

    id: int
    candidate: int
    candidate_id: str | None
    label: int
    annotator: str
    time: datetime
    strategy: str | None
    p_cell: float | None
    session: str


@dataclass(frozen=True)
class Event:
    """One raw row of the append-only log: a label or a retraction.

    Same fields as :class:`Decision` plus ``kind`` (``"label"`` or ``"retract"``)
    and ``retracts`` (the id of the label event a retraction takes back).
    A retraction has ``label=None``, ``strategy=None`` and ``p_cell=None``.
    """

    id: int
    kind: str
    candidate: int
    candidate_id: str | None
    label: int | None
    annotator: str
    time: datetime
    strategy: str | None
    p_cell: float | None
    session: str
    retracts: int | None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _event(row: tuple) -> Event:
    rec = dict(zip(EVENT_COLUMNS, row))
    rec["time"] = datetime.fromisoformat(rec["time"])
    rec["candidate"] = int(rec["candidate"])
    rec["id"] = int(rec["id"])
    if rec["label"] is not None:
        rec["label"] = int(rec["label"])
    if rec["p_cell"] is not None:
        rec["p_cell"] = float(rec["p_cell"])
    if rec["retracts"] is not None:
        rec["retracts"] = int(rec["retracts"])
    return Event(**rec)


def _decision(row: tuple) -> Decision:
    ev = _event(row)
    return Decision(ev.id, ev.candidate, ev.candidate_id, ev.label, ev.annotator, ev.time,
                    ev.strategy, ev.p_cell, ev.session)


def _default_annotator() -> str:
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no user name in some containers
        return "unknown"


def _check_candidate(candidate: Any, what: str = "candidate") -> int:
    if isinstance(candidate, (bool, np.bool_)) or not isinstance(candidate, numbers.Integral):
        raise InputError(f"The {what!r} must be an integer index, got {candidate!r} ({type(candidate).__name__}).")
    if not 0 <= int(candidate) < 2**63:
        raise InputError(f"The {what!r} must be an index in 0 .. 2**63 - 1, got {int(candidate)}.")
    return int(candidate)


def _check_label(label: Any) -> int:
    if isinstance(label, (bool, np.bool_)):
        return int(label)
    if isinstance(label, numbers.Integral) and int(label) in (0, 1):
        return int(label)
    raise InputError(f"The 'label' must be 1 (cell) or 0 (not a cell), got {label!r}.")


def _check_text(value: Any, name: str, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, (str, numbers.Integral)) and not isinstance(value, bool):
        text = str(value)
        if text.strip() and "\x00" not in text:
            return text
    raise InputError(f"The {name!r} must be a non-empty string, got {value!r}.")


class LabelLog:
    """Append-only, crash-safe log of labelling decisions (SQLite file or PostgreSQL URL).

    Parameters
    ----------
    path : str or path-like
        A file (created if absent; SQLite, WAL mode, ``synchronous=FULL``) or a
        ``postgresql://user@host:port/dbname`` URL for a log shared by a team
        (needs ``psycopg``).
    annotator : str, optional
        Who labels through this object; defaults to the login name.
    dataset : str, optional
        A key of the data the labels belong to (the sort set's uuid or path). The
        first key given is stored; opening the log with another key raises
        :class:`~actsort_nb.InputError`, so labels of two datasets never mix.
    timeout : float, default 30
        Seconds to wait for another writer's lock before failing.

    Attributes
    ----------
    session : str
        Random id of this object; stored with every decision it writes.
    dataset : str or None
        The dataset key stored in the log.
    backend : str
        ``"sqlite"`` or ``"postgresql"``.

    Examples
    --------
    >>> import tempfile, os
    >>> from actsort_nb.store import LabelLog
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.sqlite")
    >>> with LabelLog(path, annotator="ana", dataset="demo") as log:
    ...     _ = log.record(3, 1, strategy="dcal", p_cell=0.42)
    ...     _ = log.record(5, 0)
    ...     undone = log.retract()          # takes back candidate 5
    ...     log.labels(6).tolist()
    [-1, -1, -1, 1, -1, -1]
    >>> undone.candidate, [e.kind for e in LabelLog(path).events()]
    (5, ['label', 'label', 'retract'])
    """

    def __init__(self, path: str | os.PathLike, *, annotator: str | None = None,
                 dataset: str | None = None, timeout: float = 30.0) -> None:
        self.annotator = _check_text(annotator if annotator is not None else _default_annotator(),
                                     "annotator", optional=False)
        if dataset is not None:
            dataset = _check_text(str(dataset), "dataset")
        self.session = uuid.uuid4().hex
        self._backend = open_backend(path, timeout=timeout)
        try:
            self.dataset = self._backend.init(dataset)
        except BaseException:
            self._backend.close()
            raise
        self.path = self._backend.location
        self.backend = self._backend.name
        self._closed = False

    # -- context manager ---------------------------------------------------------
    def __enter__(self) -> LabelLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"LabelLog({self.path!r}, annotator={self.annotator!r}, dataset={self.dataset!r}; "
                f"{self.backend}, {state})")

    def _check_open(self) -> None:
        if self._closed:
            raise InputError(f"The label log {self.path} is closed; open it again with LabelLog(...).")

    def close(self) -> None:
        """Release this session's claims and close the connection (idempotent)."""
        if self._closed:
            return
        try:
            self._backend.release(self.session)
        except Exception:  # closing must not fail because a claim could not be released
            pass
        self._backend.close()
        self._closed = True

    # -- writing -------------------------------------------------------------------
    def record(self, candidate: int, label: int, *, candidate_id: Any = None,
               strategy: str | None = None, p_cell: float | None = None) -> Decision:
        """Append one decision and commit it before returning.

        Parameters
        ----------
        candidate : int
            Candidate index (0-based).
        label : int or bool
            1/True = cell, 0/False = not a cell.
        candidate_id : str or int, optional
            The candidate's id in the source (stored as text).
        strategy : str, optional
            The query strategy that proposed the candidate.
        p_cell : float, optional
            The model's P(cell) for this candidate when it was shown, in [0, 1].

        Returns
        -------
        Decision
            The stored decision (with its log ``id`` and UTC ``time``).

        Examples
        --------
        >>> import tempfile, os
        >>> log = LabelLog(os.path.join(tempfile.mkdtemp(), "l.sqlite"), annotator="ana")
        >>> d = log.record(0, True, candidate_id=17, strategy="random", p_cell=0.5)
        >>> (d.candidate, d.candidate_id, d.label, d.annotator, d.strategy, d.p_cell)
        (0, '17', 1, 'ana', 'random', 0.5)
        >>> log.close()
        """
        self._check_open()
        candidate = _check_candidate(candidate)
        label = _check_label(label)
        candidate_id = _check_text(candidate_id, "candidate_id")
        strategy = _check_text(strategy, "strategy")
        if p_cell is not None:
            try:
                p_cell = float(p_cell)
            except (TypeError, ValueError):
                raise InputError(f"The 'p_cell' must be a probability in [0, 1], got {p_cell!r}.") from None
            if not (math.isfinite(p_cell) and 0.0 <= p_cell <= 1.0):
                raise InputError(f"The 'p_cell' must be a probability in [0, 1], got {p_cell!r}.")
        now = _now()
        values = ("label", candidate, candidate_id, label, self.annotator, now, strategy, p_cell,
                  self.session, None)
        new_id = self._backend.append(values, release_session=self.session)
        return Decision(new_id, candidate, candidate_id, label, self.annotator,
                        datetime.fromisoformat(now), strategy, p_cell, self.session)

    def record_many(self, candidates: Iterable[int], labels: Iterable[int], *, candidate_ids: Any = None,
                    strategy: str | None = None, p_cell: Any = None) -> list[Decision]:
        """Append many decisions of this annotator in one transaction (all or none).

        For importing existing annotations (e.g. an earlier manual sort); the panel
        records one decision at a time with :meth:`record`. Arguments are sequences
        of equal length (``strategy`` one string for all); this session's claims
        are released.

        Examples
        --------
        >>> import tempfile, os
        >>> log = LabelLog(os.path.join(tempfile.mkdtemp(), "l.sqlite"), annotator="ana")
        >>> [d.id for d in log.record_many([0, 1, 2], [1, 0, 1], strategy="import")]
        [1, 2, 3]
        >>> log.labels(4).tolist()
        [1, 0, 1, -1]
        >>> log.close()
        """
        self._check_open()
        cands = [_check_candidate(c) for c in candidates]
        labs = [_check_label(v) for v in labels]
        if len(labs) != len(cands):
            raise InputError(f"record_many got {len(cands)} candidates but {len(labs)} labels; give one label each.")
        ids = [None] * len(cands) if candidate_ids is None else [_check_text(v, "candidate_id") for v in candidate_ids]
        try:
            probs = [None] * len(cands) if p_cell is None else [None if v is None else float(v) for v in p_cell]
        except (TypeError, ValueError) as exc:
            raise InputError(f"The 'p_cell' values must be probabilities in [0, 1] (or None), got {exc}.") from exc
        if len(ids) != len(cands) or len(probs) != len(cands):
            raise InputError("record_many needs candidate_ids and p_cell of the same length as candidates.")
        if any(p is not None and not (math.isfinite(p) and 0.0 <= p <= 1.0) for p in probs):
            raise InputError("The 'p_cell' values must be probabilities in [0, 1] (or None).")
        strategy = _check_text(strategy, "strategy")
        now = _now()
        rows = [("label", c, i, y, self.annotator, now, strategy, p, self.session, None)
                for c, y, i, p in zip(cands, labs, ids, probs)]
        new_ids = self._backend.append_many(rows, release_session=self.session)
        when = datetime.fromisoformat(now)
        return [Decision(k, c, i, y, self.annotator, when, strategy, p, self.session)
                for k, (_, c, i, y, _, _, _, p, _, _) in zip(new_ids, rows)]

    def retract(self) -> Decision | None:
        """Undo this annotator's last effective decision by appending a retraction.

        Returns
        -------
        Decision or None
            The decision taken back, or ``None`` if this annotator has none left.

        Examples
        --------
        >>> import tempfile, os
        >>> log = LabelLog(os.path.join(tempfile.mkdtemp(), "l.sqlite"), annotator="ana")
        >>> _ = log.record(0, 1); _ = log.record(1, 0)
        >>> log.retract().candidate, log.retract().candidate, log.retract()
        (1, 0, None)
        >>> len(log.events())        # nothing was deleted: 2 labels + 2 retractions
        4
        >>> log.close()
        """
        self._check_open()
        out = self._backend.retract_last(self.annotator, _now(), self.session)
        if out is None:
            return None
        return _decision(out[0])

    # -- claims ------------------------------------------------------------------
    def claim(self, candidate: int, *, ttl: float = 60.0) -> bool:
        """Reserve ``candidate`` for this session for ``ttl`` seconds.

        Returns ``False`` if another session holds an unexpired claim on it. A claim
        is advisory: call it before showing a candidate, so that two annotators are
        not shown the same one at the same moment; skip it when overlapping labels
        are wanted (an agreement study). :meth:`record` releases the claim.

        Examples
        --------
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "l.sqlite")
        >>> ana, ben = LabelLog(path, annotator="ana"), LabelLog(path, annotator="ben")
        >>> ana.claim(4), ben.claim(4), ana.claim(4)
        (True, False, True)
        >>> ana.release(4); ben.claim(4)
        True
        >>> ana.close(); ben.close()
        """
        self._check_open()
        candidate = _check_candidate(candidate)
        return self.claim_next([candidate], ttl=ttl, skip_labelled=False) is not None

    def claim_next(self, candidates: Iterable[int], *, ttl: float = 60.0,
                   skip_labelled: bool = True) -> int | None:
        """Claim the first of ``candidates`` (in priority order) that is free.

        A candidate is free if no other session holds an unexpired claim on it and,
        with ``skip_labelled``, nobody has an effective decision on it. Checking and
        claiming happen in one transaction, so two kernels calling this at once
        never get the same candidate.

        Parameters
        ----------
        candidates : iterable of int
            Candidate indices, best first (e.g. the learner's ranking).
        ttl : float, default 60
            Seconds until the claim lapses if neither recorded nor released.
        skip_labelled : bool, default True
            Skip candidates that already carry an effective decision by anyone.

        Returns
        -------
        int or None
            The claimed candidate, or ``None`` if none is free.

        Examples
        --------
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "l.sqlite")
        >>> ana, ben = LabelLog(path, annotator="ana"), LabelLog(path, annotator="ben")
        >>> _ = ana.record(0, 1)
        >>> ana.claim_next([0, 1, 2]), ben.claim_next([0, 1, 2])
        (1, 2)
        >>> ana.close(); ben.close()
        """
        self._check_open()
        ttl = float(ttl)
        if not (math.isfinite(ttl) and ttl > 0):
            raise InputError(f"The 'ttl' must be a positive number of seconds, got {ttl!r}.")
        cands = [_check_candidate(c) for c in candidates]
        return self._backend.claim(cands, self.session, self.annotator, _time.time(), ttl,
                                   skip_labelled=bool(skip_labelled))

    def release(self, candidate: int | None = None) -> None:
        """Release this session's claim on ``candidate`` (all its claims if ``None``)."""
        self._check_open()
        if candidate is not None:
            candidate = _check_candidate(candidate)
        self._backend.release(self.session, candidate)

    def claims(self) -> dict[int, str]:
        """Unexpired claims: ``{candidate: annotator}`` over every session."""
        self._check_open()
        return {int(c): a for c, _, a, _ in self._backend.claims(_time.time())}

    # -- settings ------------------------------------------------------------------
    @property
    def n_candidates(self) -> int | None:
        """How many candidates the log's dataset has, as the panel recorded it (None if unknown).

        Exports of the log alone (e.g. ``actsort-nb export LOG --format csv``) cover
        them all, not only up to the last labelled one.
        """
        self._check_open()
        raw = self._backend.meta("n_candidates")
        try:
            return None if raw is None else int(raw)
        except ValueError:
            return None

    @n_candidates.setter
    def n_candidates(self, n: int) -> None:
        self._check_open()
        n = check_int(n, "n_candidates", 0)
        known = self.n_candidates
        if known is not None and known != n:
            raise InputError(f"the label log {self.path} was written for {known} candidates, not {n}; "
                             "pass the log of this sort set (or a new one).")
        if known is None:
            self._backend.set_meta("n_candidates", str(n))

    def settings(self) -> dict[str, Any]:
        """This annotator's saved panel settings (e.g. ``threshold``, ``strategy``); ``{}`` if none.

        Examples
        --------
        >>> import tempfile, os
        >>> log = LabelLog(os.path.join(tempfile.mkdtemp(), "l.sqlite"), annotator="ana")
        >>> log.save_settings(threshold=0.7); log.save_settings(strategy="dcal")
        >>> log.settings()
        {'threshold': 0.7, 'strategy': 'dcal'}
        >>> log.close()
        """
        self._check_open()
        raw = self._backend.meta(f"settings:{self.annotator}")
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:  # written by something else: no settings rather than no log
            return {}
        return value if isinstance(value, dict) else {}

    def save_settings(self, **values: Any) -> None:
        """Merge ``values`` (JSON numbers, strings, booleans) into this annotator's saved settings; committed at once."""
        self._check_open()
        merged = {**self.settings(), **values}
        try:
            text = json.dumps(merged, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(f"settings must be JSON numbers, strings or booleans ({exc}).") from exc
        self._backend.set_meta(f"settings:{self.annotator}", text)

    # -- reading -------------------------------------------------------------------
    def events(self) -> list[Event]:
        """The raw append-only log, retractions included, in order.

        Examples
        --------
        >>> import tempfile, os
        >>> log = LabelLog(os.path.join(tempfile.mkdtemp(), "l.sqlite"), annotator="ana")
        >>> _ = log.record(2, 1); _ = log.retract()
        >>> [(e.kind, e.candidate, e.label, e.retracts) for e in log.events()]
        [('label', 2, 1, None), ('retract', 2, None, 1)]
        >>> log.close()
        """
        self._check_open()
        return [_event(r) for r in self._backend.events()]

    def history(self, *, annotator: str | None = None) -> list[Decision]:
        """Effective decisions (retracted ones removed) in the order they were made.

        Parameters
        ----------
        annotator : str, optional
            Only this annotator's decisions; every annotator's if ``None``.

        Examples
        --------
        >>> import tempfile, os
        >>> log = LabelLog(os.path.join(tempfile.mkdtemp(), "l.sqlite"), annotator="ana")
        >>> for c in (4, 2, 7):
        ...     _ = log.record(c, c % 2)
        >>> _ = log.retract()
        >>> [(d.candidate, d.label) for d in log.history(annotator="ana")]
        [(4, 0), (2, 0)]
        >>> log.close()
        """
        self._check_open()
        if annotator is not None:
            annotator = _check_text(annotator, "annotator")
        return [_decision(r) for r in self._backend.events(effective=True, annotator=annotator)]

    def annotators(self) -> list[str]:
        """Every annotator who wrote to the log, in order of first appearance."""
        self._check_open()
        return self._backend.annotators()

    def _arrays(self, annotator: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        rows = self._backend.effective_labels(annotator)
        cand = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        lab = np.fromiter((r[1] for r in rows), dtype=np.int8, count=len(rows))
        who = [r[2] for r in rows]
        return cand, lab, who

    def _check_n(self, n: Any, cand: np.ndarray) -> int:
        n = _check_candidate(n, "n")
        if cand.size and int(cand.max()) >= n:
            raise InputError(
                f"The label log {self.path} holds a decision on candidate {int(cand.max())}, but n={n}; "
                "pass the number of candidates of the sort set this log belongs to."
            )
        return n

    def labels(self, n: int, *, annotator: str | None = None, ties: str = "not_cell") -> np.ndarray:
        """Replay the log into one label per candidate.

        Parameters
        ----------
        n : int
            Number of candidates.
        annotator : str, optional
            ``None``: the last effective decision on each candidate by anyone.
            A name: that annotator's last effective decisions only.
            ``"consensus"``: the majority vote of every annotator's last effective
            decision; ties resolved by ``ties``.
        ties : {"not_cell", "cell", "unlabelled"}, default "not_cell"
            Consensus of a tied vote: 0 (ActSort's choice: MATLAB's ``mode`` of
            ±1 votes returns −1 on a tie), 1, or −1 (leave the candidate out).

        Returns
        -------
        numpy.ndarray
            int8 ``(n,)``: 1 cell, 0 not a cell, −1 unlabelled.

        Examples
        --------
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "l.sqlite")
        >>> a, b, c = (LabelLog(path, annotator=x) for x in "abc")
        >>> for log, votes in ((a, [1, 1, 0]), (b, [1, 0, 0]), (c, [0, 1])):
        ...     for i, v in enumerate(votes):
        ...         _ = log.record(i, v)
        >>> a.labels(4, annotator="consensus").tolist(), a.labels(4, annotator="b").tolist()
        ([1, 1, 0, -1], [1, 0, 0, -1])
        >>> a.labels(4).tolist()    # last decision by anyone
        [0, 1, 0, -1]
        """
        self._check_open()
        check_option(ties, "ties", ("not_cell", "cell", "unlabelled"))
        if annotator is not None and annotator != CONSENSUS:
            annotator = _check_text(annotator, "annotator")
            if annotator != self.annotator and annotator not in self.annotators():  # this log's own may have none yet
                raise InputError(f"no annotator {annotator!r} wrote to {self.path}; it holds labels by "
                                 f"{self.annotators()}, or pass 'consensus' or None (anyone's last).")
        if annotator == CONSENSUS:
            votes, _ = self.annotations(n)
            from .agreement import consensus

            return consensus(votes, ties=ties)
        cand, lab, _ = self._arrays(annotator)
        n = self._check_n(n, cand)
        out = np.full(n, -1, dtype=np.int8)
        # rows are in log order; keep each candidate's last row
        rev_cand = cand[::-1]
        _, first_in_rev = np.unique(rev_cand, return_index=True)
        out[rev_cand[first_in_rev]] = lab[::-1][first_in_rev]
        return out

    def annotations(self, n: int) -> tuple[np.ndarray, list[str]]:
        """Every annotator's labels, for training on all of them with provenance.

        Returns
        -------
        votes : numpy.ndarray
            int8 ``(annotator, candidate)``: 1, 0 or −1 (unlabelled by that annotator).
        annotators : list of str
            Row names, in order of first appearance in the log.

        Examples
        --------
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "l.sqlite")
        >>> with LabelLog(path, annotator="ana") as a, LabelLog(path, annotator="ben") as b:
        ...     _ = a.record(0, 1); _ = b.record(0, 0); _ = b.record(2, 1)
        ...     votes, names = a.annotations(3)
        >>> names, votes.tolist()
        (['ana', 'ben'], [[1, -1, -1], [0, -1, 1]])
        """
        self._check_open()
        cand, lab, who = self._arrays()
        n = self._check_n(n, cand)
        names = list(dict.fromkeys(who))
        votes = np.full((len(names), n), -1, dtype=np.int8)
        if names:
            index = {name: i for i, name in enumerate(names)}
            row = np.fromiter((index[w] for w in who), dtype=np.int64, count=len(who))
            key = row * n + cand
            rev = key[::-1]
            _, first = np.unique(rev, return_index=True)
            votes.reshape(-1)[rev[first]] = lab[::-1][first]
        return votes, names

    def integrity_check(self) -> str:
        """The storage's own integrity check (``"ok"`` when sound)."""
        self._check_open()
        return self._backend.integrity_check()
