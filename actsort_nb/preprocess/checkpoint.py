"""Resuming an interrupted streaming pass from where it stopped.

While the pass runs (with ``preprocess(out=...)``), :class:`PassCheckpoint` saves
its progress at most once per ``every`` seconds to a small HDF5 file next to the
output: the snapshot records of the time chunks finished so far (appended, each
record written once) and the running summary moments. A rerun with the same
movie, candidates and settings loads them and streams only the rest; the result is
identical to an uninterrupted pass (chunks are still merged in time order). The file
is removed once the sort set is written.

A checkpoint that belongs to other inputs (another movie file, other candidates,
events, crops or chunking: a fingerprint tells) or that cannot be read (the process
died while writing it) is ignored and replaced: the pass starts afresh, nothing
wrong is ever resumed.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import h5py
import numpy as np

__all__ = ["PassCheckpoint", "checkpoint_path", "fingerprint"]

_FORMAT = "actsort_nb.pass-checkpoint"
_VERSION = 1
_BLOCK = 2**16  # records copied at a time (bounded memory)


def checkpoint_path(out: str | os.PathLike) -> Path:
    """Where the pass for sort set ``out`` keeps its checkpoint: ``.<name>.pass.h5`` beside it."""
    out = Path(out)
    return out.with_name(f".{out.name}.pass.h5")


def fingerprint(movie_identity, *arrays: np.ndarray, **settings) -> str:
    """A digest of everything the pass's result depends on.

    Parameters
    ----------
    movie_identity : json-serialisable
        What identifies the movie (file, dataset, size, modification time, shape, dtype).
    *arrays : numpy.ndarray
        Event frames, crop origins, chunk starts, ...
    **settings
        Scalars (crop size, clip length, ...).
    """
    h = hashlib.sha256(json.dumps([movie_identity, settings], sort_keys=True, default=str).encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


class PassCheckpoint:
    """The saved progress of one streaming pass (see the module docstring).

    Parameters
    ----------
    path : str or PathLike
        The checkpoint file.
    key : str
        :func:`fingerprint` of the pass's inputs.
    every : float
        Seconds between saves.
    """

    def __init__(self, path: str | os.PathLike, key: str, every: float = 60.0):
        self.path, self.key, self.every = Path(path), key, float(every)
        self.records_done = 0  # records already in the file: a save appends the ones after them
        self._last = time.monotonic()

    def load(self, moments, clips_flat: np.ndarray, lo_flat: np.ndarray, scale_flat: np.ndarray, flat: np.ndarray) -> int:
        """Restore a matching checkpoint into the pass's arrays; the number of chunks already done (0: none)."""
        if not self.path.exists():
            return 0
        try:
            with h5py.File(self.path, "r") as f:
                if f.attrs.get("format") != _FORMAT or int(f.attrs.get("version", 0)) != _VERSION:
                    raise ValueError("not a pass checkpoint of this version")
                if f.attrs.get("key") != self.key:
                    self._discard("it belongs to other inputs")
                    return 0
                state = json.loads(f.attrs["state"])
                chunks, records = int(state["chunks"]), int(state["records"])
                for a in range(0, records, _BLOCK):  # in blocks: no second copy of all the clips
                    b = min(records, a + _BLOCK)
                    rows = flat[a:b]
                    clips_flat[rows] = f["clips"][a:b]
                    lo_flat[rows] = f["lo"][a:b]
                    scale_flat[rows] = f["scale"][a:b]
                m = f[f"moments{state['slot']}"]
                moments.n = int(m.attrs["n"])
                if moments.n:
                    moments.max, moments.mean, moments.m2 = m["max"][()], m["mean"][()], m["m2"][()]
                    moments.co = [m[f"co{k}"][()] for k in range(4)]
        except Exception as exc:  # noqa: BLE001 - unreadable (interrupted while saving): start afresh
            self._discard(f"it cannot be read ({exc})")
            return 0
        self.records_done = records
        return chunks

    def _discard(self, why: str) -> None:
        warnings.warn(f"{self.path}: not resuming the pass from this checkpoint, {why}; starting afresh.", stacklevel=3)
        self.path.unlink(missing_ok=True)

    def due(self) -> bool:
        """Whether ``every`` seconds have passed since the last save (or the start)."""
        return time.monotonic() - self._last >= self.every

    def save(self, chunks_done: int, records_done: int, moments, clips_flat, lo_flat, scale_flat, flat) -> None:
        """Append the records finished since the last save and store the moments.

        The moments go to the one of two slots not in use, everything is flushed, and
        only then one attribute (chunks, records, slot) says what is valid: a save
        cut short leaves the previous state whole (or, if HDF5's own metadata was
        cut, an unreadable file that :meth:`load` discards).
        """
        size = clips_flat.shape[1:]
        with h5py.File(self.path, "a") as f:
            if "clips" not in f:
                f.attrs["format"], f.attrs["version"], f.attrs["key"] = _FORMAT, _VERSION, self.key
                f.attrs["state"] = json.dumps({"chunks": 0, "records": 0, "slot": 0})
                rows = max(1, 2**16 // max(1, int(np.prod(size))))
                f.create_dataset("clips", (0,) + size, np.uint8, maxshape=(None,) + size, chunks=(rows,) + size)
                f.create_dataset("lo", (0,), np.float64, maxshape=(None,), chunks=(4096,))
                f.create_dataset("scale", (0,), np.float64, maxshape=(None,), chunks=(4096,))
                f.create_group("moments0").attrs["n"] = 0
                f.create_group("moments1").attrs["n"] = 0
            slot = 1 - int(json.loads(f.attrs["state"])["slot"])
            for name, values in (("clips", clips_flat), ("lo", lo_flat), ("scale", scale_flat)):
                d = f[name]
                d.resize(records_done, axis=0)
                for a in range(self.records_done, records_done, _BLOCK):
                    b = min(records_done, a + _BLOCK)
                    d[a:b] = values[flat[a:b]]
            g = f[f"moments{slot}"]
            if moments.n:  # overwritten in place: the file does not grow with each save
                named = [("max", moments.max), ("mean", moments.mean), ("m2", moments.m2)]
                for name, values in named + [(f"co{k}", c) for k, c in enumerate(moments.co)]:
                    if name in g:
                        g[name][...] = values
                    else:
                        g.create_dataset(name, data=values)
            g.attrs["n"] = int(moments.n)
            f.flush()
            f.attrs["state"] = json.dumps({"chunks": int(chunks_done), "records": int(records_done), "slot": slot})
        self.records_done = records_done
        self._last = time.monotonic()
