"""The streaming driver: one pass over the movie in time chunks.

Before the pass, an index lists every (candidate, event, clip frame) record sorted
by movie frame. Each time chunk is then handled by one pure task,
:func:`chunk_task`, which

* fancy-indexes the fixed-size crops of all records whose frame falls in the chunk
  (vectorised across candidates), and
* computes the chunk's summary moments: per-pixel max, mean, centred sum of squares
  and centred co-moments with the 4 "forward" neighbours (right, down, and the two
  diagonals), from which the 8-neighbour local-correlation image follows.

Chunk results are merged strictly in time order with the pairwise update of Chan,
Golub & LeVeque (1979), so the statistics are exact up to floating-point rounding
and identical whichever executor ran the tasks: the calling thread's pool (default),
a dask scheduler (``scheduler="threads"|"processes"|"synchronous"``) or a
``dask.distributed.Client``. At most a few chunks are in flight, so memory is bounded
by the chunk size and does not grow with the movie's length.

Speed (see ``benchmarks/preprocess.py``): the crop gather + per-record quantisation,
the moment merge and the final re-quantisation are compiled loops
(:mod:`._kernels`, numba, GIL released) that reproduce the numpy arithmetic byte for
byte; the chunk moments are a compiled loop too, over bands of rows that stay in the
CPU cache (equal to the numpy form up to float32 rounding), which cuts each band's
share of the crops while the band is there; with the default local executor the worker threads write their records straight
into the output, and a movie that is a plain ``from_array`` of an HDF5 dataset (what
``actsort_nb.io.open_movie`` returns) is read with ``read_direct`` into reused buffers
instead of through dask (with direct I/O for files of 1 GiB or more: a cold read
through the page cache cost ~1 CPU-second per GB of system time here).
"""
from __future__ import annotations

import errno
import os
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from tqdm.auto import tqdm

from .._validation import InputError, check_option
from ._kernels import _native_dtype, chunk_moments, merge_moments, requantise
from .checkpoint import PassCheckpoint, fingerprint

__all__ = [
    "CLIP_HALF",
    "Moments",
    "SnapshotIndex",
    "StreamResult",
    "chunk_task",
    "quantise_snapshots",
    "snapshot_index",
    "stream",
]

#: dask's local scheduler names (a cluster is passed as ``client=``).
SCHEDULERS = ("threads", "threading", "processes", "multiprocessing", "synchronous", "sync", "single-threaded")

#: Frames on each side of an event in a snapshot clip (clips are 2·5+1 = 11 frames).
CLIP_HALF = 5

# (pixel p, neighbour q) slices of the 4 forward neighbour offsets: right, down,
# down-right, down-left. With both directions counted this is the 8-neighbourhood.
_PAIRS = (
    ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
    ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    ((slice(None, -1), slice(None, -1)), (slice(1, None), slice(1, None))),
    ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))),
)


@dataclass(frozen=True)
class SnapshotIndex:
    """Every snapshot frame needed, as flat records sorted by movie ``frame``.

    Attributes
    ----------
    frame : numpy.ndarray
        Movie frame of each record (int64, sorted ascending).
    candidate, event, offset : numpy.ndarray
        Where the record goes in ``snapshots(candidate, event, frame, cy, cx)``.
    origin : numpy.ndarray
        ``(record, 2)`` crop origin ``(y0, x0)`` of the record's candidate.
    """

    frame: np.ndarray
    candidate: np.ndarray
    event: np.ndarray
    offset: np.ndarray
    origin: np.ndarray

    def span(self, t0: int, t1: int) -> slice:
        """Records whose frame lies in ``[t0, t1)``."""
        lo, hi = np.searchsorted(self.frame, (t0, t1), side="left")
        return slice(int(lo), int(hi))


def snapshot_index(event_frame: np.ndarray, origins: np.ndarray, n_frames: int, half: int = CLIP_HALF) -> SnapshotIndex:
    """Build the (frame → candidate, event, clip offset) index for the streaming pass.

    Clip frames outside the movie are clamped to its first/last frame; events
    marked ``-1`` need no frames.

    Parameters
    ----------
    event_frame : numpy.ndarray
        ``(candidate, event)`` int frames, ``-1`` where missing.
    origins : numpy.ndarray
        ``(candidate, 2)`` crop origins.
    n_frames : int
        Length of the movie.
    half : int
        Frames on each side of an event.

    Returns
    -------
    SnapshotIndex

    Examples
    --------
    >>> idx = snapshot_index(np.array([[10, -1]]), np.zeros((1, 2), np.int32), 100, half=1)
    >>> idx.frame.tolist(), idx.offset.tolist()
    ([9, 10, 11], [0, 1, 2])
    """
    ev = np.asarray(event_frame, dtype=np.int64)
    n, n_ev = ev.shape
    k = np.arange(2 * half + 1)
    c, e, o = np.meshgrid(np.arange(n), np.arange(n_ev), k, indexing="ij")
    f = ev[:, :, None] + k[None, None, :] - half
    ok = np.broadcast_to(ev[:, :, None] >= 0, f.shape)
    f = np.clip(f[ok], 0, max(0, n_frames - 1))
    order = np.argsort(f, kind="stable")
    c = c[ok][order]
    return SnapshotIndex(
        frame=f[order],
        candidate=c,
        event=e[ok][order],
        offset=o[ok][order],
        origin=np.asarray(origins, dtype=np.int64)[c],
    )


