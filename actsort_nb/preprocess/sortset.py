"""The sort set on disk: one HDF5 file, compressed, chunked along the candidates, reopened lazily.

Layout (``schema`` 2)::

    /                      attrs: format="actsort_nb.sortset", schema=2, complete=1,
                                  sizes (JSON dim -> length), attrs (JSON dataset attrs),
                                  order (JSON variable names)
    /vars/<name>           one HDF5 dataset (or group) per variable and coordinate, with
                           attrs dims (JSON list), role ("data"|"coord"), encoding, attrs (JSON)

Encodings:

``array`` / ``bool`` / ``str``
    The values as they are (bool as uint8, str as UTF-8).
``coo``
    A group with ``coords`` (ndim, nnz) and ``data`` (nnz,): sparse footprints stay sparse.
``uint8-predictive`` (``snapshots``)
    Lossless: the reopened bytes equal the written ones. A group with ``reference``
    (candidate, cy, cx) uint8, the rounded mean of the candidate's present clip frames,
    and ``residual`` (candidate, event, frame, cy, cx) uint8: each byte minus the
    reference minus a prediction, modulo 256. The prediction of a clip frame is the
    rounded 3×3 mean of the previous frame's ``byte − reference`` (0 for a clip's first
    frame), so what is left is close to the camera noise, which an entropy coder packs
    into ~log2(4σ/step) bits; the uint8 values themselves are already quantised
    relative to each candidate's noise (see
    :func:`actsort_nb.preprocess.stream.quantise_snapshots`: error ≤ ``snapshot_scale``).
``uint16-delta`` (``traces``)
    A group with ``q`` (candidate, time) uint16 and per-candidate float64 ``step`` and
    ``offset``: the integers ``round((x − offset) / step)``, stored as the zigzag code
    of their first differences (modulo 2¹⁶), so value = cumsum · step + offset with an
    error ≤ ``step / 2``. ``offset`` is the trace's minimum. With
    ``write_sortset(..., trace_step=k)``, ``step = max(k · σ, range / 65535)`` with
    ``σ`` the trace's noise from the median absolute first difference (÷ 0.6745·√2,
    on ≤ 2,048 sampled differences): the stored integers carry ~log2(6/k) bits
    instead of ~14, for an added error of RMS ``k · σ / √12``; a trace without
    measurable noise (σ = 0) keeps the range step. The default ``k = 1/2``
    (:data:`TRACE_STEP`) adds 0.14 σ RMS, i.e. the trace's noise grows by 1 % in
    quadrature, and stores ~4× fewer bytes than the range step (on the simulated
    benchmark 0.9 % of the movie instead of 3.6 %). ``trace_step=0`` gives
    ``step = range / 65535``, 65,536 levels as in schema 1 (error ≤ range / 131070).
    The pre-processing computes the features from the full-precision traces either
    way; features recomputed later from the stored traces differ by what a 1 %
    change of the noise does (thresholded features such as event counts can move
    by one event), and equal the original ones to ~1e-3 with ``trace_step=0``.

Compression: every numeric dataset is compressed with Zstandard (the
``hdf5plugin`` filter, imported here so reading works; byte shuffle first for
multi-byte types) and carries a Fletcher-32 checksum, so corruption is detected on
read. The big ones (``snapshots``, ``traces``) are filtered here, not by HDF5:
compressed on two threads (``zstandard``, level 1's match finder with a small
hash table, :data:`_ZSTD_FAST`), checksummed, and written as finished chunks
(``write_direct_chunk``); any HDF5 reader with the Zstandard filter reads them.
``snapshots`` are chunked four candidates per chunk (the panel reads one at a time: ~5 ms);
other per-candidate variables in chunks of ~64-256 kB. The movie is never stored.

Schema 1 files (``traces`` as ``uint16`` per-candidate range quantisation,
``snapshots`` as plain uint8, gzip) are still read.

Writes go to a temporary file beside the target, which is renamed over it only
once complete (``complete`` is the last attribute written): an interrupted run
never leaves a half-written sort set under the requested name (the streaming pass
before it resumes from its own checkpoint, :mod:`.checkpoint`). The encoders are
compiled (numba, GIL released) and run on a second thread while the first one
compresses and writes the previous block.
"""
# The compiled loops spell min/max as comparisons on purpose (see _kernels.py).
# ruff: noqa: FURB136
from __future__ import annotations

import json
import math
import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import hdf5plugin
import numpy as np
import sparse
import xarray as xr
import zstandard
from numba import njit

from .._validation import InputError
from .stream import _array_source

__all__ = ["FORMAT", "REQUIRED", "SORTSET_SCHEMA", "TRACE_STEP", "SortsetWriter", "open_sortset", "write_sortset"]

#: Version of the on-disk layout; bump on any incompatible change.
SORTSET_SCHEMA = 2
#: Schemas :func:`open_sortset` reads.
READABLE_SCHEMAS = (1, 2)
#: Value of the root ``format`` attribute.
FORMAT = "actsort_nb.sortset"
#: Variables every sort set holds.
REQUIRED = (
    "footprints",
    "traces",
    "event_frame",
    "snapshots",
    "snapshot_scale",
    "snapshot_offset",
    "crop_origin",
    "crop_footprint",
    "max_image",
    "mean_image",
    "corr_image",
)
#: Default trace step in units of the trace's noise s.d. (``uint16-delta``); 0: range / 65535.
TRACE_STEP = 0.5
#: Float variables stored with the ``uint16-delta`` encoding.
_QUANTISED = ("traces",)
#: Variables read lazily on open (everything else is small and read eagerly).
_LAZY = ("snapshots", "traces", "crop_footprint")
#: Zstandard level recorded in the filter (what HDF5 itself uses for small variables):
#: level 1 already entropy-codes the noise; higher levels gain < 1 %.
_ZSTD_LEVEL = 1
#: The big per-candidate variables are compressed here, on threads, and written as
#: finished chunks: level 1's match finder with a 64-entry hash table. On quantised
#: camera noise it finds the same few matches as level 1 (output 2 % smaller here) at
#: ~2.3x the speed; the entropy coding of the rest is what compresses.
_ZSTD_FAST = {"strategy": zstandard.STRATEGY_FAST, "window_log": 17, "hash_log": 6, "search_log": 1,
              "min_match": 7, "target_length": 0}
