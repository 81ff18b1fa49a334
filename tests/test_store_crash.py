"""Crash safety and concurrency of the label log, with real processes.

(a) A child process labels in a loop and writes an acknowledgement to a pipe only
after :meth:`LabelLog.record` (or ``retract``) returned; the test SIGKILLs it at a
random point, ≥ 20 times, and after every kill checks that each acknowledged
event is in the log, that at most one unacknowledged event per kill got in (the
one committed just before the kill), that the file passes SQLite's
``PRAGMA integrity_check`` and that the next child resumes from the replay.

(b) Two processes label the same log at once (≥ 1,000 decisions): none is lost
or duplicated, and the claims never hand both the same candidate.

The children are ``os.fork()``-ed from the test process (a fresh interpreter
would spend seconds importing the scientific stack on each of 20 restarts);
each opens its own :class:`LabelLog`, and the parent holds no open connection
at the moment of the fork.
"""
from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from actsort_nb.store import LabelLog

N_CANDIDATES = 500


def _spawn(target, *args) -> tuple[int, int]:
    """Fork a child running ``target(*args, wfd)``; return (pid, read end of its pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(r)
            target(*args, w)
        except BaseException:  # noqa: BLE001 - report through the exit code
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _labeller(path: str, seed: int, wfd: int) -> None:
    """Label (and sometimes undo) forever; acknowledge each event after it returned."""
    rng = random.Random(seed)
    log = LabelLog(path, annotator="crash", dataset="crash-test")
    done = {d.candidate for d in log.history()}           # resume = replay
    todo = [c for c in range(N_CANDIDATES) if c not in done] or list(range(N_CANDIDATES))
    os.write(wfd, f"S {len(done)}\n".encode())
    i = 0
    while True:
        if rng.random() < 0.15:
            d = log.retract()
            if d is not None:
                os.write(wfd, f"R {d.id}\n".encode())
            continue
        c = todo[i % len(todo)]
        i += 1
        d = log.record(c, rng.randint(0, 1), strategy="random", p_cell=rng.random())
        os.write(wfd, f"L {d.id} {d.candidate} {d.label}\n".encode())


def _read_lines(fd: int, buf: bytearray, timeout: float) -> list[str]:
    ready, _, _ = select.select([fd], [], [], timeout)
    if ready:
        buf += os.read(fd, 65536)
    *lines, rest = buf.decode().split("\n")
    buf[:] = rest.encode()
    return lines


def _replay(events) -> np.ndarray:
    """An independent replay: walk the raw log, apply labels, undo retracted ones."""
    retracted = {e.retracts for e in events if e.kind == "retract"}
    out = np.full(N_CANDIDATES, -1, dtype=np.int8)
    for e in events:
        if e.kind == "label" and e.id not in retracted:
            out[e.candidate] = e.label
    return out


@pytest.mark.slow
def test_sigkill_at_random_points_loses_no_acknowledged_label(tmp_path):
    path = str(tmp_path / "labels.sqlite")
    rng = random.Random(1234)
    acked_labels: dict[int, tuple[int, int]] = {}   # event id -> (candidate, label)
    acked_retractions: set[int] = set()               # ids of label events taken back
    kills = 0
    resumed_from = []
    for round_ in range(22):
        pid, r = _spawn(_labeller, path, round_)
        buf = bytearray()
        target = rng.randint(1, 25)   # acknowledged events to wait for before the kill
        seen = 0
        deadline = time.monotonic() + 20
        while seen < target and time.monotonic() < deadline:
            for line in _read_lines(r, buf, 0.5):
                kind, *rest = line.split()
                if kind == "S":
                    resumed_from.append(int(rest[0]))
                    continue
                seen += 1
                if kind == "L":
                    acked_labels[int(rest[0])] = (int(rest[1]), int(rest[2]))
                else:
                    acked_retractions.add(int(rest[0]))
        time.sleep(rng.uniform(0, 0.008))   # land somewhere inside the next commit
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "child died on its own"
        kills += 1
        # acknowledgements written before the kill are acknowledged too
        while True:
            lines = _read_lines(r, buf, 0)
            if not lines:
                break
            for line in lines:
                kind, *rest = line.split()
                if kind == "L":
                    acked_labels[int(rest[0])] = (int(rest[1]), int(rest[2]))
                elif kind == "R":
                    acked_retractions.add(int(rest[0]))
        os.close(r)
        assert seen >= target, f"child made only {seen} acknowledged events in 20 s"

        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        raw.close()
        with LabelLog(path, annotator="checker", dataset="crash-test") as log:
            events = log.events()
            by_id = {e.id: e for e in events}
            for eid, (cand, lab) in acked_labels.items():
                assert eid in by_id, f"acknowledged label event {eid} lost after kill {kills}"
                assert (by_id[eid].kind, by_id[eid].candidate, by_id[eid].label) == ("label", cand, lab)
            taken_back = {e.retracts for e in events if e.kind == "retract"}
            assert acked_retractions <= taken_back, "an acknowledged undo was lost"
            # at most one committed-but-unacknowledged event per kill
            assert len(events) - len(acked_labels) - len(acked_retractions) <= kills
            np.testing.assert_array_equal(log.labels(N_CANDIDATES), _replay(events))
            assert log.integrity_check() == "ok"
    assert kills >= 20
    assert len(acked_labels) >= 20
    # every restart after the first resumed from what the log held
    assert resumed_from[0] == 0 and all(x > 0 for x in resumed_from[1:])


def _concurrent_labeller(path: str, name: str, n: int, wfd: int) -> None:
    with LabelLog(path, annotator=name, dataset="two-kernels") as log:
        while (c := log.claim_next(range(n), ttl=30)) is not None:
            os.write(wfd, f"C {c}\n".encode())      # this candidate is on this annotator's screen
            d = log.record(c, (c * 7) % 3 == 0, strategy=name)
            os.write(wfd, f"L {d.id} {c}\n".encode())


def _fast_dir(tmp_path: Path) -> Path:
    """A tmpfs folder where there is one: the point here is locking, not fsync latency."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        import tempfile

        return Path(tempfile.mkdtemp(dir=shm, prefix="actsort-test-"))
    return tmp_path


