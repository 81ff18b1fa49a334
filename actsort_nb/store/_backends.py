"""Storage backends of the label log: SQLite (embedded default) and PostgreSQL (teams).

A backend only moves rows; :class:`actsort_nb.store.LabelLog` holds the logic.
Both speak the same SQL (written with ``?`` placeholders) and differ only in how
they connect, how a write transaction is opened and how a new row id comes back.

Tables
------
``actsort_meta(key, value)``
    ``format`` (always ``actsort_nb.labellog``), ``schema`` and ``dataset``; and
    ``settings:<annotator>``, that annotator's panel settings (JSON).
``actsort_events(id, kind, candidate, candidate_id, label, annotator, time,
strategy, p_cell, session, retracts)``
    The append-only log. ``kind`` is ``'label'`` or ``'retract'``; a retraction
    names the label event it takes back in ``retracts``. Rows are never updated
    or deleted.
``actsort_claims(candidate, session, annotator, expires)``
    Short-lived leases on candidates shown to an annotator (not part of the record).
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._validation import InputError

FORMAT = "actsort_nb.labellog"
SCHEMA = "1"

EVENT_COLUMNS = (
    "id", "kind", "candidate", "candidate_id", "label", "annotator", "time",
    "strategy", "p_cell", "session", "retracts",
)
_INSERT_COLUMNS = EVENT_COLUMNS[1:]
_SELECT = "SELECT " + ", ".join(EVENT_COLUMNS) + " FROM actsort_events"
_EFFECTIVE = (
    " e WHERE e.kind = 'label' AND NOT EXISTS "
    "(SELECT 1 FROM actsort_events r WHERE r.retracts = e.id)"
)
_SELECT_E = "SELECT " + ", ".join("e." + c for c in EVENT_COLUMNS) + " FROM actsort_events"

_DDL_COMMON = [
    "CREATE TABLE IF NOT EXISTS actsort_meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS actsort_claims (candidate BIGINT PRIMARY KEY, "
    "session TEXT NOT NULL, annotator TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS actsort_events_retracts ON actsort_events (retracts)",
    "CREATE INDEX IF NOT EXISTS actsort_events_annotator ON actsort_events (annotator, id)",
    "CREATE INDEX IF NOT EXISTS actsort_events_candidate ON actsort_events (candidate)",
]
_EVENTS_TAIL = (
    "kind TEXT NOT NULL CHECK (kind IN ('label', 'retract')), "
    "candidate BIGINT NOT NULL CHECK (candidate >= 0), candidate_id TEXT, "
    "label SMALLINT CHECK (label IN (0, 1)), annotator TEXT NOT NULL, time TEXT NOT NULL, "
    "strategy TEXT, p_cell DOUBLE PRECISION, session TEXT NOT NULL, retracts BIGINT UNIQUE, "
    "CHECK ((kind = 'label' AND label IS NOT NULL AND retracts IS NULL) OR "
    "(kind = 'retract' AND label IS NULL AND retracts IS NOT NULL))"
)


def is_url(location: str | os.PathLike) -> bool:
    """True if ``location`` is a server URL rather than a file path."""
    return isinstance(location, str) and location.split("://", 1)[0] in ("postgresql", "postgres")


def open_backend(location: str | os.PathLike, *, timeout: float = 30.0) -> _SQLBackend:
    """Open the backend for a file path (SQLite) or a ``postgresql://`` URL."""
    if is_url(location):
        return PostgresBackend(str(location), timeout=timeout)
    if isinstance(location, str) and "://" in location:
        scheme = location.split("://", 1)[0]
        raise InputError(
            f"Label log location {location!r} uses the scheme {scheme!r}, which is not supported; "
            "give a file path (SQLite) or a 'postgresql://user@host/dbname' URL."
        )
    return SQLiteBackend(Path(location), timeout=timeout)