#: Candidates per stored chunk of ``snapshots``: one is read in ~5 ms either way (the
#: decompression of ~170 kB is not what it waits on), and four need a quarter of the
#: compression calls and chunk writes (write 2.79 -> 2.56 s, CPU -0.45 s, 10,000 candidates;
#: four interleaved pairs), for the same bytes.
SNAPSHOT_CHUNK = 4
#: Threads encoding and compressing blocks while the calling thread writes.
_THREADS = 2
#: Bytes of source data encoded per block in the writer (bounded memory).
_BLOCK_BYTES = 2**24
#: Differences sampled per trace for its noise estimate.
_TRACE_NOISE_SAMPLES = 2048
#: 1 / (Φ⁻¹(3/4) · √2): median absolute difference of two Gaussian samples -> their s.d.
_MAD_DIFF_TO_SD = 1.0 / (0.6744897501960817 * np.sqrt(2.0))
_MAGIC64 = 6755399441055744.0  # 1.5 * 2**52: adding and subtracting it rounds half to even

_H5_LOCK = threading.RLock()  # HDF5 is not thread-safe
_FILES: dict[tuple, h5py.File] = {}


# ---------------------------------------------------------------------------- kernels
# round(65536 / k) for the k = 1..9 pixels of a 3x3 neighbourhood inside the crop
_BOX_WEIGHTS = np.array([0] + [round(65536 / k) for k in range(1, 10)], np.int32)


@njit(cache=True)
def _box_weights(sy, sx):  # pragma: no cover - compiled
    w = np.empty(sy * sx, np.int32)
    for i in range(sy):
        for j in range(sx):
            w[i * sx + j] = _BOX_WEIGHTS[(1 + (i > 0) + (i < sy - 1)) * (1 + (j > 0) + (j < sx - 1))]
    return w


@njit(inline="always")
def _add3(dst, a, b, c, n):  # pragma: no cover - compiled
    for k in range(n):
        dst[k] = a[k] + b[k] + c[k]


@njit(inline="always")
def _predict(prev, h, s, w, sx, npx):  # pragma: no cover - compiled
    """``s`` = rounded 3×3 means (inside the crop) of ``prev[1 : npx + 1]`` (one flat frame).

    ``prev`` has one zero on each side and ``h`` a zero row above and below, so the
    sums need no bounds tests except at the row ends. Integer arithmetic only: the
    encoder and the decoder compute the same predictions on any machine.
    """
    hh = h[sx : sx + npx]
    _add3(hh, prev[0:npx], prev[1 : npx + 1], prev[2 : npx + 2], npx)
    for k in range(0, npx, sx):  # a row's ends must not see the neighbouring rows
        hh[k] -= prev[k]
        hh[k + sx - 1] -= prev[k + sx + 1]
    _add3(s, h[0:npx], h[sx : sx + npx], h[2 * sx : 2 * sx + npx], npx)
    for k in range(npx):
        s[k] = (s[k] * w[k] + 32768) >> 16


@njit(nogil=True, cache=True)
def _encode_snapshots(q, present, ref, code):  # pragma: no cover - compiled
    b, n_ev, n_f, sy, sx = q.shape
    npx = sy * sx
    w = _box_weights(sy, sx)
    acc = np.zeros(npx, np.int32)
    prev = np.zeros(npx + 2, np.int16)
    h = np.zeros(npx + 2 * sx, np.int16)
    s = np.zeros(npx, np.int32)
    for c in range(b):
        qc = q[c].reshape(n_ev * n_f * npx)
        out = code[c].reshape(n_ev * n_f * npx)
        acc[:] = 0
        cnt = 0
        for e in range(n_ev):
            if present[c, e]:
                cnt += n_f
                for f in range(n_f):
                    fr = qc[(e * n_f + f) * npx : (e * n_f + f + 1) * npx]
                    for k in range(npx):
                        acc[k] += fr[k]
        rc = ref[c].reshape(npx)
        half = cnt // 2
        for k in range(npx):
            rc[k] = (acc[k] + half) // cnt if cnt > 0 else 0
        for t in range(n_ev * n_f):
            fr = qc[t * npx : (t + 1) * npx]
            o = out[t * npx : (t + 1) * npx]
            cur = prev[1 : npx + 1]
            if t % n_f == 0:
                for k in range(npx):
                    r = np.int16(fr[k]) - np.int16(rc[k])
                    o[k] = np.uint8(r & 255)
                    cur[k] = r
            else:
                _predict(prev, h, s, w, sx, npx)
                for k in range(npx):
                    r = np.int16(fr[k]) - np.int16(rc[k])
                    o[k] = np.uint8((np.int32(r) - s[k]) & 255)
                    cur[k] = r


