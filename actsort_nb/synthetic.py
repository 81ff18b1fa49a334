"""Simulated calcium-imaging recordings with ground truth, for tests, demos and teaching.

A simulated recording is an ordinary CandidateSet (see :mod:`actsort_nb.candidates`)
whose candidates are what a cell extractor (EXTRACT, CaImAn, Suite2p) would hand over:
the true cells *and* the false positives such tools produce, each labelled with its
``kind`` and ``is_cell``:

========== ======== ==============================================================
kind       is_cell  what it is
========== ======== ==============================================================
cell       True     a soma: soft ellipse (radius 4-7 px by default) with calcium
                    transients (Poisson spikes * GCaMP6-like double exponential)
duplicate  False    a second footprint overlapping a true cell; its trace is a
                    scaled, noisier copy of that cell's trace
split      False    one side of a true cell (the cell cut by a line); part of its trace
neuropil   False    a large diffuse blob whose trace is the slow shared neuropil signal
dendrite   False    a thin elongated (slightly bent, beaded) process with its own
                    sparse activity; it is in the movie but it is not a soma
noise      False    a small random blob whose trace is noise (no transients)
edge       False    a blob cut by the field-of-view edge whose trace follows the motion
========== ======== ==============================================================

The variable ``parent`` gives, for duplicates and splits, the candidate id of the
cell they come from (``-1`` otherwise); ``motion_y`` and ``motion_x`` (time,) give the
true motion of every frame in pixels. Traces are in dF/F-like units, as an extractor
reports them: the true trace plus a little neuropil and extraction noise for cells and
dendrites, never the noise-free oracle.

The movie is built from the same ground truth, frame by frame::

    F(t) = shift(B + N * n(t) + sum_i R_i * S_i * (1 + c_i(t)), motion(t)) + shot + read noise

with ``B`` a smooth background, ``N`` a smooth neuropil field, ``n(t)`` the slow
shared neuropil signal, ``S_i``, ``R_i``, ``c_i`` the footprint, resting brightness and
dF/F of each cell and dendrite, and a slow sub-pixel jitter applied as a bilinear
shift (equal to ``scipy.ndimage.shift(order=1, mode="grid-constant")``; the shifted-in
border is dark, as after registration, which is what drives the edge artefacts). Shot
noise is Gaussian with variance ``2 F`` (gain 2 counts per photon), read noise s.d. 3. Each frame draws its noise from its own
seed, so a lazy (dask) movie computed chunk by chunk equals the eager one exactly,
whatever the chunking.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import scipy.fft
import scipy.sparse
import sparse
import xarray as xr
from scipy import ndimage

from ._validation import InputError, check_int, check_option
from .candidates import candidate_set

__all__ = [
    "KINDS",
    "FALSE_KINDS",
    "DEFAULT_MIX",
    "simulate_recording",
    "simulate_candidates",
    "write_movie",
]

#: Every candidate kind, true cells first.
KINDS = ("cell", "duplicate", "split", "neuropil", "dendrite", "noise", "edge")
#: The false-positive kinds.
FALSE_KINDS = KINDS[1:]
#: Default share of each false-positive kind among the false positives.
DEFAULT_MIX: dict[str, float] = {
    "duplicate": 0.15,
    "split": 0.10,
    "neuropil": 0.15,
    "dendrite": 0.20,
    "noise": 0.25,
    "edge": 0.15,
}

# Footprint pixels below this fraction of the footprint's peak are dropped (sparsity).
_FP_FLOOR = 0.05
# Candidates per vectorised block when building patches or traces (bounds memory).
_BLOCK_ELEMS = 1 << 20
_TRACE_BLOCK = 2048
# Photon-to-count gain and read noise (counts) of the simulated camera at noise=1.
_GAIN = 2.0
_READ_SD = 3.0
_MOVIE_SALT = 0x5EED


# --------------------------------------------------------------------------- inputs
def _check_float(value, name: str, *, positive: bool = False) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = float("nan")
    if not math.isfinite(out) or out < 0 or (positive and out == 0):
        need = "a positive" if positive else "a non-negative"
        raise InputError(f"{name} must be {need} finite number, got {value!r}.")
    return out


def _check_shape(shape, minimum: int = 16) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
        ok = h == tuple(shape)[0] and w == tuple(shape)[1]
    except (TypeError, ValueError):
        ok = False
    if not ok or h < minimum or w < minimum:
        raise InputError(f"shape must be (height, width) with both >= {minimum} pixels, got {shape!r}.")
    return h, w


def _check_range(value, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise InputError(f"{name} must be (low, high) with 0 < low <= high, got {value!r}.")
    return lo, hi


def _kind_counts(n_false: int, kinds) -> dict[str, int]:
    """Split ``n_false`` among the false-positive kinds (largest remainder, deterministic)."""
    if kinds is None:
        weights = dict(DEFAULT_MIX)
    elif isinstance(kinds, str):
        weights = {kinds: 1.0}
    elif isinstance(kinds, Mapping):
        weights = dict(kinds)
    else:
        weights = {k: 1.0 for k in kinds}
    for k, v in weights.items():
        check_option(k, "kinds", FALSE_KINDS)
        try:
            ok = math.isfinite(float(v)) and float(v) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"kinds[{k!r}] must be a non-negative weight, got {v!r}.")
    total = float(sum(weights.values()))
    counts = dict.fromkeys(FALSE_KINDS, 0)
    if n_false == 0:
        return counts
    if total <= 0:
        raise InputError(f"kinds must give a positive weight to at least one kind, got {kinds!r}.")
    names = [k for k in FALSE_KINDS if k in weights]
    exact = np.array([weights[k] / total * n_false for k in names])
    base = np.floor(exact).astype(int)
    rest = n_false - int(base.sum())
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:rest]] += 1
    counts.update(zip(names, base.tolist()))
    return counts


# --------------------------------------------------------------------------- footprints
def _rot(dy, dx, theta):
    c, s = np.cos(theta), np.sin(theta)
    return dx * c + dy * s, -dx * s + dy * c


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _soma(dy, dx, p, rng):
    """Soft ellipse with a slightly domed top (an extracted soma)."""
    u, v = _rot(dy, dx, p["theta"])
    d = np.sqrt((u / p["a"]) ** 2 + (v / p["b"]) ** 2)
    out = _sigmoid((1.0 - d) / 0.08) * (1.0 - 0.3 * np.minimum(d, 1.0) ** 2)
    if "cut_angle" in p:  # a split: keep one side of a line through the soma
        su, _ = _rot(dy, dx, p["cut_angle"])
        out = out * _sigmoid((su - p["cut_offset"]) / 0.6)
    return out


def _dendrite(dy, dx, p, rng):
    """Thin, slightly bent, beaded segment."""
    u, v = _rot(dy, dx, p["theta"])
    v = v - p["bend"] * u**2
    out = np.exp(-0.5 * (v / p["b"]) ** 2) * _sigmoid((1.0 - np.abs(u) / p["a"]) / 0.06)
    return out * (1.0 + 0.3 * np.sin(u * p["bead_freq"] + p["bead_phase"]))


def _neuropil(dy, dx, p, rng):
    """Large diffuse anisotropic Gaussian with a grainy texture."""
    u, v = _rot(dy, dx, p["theta"])
    out = np.exp(-0.5 * ((u / p["a"]) ** 2 + (v / p["b"]) ** 2))
    return out * rng.uniform(0.75, 1.25, size=out.shape).astype(np.float32)


def _patch_coo(rng, cy, cx, params, half: int, profile, shape, index):
    """Footprints of one kind, evaluated on a (2*half+1)^2 patch per candidate.

    Returns int32 coordinates (candidate, y, x), sorted, and float32 values scaled
    to a peak of 1, with pixels below ``_FP_FLOOR`` and outside the field dropped.
    No dense (n, height, width) array is ever made.
    """
    h, w = shape
    size = 2 * half + 1
    off = np.arange(-half, half + 1, dtype=np.float32)
    step = max(1, _BLOCK_ELEMS // (size * size))
    pieces = []
    for s in range(0, len(cy), step):
        sl = slice(s, s + step)
        iy = np.round(cy[sl]).astype(np.int32)
        ix = np.round(cx[sl]).astype(np.int32)
        Y = (iy[:, None] + off.astype(np.int32))[:, :, None]  # (m, P, 1)
        X = (ix[:, None] + off.astype(np.int32))[:, None, :]  # (m, 1, P)
        dy = (Y - cy[sl, None, None]).astype(np.float32)
        dx = (X - cx[sl, None, None]).astype(np.float32)
        p = {k: np.asarray(v[sl], np.float32)[:, None, None] for k, v in params.items()}
        val = profile(dy, dx, p, rng).astype(np.float32)
        inside = (Y >= 0) & (Y < h) & (X >= 0) & (X < w)
        val = np.where(inside, val, np.float32(0))
        peak = val.reshape(len(val), -1).max(1)
        val /= np.maximum(peak, np.float32(1e-12))[:, None, None]
        k, py, px = np.nonzero(val >= _FP_FLOOR)
        pieces.append(
            (
                index[sl][k].astype(np.int32),
                (iy[k] + py - half).astype(np.int32),
                (ix[k] + px - half).astype(np.int32),
                val[k, py, px],
            )
        )
    if not pieces:
        return [np.empty(0, np.int32)] * 3 + [np.empty(0, np.float32)]
    return [np.concatenate(c) for c in zip(*pieces)]  # a list: _assemble frees it


def _assemble(groups, n: int, shape) -> sparse.COO:
    """Merge per-kind coordinate groups into one COO sorted by candidate (O(nnz), no sort).

    ``groups`` is emptied as it is consumed, so the pieces are freed early.
    """
    cand = np.concatenate([g[0] for g in groups])
    nnz = cand.size
    counts = np.bincount(cand, minlength=n)
    # Each candidate's pixels are contiguous within its group: move whole segments.
    seg_first = np.flatnonzero(np.r_[True, cand[1:] != cand[:-1]]) if nnz else np.empty(0, np.int64)
    start_gen = np.zeros(n, np.int64)
    start_gen[cand[seg_first]] = seg_first
    start_new = np.zeros(n, np.int64)
    np.cumsum(counts[:-1], out=start_new[1:])
    itype = np.int32 if nnz < 2**31 - 1 else np.int64
    gather = np.repeat((start_gen - start_new).astype(itype), counts)
    gather += np.arange(nnz, dtype=itype)
    coords = np.empty((3, nnz), np.int32)
    coords[0] = cand[gather]
    del cand
    for j in (1, 2, 3):
        col = np.concatenate([g[j] for g in groups])
        for g in groups:
            g[j] = None
        if j < 3:
            coords[j] = col[gather]
        else:
            data = col[gather]
        del col
    groups.clear()
    return sparse.COO(coords, data, shape=(n, *shape), has_duplicates=False, sorted=True)


# --------------------------------------------------------------------------- traces
def _kernel(tau_rise, tau_decay, frame_rate, length):
    """GCaMP-like double exponential, peak 1, one row per candidate."""
    t = np.arange(length, dtype=np.float32)[None, :] / frame_rate
    k = np.exp(-t / tau_decay[:, None]) - np.exp(-t / tau_rise[:, None])
    return (k / k.max(1, keepdims=True)).astype(np.float32)


def _calcium(rng, n, n_frames, frame_rate, *, rate, amp, tau_rise, tau_decay, min_events):
    """dF/F of ``n`` sources: Poisson spikes convolved with a double exponential.

    ``rate`` (Hz, log-uniform), ``tau_rise``/``tau_decay`` (s, uniform), ``amp``
    (log-normal median and sigma of one spike's peak dF/F) are ranges; every source
    fires at least ``min_events`` times.
    """
    out = np.zeros((n, n_frames), np.float32)
    if n == 0:
        return out
    rates = np.exp(rng.uniform(np.log(rate[0]), np.log(rate[1]), n))
    tr = rng.uniform(*tau_rise, n)
    td = rng.uniform(*tau_decay, n)
    gain = np.maximum(rng.lognormal(np.log(amp[0]), amp[1], n), 0.5 * amp[0])
    length = max(2, min(n_frames + 1, math.ceil(5 * tau_decay[1] * frame_rate) + 1))
    n_ev = np.maximum(rng.poisson(rates * n_frames / frame_rate), min_events)
    row = np.repeat(np.arange(n), n_ev)
    when = rng.integers(0, n_frames, row.size)
    size = gain[row] * rng.lognormal(0.0, 0.25, row.size)
    nfft = scipy.fft.next_fast_len(n_frames + length, real=True)
    for s in range(0, n, _TRACE_BLOCK):
        e = min(n, s + _TRACE_BLOCK)
        lo, hi = np.searchsorted(row, [s, e])
        spikes = np.zeros((e - s, n_frames), np.float32)
        np.add.at(spikes, (row[lo:hi] - s, when[lo:hi]), size[lo:hi].astype(np.float32))
        k = _kernel(tr[s:e], td[s:e], frame_rate, length)
        f = scipy.fft.rfft(spikes, nfft, axis=1) * scipy.fft.rfft(k, nfft, axis=1)
        out[s:e] = scipy.fft.irfft(f, nfft, axis=1)[:, :n_frames]
    return out


def _smooth_noise(rng, n_frames, sigma_frames):
    z = rng.standard_normal(n_frames)
    if n_frames > 1:
        z = ndimage.gaussian_filter1d(z, max(sigma_frames, 0.5), mode="reflect")
    z -= z.mean()
    sd = z.std()
    return z / sd if sd > 1e-12 else np.zeros_like(z)


def _smooth_field(rng, shape, sigma):
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    f -= f.min()
    top = f.max()
    return (f / top if top > 0 else f).astype(np.float32)


# --------------------------------------------------------------------------- the movie
def _shift_frame(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Shift an image by (dy, dx) pixels, bilinear, zeros shifted in.

    Equal to ``scipy.ndimage.shift(img, (dy, dx), order=1, mode="grid-constant")``
    but about ten times faster (two weighted slices per axis).
    """
    h, w = img.shape
    iy, ix = math.floor(dy), math.floor(dx)
    fy, fx = np.float32(dy - iy), np.float32(dx - ix)
    p = max(abs(iy), abs(ix)) + 2
    pad = np.zeros((h + 2 * p, w + 2 * p), np.float32)
    pad[p : p + h, p : p + w] = img
    rows = (1 - fy) * pad[p - iy : p - iy + h] + fy * pad[p - iy - 1 : p - iy - 1 + h]
    return (1 - fx) * rows[:, p - ix : p - ix + w] + fx * rows[:, p - ix - 1 : p - ix - 1 + w]


class _MovieModel:
    """Everything needed to render any frame of the simulated movie on demand."""

    def __init__(self, *, seed, shape, sources, src_traces, background, np_field, np_signal, shifts, noise):
        self.seed = seed
        self.shape = shape
        self.sources_t = sources.T.tocsr()  # (pixels, source)
        self.src_traces = src_traces  # (source, time) float32, 1 + dF/F
        self.background = background.ravel()
        self.np_field = np_field.ravel()
        self.np_signal = np_signal.astype(np.float32)
        self.shifts = shifts.astype(np.float64)  # (time, 2) pixels (dy, dx)
        self.noise = noise
        digest = hashlib.blake2b(repr((seed, shape, noise)).encode(), digest_size=16)
        for arr in (
            self.sources_t.data,
            self.sources_t.indices,
            self.sources_t.indptr,
            self.src_traces,
            self.background,
            self.np_field,
            self.np_signal,
            self.shifts,
        ):
            digest.update(np.ascontiguousarray(arr).view(np.uint8).ravel())
        self.token = "actsort-sim-movie-" + digest.hexdigest()

    def clean(self, t: int) -> np.ndarray:
        """Noise-free, motion-free frame ``t`` as a float32 ``(height, width)`` image."""
        frame = self.sources_t @ self.src_traces[:, t]  # (pixels,), one sparse mat-vec
        frame = frame.astype(np.float32, copy=False)
        frame += self.background
        frame += self.np_field * self.np_signal[t]
        return frame.reshape(self.shape)

    def render(self, frames) -> np.ndarray:
        """Final uint16 frames ``(len(frames), height, width)``: clean, shifted, plus noise."""
        frames = np.asarray(frames, dtype=np.int64).ravel()
        out = np.empty((len(frames), *self.shape), np.uint16)
        top = np.float32(np.iinfo(np.uint16).max)
        for i, t in enumerate(frames):
            f = self.clean(int(t))
            dy, dx = self.shifts[t]
            if dy or dx:
                f = _shift_frame(f, dy, dx)
            if self.noise > 0:
                # Gaussian approximation of shot (Poisson, gain _GAIN) plus read noise,
                # seeded per frame so any chunking gives the same movie.
                z = np.random.default_rng([self.seed, _MOVIE_SALT, int(t)]).standard_normal(self.shape, np.float32)
                sd = np.maximum(f, 0) * np.float32(_GAIN)
                sd += np.float32(_READ_SD**2)
                np.sqrt(sd, out=sd)
                sd *= z
                sd *= np.float32(self.noise)
                f += sd
            np.rint(f, out=f)
            np.clip(f, 0, top, out=f)
            out[i] = f
        return out

    def lazy(self, n_frames: int, chunk_frames: int) -> da.Array:
        """The movie as a dask array chunked in time; frames are rendered when computed.

        The model is one node of the graph (shipped once to a cluster), and every
        time chunk is a task that renders its frames from it.
        """
        idx = da.arange(n_frames, chunks=chunk_frames, dtype=np.int64)
        model = dask.delayed(self, pure=True, name=self.token + "-model")
        h, w = self.shape
        return da.map_blocks(
            _render_block,
            idx,
            model,
            new_axis=[1, 2],
            chunks=(idx.chunks[0], (h,), (w,)),
            dtype=np.uint16,
            meta=np.empty((0, 0, 0), np.uint16),
            name=self.token + f"-{chunk_frames}",
        )

    def eager(self, n_frames: int, chunk_frames: int) -> np.ndarray:
        h, w = self.shape
        out = np.empty((n_frames, h, w), np.uint16)
        for s in range(0, n_frames, chunk_frames):
            out[s : s + chunk_frames] = self.render(np.arange(s, min(n_frames, s + chunk_frames)))
        return out

    def summary_images(self) -> dict[str, np.ndarray]:
        """Mean and max images of the noise-free, motion-free model (no pass over the movie)."""
        mean_src = self.src_traces.mean(1)
        mean_img = self.background + self.np_field * float(self.np_signal.mean())
        mean_img = mean_img + np.asarray(self.sources_t @ mean_src).ravel()
        max_img = self.background + self.np_field * float(self.np_signal.max())
        if self.src_traces.shape[0]:
            peak = scipy.sparse.csr_matrix(self.sources_t.multiply(self.src_traces.max(1)[None, :]))
            max_img = max_img + peak.max(axis=1).toarray().ravel()
        h, w = self.shape
        return {
            "max_image": max_img.reshape(h, w).astype(np.float32),
            "mean_image": mean_img.reshape(h, w).astype(np.float32),
        }


def _render_block(frames: np.ndarray, model: _MovieModel) -> np.ndarray:
    return model.render(frames)


# --------------------------------------------------------------------------- the core
@dataclass
class _Simulation:
    footprints: sparse.COO
    traces: np.ndarray
    kind: np.ndarray
    parent: np.ndarray
    shifts: np.ndarray
    model: _MovieModel | None


def _simulate(
    *,
    n_cells: int,
    n_false: int,
    shape: tuple[int, int],
    n_frames: int,
    frame_rate: float,
    kinds,
    noise: float,
    motion: float,
    seed: int,
    cell_radius: tuple[float, float],
    with_movie: bool,
) -> _Simulation:
    rng = np.random.default_rng(seed)
    h, w = shape
    counts = {"cell": n_cells, **_kind_counts(n_false, kinds)}
    if n_cells == 0 and (counts["duplicate"] or counts["split"]):
        raise InputError(
            "duplicates and splits copy a true cell, so they need n_cells >= 1; add cells or drop those kinds."
        )
    n = sum(counts.values())
    if n == 0:
        raise InputError("the simulation has no candidates; pass n_cells >= 1 or n_false >= 1.")
    # Final (shuffled) order: the index says nothing about the kind.
    kind = rng.permutation(np.repeat(np.array(KINDS), [counts[k] for k in KINDS]))
    where = {k: np.flatnonzero(kind == k) for k in KINDS}
    scale = float(np.mean(cell_radius)) / 5.5
    r_lo, r_hi = cell_radius
    fps = frame_rate
    T = n_frames

    # ---- motion: slow sub-pixel jitter, s.d. `motion` px per axis
    shifts = np.stack([_smooth_noise(rng, T, fps * 1.0) for _ in range(2)], 1) * motion
    # ---- neuropil: smooth spatial field x slow shared signal (+ population activity below)
    np_field = 30.0 + 50.0 * _smooth_field(rng, shape, 10.0 * scale)
    background = 60.0 + 40.0 * _smooth_field(rng, shape, 6.0 * scale)
    slow = 0.15 * _smooth_noise(rng, T, 2.0 * fps)

    groups = []
    traces = np.zeros((n, T), np.float32)
    parent = np.full(n, -1, np.int64)

    # ---- cells: somata on a jittered grid (dense fields overlap, as in real data)
    nc = counts["cell"]
    e = rng.uniform(1.0, 1.3, nc)
    r = rng.uniform(r_lo, r_hi, nc)
    cell_p = {"a": r * np.sqrt(e), "b": r / np.sqrt(e), "theta": rng.uniform(0, np.pi, nc)}
    margin = math.ceil(1.25 * r_hi * math.sqrt(1.3))
    cy, cx = _grid_positions(rng, nc, shape, margin, spacing=2.0 * (r_lo + r_hi) / 2 + 1.0)
    half_soma = math.ceil(1.3 * r_hi * math.sqrt(1.3)) + 1
    groups.append(_patch_coo(rng, cy, cx, cell_p, half_soma, _soma, shape, where["cell"]))
    cell_c = _calcium(
        rng, nc, T, fps, rate=(0.03, 0.3), amp=(0.7, 0.35), tau_rise=(0.05, 0.1), tau_decay=(0.5, 1.2), min_events=3
    )
    cell_R = rng.uniform(60.0, 160.0, nc)

    # ---- dendrites: thin, long, bent; their own sparse activity
    nd = counts["dendrite"]
    dend_p = {
        "a": rng.uniform(8.0, 16.0, nd) * scale,
        "b": rng.uniform(0.7, 1.2, nd),
        "theta": rng.uniform(0, np.pi, nd),
        "bend": rng.uniform(-0.02, 0.02, nd) / scale,
        "bead_freq": rng.uniform(0.8, 1.6, nd),
        "bead_phase": rng.uniform(0, 2 * np.pi, nd),
    }
    dy_ = rng.uniform(2, h - 3, nd)
    dx_ = rng.uniform(2, w - 3, nd)
    groups.append(_patch_coo(rng, dy_, dx_, dend_p, math.ceil(16.0 * scale) + 3, _dendrite, shape, where["dendrite"]))
    dend_c = _calcium(
        rng, nd, T, fps, rate=(0.02, 0.15), amp=(0.4, 0.4), tau_rise=(0.03, 0.08), tau_decay=(0.3, 0.8), min_events=1
    )
    dend_R = rng.uniform(40.0, 100.0, nd)

    # ---- shared neuropil signal: slow drift + smoothed population activity
    pop = cell_c.mean(0) if nc else np.zeros(T, np.float32)
    pop = ndimage.gaussian_filter1d(pop.astype(np.float64), max(0.5, 0.5 * fps)) if T > 1 else pop
    np_signal = (1.0 + slow + 0.5 * pop).astype(np.float32)
    contam = (np_signal - np_signal.mean()).astype(np.float32)

    def fill(rows, sd, *, base=None, cgain=None, post=None):
        """traces[rows] = base + cgain * neuropil + sd * N(0, 1), in float32 row blocks."""
        sd = np.asarray(sd, np.float32)
        cgain = None if cgain is None else np.asarray(cgain, np.float32)
        for s in range(0, len(rows), _TRACE_BLOCK):
            e = min(len(rows), s + _TRACE_BLOCK)
            x = rng.standard_normal((e - s, T), np.float32)
            x *= sd[s:e, None]
            if base is not None:
                x += base(s, e)
            if cgain is not None:
                x += cgain[s:e, None] * contam[None, :]
            traces[rows[s:e]] = x if post is None else post(x)

    # extracted traces of cells / dendrites: true dF/F + a little neuropil + extraction noise
    fill(
        where["cell"],
        noise * rng.uniform(0.03, 0.08, nc),
        base=lambda s, e: cell_c[s:e],
        cgain=rng.uniform(0.05, 0.2, nc),
    )
    fill(
        where["dendrite"],
        noise * rng.uniform(0.04, 0.1, nd),
        base=lambda s, e: dend_c[s:e],
        cgain=rng.uniform(0.05, 0.2, nd),
    )
    if not with_movie:
        del cell_c, dend_c

    # ---- duplicates: a shifted, rescaled copy of a cell; trace a noisy scaled copy
    for k, cut in (("duplicate", False), ("split", True)):
        m = counts[k]
        par = rng.integers(0, max(nc, 1), m)
        p = {key: v[par].copy() for key, v in cell_p.items()}
        ang = rng.uniform(0, 2 * np.pi, m)
        if cut:
            p["cut_angle"] = ang
            p["cut_offset"] = rng.uniform(-0.2, 0.3, m) * r[par]
            py_, px_ = cy[par], cx[par]
            gain, sd = rng.uniform(0.3, 0.6, m), rng.uniform(0.08, 0.2, m)
        else:
            s = rng.uniform(0.8, 1.1, m)
            p["a"] *= s
            p["b"] *= s
            dist = rng.uniform(0.25, 0.6, m) * r[par]
            py_, px_ = cy[par] + dist * np.sin(ang), cx[par] + dist * np.cos(ang)
            gain, sd = rng.uniform(0.5, 0.9, m), rng.uniform(0.1, 0.2, m)
        groups.append(_patch_coo(rng, py_, px_, p, half_soma + 3, _soma, shape, where[k]))
        parent[where[k]] = where["cell"][par]
        rows = where["cell"][par]
        gain = gain.astype(np.float32)
        fill(
            where[k], sd * max(noise, 0.5), base=lambda s, e, rows=rows, gain=gain: gain[s:e, None] * traces[rows[s:e]]
        )

    # ---- neuropil blobs: large diffuse footprints, trace = neuropil signal
    nn = counts["neuropil"]
    sig = rng.uniform(6.0, 10.0, nn) * scale
    asp = rng.uniform(1.0, 1.5, nn)
    npl_p = {"a": sig * np.sqrt(asp), "b": sig / np.sqrt(asp), "theta": rng.uniform(0, np.pi, nn)}
    half_np = math.ceil(2.45 * 10.0 * scale * math.sqrt(1.5)) + 1
    groups.append(
        _patch_coo(
            rng,
            rng.uniform(0, h - 1, nn),
            rng.uniform(0, w - 1, nn),
            npl_p,
            half_np,
            _neuropil,
            shape,
            where["neuropil"],
        )
    )
    fill(where["neuropil"], rng.uniform(0.03, 0.08, nn), cgain=rng.uniform(1.0, 3.0, nn))

    # ---- noise: small blobs anywhere, trace = (slightly smoothed) noise, no transients
    nz = counts["noise"]
    rz = rng.uniform(2.0, 4.0, nz) * scale
    noi_p = {"a": rz, "b": rz * rng.uniform(0.7, 1.0, nz), "theta": rng.uniform(0, np.pi, nz)}
    groups.append(
        _patch_coo(
            rng,
            rng.uniform(0, h - 1, nz),
            rng.uniform(0, w - 1, nz),
            noi_p,
            math.ceil(5.2 * scale) + 1,
            _soma,
            shape,
            where["noise"],
        )
    )
    # a Gaussian filter of s.d. 1 frame scales white noise by ~1/1.88: undo it
    smooth = (lambda x: ndimage.gaussian_filter1d(x, 1.0, axis=1) * np.float32(1.88)) if T > 1 else None
    fill(where["noise"], rng.uniform(0.1, 0.3, nz), post=smooth)

    # ---- edge artefacts: blobs cut by the field-of-view edge, traces driven by the motion
    ne = counts["edge"]
    re_ = rng.uniform(3.0, 6.0, ne) * scale
    side = rng.integers(0, 4, ne)  # 0 top, 1 bottom, 2 left, 3 right
    depth = rng.uniform(-0.5, 0.5, ne) * re_  # centre distance from the edge line (negative: outside)
    along_y, along_x = rng.uniform(0, h - 1, ne), rng.uniform(0, w - 1, ne)
    ey = np.select([side == 0, side == 1], [depth, h - 1 - depth], along_y)
    ex = np.select([side == 2, side == 3], [depth, w - 1 - depth], along_x)
    edge_p = {"a": re_, "b": re_ * rng.uniform(0.7, 1.0, ne), "theta": rng.uniform(0, np.pi, ne)}
    groups.append(_patch_coo(rng, ey, ex, edge_p, math.ceil(7.0 * scale) + 1, _soma, shape, where["edge"]))
    # shifting by +d along an axis brings the dark border in at the low edge, out at the high one
    axis = np.where(side < 2, 0, 1)
    gain = (np.where((side == 0) | (side == 2), -1.0, 1.0) * rng.uniform(0.6, 1.5, ne)).astype(np.float32)
    shifts32 = shifts.T.astype(np.float32)  # (axis, time)
    fill(
        where["edge"],
        rng.uniform(0.03, 0.08, ne),
        base=lambda s, e: gain[s:e, None] * shifts32[axis[s:e]],
        cgain=np.full(ne, 0.1),
    )

    footprints = _assemble(groups, n, shape)

    model = None
    if with_movie:
        src_idx = np.concatenate([where["cell"], where["dendrite"]])
        csr = _rows_csr(footprints, src_idx)
        csr = scipy.sparse.diags(np.concatenate([cell_R, dend_R]).astype(np.float32)) @ csr
        src_traces = np.concatenate([cell_c, dend_c]) + np.float32(1.0)
        model = _MovieModel(
            seed=seed,
            shape=shape,
            sources=csr.tocsr().astype(np.float32),
            src_traces=src_traces.astype(np.float32),
            background=background,
            np_field=np_field.astype(np.float32),
            np_signal=np_signal,
            shifts=shifts,
            noise=noise,
        )
    return _Simulation(footprints, traces, kind, parent, shifts, model)


def _rows_csr(coo: sparse.COO, rows: np.ndarray) -> scipy.sparse.csr_matrix:
    """Rows ``rows`` of a (candidate, y, x) COO as a (len(rows), y*x) CSR matrix."""
    n, h, w = coo.shape
    full = scipy.sparse.csr_matrix(
        (coo.data, (coo.coords[0], coo.coords[1].astype(np.int64) * w + coo.coords[2])), shape=(n, h * w)
    )
    return full[rows]


def _grid_positions(rng, n, shape, margin, spacing):
    """``n`` centres on a jittered grid inside ``margin``; the grid tightens when crowded."""
    h, w = shape
    y0, y1 = margin, h - 1 - margin
    x0, x1 = margin, w - 1 - margin
    if n == 0:
        return np.empty(0), np.empty(0)
    if y1 < y0 or x1 < x0:
        raise InputError(
            f"the field of view {shape} is too small for cells of this radius (margin {margin} px per side); "
            "use a larger shape or a smaller cell_radius."
        )
    s = min(spacing, math.sqrt(max((y1 - y0 + 1) * (x1 - x0 + 1), 1) / (1.2 * n)))
    while True:
        gy = np.arange(y0, y1 + 1e-9, s)
        gx = np.arange(x0, x1 + 1e-9, s)
        if gy.size * gx.size >= n:
            break
        if s < 0.5:  # more cells than pixels: stack them anywhere in the region
            return rng.uniform(y0, y1, n), rng.uniform(x0, x1, n)
        s *= 0.9
    # centre the grid inside the margins
    gy += (y1 - gy[-1]) / 2
    gx += (x1 - gx[-1]) / 2
    pick = rng.choice(gy.size * gx.size, n, replace=False)
    jit = rng.uniform(-0.4, 0.4, (2, n)) * s
    cy = np.clip(gy[pick // gx.size] + jit[0], y0, y1)
    cx = np.clip(gx[pick % gx.size] + jit[1], x0, x1)
    return cy, cx


def _dataset(sim: _Simulation, movie, images, *, frame_rate, source, attrs) -> xr.Dataset:
    ds = candidate_set(
        sim.footprints,
        sim.traces,
        movie=movie,
        summary_images=images,
        frame_rate=frame_rate,
        source=source,
        source_format="synthetic",
        candidate_vars={"kind": sim.kind, "is_cell": sim.kind == "cell", "parent": sim.parent},
        attrs=attrs,
    )
    motion = {"units": "px", "description": "true motion applied to the frame (ground truth)"}
    return ds.assign(
        motion_y=("time", sim.shifts[:, 0].astype(np.float32), motion),
        motion_x=("time", sim.shifts[:, 1].astype(np.float32), motion),
    )


# --------------------------------------------------------------------------- public API
def simulate_recording(
    n_cells: int = 40,
    shape: tuple[int, int] = (96, 96),
    n_frames: int = 600,
    *,
    frame_rate: float = 10.0,
    n_false: int | None = None,
    kinds: Sequence[str] | Mapping[str, float] | None = None,
    noise: float = 1.0,
    motion: float = 0.5,
    seed: int = 0,
    lazy: bool = False,
    chunk_frames: int = 200,
    cell_radius: tuple[float, float] = (4.0, 7.0),
) -> xr.Dataset:
    """Simulate a calcium-imaging recording and the candidates an extractor would find.

    Parameters
    ----------
    n_cells : int
        Number of true somata.
    shape : (int, int)
        Field of view ``(height, width)`` in pixels; at least 16, and room for the
        cells: with the default ``cell_radius``, at least 21 (a 10-pixel margin per side).
    n_frames : int
        Number of frames.
    frame_rate : float
        Frames per second; calcium kinetics are set in seconds and converted.
    n_false : int, optional
        Number of false-positive candidates; default ``n_cells``.
    kinds : sequence of str or mapping of str to float, optional
        Which false-positive kinds to make (``"duplicate"``, ``"split"``,
        ``"neuropil"``, ``"dendrite"``, ``"noise"``, ``"edge"``): a sequence for equal
        shares or a mapping of relative weights. Default :data:`DEFAULT_MIX`.
        Counts are split by largest remainder, so they are exact and deterministic.
    noise : float
        Multiplier of the noise: shot and read noise in the movie and extraction noise
        on the traces of cells and dendrites (0 makes them noise-free). The artefacts'
        own traces (noise blobs, duplicates) keep their noise.
    motion : float
        Standard deviation, in pixels per axis, of the slow sub-pixel jitter.
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same seed gives identical arrays.
    lazy : bool
        If True the movie is a dask array rendered chunk by chunk when computed (a
        multi-GB movie is never in memory); if False it is rendered now. Both give
        identical values.
    chunk_frames : int
        Frames per time chunk of the movie.
    cell_radius : (float, float)
        Range of soma radii in pixels; other sizes scale with its mean.

    Returns
    -------
    xarray.Dataset
        A CandidateSet with ``footprints`` (sparse), ``traces``, ``movie``
        (time, y, x) uint16, ``max_image`` and ``mean_image`` (of the noise-free,
        motion-free model, so lazy and eager sets are identical), per candidate
        ``kind`` (str), ``is_cell`` (bool) and ``parent`` (id of the cell a duplicate
        or split comes from, else -1), and the true motion per frame ``motion_y``,
        ``motion_x`` (time,) in pixels.

    Raises
    ------
    InputError
        If a parameter is out of range.

    Examples
    --------
    >>> ds = simulate_recording(n_cells=10, shape=(48, 48), n_frames=100, seed=1)
    >>> dict(ds.sizes)
    {'candidate': 20, 'y': 48, 'x': 48, 'time': 100}
    >>> int(ds.is_cell.sum()), ds.movie.dtype.name
    (10, 'uint16')
    >>> sorted(set(ds.kind.values.tolist()))
    ['cell', 'dendrite', 'duplicate', 'edge', 'neuropil', 'noise', 'split']
    """
    n_cells = check_int(n_cells, "n_cells", 0)
    n_false = n_cells if n_false is None else check_int(n_false, "n_false", 0)
    n_frames = check_int(n_frames, "n_frames", 1)
    chunk_frames = check_int(chunk_frames, "chunk_frames", 1)
    shape = _check_shape(shape)
    fps = _check_float(frame_rate, "frame_rate", positive=True)
    noise = _check_float(noise, "noise")
    motion = _check_float(motion, "motion")
    seed = check_int(seed, "seed", 0)
    radius = _check_range(cell_radius, "cell_radius")
    if radius[0] < 1:
        raise InputError(f"cell_radius must be at least 1 pixel (a smaller cell can miss every pixel), got {cell_radius!r}.")
    sim = _simulate(
        n_cells=n_cells,
        n_false=n_false,
        shape=shape,
        n_frames=n_frames,
        frame_rate=fps,
        kinds=kinds,
        noise=noise,
        motion=motion,
        seed=seed,
        cell_radius=radius,
        with_movie=True,
    )
    model = sim.model
    movie = (
        model.lazy(n_frames, chunk_frames)
        if lazy
        else da.from_array(model.eager(n_frames, chunk_frames), chunks=(chunk_frames, -1, -1))
    )
    return _dataset(
        sim,
        movie,
        model.summary_images(),
        frame_rate=fps,
        source=f"simulate_recording(seed={seed})",
        attrs={"simulator": "actsort_nb.synthetic.simulate_recording", "seed": seed, "noise": noise, "motion": motion},
    )


def simulate_candidates(
    n_candidates: int = 30_000,
    shape: tuple[int, int] = (512, 512),
    n_frames: int = 1000,
    *,
    seed: int = 0,
    frame_rate: float = 10.0,
    cell_fraction: float = 0.5,
    kinds: Sequence[str] | Mapping[str, float] | None = None,
    noise: float = 1.0,
    motion: float = 0.5,
    movie: str | None = None,
    chunk_frames: int = 200,
    cell_radius: tuple[float, float] = (4.0, 7.0),
) -> xr.Dataset:
    """Simulate a large candidate set fast and memory-bounded, for benchmarks.

    The same kinds and models as :func:`simulate_recording`, but built for size:
    footprints are made directly as sparse coordinates (never a dense
    ``(n, height, width)`` array), traces are float32 and generated in blocks, and
    the movie is only made on request, lazily.

    Parameters
    ----------
    n_candidates : int
        Total number of candidates.
    shape : (int, int)
        Field of view ``(height, width)``.
    n_frames : int
        Number of frames.
    seed : int
        Seed; the same seed gives identical arrays.
    frame_rate : float
        Frames per second.
    cell_fraction : float
        Share of true cells among the candidates (the rest are false positives).
    kinds, noise, motion, chunk_frames, cell_radius
        As in :func:`simulate_recording`.
    movie : {None, "lazy"}
        ``"lazy"`` adds the movie as a dask array rendered chunk by chunk; ``None``
        (default) builds no movie and no summary images.

    Returns
    -------
    xarray.Dataset
        A CandidateSet with ``kind``, ``is_cell``, ``parent``, ``motion_y`` and
        ``motion_x`` (see :func:`simulate_recording`).

    Examples
    --------
    >>> ds = simulate_candidates(2000, (256, 256), 200, seed=0)
    >>> ds.sizes["candidate"], type(ds.footprints.data).__name__
    (2000, 'COO')
    >>> int(ds.is_cell.sum())
    1000
    """
    n_candidates = check_int(n_candidates, "n_candidates", 1)
    n_frames = check_int(n_frames, "n_frames", 1)
    chunk_frames = check_int(chunk_frames, "chunk_frames", 1)
    shape = _check_shape(shape)
    fps = _check_float(frame_rate, "frame_rate", positive=True)
    frac = _check_float(cell_fraction, "cell_fraction")
    if frac > 1:
        raise InputError(f"cell_fraction must be between 0 and 1, got {cell_fraction!r}.")
    noise = _check_float(noise, "noise")
    motion = _check_float(motion, "motion")
    seed = check_int(seed, "seed", 0)
    radius = _check_range(cell_radius, "cell_radius")
    if radius[0] < 1:
        raise InputError(f"cell_radius must be at least 1 pixel (a smaller cell can miss every pixel), got {cell_radius!r}.")
    if movie is not None:
        check_option(movie, "movie", ["lazy"])
    n_cells = int(round(frac * n_candidates))
    sim = _simulate(
        n_cells=n_cells,
        n_false=n_candidates - n_cells,
        shape=shape,
        n_frames=n_frames,
        frame_rate=fps,
        kinds=kinds,
        noise=noise,
        motion=motion,
        seed=seed,
        cell_radius=radius,
        with_movie=movie is not None,
    )
    mov = images = None
    if sim.model is not None:
        mov = sim.model.lazy(n_frames, chunk_frames)
        images = sim.model.summary_images()
    return _dataset(
        sim,
        mov,
        images,
        frame_rate=fps,
        source=f"simulate_candidates(seed={seed})",
        attrs={"simulator": "actsort_nb.synthetic.simulate_candidates", "seed": seed, "noise": noise, "motion": motion},
    )


def write_movie(
    ds: xr.Dataset | xr.DataArray,
    path: str | os.PathLike,
    *,
    format: str = "h5",
    chunk_frames: int | None = None,
    dataset: str = "mov",
) -> Path:
    """Stream a (lazy) movie to disk chunk by chunk, with bounded memory.

    Parameters
    ----------
    ds : xarray.Dataset or xarray.DataArray
        A CandidateSet with a ``movie`` variable, or the movie itself (time, y, x).
    path : str or path-like
        Output file.
    format : {"h5", "npy", "tif"}
        HDF5 (dataset ``dataset``, shape (time, y, x), chunked per frame block),
        ``.npy`` (written through a memory map) or multi-page (Big)TIFF.
    chunk_frames : int, optional
        Frames computed and written per step; default the movie's own time chunks.
    dataset : str
        HDF5 dataset name.

    Returns
    -------
    pathlib.Path
        The written file.

    Examples
    --------
    >>> import tempfile, h5py
    >>> ds = simulate_recording(n_cells=4, shape=(32, 32), n_frames=30, lazy=True, chunk_frames=8)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = write_movie(ds, f"{d}/m.h5")
    ...     with h5py.File(p) as f:
    ...         f["mov"].shape
    (30, 32, 32)
    """
    check_option(format, "format", ["h5", "npy", "tif"])
    if isinstance(ds, xr.Dataset):
        if "movie" not in ds.variables:
            raise InputError("this dataset has no 'movie' to write; simulate it with a movie (e.g. movie='lazy').")
        mov = ds["movie"].transpose("time", "y", "x").data
    else:
        mov = ds.data
        if mov.ndim != 3:
            raise InputError(f"the movie must be 3-D (time, y, x), got shape {mov.shape}.")
    if not isinstance(mov, da.Array):
        mov = da.from_array(mov, chunks=(chunk_frames or 100, -1, -1))
    n_t, h, w = mov.shape
    if chunk_frames is None:
        bounds = np.cumsum((0,) + mov.chunks[0])
    else:
        step = check_int(chunk_frames, "chunk_frames", 1)
        bounds = np.r_[np.arange(0, n_t, step), n_t]
    spans = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    path = Path(path)
    rate = float(ds.attrs.get("frame_rate", float("nan"))) if isinstance(ds, xr.Dataset) else float("nan")
    if format == "h5":
        import h5py

        per = max(1, min(n_t, (1 << 20) // max(1, h * w * mov.dtype.itemsize)))
        with h5py.File(path, "w") as f:
            dset = f.create_dataset(dataset, shape=(n_t, h, w), dtype=mov.dtype, chunks=(per, h, w))
            dset.attrs["dims"] = "time,y,x"
            dset.attrs["frame_rate"] = rate
            for a, b in spans:
                dset[a:b] = np.asarray(mov[a:b].compute())
    elif format == "npy":
        out = np.lib.format.open_memmap(path, mode="w+", dtype=mov.dtype, shape=(n_t, h, w))
        for a, b in spans:
            out[a:b] = np.asarray(mov[a:b].compute())
            out.flush()
        del out
    else:
        import tifffile

        big = mov.nbytes > 2**31
        with tifffile.TiffWriter(path, bigtiff=big) as tw:
            for a, b in spans:
                for frame in np.asarray(mov[a:b].compute()):
                    tw.write(frame, contiguous=True, photometric="minisblack")
    return path