@pytest.mark.slow
def test_two_processes_label_concurrently_without_loss_or_duplicates(tmp_path):
    folder = _fast_dir(tmp_path)
    path = str(folder / "labels.sqlite")
    n = 1000
    LabelLog(path, annotator="setup", dataset="two-kernels").close()
    children = [_spawn(_concurrent_labeller, path, name, n) for name in ("ana", "ben")]
    outputs = []
    for pid, r in children:
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        os.close(r)
        assert os.waitpid(pid, 0)[1] == 0, "a labelling process failed"
        outputs.append([line.split() for line in b"".join(chunks).decode().splitlines()])
    shown = [[int(x[1]) for x in out if x[0] == "C"] for out in outputs]
    acked = [(int(x[1]), int(x[2])) for out in outputs for x in out if x[0] == "L"]
    try:
        assert len(acked) == n                                   # >= 1,000 decisions in total
        assert all(len(s) > n // 10 for s in shown), "one process did (almost) all the work"
        assert not set(shown[0]) & set(shown[1]), "both annotators were handed the same candidate"
        assert len(set(shown[0])) == len(shown[0]) and len(set(shown[1])) == len(shown[1])
        with LabelLog(path, annotator="checker") as log:
            events = log.events()
            assert len(events) == n
            assert sorted(e.id for e in events) == sorted(eid for eid, _ in acked)       # none lost
            assert sorted(e.candidate for e in events) == list(range(n))                  # none twice
            assert log.labels(n).tolist() == [int((c * 7) % 3 == 0) for c in range(n)]
            assert {e.annotator for e in events} == {"ana", "ben"}
            assert log.claims() == {}
            assert log.integrity_check() == "ok"
    finally:
        if folder != tmp_path:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