@njit(nogil=True, cache=True)
def _decode_snapshots(code, ref, q):  # pragma: no cover - compiled
    b, n_ev, n_f, sy, sx = code.shape
    npx = sy * sx
    w = _box_weights(sy, sx)
    prev = np.zeros(npx + 2, np.int16)
    h = np.zeros(npx + 2 * sx, np.int16)
    s = np.zeros(npx, np.int32)
    for c in range(b):
        src = code[c].reshape(n_ev * n_f * npx)
        out = q[c].reshape(n_ev * n_f * npx)
        rc = ref[c].reshape(npx)
        for t in range(n_ev * n_f):
            sf = src[t * npx : (t + 1) * npx]
            o = out[t * npx : (t + 1) * npx]
            cur = prev[1 : npx + 1]
            if t % n_f == 0:
                for k in range(npx):
                    v = (np.int32(sf[k]) + np.int32(rc[k])) & 255
                    o[k] = np.uint8(v)
                    cur[k] = np.int16(v - np.int32(rc[k]))
            else:
                _predict(prev, h, s, w, sx, npx)
                for k in range(npx):
                    v = (np.int32(sf[k]) + s[k] + np.int32(rc[k])) & 255
                    o[k] = np.uint8(v)
                    cur[k] = np.int16(v - np.int32(rc[k]))


@njit(nogil=True, cache=True)
def _encode_traces(x, q, step, offset, fraction, n_sample):  # pragma: no cover - compiled
    rows, n = x.shape
    buf = np.empty(max(1, n_sample))
    v = np.empty(n, np.int32)
    for r in range(rows):
        row = x[r]  # float32 or float64; every value is taken as float64
        lo = np.float64(row[0])
        hi = lo
        for j in range(n):
            val = np.float64(row[j])
            lo = val if val < lo else lo
            hi = val if val > hi else hi
        st = (hi - lo) / 65535.0
        if fraction > 0 and n > 1 and hi > lo:
            stride = (n - 2) // n_sample + 1
            m = 0
            for t in range(0, n - 1, stride):
                buf[m] = abs(np.float64(row[t + 1]) - np.float64(row[t]))
                m += 1
            noise = fraction * np.median(buf[:m]) * _MAD_DIFF_TO_SD
            st = noise if noise > st else st
        if not st > 0:
            st = 1.0
        # the integers first, then their differences: two loops that vectorise (one carrying
        # the previous integer does not)
        for j in range(n):
            y = (np.float64(row[j]) - lo) / st
            y = y if y > 0 else 0.0
            y = y if y < 65535.0 else 65535.0
            v[j] = np.int32((y + _MAGIC64) - _MAGIC64)
        out = q[r]
        d = ((v[0] + 32768) & 65535) - 32768
        out[0] = np.uint16(((d << 1) ^ (d >> 31)) & 65535)
        for j in range(1, n):
            d = ((v[j] - v[j - 1] + 32768) & 65535) - 32768  # the difference modulo 2**16, in [-32768, 32767]
            out[j] = np.uint16(((d << 1) ^ (d >> 31)) & 65535)  # zigzag: small magnitudes, small codes
        step[r] = st
        offset[r] = lo


@njit(nogil=True, cache=True)
def _decode_traces(q, step, offset, out):  # pragma: no cover - compiled
    rows, n = q.shape
    for r in range(rows):
        src = q[r]
        dst = out[r]
        st = step[r]
        lo = offset[r]
        v = np.int64(0)
        for j in range(n):
            z = np.int64(src[j])
            v = (v + ((z >> 1) ^ -(z & 1))) & 65535
            dst[j] = v * st + lo


def encode_traces(x: np.ndarray, fraction: float = TRACE_STEP):
    """Encode ``(candidate, time)`` traces as in the ``uint16-delta`` layout.

    Parameters
    ----------
    x : numpy.ndarray
        Finite float traces.
    fraction : float
        Step in units of each trace's noise s.d. (0: the range step, 65,536 levels).

    Returns
    -------
    q : numpy.ndarray
        uint16 zigzag codes of the first differences of the quantised integers.
    step, offset : numpy.ndarray
        float64 per trace: value ≈ integer · step + offset, error ≤ step / 2.
    """
    x = np.asarray(x)
    x = np.ascontiguousarray(x, dtype=x.dtype if x.dtype in (np.float32, np.float64) else np.float64)
    q = np.empty(x.shape, np.uint16)
    step = np.ones(x.shape[0])
    offset = np.zeros(x.shape[0])
    if x.size:
        _encode_traces(x, q, step, offset, float(fraction), _TRACE_NOISE_SAMPLES)
    return q, step, offset