def chunk_task(block, t0: int, frame: np.ndarray, origin: np.ndarray, size: int) -> dict:
    """Everything one time chunk contributes: its snapshot crops and summary moments.

    Pure and picklable, so any dask executor can run it on a worker.

    Parameters
    ----------
    block : array-like
        ``(time, y, x)`` movie frames ``t0 .. t0 + len(block)``.
    t0 : int
        Index of the block's first frame in the movie.
    frame : numpy.ndarray
        Movie frames of the records in this block.
    origin : numpy.ndarray
        ``(record, 2)`` crop origins of those records.
    size : int
        Crop side.

    Returns
    -------
    dict
        ``clips`` ``(record, cy, cx)`` uint8 quantised per record with ``lo`` and
        ``scale`` ``(record,)`` (value ≈ clip · scale + lo), and the moments ``n``,
        ``max``, ``mean``, ``m2``, ``co`` (see :class:`Moments`).
    """
    block = np.asarray(block)
    m = len(frame)
    q = np.empty((m, size, size), np.uint8)
    lo = np.zeros(m)
    scale = np.zeros(m)
    out = {"clips": q, "lo": lo, "scale": scale}
    out.update(_moments(block, records=(t0, frame, origin, size, q, np.arange(m), lo, scale)))
    return out


def _quantise_records(crops: np.ndarray, batch: int = 4096):
    """Quantise each ``(cy, cx)`` crop to uint8 with its own range (error ≤ scale / 2).

    The numpy reference of the crops :func:`._kernels.chunk_moments` cuts in the pass
    (the tests hold it to these exact bytes). Works through ``batch`` crops at a time
    in float32.
    """
    m = len(crops)
    q = np.empty(crops.shape, np.uint8)
    lo = np.zeros(m)
    scale = np.zeros(m)
    for s in range(0, m, batch):
        x = crops[s : s + batch].astype(np.float32)
        a = x.min(axis=(1, 2)).astype(np.float64)
        sc = (x.max(axis=(1, 2)).astype(np.float64) - a) / 255.0
        x -= a[:, None, None].astype(np.float32)
        x *= (1.0 / np.where(sc > 0, sc, 1.0)).astype(np.float32)[:, None, None]
        np.rint(x, out=x)
        np.clip(x, 0, 255, out=x)
        q[s : s + batch] = x
        lo[s : s + batch] = a
        scale[s : s + batch] = sc
    return q, lo, scale