class _SQLBackend:
    """Shared SQL of both backends; subclasses set the dialect hooks."""

    name = "sql"
    location: str
    _exclusive = True  # refuse a database that already holds other tables

    # -- dialect hooks -------------------------------------------------------
    def _sql(self, query: str) -> str:
        return query

    def _transaction(self) -> contextlib.AbstractContextManager:  # pragma: no cover - abstract
        raise NotImplementedError

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        """One write transaction, committed on exit; serialised with this object's other calls."""
        with self._lock, self._transaction() as cur:
            yield cur

    def _insert_event(self, cur, values: Sequence[Any]) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _events_ddl(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _guard_ddl(self) -> list[str]:
        """Triggers that make ``actsort_events`` append-only (UPDATE/DELETE abort)."""
        return []

    # -- helpers -------------------------------------------------------------
    def _exec(self, cur, query: str, params: Sequence[Any] = ()):
        cur.execute(self._sql(query), tuple(params))
        return cur

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        with self._lock:
            cur = self.conn.cursor()
            try:
                yield cur
            finally:
                cur.close()

    # -- schema --------------------------------------------------------------
    def init(self, dataset: str | None) -> str | None:
        """Create the tables if needed, check the format and the dataset key.

        Returns the dataset key stored in the log (adopting ``dataset`` if the
        log had none).
        """
        with self._write() as cur:
            tables = self._tables(cur)
            if self._exclusive and tables and "actsort_meta" not in tables:
                raise InputError(
                    f"{self.location} is a database of another program (tables {sorted(tables)[:5]}); "
                    "give a new file name for the label log."
                )
            self._exec(cur, self._events_ddl())
            for ddl in _DDL_COMMON + self._guard_ddl():
                self._exec(cur, ddl)
            meta = dict(self._exec(cur, "SELECT key, value FROM actsort_meta").fetchall())
            if not meta:
                for key, value in (("format", FORMAT), ("schema", SCHEMA)):
                    self._exec(cur, "INSERT INTO actsort_meta (key, value) VALUES (?, ?)", (key, value))
                meta = {"format": FORMAT, "schema": SCHEMA}
            if meta.get("format") != FORMAT:
                raise InputError(
                    f"{self.location} is not an actsort_nb label log (format {meta.get('format')!r}); "
                    "give a new file name for the label log."
                )
            if meta.get("schema") != SCHEMA:
                raise InputError(
                    f"{self.location} is a label log of schema {meta.get('schema')!r}, but this "
                    f"actsort_nb reads schema {SCHEMA!r}; upgrade actsort_nb."
                )
            stored = meta.get("dataset")
            if dataset is not None and stored is None:
                self._exec(cur, "INSERT INTO actsort_meta (key, value) VALUES (?, ?)", ("dataset", dataset))
                stored = dataset
            elif dataset is not None and stored != dataset:
                raise InputError(
                    f"The label log {self.location} belongs to dataset {stored!r}, not {dataset!r}; "
                    "open the log of this dataset or give a new log path."
                )
        return stored

    # -- events ----------------------------------------------------------------
    def append(self, values: Sequence[Any], *, release_session: str | None = None) -> int:
        """Append one event row (columns ``_INSERT_COLUMNS``), committed on return."""
        with self._write() as cur:
            new_id = self._insert_event(cur, values)
            if release_session is not None:
                self._exec(
                    cur, "DELETE FROM actsort_claims WHERE candidate = ? AND session = ?",
                    (values[1], release_session),
                )
        return new_id

    def append_many(self, rows: Sequence[Sequence[Any]], *, release_session: str | None = None) -> list[int]:
        """Append several event rows in one transaction (all or none), committed on return."""
        with self._write() as cur:
            ids = [self._insert_event(cur, values) for values in rows]
            if release_session is not None and rows:
                self._exec(cur, "DELETE FROM actsort_claims WHERE session = ?", (release_session,))
        return ids

    def retract_last(self, annotator: str, time: str, session: str) -> tuple[tuple, int] | None:
        """Append a retraction of ``annotator``'s last effective label (atomic)."""
        with self._write() as cur:
            row = self._exec(
                cur, _SELECT_E + _EFFECTIVE + " AND e.annotator = ? ORDER BY e.id DESC LIMIT 1",
                (annotator,),
            ).fetchone()
            if row is None:
                return None
            rec = dict(zip(EVENT_COLUMNS, row))
            values = ("retract", rec["candidate"], rec["candidate_id"], None, annotator, time,
                      None, None, session, rec["id"])
            new_id = self._insert_event(cur, values)
        return tuple(row), new_id

    def events(self, *, effective: bool = False, annotator: str | None = None) -> list[tuple]:
        """All event rows (or only effective label rows), in id order."""
        query, params = (_SELECT_E + _EFFECTIVE) if effective else (_SELECT + " e WHERE 1 = 1"), []
        if annotator is not None:
            query += " AND e.annotator = ?"
            params.append(annotator)
        with self._read() as cur:
            rows = self._exec(cur, query + " ORDER BY e.id", params).fetchall()
        self._end_read()
        return [tuple(r) for r in rows]

    def effective_labels(self, annotator: str | None = None) -> list[tuple]:
        """``(candidate, label, annotator)`` of the effective label events, in id order."""
        query, params = "SELECT e.candidate, e.label, e.annotator FROM actsort_events" + _EFFECTIVE, []
        if annotator is not None:
            query += " AND e.annotator = ?"
            params.append(annotator)
        with self._read() as cur:
            rows = self._exec(cur, query + " ORDER BY e.id", params).fetchall()
        return rows

    def annotators(self) -> list[str]:
        with self._read() as cur:
            rows = self._exec(
                cur, "SELECT annotator, MIN(id) FROM actsort_events GROUP BY annotator ORDER BY MIN(id)"
            ).fetchall()
        self._end_read()
        return [r[0] for r in rows]

    def _end_read(self) -> None:
        """End the implicit read transaction (PostgreSQL); nothing for SQLite."""

    def meta(self, key: str) -> str | None:
        """The value of ``key`` in ``actsort_meta``, None if absent."""
        with self._read() as cur:
            row = self._exec(cur, "SELECT value FROM actsort_meta WHERE key = ?", (key,)).fetchone()
        self._end_read()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Set ``key`` in ``actsort_meta`` (not the format keys: those are the caller's to keep)."""
        with self._write() as cur:
            self._exec(cur, "INSERT INTO actsort_meta (key, value) VALUES (?, ?) "
                            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    # -- claims ------------------------------------------------------------------
    def claim(self, candidates: Sequence[int], session: str, annotator: str, now: float,
              ttl: float, *, skip_labelled: bool) -> int | None:
        """Claim the first free candidate of ``candidates``; return it or ``None``."""
        labelled = ("SELECT 1 FROM actsort_events" + _EFFECTIVE + " AND e.candidate = ? LIMIT 1")
        with self._write() as cur:
            self._exec(cur, "DELETE FROM actsort_claims WHERE expires < ?", (now,))
            taken = {r[0] for r in self._exec(
                cur, "SELECT candidate FROM actsort_claims WHERE session <> ?", (session,)).fetchall()}
            for c in candidates:
                if c in taken:
                    continue
                if skip_labelled and self._exec(cur, labelled, (c,)).fetchone() is not None:
                    continue
                self._exec(cur, "DELETE FROM actsort_claims WHERE candidate = ?", (c,))
                self._exec(
                    cur, "INSERT INTO actsort_claims (candidate, session, annotator, expires) "
                    "VALUES (?, ?, ?, ?)", (c, session, annotator, now + ttl),
                )
                return int(c)
        return None

    def release(self, session: str, candidate: int | None = None) -> None:
        with self._write() as cur:
            if candidate is None:
                self._exec(cur, "DELETE FROM actsort_claims WHERE session = ?", (session,))
            else:
                self._exec(cur, "DELETE FROM actsort_claims WHERE session = ? AND candidate = ?",
                           (session, candidate))

    def claims(self, now: float) -> list[tuple]:
        with self._read() as cur:
            rows = self._exec(cur, "SELECT candidate, session, annotator, expires FROM actsort_claims "
                              "WHERE expires >= ? ORDER BY candidate", (now,)).fetchall()
        self._end_read()
        return [tuple(r) for r in rows]

    def integrity_check(self) -> str:  # pragma: no cover - overridden
        return "ok"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class SQLiteBackend(_SQLBackend):
    """SQLite file in WAL mode with ``synchronous=FULL``: a commit survives a crash."""

    name = "sqlite"

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self._lock = threading.RLock()
        path = Path(path).expanduser()
        self.location = str(path)
        if path.is_dir():
            raise InputError(f"Label log path {path} is a folder; give a file name such as {path / 'labels.sqlite'}.")
        if not path.parent.is_dir():
            raise InputError(f"Label log folder {path.parent} does not exist; create it or choose another path.")
        if not os.access(path.parent, os.W_OK):
            raise InputError(f"Label log folder {path.parent} is read-only (SQLite writes a journal beside the log); "
                             "choose a folder you can write to.")
        if path.exists() and path.stat().st_size:
            with open(path, "rb") as fh:
                magic = fh.read(16)
            if magic != b"SQLite format 3\x00":
                raise InputError(
                    f"{path} is not a label log (not an SQLite file, it starts with {magic[:8]!r}); "
                    "give a new file name for the label log."
                )
        try:
            self.conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self.conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{path} cannot be opened as a label log ({exc}); give a new file name.") from exc
        self.journal_mode = str(mode).lower()

    def init(self, dataset: str | None) -> str | None:
        try:
            return super().init(dataset)
        except sqlite3.OperationalError as exc:
            raise InputError(
                f"The label log {self.location} cannot be written ({exc}); check that its folder is writable "
                "and that no other program holds a lock on it."
            ) from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self.conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # e.g. locked beyond the busy timeout
            cur.close()
            raise InputError(
                f"The label log {self.location} cannot be written ({exc}); another program holds a lock "
                "on it: close that program and repeat the last action (nothing was written)."
            ) from exc
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def _tables(self, cur) -> set[str]:
        return {r[0] for r in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _events_ddl(self) -> str:
        return ("CREATE TABLE IF NOT EXISTS actsort_events (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                + _EVENTS_TAIL + ")")

    def _guard_ddl(self) -> list[str]:
        return [
            f"CREATE TRIGGER IF NOT EXISTS actsort_events_no_{op.lower()} BEFORE {op} ON actsort_events "
            "BEGIN SELECT RAISE(ABORT, 'actsort_events is append-only'); END"
            for op in ("UPDATE", "DELETE")
        ]

    def _insert_event(self, cur, values) -> int:
        cur.execute(
            "INSERT INTO actsort_events (" + ", ".join(_INSERT_COLUMNS) + ") VALUES ("
            + ", ".join("?" * len(_INSERT_COLUMNS)) + ")", tuple(values))
        return int(cur.lastrowid)

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])


class PostgresBackend(_SQLBackend):
    """PostgreSQL server through psycopg 3: one log shared by a team."""

    name = "postgresql"
    _exclusive = False  # a team database may hold other tables; ours are prefixed actsort_

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise InputError(
                f"A PostgreSQL label log ({url.split('@')[-1]}) needs psycopg; install it with "
                "'pip install \"psycopg[binary]\"'."
            ) from exc
        self._psycopg = psycopg
        self._lock = threading.RLock()
        self.location = url.split("@")[-1] if "@" in url else url  # never echo a password
        try:
            self.conn = psycopg.connect(url, connect_timeout=max(1, int(timeout)), autocommit=True)
        except psycopg.Error as exc:
            raise InputError(
                f"Cannot connect to the PostgreSQL label log at {self.location} ({str(exc).strip().splitlines()[0]}); "
                "check that the server runs and the URL is right."
            ) from exc

    def _sql(self, query: str) -> str:
        return query.replace("?", "%s")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self.conn.transaction():
            cur = self.conn.cursor()
            # One writer at a time, like SQLite's BEGIN IMMEDIATE: retraction and
            # claims read then write, and must not interleave with another writer.
            cur.execute("SELECT pg_advisory_xact_lock(7262353)")
            try:
                yield cur
            finally:
                cur.close()

    def _tables(self, cur) -> set[str]:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {r[0] for r in cur.fetchall()}

    def _events_ddl(self) -> str:
        return ("CREATE TABLE IF NOT EXISTS actsort_events (id BIGINT GENERATED ALWAYS AS IDENTITY "
                "PRIMARY KEY, " + _EVENTS_TAIL + ")")

    def _guard_ddl(self) -> list[str]:
        return [
            "CREATE OR REPLACE FUNCTION actsort_events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$body$ BEGIN RAISE EXCEPTION 'actsort_events is append-only'; END $body$",
            "CREATE OR REPLACE TRIGGER actsort_events_append_only BEFORE UPDATE OR DELETE ON actsort_events "
            "FOR EACH ROW EXECUTE FUNCTION actsort_events_append_only()",
        ]

    def _insert_event(self, cur, values) -> int:
        cur.execute(
            "INSERT INTO actsort_events (" + ", ".join(_INSERT_COLUMNS) + ") VALUES ("
            + ", ".join(["%s"] * len(_INSERT_COLUMNS)) + ") RETURNING id", tuple(values))
        return int(cur.fetchone()[0])

    def integrity_check(self) -> str:
        """PostgreSQL checks its own pages; here: every retraction names a label event."""
        with self._read() as cur:
            bad = cur.execute(
                "SELECT count(*) FROM actsort_events r WHERE r.kind = 'retract' AND NOT EXISTS "
                "(SELECT 1 FROM actsort_events e WHERE e.id = r.retracts AND e.kind = 'label')"
            ).fetchone()[0]
        return "ok" if bad == 0 else f"{bad} retraction(s) name no label event"

