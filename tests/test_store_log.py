"""The label log: append-only record, undo by retraction, resume by replay, claims.

Every behaviour test runs on SQLite and, where a PostgreSQL server can be started
(Debian's ``postgresql`` package and ``psycopg``), on a throwaway server too.
"""
from __future__ import annotations

import doctest
import importlib
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid
from datetime import timezone
from pathlib import Path

import numpy as np
import pytest

from actsort_nb import InputError
from actsort_nb.store import Decision, Event, LabelLog


# -- a throwaway PostgreSQL server ------------------------------------------------------

def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return None


def _missing_pg(what: str) -> None:
    if os.environ.get("ACTSORT_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{what} is required here (ACTSORT_REQUIRE_POSTGRES=1) but is missing", pytrace=False)
    pytest.skip(f"{what} is missing (apt-get install postgresql; pip install 'psycopg[binary]')")


@pytest.fixture(scope="module")
def pg_server():
    """Start PostgreSQL in a temp dir on a Unix socket; yield a function making fresh database URLs."""
    try:
        import psycopg
    except ImportError:
        _missing_pg("psycopg")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        _missing_pg("PostgreSQL's initdb/pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="actsort-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            _missing_pg("runuser (to start PostgreSQL as the postgres user)")
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            _missing_pg("the postgres system user")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run(prefix + [initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
                   check=True, capture_output=True)
    # a throwaway server: skip the disk flushes (durability of a commit is PostgreSQL's own
    # promise with its default settings, which the label log does not change)
    opts = f"-k {root} -p {port} -c listen_addresses='' -c fsync=off -c synchronous_commit=off"
    subprocess.run(prefix + [pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"],
                   check=True, capture_output=True)
    admin = f"postgresql://postgres@/postgres?host={root}&port={port}"

    def new_database() -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@/{name}?host={root}&port={port}"

    try:
        yield new_database
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """A fresh label-log location on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "labels.sqlite")
    return request.getfixturevalue("pg_server")()


# -- behaviour, on both backends -------------------------------------------------------------

def test_record_returns_committed_decision(location):
    with LabelLog(location, annotator="ana", dataset="set-1") as log:
        d = log.record(np.int64(3), True, candidate_id=np.int32(17), strategy="dcal", p_cell=np.float32(0.25))
        assert isinstance(d, Decision)
        assert (d.candidate, d.candidate_id, d.label, d.annotator, d.strategy, d.p_cell) == \
               (3, "17", 1, "ana", "dcal", 0.25)
        assert d.time.tzinfo is not None and d.time.utcoffset() == timezone.utc.utcoffset(None)
        assert d.session == log.session
    # a second connection sees it: it was committed before record returned
    with LabelLog(location, annotator="ben") as other:
        (again,) = other.history()
        assert again == d
        assert other.labels(5).tolist() == [-1, -1, -1, 1, -1]
        assert other.labels(5).dtype == np.int8


def test_retract_appends_and_never_deletes(location):
    with LabelLog(location, annotator="ana") as ana, LabelLog(location, annotator="ben") as ben:
        ana.record(3, 1)
        ana.record(3, 0)       # relabel
        ben.record(4, 1)
        ana.record(5, 1)
        assert ana.labels(6).tolist() == [-1, -1, -1, 0, 1, 1]
        undone = ana.retract()
        assert undone.candidate == 5 and undone.annotator == "ana"
        undone = ana.retract()  # takes back the relabel: the earlier decision applies again
        assert (undone.candidate, undone.label) == (3, 0)
        assert ana.labels(6).tolist() == [-1, -1, -1, 1, 1, -1]
        assert ben.labels(6, annotator="ben").tolist() == [-1, -1, -1, -1, 1, -1]
        assert ana.retract().candidate == 3
        assert ana.retract() is None           # ben's decision is not ana's to undo
        assert ana.labels(6).tolist() == [-1, -1, -1, -1, 1, -1]
        events = ana.events()
        assert [e.kind for e in events] == ["label"] * 4 + ["retract"] * 3
        assert all(isinstance(e, Event) for e in events)
        assert [e.retracts for e in events[4:]] == [events[3].id, events[1].id, events[0].id]
        assert [e.label for e in events[4:]] == [None, None, None]
        assert [(d.candidate, d.annotator) for d in ana.history()] == [(4, "ben")]
        assert ana.history(annotator="ana") == []


def test_resume_replays_the_log(location):
    rng = np.random.default_rng(0)
    cands = rng.integers(0, 50, size=120)
    labels = rng.integers(0, 2, size=120)
    expected = np.full(50, -1, dtype=np.int8)
    with LabelLog(location, annotator="ana", dataset="d") as log:
        first_session = log.session
        for c, y in zip(cands, labels):
            log.record(int(c), int(y))
            expected[c] = y
        hist = log.history()
    with LabelLog(location, annotator="ana", dataset="d") as log:
        assert log.session != first_session
        np.testing.assert_array_equal(log.labels(50), expected)
        assert log.history() == hist
        # undo after resume takes back the last decision of the earlier session
        undone = log.retract()
        assert undone == hist[-1]


def test_labels_options_consensus_and_annotations(location):
    with LabelLog(location, annotator="a") as a, LabelLog(location, annotator="b") as b, \
            LabelLog(location, annotator="c") as c:
        for log, votes in ((a, [1, 1, 0, 1]), (b, [1, 0, 0, -1]), (c, [0, 0, 1, -1])):
            for i, v in enumerate(votes):
                if v >= 0:
                    log.record(i, v)
        b.record(1, 1)  # b changes their mind: their last decision counts
        votes, names = a.annotations(5)
        assert names == ["a", "b", "c"]
        assert votes.tolist() == [[1, 1, 0, 1, -1], [1, 1, 0, -1, -1], [0, 0, 1, -1, -1]]
        assert a.labels(5, annotator="consensus").tolist() == [1, 1, 0, 1, -1]
        assert a.labels(5, annotator="c").tolist() == [0, 0, 1, -1, -1]
        assert a.labels(5).tolist() == [0, 1, 1, 1, -1]  # last decision by anyone
        assert a.annotators() == ["a", "b", "c"]


def test_claims_keep_two_annotators_apart(location):
    with LabelLog(location, annotator="ana") as ana, LabelLog(location, annotator="ben") as ben:
        assert ana.claim(7) and not ben.claim(7)
        assert ana.claims() == {7: "ana"}
        assert ben.claim_next([7, 8, 9]) == 8
        assert ana.claim_next([7, 8, 9]) == 7       # re-asking returns its own claim
        ana.record(7, 1)                             # recording releases the claim ...
        assert ben.claims() == {8: "ben"}
        assert ben.claim_next([7, 8, 9]) == 8        # ... and 7 is now labelled, so skipped
        assert ben.claim_next([7], skip_labelled=False) == 7
        ben.release()
        assert ana.claims() == {}
        assert ana.claim(1, ttl=0.05)
        time.sleep(0.1)                              # an abandoned claim lapses
        assert ben.claim(1)
    with LabelLog(location, annotator="cy") as cy:   # closing released ben's claims
        assert cy.claims() == {}


def test_events_table_is_append_only(location):
    with LabelLog(location, annotator="ana") as log:
        log.record(0, 1)
        backend = log._backend
        for sql in ("UPDATE actsort_events SET label = 0", "DELETE FROM actsort_events"):
            with pytest.raises(Exception, match="append-only"):
                with backend._write() as cur:
                    backend._exec(cur, sql)
        assert log.labels(1).tolist() == [1]


def test_dataset_key_refuses_mixing(location):
    LabelLog(location, annotator="ana").close()          # no key yet
    with LabelLog(location, dataset="sortset-A") as log:  # first key is adopted
        assert log.dataset == "sortset-A"
    with pytest.raises(InputError, match="belongs to dataset 'sortset-A', not 'sortset-B'"):
        LabelLog(location, dataset="sortset-B")
    with LabelLog(location) as log:
        assert log.dataset == "sortset-A"


@pytest.mark.parametrize("call, message", [
    (lambda log: log.record(-1, 1), "index in 0 .. 2\\*\\*63 - 1"),
    (lambda log: log.record(2**70, 1), "index in 0 .. 2\\*\\*63 - 1"),
    (lambda log: log.record(1.5, 1), "integer index"),
    (lambda log: log.record(True, 1), "integer index"),
    (lambda log: log.record(0, 2), "1 \\(cell\\) or 0"),
    (lambda log: log.record(0, "yes"), "1 \\(cell\\) or 0"),
    (lambda log: log.record(0, 1, p_cell=1.5), "probability"),
    (lambda log: log.record(0, 1, p_cell=float("nan")), "probability"),
    (lambda log: log.record(0, 1, strategy=""), "non-empty"),
    (lambda log: log.labels(2), "candidate 5, but n=2"),
    (lambda log: log.labels(9, annotator="consensus", ties="coin"), "ties"),
    (lambda log: log.claim(3, ttl=0), "positive"),
])
def test_bad_arguments_raise_one_sentence(tmp_path, call, message):
    with LabelLog(tmp_path / "l.sqlite", annotator="ana") as log:
        log.record(5, 1)
        with pytest.raises(InputError, match=message):
            call(log)
        assert len(log.events()) == 1   # nothing half-written


def test_closed_log_refuses(tmp_path):
    log = LabelLog(tmp_path / "l.sqlite", annotator="ana")
    log.close()
    log.close()  # idempotent
    with pytest.raises(InputError, match="closed"):
        log.record(0, 1)


# -- SQLite specifics ------------------------------------------------------------------------

def test_sqlite_is_wal_and_synchronous_full(tmp_path):
    path = tmp_path / "l.sqlite"
    with LabelLog(path, annotator="ana") as log:
        log.record(0, 1)
        conn = log._backend.conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert log.integrity_check() == "ok"
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert raw.execute("SELECT value FROM actsort_meta WHERE key = 'format'").fetchone()[0] == "actsort_nb.labellog"
    raw.close()


def test_refuses_files_that_are_not_label_logs(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database at all")
    with pytest.raises(InputError, match="not an SQLite file"):
        LabelLog(text)
    assert text.read_text() == "hello, not a database at all"  # untouched
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(InputError, match="database of another program"):
        LabelLog(other)
    with pytest.raises(InputError, match="is a folder"):
        LabelLog(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        LabelLog(tmp_path / "missing" / "l.sqlite")
    with pytest.raises(InputError, match="scheme 'mysql'"):
        LabelLog("mysql://host/db")


def test_url_without_server_says_so():
    pytest.importorskip("psycopg")
    with pytest.raises(InputError, match="Cannot connect to the PostgreSQL label log"):
        LabelLog("postgresql://nobody@/nodb?host=/nonexistent-socket-dir&port=1", timeout=1)


def test_docstring_examples_run():
    for name in ("log", "agreement", "export"):
        # (import_module: the package re-exports the function export, which hides the module)
        module = importlib.import_module(f"actsort_nb.store.{name}")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# -- a team on one PostgreSQL log: two processes at once --------------------------------------

def _pg_worker(url: str, name: str, n: int, wfd: int) -> None:
    with LabelLog(url, annotator=name) as log:
        while (c := log.claim_next(range(n))) is not None:
            os.write(wfd, f"C {c}\n".encode())
            d = log.record(c, c % 2, strategy="random")
            os.write(wfd, f"L {d.id} {c}\n".encode())


@pytest.mark.slow
def test_postgres_two_processes_lose_nothing(pg_server):
    url = pg_server()
    LabelLog(url, annotator="setup").close()
    n = 200
    procs = []
    for name in ("ana", "ben"):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                os.close(r)
                _pg_worker(url, name, n, w)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        procs.append((pid, r))
    outputs = []
    for pid, r in procs:
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        os.close(r)
        assert os.waitpid(pid, 0)[1] == 0
        outputs.append(b"".join(chunks).decode().split("\n"))
    handed = [{int(x.split()[1]) for x in out if x.startswith("C ")} for out in outputs]
    acked = [int(x.split()[1]) for out in outputs for x in out if x.startswith("L ")]
    assert not handed[0] & handed[1]
    assert handed[0] | handed[1] == set(range(n))
    with LabelLog(url) as log:
        events = log.events()
        assert sorted(e.id for e in events) == sorted(acked)
        assert sorted(e.candidate for e in events) == list(range(n))
        assert log.labels(n).tolist() == [c % 2 for c in range(n)]
        assert log.integrity_check() == "ok"


def test_threads_sharing_one_log_lose_nothing(tmp_path):
    """A panel may call back from several threads: the object serialises them."""
    from concurrent.futures import ThreadPoolExecutor

    with LabelLog(tmp_path / "l.sqlite", annotator="ana") as log:
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda c: log.record(c, c % 2).id, range(80)))
        assert sorted(ids) == list(range(1, 81))
        assert log.labels(80).tolist() == [c % 2 for c in range(80)]


def test_record_many_is_all_or_nothing(tmp_path):
    with LabelLog(tmp_path / "l.sqlite", annotator="ana") as log:
        decisions = log.record_many([0, 1, 2], [1, 0, 1], candidate_ids=["a", "b", "c"], p_cell=[0.1, None, 1.0])
        assert [(d.candidate, d.candidate_id, d.label, d.p_cell) for d in decisions] == \
               [(0, "a", 1, 0.1), (1, "b", 0, None), (2, "c", 1, 1.0)]
        with pytest.raises(InputError, match="1 \\(cell\\) or 0"):
            log.record_many([3, 4], [1, 7])
        with pytest.raises(InputError, match="2 candidates but 1 labels"):
            log.record_many([3, 4], [1])
        assert len(log.events()) == 3
        assert log.history() == decisions


def test_a_log_locked_by_another_program_says_so(tmp_path):
    path = tmp_path / "l.sqlite"
    LabelLog(path, annotator="ana").close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(InputError, match="cannot be written \\(database is locked\\)"):
            LabelLog(path, annotator="ben", timeout=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with LabelLog(path, annotator="ben", timeout=0.1) as log:
        assert log.events() == []
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:  # locked while the log is open: the label is refused in one sentence, nothing written
            with pytest.raises(InputError, match="cannot be written \\(database is locked\\).*repeat the last action"):
                log.record(0, 1)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        log.record(0, 1)
        assert len(log.events()) == 1


def test_labels_refuse_an_annotator_nobody_wrote_as_and_bad_ties(tmp_path):
    log = LabelLog(tmp_path / "l.sqlite", annotator="ana")
    log.record(0, 1)
    with pytest.raises(InputError, match="no annotator 'zed'"):
        log.labels(3, annotator="zed")
    with pytest.raises(InputError, match="ties"):
        log.labels(3, ties="bogus")
    assert LabelLog(tmp_path / "l.sqlite", annotator="ben").labels(3, annotator="ben").tolist() == [-1, -1, -1]
    assert log.labels(3, annotator="ana").tolist() == [1, -1, -1]
    log.close()


def test_settings_are_per_annotator_merged_and_kept(location):
    ana = LabelLog(location, annotator="ana")
    ana.save_settings(threshold=0.7)
    ana.save_settings(strategy="dcal", threshold=0.6)
    ben = LabelLog(location, annotator="ben")
    assert ana.settings() == {"threshold": 0.6, "strategy": "dcal"} and ben.settings() == {}
    with pytest.raises(InputError, match="JSON"):
        ana.save_settings(threshold=float("nan"))
    ana.close()
    ben.close()
    again = LabelLog(location, annotator="ana")
    assert again.settings() == {"threshold": 0.6, "strategy": "dcal"}
    assert again.labels(2).tolist() == [-1, -1]  # the settings are not decisions
    again.close()