def decode_traces(q: np.ndarray, step: np.ndarray, offset: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Inverse of :func:`encode_traces` (up to the quantisation), as ``dtype``."""
    out = np.empty(q.shape, np.float64)
    if q.size:
        _decode_traces(np.ascontiguousarray(q), np.ascontiguousarray(step, np.float64),
                       np.ascontiguousarray(offset, np.float64), out)
    return out.astype(dtype, copy=False)


def encode_snapshots(q: np.ndarray, present: np.ndarray):
    """Encode uint8 ``(candidate, event, frame, cy, cx)`` snapshots as ``uint8-predictive``.

    Parameters
    ----------
    q : numpy.ndarray
        The snapshot bytes.
    present : numpy.ndarray
        ``(candidate, event)`` bool, True where the event exists (its frames form the reference).

    Returns
    -------
    reference : numpy.ndarray
        ``(candidate, cy, cx)`` uint8.
    residual : numpy.ndarray
        Same shape as ``q``; :func:`decode_snapshots` gives ``q`` back exactly.
    """
    q = np.ascontiguousarray(q, dtype=np.uint8)
    ref = np.zeros((q.shape[0],) + q.shape[3:], np.uint8)
    code = np.empty_like(q)
    if q.size:
        _encode_snapshots(q, np.ascontiguousarray(present, dtype=np.bool_), ref, code)
    return ref, code


def decode_snapshots(reference: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_snapshots` (exact)."""
    out = np.empty(residual.shape, np.uint8)
    if residual.size:
        _decode_snapshots(np.ascontiguousarray(residual, dtype=np.uint8), np.ascontiguousarray(reference, dtype=np.uint8), out)
    return out


# ---------------------------------------------------------------------------- writing
def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _attrs_json(attrs) -> str:
    return json.dumps({str(k): _jsonable(v) for k, v in attrs.items()})


def _chunks(shape: tuple[int, ...], itemsize: int, dims: tuple[str, ...]) -> tuple[int, ...] | None:
    """Per-candidate chunks for big rows, groups of candidates (~64 kB) for small ones."""
    if not shape or 0 in shape:
        return None
    if dims[0] == "candidate":
        row = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
        if row >= 16_384:
            return (1,) + tuple(shape[1:])
        return (int(min(shape[0], max(1, 65_536 // max(row, 1)))),) + tuple(shape[1:])
    if len(shape) == 2 and dims == ("y", "x"):
        return tuple(shape)
    return None  # h5py's auto-chunking


def _compression(dtype: np.dtype) -> dict:
    return {"compression": hdf5plugin.Zstd(clevel=_ZSTD_LEVEL), "shuffle": np.dtype(dtype).itemsize > 1, "fletcher32": True}


def _create(group: h5py.Group, name: str, shape, dtype, dims, chunks=None) -> h5py.Dataset:
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    kw: dict[str, Any] = {}
    if int(np.prod(shape, dtype=np.int64)):
        kw = {"chunks": chunks or _chunks(shape, dtype.itemsize, tuple(dims)) or True, **_compression(dtype)}
    return group.create_dataset(name, shape=shape, dtype=dtype, **kw)


def _blocks(n: int, row_bytes: int, align: int = 1) -> list[tuple[int, int]]:
    """Spans of ~``_BLOCK_BYTES`` rows, multiples of ``align`` (whole chunks: no chunk is written twice)."""
    align = max(1, int(align))
    block = max(1, int(_BLOCK_BYTES // max(1, row_bytes)) // align) * align
    return [(s, min(n, s + block)) for s in range(0, n, block)]


@njit(nogil=True, cache=True)
def _fletcher32(data):  # pragma: no cover - compiled
    """HDF5's Fletcher-32 checksum (``H5_checksum_fletcher32``: big-endian 16-bit words, folded every 360).

    int64 sums masked to 32 bits before each fold: the same values as C's wrapping uint32.
    """
    n = data.shape[0]
    sum1 = np.int64(0)
    sum2 = np.int64(0)
    i = 0
    words = n // 2
    while words > 0:
        t = min(words, 360)
        words -= t
        for _ in range(t):
            sum1 += (np.int64(data[i]) << 8) | np.int64(data[i + 1])
            i += 2
            sum2 += sum1
        sum1 &= 0xFFFFFFFF
        sum2 &= 0xFFFFFFFF
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    if n % 2:
        sum1 += np.int64(data[i]) << 8
        sum2 += sum1
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
    sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    return ((sum2 << 16) | sum1) & 0xFFFFFFFF


def _filtered_chunks(dset: h5py.Dataset, x: np.ndarray) -> list[bytes]:
    """The stored bytes of the chunks of rows ``x`` (whole chunks along the leading axis), filtered as ``dset``'s
    pipeline would: byte shuffle (multi-byte types), Zstandard, Fletcher-32. GIL released (runs on threads).

    A chunk past the dataset's end is zero-padded to the full chunk shape, as HDF5 stores it.
    """
    rows = dset.chunks[0]
    item = x.dtype.itemsize
    params = zstandard.ZstdCompressionParameters(**_ZSTD_FAST, write_content_size=True)
    compress = zstandard.ZstdCompressor(compression_params=params).compress  # one call per chunk: faster
    out = []  # than multi_compress_to_buffer here (~400 vs ~330 MB/s), and no copies of its output
    for s in range(0, x.shape[0], rows):
        c = x[s : s + rows]
        if c.shape[0] < rows:
            c = np.concatenate([c, np.zeros((rows - c.shape[0],) + c.shape[1:], c.dtype)])
        b = np.ascontiguousarray(c).view(np.uint8).reshape(-1)
        z = compress(np.ascontiguousarray(b.reshape(-1, item).T) if item > 1 else b)
        out.append(z + int(_fletcher32(np.frombuffer(z, np.uint8))).to_bytes(4, "little"))
    return out


def _pipeline_ids(dset: h5py.Dataset) -> tuple[int, ...]:
    """The ids of ``dset``'s filters, in the order they are applied on write."""
    plist = dset.id.get_create_plist()
    return tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))


def _direct(dset: h5py.Dataset) -> bool:
    """Whether :func:`_filtered_chunks` reproduces ``dset``'s storage: chunks spanning all axes but the first,
    filters (shuffle,) Zstandard, Fletcher-32."""
    want = ((h5py.h5z.FILTER_SHUFFLE,) if dset.dtype.itemsize > 1 else ()) + (hdf5plugin.ZSTD_ID, h5py.h5z.FILTER_FLETCHER32)
    return dset.chunks is not None and tuple(dset.chunks[1:]) == tuple(dset.shape[1:]) and _pipeline_ids(dset) == want


def _write_chunks(dset: h5py.Dataset, start: int, chunks: list[bytes]) -> None:
    """Write finished chunks (from :func:`_filtered_chunks`) from row ``start`` (a chunk boundary) on."""
    rows = dset.chunks[0]
    tail = (0,) * (dset.ndim - 1)
    for i, b in enumerate(chunks):
        dset.id.write_direct_chunk((start + i * rows,) + tail, b)


def _packed(dset: h5py.Dataset, x: np.ndarray):
    """What :func:`_put` writes: ``x``'s finished chunks when ``dset`` allows (:func:`_direct`), else ``x``."""
    return ("chunks", _filtered_chunks(dset, x)) if _direct(dset) else ("rows", x)


def _put(dset: h5py.Dataset, start: int, packed) -> None:
    """Store :func:`_packed` output from row ``start`` (a chunk boundary) on."""
    kind, data = packed
    if kind == "chunks":
        _write_chunks(dset, start, data)
    else:
        dset[start : start + data.shape[0]] = data


def _pipeline(spans, prepare, write, workers: int = _THREADS) -> None:
    """``write(span, prepare(span))`` for each span, in order, preparing the next ``workers`` on threads.

    ``prepare`` (reading the source, the compiled encoders, compression: GIL released)
    overlaps ``write`` (HDF5, serialised), so both cores work; memory is
    ``workers + 1`` prepared spans. ``workers=0`` runs both in the calling thread.
    """
    if not spans:
        return
    if workers < 1:
        for span in spans:
            write(span, prepare(span))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [pool.submit(prepare, span) for span in spans[:workers]]
        for i, span in enumerate(spans):
            ready = pending.pop(0).result()
            if i + workers < len(spans):
                pending.append(pool.submit(prepare, spans[i + workers]))
            write(span, ready)


def _source(data):
    """What to slice blocks from: the h5py dataset or numpy array behind a plain dask array, else ``data``."""
    if isinstance(data, da.Array):
        src = _array_source(data)
        return data if src is None else src
    return data


def _write_blocks(dset: h5py.Dataset, data, convert=None) -> None:
    """Copy ``data`` into ``dset`` a block of leading-axis rows at a time (bounded memory)."""
    if not data.size:
        return
    if data.ndim == 0:
        dset[()] = np.asarray(data)
        return
    row = int(np.prod(data.shape[1:], dtype=np.int64)) * max(1, np.dtype(dset.dtype).itemsize)
    src = _source(data)

    def prepare(span):
        x = np.asarray(src[span[0] : span[1]])
        return convert(x) if convert is not None else x

    def write(span, x):
        dset[span[0] : span[1]] = x

    _pipeline(_blocks(data.shape[0], row, (dset.chunks or (1,))[0]), prepare, write)


def _write_snapshots(group: h5py.Group, name: str, data, dims, present: np.ndarray) -> h5py.Group:
    g = group.create_group(name)
    g.attrs["encoding"] = "uint8-predictive"
    shape = tuple(int(s) for s in data.shape)
    ref = _create(g, "reference", (shape[0],) + shape[3:], np.uint8, ("candidate", "cy", "cx"))
    rows = min(SNAPSHOT_CHUNK, shape[0])
    res = _create(g, "residual", shape, np.uint8, dims, chunks=(rows,) + shape[1:] if all(shape) else None)
    if not all(shape):
        return g
    src = _source(data)

    def prepare(span):
        q = np.asarray(src[span[0] : span[1]])
        return [_packed(d, x) for d, x in zip((ref, res), encode_snapshots(q, present[span[0] : span[1]]))]

    def write(span, coded):
        _put(ref, span[0], coded[0])
        _put(res, span[0], coded[1])

    _pipeline(_blocks(shape[0], int(np.prod(shape[1:])), math.lcm(ref.chunks[0], rows)), prepare, write)
    return g


def _write_traces(group: h5py.Group, name: str, data, dims, trace_step: float, threads: int = _THREADS) -> h5py.Group:
    g = group.create_group(name)
    g.attrs["encoding"] = "uint16-delta"
    g.attrs["dtype"] = str(np.dtype(data.dtype))
    g.attrs["trace_step"] = float(trace_step)
    n, n_t = (int(s) for s in data.shape)
    rows = max(1, min(n, 2**17 // max(1, 2 * n_t)))  # ~128 kB chunks
    q = _create(g, "q", (n, n_t), np.uint16, dims, chunks=(rows, n_t) if n and n_t else None)
    step = np.ones(n)
    offset = np.zeros(n)
    if n and n_t:
        src = _source(data)

        def prepare(span):
            x = np.asarray(src[span[0] : span[1]])
            if not np.isfinite(x.sum(axis=1)).all() and not np.isfinite(x).all():  # the sum is a cheap first test
                raise InputError(f"{name} holds NaN/inf values; replace them before saving the sort set.")
            coded = encode_traces(x, trace_step)
            return (_packed(q, coded[0]),) + coded[1:]

        def write(span, coded):
            _put(q, span[0], coded[0])
            step[span[0] : span[1]] = coded[1]
            offset[span[0] : span[1]] = coded[2]

        _pipeline(_blocks(n, 8 * n_t, rows), prepare, write, threads)
    g.create_dataset("step", data=step, **({"chunks": True, **_compression(step.dtype)} if n else {}))
    g.create_dataset("offset", data=offset, **({"chunks": True, **_compression(offset.dtype)} if n else {}))
    return g


def _write_var(
    group: h5py.Group,
    name: str,
    var: xr.Variable,
    role: str,
    present: np.ndarray | None,
    trace_step: float = TRACE_STEP,
    threads: int = _THREADS,
) -> None:
    dims = tuple(var.dims)
    data = var.data
    dtype = np.dtype(data.dtype)
    if isinstance(data, sparse.SparseArray):
        coo = sparse.COO(data)
        g = group.create_group(name)
        g.attrs["encoding"] = "coo"
        g.attrs["shape"] = np.asarray(coo.shape, np.int64)
        coords = coo.coords.astype(np.int32 if max(coo.shape, default=0) < 2**31 else np.int64)
        for key, values in (("coords", coords), ("data", coo.data)):
            kw = {"chunks": True, **_compression(values.dtype)} if values.size else {}
            g.create_dataset(key, data=values, **kw)
        obj = g
    elif name == "snapshots" and present is not None and dtype == np.uint8 and dims == (
        "candidate", "event", "frame", "cy", "cx"
    ) and present.shape == tuple(data.shape[:2]):
        obj = _write_snapshots(group, name, data, dims, present)
    elif name in _QUANTISED and dtype.kind == "f" and dims and dims[0] == "candidate" and data.ndim == 2:
        obj = _write_traces(group, name, data, dims, trace_step, threads)
    elif dtype.kind in "UO":
        values = np.asarray(data).astype(str)
        obj = group.create_dataset(name, data=values.astype(object), dtype=h5py.string_dtype("utf-8"))
        obj.attrs["encoding"] = "str"
    elif dtype.kind == "b":
        obj = _create(group, name, data.shape, np.uint8, dims)
        _write_blocks(obj, data, lambda x: x.astype(np.uint8))
        obj.attrs["encoding"] = "bool"
    else:
        obj = _create(group, name, data.shape, dtype, dims)
        _write_blocks(obj, data)
        obj.attrs["encoding"] = "array"
    obj.attrs["dims"] = json.dumps(list(dims))
    obj.attrs["role"] = role
    obj.attrs["attrs"] = _attrs_json(var.attrs)


def check_trace_step(trace_step: float | None) -> float:
    """The trace step to write (``None``: :data:`TRACE_STEP`), or one sentence on why it is wrong."""
    try:
        step = float(TRACE_STEP if trace_step is None else trace_step)
    except (TypeError, ValueError):
        step = float("nan")
    if isinstance(trace_step, (bool, str)) or not np.isfinite(step) or step < 0:
        raise InputError(f"trace_step must be a finite number >= 0 (e.g. 0.125), got {trace_step!r}.")
    return step


def _remove_stale(folder: Path, prefix: str) -> None:
    """Delete ``<prefix><pid>.<id>.tmp`` files in ``folder`` whose process (on this host) no longer runs."""
    try:
        names = [p.name for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix) :].split(".")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            (folder / name).unlink(missing_ok=True)
        except (OSError, OverflowError):  # alive but not ours, or not a valid pid: leave it
            pass


class SortsetWriter:
    """Write a sort set in parts: variables known early (the traces) while the pass runs, the rest at the end.

    The file is built under a temporary name beside ``path``
    (``.<name>.<host>.<pid>.<id>.tmp``) and renamed over it only by :meth:`finish`;
    :meth:`abort` (or an error inside a ``with`` block) removes it, so an interrupted
    run never leaves a half-written sort set; one left by a killed process is removed
    by the next writer of the same path on the same host. Use it from one thread at a
    time. :func:`write_sortset` is :meth:`finish` alone.

    Parameters
    ----------
    path : str or PathLike
        Target file.
    trace_step : float, optional
        See :func:`write_sortset`.
    """

    def __init__(self, path: str | os.PathLike, *, trace_step: float | None = None):
        self.path = Path(path)
        self.trace_step = check_trace_step(trace_step)
        if not self.path.parent.exists():
            raise InputError(
                f"{self.path}: the folder {self.path.parent} does not exist; create it or choose another output path."
            )
        if self.path.is_dir():
            raise InputError(f"{self.path} is a folder; give the sort set a file name, e.g. {self.path / 'sortset.h5'}.")
        prefix = f".{self.path.name}.{socket.gethostname()}."
        _remove_stale(self.path.parent, prefix)  # left by a run that was killed
        self._tmp = self.path.with_name(f"{prefix}{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self._file = h5py.File(self._tmp, "w")
        except OSError as exc:
            raise InputError(
                f"{self.path}: cannot create a file in {self.path.parent} ({exc}); choose a folder you can write to."
            ) from None
        self._vars = self._file.create_group("vars")
        self._added: dict[str, tuple] = {}  # name -> (dims, shape, dtype) written before finish

    def __enter__(self) -> SortsetWriter:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, name: str, var: xr.Variable, *, threads: int = 0) -> None:
        """Write data variable ``name`` now (``threads``: encoding threads besides this one).

        :meth:`finish` then skips it, after checking its dataset holds one of the
        same dims, shape and dtype.
        """
        _write_var(self._vars, name, var, "data", None, self.trace_step, threads)
        self._added[name] = (tuple(var.dims), tuple(var.shape), np.dtype(var.dtype))

    def finish(self, ds: xr.Dataset) -> Path:
        """Write the rest of ``ds`` (its ``movie`` left out), close, and rename the file to ``path``."""
        try:
            missing = [v for v in REQUIRED if v not in ds.variables]
            if missing:
                raise InputError(
                    f"this dataset is not a sort set: it lacks {missing}; build it with actsort_nb.preprocess.preprocess()."
                )
            ev = ds["event_frame"]
            present = np.ascontiguousarray(np.asarray(ev.values) >= 0) if ev.dims == ("candidate", "event") else None
            attrs = dict(ds.attrs)
            if "sortset_schema" in attrs:
                attrs["sortset_schema"] = SORTSET_SCHEMA
            attrs.pop("sortset_path", None)
            f = self._file
            f.attrs["format"] = FORMAT
            f.attrs["schema"] = SORTSET_SCHEMA
            f.attrs["sizes"] = json.dumps({str(k): int(v) for k, v in ds.sizes.items()})
            f.attrs["attrs"] = _attrs_json(attrs)
            names = [str(k) for k in ds.variables if k != "movie"]
            f.attrs["order"] = json.dumps(names)
            for name in names:
                var = ds[name].variable
                if name not in self._added:
                    _write_var(self._vars, name, var, "coord" if name in ds.coords else "data", present, self.trace_step)
                elif self._added[name] != (tuple(var.dims), tuple(var.shape), np.dtype(var.dtype)) or name in ds.coords:
                    raise RuntimeError(f"{name} changed after it was written; this is a bug, please report it.")
            f.attrs["complete"] = 1
            f.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Close and remove the temporary file; nothing at ``path`` changes.

        Called while another error propagates: closing may fail too (e.g. the disk is
        full), and that second error must not hide the first.
        """
        try:
            self._file.close()
        except OSError:
            pass
        finally:
            self._tmp.unlink(missing_ok=True)


def write_sortset(ds: xr.Dataset, path: str | os.PathLike, *, trace_step: float | None = None) -> Path:
    """Write a sort set to ``path`` (HDF5) atomically; the ``movie`` is left out.

    Parameters
    ----------
    ds : xarray.Dataset
        The sort set (see CONTRIBUTING.md); variables may be numpy, dask or sparse.
    path : str or PathLike
        Target file; replaced only once the new file is complete.
    trace_step : float, optional
        Quantisation step of the traces in units of each trace's noise s.d.;
        default :data:`TRACE_STEP` (1/2: error RMS 0.14 σ, ~4x smaller than 0);
        0 keeps 65,536 levels of each trace's range.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    with SortsetWriter(path, trace_step=trace_step) as writer:
        return writer.finish(ds)


# ---------------------------------------------------------------------------- reading
class _Lazy:
    """Array-like view of one HDF5 dataset, opened on demand (picklable for dask workers)."""

    def __init__(self, path: str, name: str, shape, dtype, key):
        self.path, self.name, self.key = path, name, key
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)

    def _file(self) -> h5py.File:
        f = _FILES.get(self.key)
        if f is None or not f.id.valid:
            f = _FILES[self.key] = h5py.File(self.path, "r")
        return f

    def _read(self, name: str, item):
        with _H5_LOCK:
            try:
                return self._file()[name][item]
            except (OSError, KeyError, ValueError) as exc:
                raise InputError(
                    f"{self.path}: variable {self.name!r} cannot be read ({exc}); the sort set is corrupt, "
                    "re-run `actsort-nb preprocess` to rebuild it."
                ) from None

    def __getitem__(self, item):
        return self._read(self.name, item)


def _rows(item, n: int) -> tuple[slice, tuple]:
    """Split an index into a contiguous candidate range and the index within it."""
    item = item if isinstance(item, tuple) else (item,)
    first, rest = (item[0] if item else slice(None)), item[1:]
    if isinstance(first, slice) and first.step in (None, 1):
        start, stop, _ = first.indices(n)
        return slice(start, max(start, stop)), (slice(None),) + rest
    idx = np.arange(n)[first]
    lo = int(idx.min()) if np.size(idx) else 0
    hi = int(idx.max()) + 1 if np.size(idx) else 0
    return slice(lo, hi), (idx - lo,) + rest


class _LazySnapshots(_Lazy):
    """The ``uint8-predictive`` snapshots of candidate rows, decoded on read."""

    def __getitem__(self, item):
        rows, within = _rows(item, self.shape[0])
        res = self._read(self.name + "/residual", rows)
        ref = self._read(self.name + "/reference", rows)
        return decode_snapshots(ref, res)[within]


class _LazyTraces(_Lazy):
    """The ``uint16-delta`` traces of candidate rows, decoded on read."""

    def __init__(self, path, name, shape, dtype, key, step, offset):
        super().__init__(path, name, shape, dtype, key)
        self.step, self.offset = step, offset

    def __getitem__(self, item):
        rows, within = _rows(item, self.shape[0])
        q = self._read(self.name + "/q", rows)
        return decode_traces(q, self.step[rows], self.offset[rows], self.dtype)[within]


def _refuse(path: Path, why: str) -> InputError:
    return InputError(f"{path}: {why}; re-run `actsort-nb preprocess` to rebuild it.")


def open_sortset(path: str | os.PathLike, *, chunk_candidates: int = 256) -> xr.Dataset:
    """Reopen a sort set written by :func:`write_sortset`, lazily.

    Small variables are read (and checksum-verified) now; ``snapshots``, ``traces``
    and ``crop_footprint`` become dask arrays over the file, so one candidate's
    snapshots are read (and decoded) only when asked for.

    The stored ``features`` were computed from the full-precision traces; the
    ``traces`` here are those quantised to ``traces.attrs["quantised_to_noise_sd"]``
    of each trace's noise s.d. (``trace_step`` of :func:`write_sortset`, 1/2 by
    default), so features recomputed from them differ (for a few event features,
    by a lot). Write with ``trace_step=0`` to keep the traces to ~1e-3.

    Parameters
    ----------
    path : str or PathLike
        The ``.h5`` sort set (schema 1 or 2).
    chunk_candidates : int
        Candidates per dask chunk of the lazy ``traces`` and ``crop_footprint``
        (and ``snapshots``).

    Returns
    -------
    xarray.Dataset
        The sort set with the same variables and dims as in memory.

    Raises
    ------
    InputError
        If the file is not a sort set, has another schema, or is truncated/corrupt.

    Examples
    --------
    >>> ds = open_sortset("sortset.h5")  # doctest: +SKIP
    >>> ds.snapshots.isel(candidate=0).values.shape  # doctest: +SKIP
    (5, 11, 24, 24)
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such sort set file; check the path or run `actsort-nb preprocess` first.")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the sort set file in it (written by `actsort-nb preprocess`, e.g. sortset.h5).")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _refuse(path, f"is not a readable HDF5 file (truncated or corrupt: {first})") from None
    with f:
        try:
            return _read(f, path, chunk_candidates)
        except InputError:
            raise
        except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
            raise _refuse(path, f"is damaged ({type(exc).__name__}: {exc})") from None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read(f: h5py.File, path: Path, chunk_candidates: int) -> xr.Dataset:
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT:
        raise InputError(f"{path}: is an HDF5 file but not an actsort_nb sort set; pass a file written by `actsort-nb preprocess`.")
    schema = int(f.attrs.get("schema", -1))
    if schema not in READABLE_SCHEMAS:
        raise InputError(
            f"{path}: has sort-set schema {schema} but this actsort_nb reads schemas {', '.join(map(str, READABLE_SCHEMAS))}; "
            "re-run `actsort-nb preprocess` with this version (or use the version that wrote it)."
        )
    if int(f.attrs.get("complete", 0)) != 1:
        raise _refuse(path, "was not completely written")
    sizes = json.loads(f.attrs["sizes"])
    group = f["vars"]
    missing = [v for v in REQUIRED if v not in group]
    if missing:
        raise _refuse(path, f"lacks the variables {missing}")
    st = os.stat(path)
    key = (str(path.resolve()), st.st_ino, st.st_mtime_ns)
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    order = json.loads(f.attrs["order"])
    if sorted(order) != sorted(group):
        raise _refuse(path, "lists variables that do not match its contents")
    n_chunk = max(1, int(chunk_candidates))
    for name in order:
        obj = group[name]
        dims = tuple(json.loads(obj.attrs["dims"]))
        enc = _text(obj.attrs["encoding"])
        if enc == "coo":
            shape = tuple(int(s) for s in obj.attrs["shape"])
            values: Any = sparse.COO(obj["coords"][...].astype(np.int64), obj["data"][...], shape=shape)
        elif enc == "uint8-predictive":
            shape = obj["residual"].shape
            if obj["reference"].shape != (shape[0],) + shape[3:]:
                raise _refuse(path, f"variable {name!r} has a reference of shape {obj['reference'].shape}")
            lazy = _LazySnapshots(str(path), obj.name, shape, np.uint8, key)
            # inline_array: each task holds the (small) reader, so selecting one candidate
            # does not walk a graph of every chunk (~3 ms instead of ~18 ms); a selection
            # inside a chunk reads only the candidates it names
            values = da.from_array(lazy, chunks=(n_chunk,) + shape[1:], asarray=True, inline_array=True,
                                   meta=np.empty((0,) * len(shape), np.uint8))
        elif enc == "uint16-delta":
            shape = obj["q"].shape
            dtype = np.dtype(_text(obj.attrs.get("dtype", "float32")))
            step, offset = obj["step"][...], obj["offset"][...]
            if step.shape != shape[:1] or offset.shape != shape[:1]:
                raise _refuse(path, f"variable {name!r} has {step.shape[0]} steps for {shape[0]} candidates")
            lazy = _LazyTraces(str(path), obj.name, shape, dtype, key, step, offset)
            values = da.from_array(lazy, chunks=(n_chunk,) + shape[1:], asarray=True, inline_array=True,
                                   meta=np.empty((0, 0), dtype))
        elif enc == "uint16":  # schema 1: per-candidate range quantisation
            scale = obj["scale"][...]
            offset = obj["offset"][...]
            q = obj["q"]
            shape = q.shape
            lazy = da.from_array(_Lazy(str(path), q.name, q.shape, q.dtype, key), chunks=(n_chunk,) + shape[1:], asarray=True)
            dtype = np.dtype(_text(obj.attrs.get("dtype", "float32")))
            values = (lazy * scale[:, None] + offset[:, None]).astype(dtype)
        elif name in _LAZY:
            shape = obj.shape
            values = da.from_array(
                _Lazy(str(path), obj.name, obj.shape, obj.dtype, key),
                chunks=(min(n_chunk, shape[0] or 1) if name != "snapshots" else 1,) + tuple(shape[1:]),
                asarray=True,
                inline_array=True,
            )
        elif enc == "str":
            values = obj.asstr()[...].astype(str)
            shape = values.shape
        else:
            values = obj[...]
            shape = values.shape
            if enc == "bool":
                values = values.astype(bool)
        want = tuple(sizes.get(d, -1) for d in dims)
        if tuple(shape) != want:
            raise _refuse(path, f"variable {name!r} has shape {tuple(shape)} but its dims {dims} say {want}")
        var = xr.Variable(dims, values, attrs=json.loads(obj.attrs["attrs"]))
        if enc == "uint16-delta":  # say so: features recomputed from these differ from the stored ones
            var.attrs["quantised_to_noise_sd"] = float(obj.attrs.get("trace_step", 0.0))
        (coords if _text(obj.attrs["role"]) == "coord" else data_vars)[name] = var
    ds = xr.Dataset(data_vars, coords=coords, attrs=json.loads(f.attrs["attrs"]))
    ds.attrs["sortset_path"] = str(path)
    return ds