def _moments(block: np.ndarray, band_bytes: float = 1e6, records: tuple | None = None, stage=None) -> dict:
    """Chunk moments: count, max, mean, centred squares and forward-neighbour co-moments.

    Computed by the compiled :func:`._kernels.chunk_moments` in bands of image rows
    whose frames (about ``band_bytes``) stay in the CPU cache; with ``records``, the
    snapshot crops are cut and quantised on the way (:func:`._kernels.chunk_moments`).
    """
    block = np.asarray(block)
    n_t, _, w = block.shape
    rows = int(max(1, band_bytes // max(1, n_t * w * block.dtype.itemsize)))
    return chunk_moments(block, rows, records, stage)


class Moments:
    """Running per-pixel moments of a movie, merged chunk by chunk (Chan et al.).

    ``mean``, ``m2`` (centred sum of squares) and ``co`` (centred sums of products
    with the right, down, down-right and down-left neighbours) are float64; merging
    in time order makes the result independent of which worker computed a chunk.

    Examples
    --------
    >>> rng = np.random.default_rng(0); m = rng.random((20, 6, 7))
    >>> acc = Moments()
    >>> for s in range(0, 20, 7):
    ...     acc.add(_moments(m[s : s + 7]))
    >>> bool(np.allclose(acc.mean, m.mean(0)))
    True
    """

    def __init__(self):
        self.n = 0
        self.max = None
        self.mean = None
        self.m2 = None
        self.co = None

    def add(self, part: dict) -> None:
        """Merge one chunk's moments (chunks must be added in time order)."""
        nb = part["n"]
        if nb == 0:
            return
        if self.n == 0:
            self.n, self.max, self.mean = nb, part["max"].copy(), part["mean"].copy()
            self.m2 = part["m2"].astype(np.float64)
            self.co = [c.astype(np.float64) for c in part["co"]]
            return
        na, n = self.n, self.n + nb
        # fused form of: delta = mean_b - mean; w = na * nb / n; mean += delta * (nb / n);
        # m2 += m2_b + delta * delta * w; co += co_b + delta[p] * delta[q] * w (same bits)
        merge_moments(self.mean, self.m2, self.co, part["mean"], part["m2"], part["co"], nb / n, na * nb / n)
        np.maximum(self.max, part["max"], out=self.max)
        self.n = n

    def corr_image(self) -> np.ndarray:
        """Mean Pearson correlation of each pixel with its (up to 8) neighbours, float32."""
        sd = np.sqrt(self.m2)
        total = np.zeros_like(self.m2)
        count = np.zeros_like(self.m2)
        for c, (p, q) in zip(self.co, _PAIRS):
            den = sd[p] * sd[q]
            r = np.divide(c, den, out=np.zeros_like(c), where=den > 0)
            total[p] += r
            total[q] += r
            count[p] += 1
            count[q] += 1
        return (total / np.maximum(count, 1)).astype(np.float32)


@dataclass
class StreamResult:
    """What the pass gathered: raw (unquantised) snapshot clips and summary images."""

    clips: np.ndarray  # (candidate, event, frame, cy, cx) uint8, quantised per record
    lo: np.ndarray  # (candidate, event, frame) float64: value = clip * scale + lo
    scale: np.ndarray  # (candidate, event, frame) float64
    max_image: np.ndarray
    mean_image: np.ndarray
    corr_image: np.ndarray


def default_chunk_frames(shape: tuple[int, ...], itemsize: int, target_bytes: float = 32e6) -> int:
    """Frames per chunk so that one raw chunk is about ``target_bytes`` (32 MB)."""
    per_frame = max(1, int(np.prod(shape[1:])) * int(itemsize))
    return int(max(1, min(shape[0] or 1, target_bytes // per_frame)))


def _time_chunks(movie: da.Array, chunk_frames: int | None) -> da.Array:
    if chunk_frames is None:
        target = default_chunk_frames(movie.shape, movie.dtype.itemsize)
        sizes = movie.chunks[0]
        if sizes and max(sizes) <= 4 * target and len(movie.chunks[1]) == 1 and len(movie.chunks[2]) == 1:
            return movie  # keep the reader's own chunks: no block is read twice
        chunk_frames = target
    if int(chunk_frames) < 1:
        raise InputError(f"chunk_frames must be a positive number of frames, got {chunk_frames!r}.")
    return movie.rechunk({0: int(chunk_frames), 1: -1, 2: -1})


def _cap_records(movie: da.Array, index: SnapshotIndex, max_records: int) -> da.Array:
    """Split time chunks holding more than ``max_records`` snapshot records (bounded task memory)."""
    bounds = np.concatenate([[0], np.cumsum(movie.chunks[0])]).astype(np.int64)
    counts = np.diff(np.searchsorted(index.frame, bounds))
    if counts.size == 0 or counts.max() <= max_records:
        return movie
    sizes: list[int] = []
    per_frame = np.bincount(index.frame, minlength=int(bounds[-1]))
    for a, b, c in zip(bounds[:-1], bounds[1:], counts):
        if c <= max_records:
            sizes.append(int(b - a))
            continue
        # greedy: grow each piece frame by frame until the next frame would overflow it
        cum = np.cumsum(per_frame[a:b])
        start = 0
        while start < b - a:
            base = cum[start - 1] if start else 0
            stop = int(np.searchsorted(cum, base + max_records, side="right"))
            stop = max(stop, start + 1)
            sizes.append(stop - start)
            start = stop
    return movie.rechunk({0: tuple(sizes)})


def _array_source(movie: da.Array):
    """The h5py dataset or numpy array behind a plain ``da.from_array(x)`` movie, else None.

    Only an unmodified ``from_array`` graph qualifies (two layers: the array and its
    getter, named like the movie), so every block of ``movie`` is exactly ``x[t0:t1]``:
    the local pass then reads those frames itself (see :func:`_direct_reader`).
    """
    try:
        import h5py

        layers = movie.dask.layers
        orig = layers.get("original-" + movie.name)
        if len(layers) != 2 or orig is None or len(orig) != 1:
            return None
        (obj,) = dict(orig).values()
        obj = getattr(obj, "value", obj)  # a task-spec DataNode in newer dask
        if isinstance(obj, (h5py.Dataset, np.ndarray)) and obj.shape == movie.shape and obj.dtype == movie.dtype:
            return obj
    except Exception:  # noqa: BLE001 - an unrecognised graph just takes the dask path
        return None
    return None


def _movie_identity(movie: da.Array):
    """What identifies a movie across processes: its file (path, dataset, size, mtime) or dask's name."""
    source = _array_source(movie)
    if source is not None and not isinstance(source, np.ndarray):
        try:
            st = os.stat(source.file.filename)
            return [os.path.abspath(source.file.filename), source.name, st.st_size, st.st_mtime_ns]
        except (OSError, TypeError, ValueError):  # not a file on disk (e.g. an in-memory HDF5 image)
            pass
    return movie.name  # deterministic for the same graph; else the checkpoint is never matched (safe)


#: Movies read straight from their file are read with direct I/O (``O_DIRECT``, where the
#: file system allows) from this size on: streaming a big file through the page cache
#: costs the reading process ~1 CPU-second per GB here (copies, page allocation and
#: reclaim; 4.2-5.6 s of system time for a cold read of the 4.3 GB benchmark movie,
#: 0.33 s with direct I/O) and evicts what else is cached. Smaller movies keep the page
#: cache, which serves a second read from memory.
DIRECT_MIN_BYTES = 2**30
_PAGE = 4096  # alignment of direct I/O: offsets, lengths and memory


def _aligned_bytes(nbytes: int) -> np.ndarray:
    """An uninitialised uint8 array of ``nbytes`` starting at a page boundary."""
    raw = np.empty(nbytes + _PAGE, np.uint8)
    skip = -raw.ctypes.data % _PAGE
    return raw[skip : skip + nbytes]


class _RawFrames:
    """Frames of an uncompressed HDF5 dataset read straight from the file (``os.preadv``).

    h5py serialises its reads and reads a chunked dataset one chunk at a time; where
    the bytes of whole frames lie in the file as they lie in memory (contiguous
    layout, or chunks spanning whole frames, no filters, a plain local file opened
    read-only) the frames are read with a few large ``preadv`` calls instead, from any number of
    threads at once. Measured on the 4.3 GB benchmark movie in 64-frame blocks on 3
    threads: cold 4.4 → 1.9 s, warm 1.25 → 0.8 s. Anything else (filters, spatial
    chunks, unallocated chunks) is left to h5py: :meth:`ranges` returns None. Files of
    :data:`DIRECT_MIN_BYTES` or more are read with direct I/O where the file system
    allows (the frames land in a page-aligned buffer and are used in place), falling
    back to the page cache for a read it refuses.
    """

    def __init__(self, dset):
        import h5py

        self._dset, self._fd = dset, None
        plist = dset.id.get_create_plist()
        layout = plist.get_layout()
        whole_frames = layout == h5py.h5d.CONTIGUOUS or (
            layout == h5py.h5d.CHUNKED and tuple(dset.chunks[1:]) == tuple(dset.shape[1:])
        )
        if (
            whole_frames
            and plist.get_nfilters() == 0
            and plist.get_external_count() == 0
            and getattr(dset.file, "driver", None) == "sec2"
            and dset.file.mode == "r"  # nothing unflushed in HDF5's caches
            and hasattr(os, "preadv")  # not on Windows
        ):
            try:
                self._fd = os.open(dset.file.filename, os.O_RDONLY)
            except OSError:
                self._fd = None
        self._dfd = None  # the same file opened for direct I/O (bypassing the page cache), where allowed
        if self._fd is not None and hasattr(os, "O_DIRECT") and os.fstat(self._fd).st_size >= DIRECT_MIN_BYTES:
            try:
                self._dfd = os.open(dset.file.filename, os.O_RDONLY | os.O_DIRECT)
            except OSError:  # e.g. a file system without direct I/O
                self._dfd = None
        self._frame = int(np.prod(dset.shape[1:], dtype=np.int64)) * dset.dtype.itemsize
        self._frames_per_chunk = None if dset.chunks is None else int(dset.chunks[0])
        self._offset = dset.id.get_offset() if dset.chunks is None else None  # contiguous: where it starts
        self._chunk_offsets: dict[int, int | None] | None = None  # walked on the first ranges() call
        self._lock = threading.Lock()

    def _offsets(self) -> dict[int, int | None]:
        """Every chunk's file offset, from one walk of the chunk index (done once, when first needed).

        Looking one chunk up walks the index each time, holding h5py's lock (0.5 s on
        the benchmark movie); the walk takes ~10 ms and is skipped by a :func:`prefetch`
        that finds the movie read with direct I/O.
        """
        with self._lock:  # reader threads call this at once
            if self._chunk_offsets is None:
                offsets: dict[int, int | None] = {}
                try:
                    self._dset.id.chunk_iter(lambda info: offsets.__setitem__(info.chunk_offset[0], info.byte_offset))
                except Exception:  # noqa: BLE001 - an older HDF5 without H5Dchunk_iter: look up per chunk
                    offsets.clear()
                self._chunk_offsets = offsets
            return self._chunk_offsets

    @property
    def fd(self) -> int | None:
        """The file descriptor the frames are read through (None: h5py reads them)."""
        return self._fd

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame."""
        return self._frame

    @property
    def parallel(self) -> bool:
        """Whether reads can run in several threads at once (else h5py serialises them)."""
        return self._fd is not None

    def ranges(self, t0: int, t1: int) -> list[tuple[int, int]] | None:
        """``(offset, length)`` in the file of frames ``t0..t1``, merged; None if h5py must read them."""
        if self._fd is None:
            return None
        d, fb, ct = self._dset, self._frame, self._frames_per_chunk
        if ct is None:
            off = self._offset
            return None if off is None else [(off + t0 * fb, (t1 - t0) * fb)]
        tail = (0,) * (d.ndim - 1)
        offsets = self._offsets()
        out: list[tuple[int, int]] = []
        for tc in range(t0 // ct * ct, t1, ct):
            if tc in offsets:
                off = offsets[tc]
            else:
                off = d.id.get_chunk_info_by_coord((tc,) + tail).byte_offset
            if off is None:  # never written: h5py gives the fill value
                return None
            a, b = max(t0, tc), min(t1, tc + ct)
            start = off + (a - tc) * fb
            if out and out[-1][0] + out[-1][1] == start:
                out[-1] = (out[-1][0], out[-1][1] + (b - a) * fb)
            else:
                out.append((start, (b - a) * fb))
        return out

    @property
    def direct(self) -> bool:
        """Whether frames are read with direct I/O (``O_DIRECT``: no page cache)."""
        return self._dfd is not None

    def buffer(self, frames: int) -> np.ndarray:
        """A reusable byte buffer for :meth:`read` of up to ``frames`` frames (aligned for direct I/O)."""
        return _aligned_bytes(int(frames) * self._frame + 2 * _PAGE)

    def read(self, t0: int, t1: int, buf: np.ndarray) -> np.ndarray:
        """Frames ``t0..t1`` as an array in ``buf`` (from :meth:`buffer`), the dataset's dtype and shape."""
        shape = (t1 - t0,) + tuple(self._dset.shape[1:])
        spans = self.ranges(t0, t1)
        if spans is not None and len(spans) == 1 and self._dfd is not None:
            got = self._read_direct(*spans[0], buf, t1)
            if got is not None:
                return got.view(self._dset.dtype).reshape(shape)
        out = buf[: (t1 - t0) * self._frame].view(self._dset.dtype).reshape(shape)
        if spans is None:
            self._dset.read_direct(out, np.s_[t0:t1])
            return out
        view = memoryview(out).cast("B")
        pos = 0
        for off, size in spans:
            end = pos + size
            while pos < end:
                got = os.preadv(self._fd, [view[pos:end]], off + size - (end - pos))
                if got == 0:
                    raise self._truncated(t1)
                pos += got
        return out

    def _read_direct(self, off: int, size: int, buf: np.ndarray, t1: int) -> np.ndarray | None:
        """Bytes ``off .. off + size`` of the file read with direct I/O into ``buf``; None where it cannot."""
        start = off - off % _PAGE  # direct I/O reads whole pages into page-aligned memory
        skip = off - start
        if skip % self._dset.dtype.itemsize:
            return None
        view = memoryview(buf)[: -(-(skip + size) // _PAGE) * _PAGE]
        pos = 0
        try:
            while pos < skip + size:
                got = os.preadv(self._dfd, [view[pos:]], start + pos)
                if got == 0:
                    raise self._truncated(t1)
                pos += got
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return None  # an unaligned short read, or a file system that refuses: the page cache reads it
        return buf[skip : skip + size]

    def _truncated(self, t1: int) -> InputError:
        return InputError(
            f"{self._dset.file.filename}: the movie file ends before frame {t1}; it is truncated, "
            "copy it again from its source."
        )

    def close(self) -> None:
        for fd in (self._fd, self._dfd):
            if fd is not None:
                os.close(fd)
        self._fd = self._dfd = None


@contextmanager
def prefetch(movie, max_bytes: float = 2e9) -> Iterator[None]:
    """Have the disk read the movie's first frames (up to ``max_bytes``) while the block runs.

    For the work before the pass (finding the events), which needs the CPU but not the
    movie: a background thread asks the kernel to read the movie's first time chunks
    into the page cache (``posix_fadvise(WILLNEED)``, one chunk at a time, stopping
    when the block ends), so the pass starts on frames already in memory. Only for
    movies the pass reads straight from their file through the page cache (see
    :class:`_RawFrames`); a no-op elsewhere, and for movies read with direct I/O.
    Costs no memory of the process (the page cache is the kernel's).
    """
    source = _array_source(movie) if isinstance(movie, da.Array) else None
    raw = _RawFrames(source) if source is not None and not isinstance(source, np.ndarray) else None
    if raw is None or not raw.parallel or raw.direct or not hasattr(os, "posix_fadvise"):
        if raw is not None:
            raw.close()
        yield
        return
    stop = threading.Event()
    step = max(1, default_chunk_frames(movie.shape, movie.dtype.itemsize))
    n_frames = min(int(movie.shape[0]), int(max_bytes // max(1, raw.frame_bytes)))

    def run():
        for t0 in range(0, n_frames, step):
            for off, size in raw.ranges(t0, min(n_frames, t0 + step)) or ():
                if stop.is_set():
                    return
                os.posix_fadvise(raw.fd, off, size, os.POSIX_FADV_WILLNEED)

    thread = threading.Thread(target=run, name="actsort-prefetch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        raw.close()


def _direct_reader(source, dtype, max_frames: int, raw: _RawFrames | None = None) -> Callable:
    """``read(t0, t1, fn)``: ``fn(frames t0..t1)`` without dask's per-block copy.

    A numpy source is sliced (a view); an HDF5 dataset is read (by ``raw`` where it
    can, else ``read_direct``) into one of a few reused buffers (no fresh 32 MB
    allocation and page faults per chunk), the compute runs in parallel.
    """
    if isinstance(source, np.ndarray):
        return lambda t0, t1, fn: fn(source[t0:t1])
    import queue

    pool: queue.SimpleQueue = queue.SimpleQueue()
    shape = (int(max_frames),) + tuple(source.shape[1:])

    def read(t0: int, t1: int, fn):
        try:
            buf = pool.get_nowait()
        except queue.Empty:
            buf = raw.buffer(max_frames) if raw is not None else np.empty(shape, dtype)
        try:
            if raw is not None:
                block = raw.read(t0, t1, buf)
            else:
                block = buf[: t1 - t0]
                source.read_direct(block, np.s_[t0:t1])
            return fn(block)
        finally:
            pool.put(buf)

    return read


def _results(
    tasks: list[Callable[[], Any]],
    blocks: list[Callable[[], dict]],
    client,
    scheduler: str | None,
    workers: int | None,
    reader_threads: int = 0,
) -> Iterator[dict]:
    """Run the chunk tasks with a bounded window and yield their results in time order.

    Locally, ``workers`` threads compute and ``reader_threads`` more are added for
    the time threads wait on the file, so the others keep every core busy (cold
    4.3 GB movie, three interleaved pairs each: through h5py, stream 7.0 s mean with
    2 threads, 6.4 s with 2 + 1; with raw reads 6.5 s with 2 + 1, 5.6 s with 2 + 2;
    warm the same within the noise).
    """
    if client is not None:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        window = 2 * n_workers
        pending: deque = deque()
        try:
            for i in range(len(tasks)):
                pending.append(client.compute(tasks[i]()))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            if pending:  # interrupted: do not leave work running on the cluster
                client.cancel(list(pending))
        return
    if scheduler is not None:
        n = workers or os.cpu_count() or 1
        window = max(2, 2 * n)
        for s in range(0, len(tasks), window):
            yield from dask.compute(*[t() for t in tasks[s : s + window]], scheduler=scheduler)
        return
    n = (workers or min(2, os.cpu_count() or 1)) + reader_threads
    with ThreadPoolExecutor(max_workers=n) as pool:
        pending = deque()
        try:
            for i in range(len(tasks)):
                pending.append(pool.submit(blocks[i]))
                if len(pending) >= 2 * n:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def stream(
    movie,
    event_frame: np.ndarray,
    origins: np.ndarray,
    size: int,
    *,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    chunk_frames: int | None = None,
    progress: bool = True,
    max_record_bytes: float = 64e6,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 60.0,
) -> StreamResult:
    """One pass over ``movie``: all candidates' snapshot clips and the summary images.

    Parameters
    ----------
    movie : dask.array.Array or array-like
        ``(time, y, x)`` movie; read one time chunk at a time.
    event_frame : numpy.ndarray
        ``(candidate, event)`` event frames, ``-1`` where missing.
    origins : numpy.ndarray
        ``(candidate, 2)`` crop origins ``(y0, x0)``.
    size : int
        Crop side.
    client : dask.distributed.Client, optional
        Spread the chunks over this cluster's workers.
    scheduler : str, optional
        A dask scheduler name (``"threads"``, ``"processes"``, ``"synchronous"``).
    workers : int, optional
        Threads computing in the default local executor (default: up to 2); when
        the movie is read from an HDF5 file, one or two more keep them fed while
        others wait on the disk.
    chunk_frames : int, optional
        Frames per chunk; default keeps the reader's chunks or uses ~32 MB chunks.
    progress : bool
        Show a tqdm progress bar.
    max_record_bytes : float
        Chunks whose snapshot crops (uint8, plus their raw pixels while they are cut)
        would exceed this many bytes are split in time, so a short movie (where every
        candidate's events share a chunk) stays bounded.
    checkpoint : str or PathLike, optional
        Save the pass's progress here every ``checkpoint_every`` seconds and, if a
        checkpoint of the same inputs is there, resume from it
        (:mod:`.checkpoint`; the caller removes the file when done with it).
    checkpoint_every : float
        Seconds between saves.

    Returns
    -------
    StreamResult
    """
    if client is not None and scheduler is not None:
        raise InputError("pass either client= or scheduler=, not both.")
    if scheduler is not None:
        check_option(scheduler, "scheduler", SCHEDULERS)
    if not isinstance(movie, da.Array):
        movie = da.from_array(movie, chunks=(default_chunk_frames(np.shape(movie), np.dtype(movie.dtype).itemsize), -1, -1))
    source = _array_source(movie) if client is None and scheduler is None else None
    identity = _movie_identity(movie) if checkpoint is not None else None
    movie = _time_chunks(movie, chunk_frames)
    n_t = int(movie.shape[0])
    ev = np.asarray(event_frame)
    n, n_ev = ev.shape
    clip_len = 2 * CLIP_HALF + 1
    index = snapshot_index(ev, origins, n_t)
    # a record takes size² bytes in the output and, while its chunk is cut, size² raw pixels
    per_record = size * size * (1 + _native_dtype(movie.dtype).itemsize)
    movie = _cap_records(movie, index, max(1, int(max_record_bytes // per_record)))
    clips = np.zeros((n, n_ev, clip_len, size, size), np.uint8)
    lo = np.zeros((n, n_ev, clip_len))
    scale = np.zeros((n, n_ev, clip_len))
    clips_flat = clips.reshape(-1, size, size)
    flat = (index.candidate * n_ev + index.event) * clip_len + index.offset
    starts = np.concatenate([[0], np.cumsum(movie.chunks[0])]).astype(int)

    def args(i):
        sl = index.span(starts[i], starts[i + 1])
        return int(starts[i]), index.frame[sl], index.origin[sl], int(size)

    def delayed_task(i):
        return lambda: dask.delayed(chunk_task, pure=True)(movie.blocks[i], *args(i))

    lo_flat, scale_flat = lo.reshape(-1), scale.reshape(-1)
    record_bounds = np.searchsorted(index.frame, starts)  # chunk i holds records [bounds[i], bounds[i + 1])
    max_records = int(np.diff(record_bounds).max(initial=0))
    stages = threading.local()
    raw = _RawFrames(source) if source is not None and not isinstance(source, np.ndarray) else None
    read = _direct_reader(source, movie.dtype, max(movie.chunks[0], default=1), raw) if source is not None else None

    def local_task(i):
        # Runs in a worker thread of this process, so it writes its records straight
        # into the output (records are disjoint across chunks: no two threads share one)
        # and hands back only the chunk's moments.
        t0, t1 = int(starts[i]), int(starts[i + 1])
        sl = index.span(t0, t1)

        def run(block):
            stage = getattr(stages, "buffer", None)
            if stage is None:  # one per thread, reused: no fresh allocation per chunk
                stage = stages.buffer = np.empty((max_records, size, size), _native_dtype(block.dtype))
            records = (t0, index.frame[sl], index.origin[sl], size, clips_flat, flat[sl], lo_flat, scale_flat)
            return _moments(block, records=records, stage=stage)

        if read is not None:
            return lambda: read(t0, t1, run)
        block = movie.blocks[i].to_delayed().ravel()[0]  # no concatenate-and-copy on finalize
        return lambda: run(np.asarray(block.compute(scheduler="synchronous")))

    n_chunks = len(movie.chunks[0])
    floats = np.dtype(movie.dtype).kind in "fc"  # integer movies cannot hold NaN/inf
    moments = Moments()
    first, saver = 0, None
    if checkpoint is not None:
        key = fingerprint(identity, ev, np.asarray(origins), starts,
                          size=int(size), clip_half=CLIP_HALF, dtype=str(movie.dtype), shape=list(movie.shape))
        saver = PassCheckpoint(checkpoint, key, checkpoint_every)
        first = saver.load(moments, clips_flat, lo_flat, scale_flat, flat)
    tasks = [delayed_task(i) for i in range(first, n_chunks)]
    local = [local_task(i) for i in range(first, n_chunks)]
    try:
        with tqdm(total=n_t, initial=int(starts[first]), unit="frame", desc="pre-processing", disable=not progress,
                  leave=False) as bar:
            # threads that may be waiting on the disk: one through h5py (serialised), two with raw reads
            reader_threads = 0 if raw is None else 2 if raw.parallel else 1
            results = _results(tasks, local, client, scheduler, workers, reader_threads)
            for i, part in enumerate(results, start=first):
                if "clips" in part:  # computed elsewhere (dask scheduler or cluster): scatter here
                    rec = flat[index.span(starts[i], starts[i + 1])]  # one flat record index
                    clips_flat[rec] = part["clips"]
                    lo_flat[rec] = part["lo"]
                    scale_flat[rec] = part["scale"]
                if floats and not np.isfinite(part["mean"]).all():
                    raise InputError(
                        f"the movie holds NaN or infinite values in frames {starts[i]}-{starts[i + 1] - 1} "
                        f"(e.g. at y, x = {tuple(int(v) for v in np.argwhere(~np.isfinite(part['mean']))[0])}); "
                        "replace them (e.g. with np.nan_to_num or the frame's median) before pre-processing."
                    )
                moments.add(part)
                bar.update(int(part["n"]))
                if saver is not None and i + 1 < n_chunks and saver.due():
                    try:
                        saver.save(i + 1, int(record_bounds[i + 1]), moments, clips_flat, lo_flat, scale_flat, flat)
                    except OSError as exc:  # e.g. a full disk: the pass goes on, unsaved
                        warnings.warn(f"{saver.path}: cannot save the pass's progress ({exc}); going on without.",
                                      stacklevel=2)
                        saver = None
    except TypeError as exc:
        if scheduler == "processes" and "pickle" in str(exc):  # e.g. an h5py dataset behind the movie
            raise InputError(
                f"scheduler='processes' cannot send this movie to other processes ({exc}); use the default "
                "(threads), scheduler='threads', or a dask.distributed Client."
            ) from exc
        raise
    finally:
        if raw is not None:
            raw.close()
    if moments.n == 0:
        raise InputError("the movie has no frames; pass the movie the candidates were extracted from.")
    return StreamResult(
        clips=clips,
        lo=lo,
        scale=scale,
        max_image=moments.max.astype(np.float32),
        mean_image=moments.mean.astype(np.float32),
        corr_image=moments.corr_image(),
    )


def quantise_snapshots(result: StreamResult, event_frame: np.ndarray, block: int | None = None, *, noise_step: float = 1.0):
    """Bring the per-record uint8 clips to one scale per candidate, in place.

    Each clip frame was quantised with its own range during the pass (so no
    full-precision copy of all clips is ever held); here every candidate gets one
    step for all its present events, and each frame is re-quantised to it:
    ``value ≈ uint8 · scale + offset`` with an error of at most one step ``scale``
    (half a step from each of the two roundings). Missing events (``-1``) are 0.

    The step is ``scale = max(range / 255, noise_step · σ)``: ``range`` spans all the
    candidate's present clips and ``σ`` is its pixel noise, estimated from its own
    clips as the median absolute difference between consecutive frames of a clip
    divided by ``0.6745·√2`` (on ~2,000 sampled pixel pairs; robust to the
    transients, which move few pixel pairs). A step finer than the noise only encodes
    noise, which does not compress; with the default ``noise_step=1`` the
    quantisation error has an RMS of about ``σ / √12 ≈ 0.29 σ`` (the noise grows
    by ~4 % in quadrature, which the eye does not see in a clip), and the sort set's
    compressed snapshots shrink from ~5.6 to ~2.9 bits per pixel on the simulated
    benchmark (``noise_step=0.5``: 0.14 σ, ~3.5 bits).

    Parameters
    ----------
    result : StreamResult
        The pass's output; ``result.clips`` is overwritten.
    event_frame : numpy.ndarray
        ``(candidate, event)`` frames, ``-1`` where missing.
    block : int, optional
        Candidates re-quantised at a time (default: ~64 MB of temporaries).
    noise_step : float
        The coarsest step, in units of the candidate's noise ``σ``; 0 quantises by
        the range alone (256 levels whatever the noise).

    Returns
    -------
    snapshots : numpy.ndarray
        ``(candidate, event, frame, cy, cx)`` uint8 (the same array as ``result.clips``).
    scale, offset : numpy.ndarray
        ``(candidate,)`` float32.
    """
    noise_step = float(noise_step)
    if not np.isfinite(noise_step) or noise_step < 0:
        raise InputError(f"noise_step must be a finite number >= 0, got {noise_step!r}.")
    clips = result.clips
    n = clips.shape[0]
    scale = np.ones(n, np.float32)
    offset = np.zeros(n, np.float32)
    noise = np.zeros(n)
    present = np.ascontiguousarray(np.asarray(event_frame) >= 0)
    if block is None:
        block = max(1, 2**22 // max(1, int(np.prod(clips.shape[1:]))))
    # The compiled kernel does, per candidate, exactly the float32/float64 steps of the
    # numpy form below (kept as the reference in tests/test_preprocess_stream.py):
    #   lo, hi = range of all present records; sc = (hi - lo) / 255 (1 if none/flat)
    #   sc = max(sc, noise_step * sigma)  (sigma: the clips' noise, see _kernels._clip_noise)
    #   q = uint8(clip(rint(q * float32(rec_sc / sc) + float32((rec_lo - lo) / sc)), 0, 255))
    # in one pass over the bytes, in place, on up to 2 threads (it releases the GIL).
    spans = [(s, min(n, s + block)) for s in range(0, n, block)]

    def run(span):
        requantise(clips, result.lo, result.scale, present, span[0], span[1], scale, offset, noise_step, noise)

    if len(spans) > 1 and (os.cpu_count() or 1) > 1:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(run, spans))
    else:
        for span in spans:
            run(span)
    return clips, scale, offset
