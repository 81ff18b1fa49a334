"""A minimal in-memory sort set for widget tests (no movie, no pre-processing pass).

It carries every variable of the sort-set contract in CONTRIBUTING.md with the
contract's names and dims, built vectorised so that 30,000 candidates take a few
seconds. Cells have round footprints, Ca-like transients and bright event clips;
non-cells are elongated, noisy and dim, and their features are shifted, so a
learner can tell them apart.
"""
from __future__ import annotations

import numpy as np
import sparse
import xarray as xr

from actsort_nb import candidate_set
from actsort_nb.features.registry import FEATURE_NAMES


def make_sortset(
    n: int = 40,
    *,
    shape: tuple[int, int] = (96, 96),
    n_frames: int = 600,
    crop: int = 21,
    n_events: int = 5,
    clip: int = 11,
    cell_fraction: float = 0.5,
    frame_rate: float = 10.0,
    seed: int = 0,
) -> xr.Dataset:
    """Return a sort set with ``n`` candidates over a ``shape`` field of view.

    Parameters
    ----------
    n : int
        Number of candidates.
    shape : (int, int)
        Field of view ``(height, width)``.
    n_frames : int
        Length of the traces.
    crop : int
        Side of the square crop (``cy`` = ``cx`` = ``crop``).
    n_events, clip : int
        Events per candidate and frames per snapshot clip.
    cell_fraction : float
        Fraction of candidates that are cells (``is_cell``).
    frame_rate : float
        Frames per second.
    seed : int
        Random seed.

    Returns
    -------
    xarray.Dataset
        A sort set: the CandidateSet variables plus ``features``, ``event_frame``,
        ``snapshots``, ``snapshot_scale``, ``snapshot_offset``, ``crop_origin``,
        ``crop_footprint`` and the three summary images.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    half = crop // 2
    is_cell = rng.random(n) < cell_fraction
    cy = rng.uniform(4, h - 5, n)
    cx = rng.uniform(4, w - 5, n)
    # Footprints: Gaussian blobs in a 9x9 window, cells round, non-cells elongated.
    r = np.arange(-4, 5)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    sy = np.where(is_cell, 1.8, rng.uniform(0.8, 1.2, n))
    sx = np.where(is_cell, 1.8, rng.uniform(2.5, 3.5, n))
    iy = np.round(cy).astype(int)
    ix = np.round(cx).astype(int)
    py = iy[:, None, None] + dy[None]
    px = ix[:, None, None] + dx[None]
    val = np.exp(
        -0.5 * (((py - cy[:, None, None]) / sy[:, None, None]) ** 2 + ((px - cx[:, None, None]) / sx[:, None, None]) ** 2)
    )
    val[val < 0.05] = 0
    ok = (py >= 0) & (py < h) & (px >= 0) & (px < w) & (val > 0)
    cand = np.broadcast_to(np.arange(n)[:, None, None], val.shape)
    fp = sparse.COO(
        np.stack([cand[ok], py[ok], px[ok]]), val[ok].astype(np.float32), shape=(n, h, w)
    )
    # Traces: cells have sparse transients, non-cells drift and noise.
    t = np.arange(n_frames)
    spikes = (rng.random((n, n_frames)) < np.where(is_cell, 0.01, 0.002)[:, None]).astype(np.float32)
    kernel = np.exp(-np.arange(40) / 8.0).astype(np.float32)
    cal = np.fft.irfft(np.fft.rfft(spikes, 2 * n_frames) * np.fft.rfft(kernel, 2 * n_frames), 2 * n_frames)[:, :n_frames]
    drift = np.sin(2 * np.pi * t[None] / rng.uniform(100, 400, (n, 1)) + rng.uniform(0, 6, (n, 1)))
    traces = (cal * 3 + 0.3 * drift * (~is_cell)[:, None] + rng.normal(0, 0.25, (n, n_frames))).astype(np.float32)
    # Events: the top-5 frames, at least a clip apart (approximately; a test set, not the detector).
    order = np.argsort(-traces, axis=1)
    event_frame = np.sort(order[:, :: max(1, n_frames // (4 * n_events))][:, :n_events], axis=1).astype(np.int32)
    event_frame = np.clip(event_frame, clip // 2, n_frames - 1 - clip // 2).astype(np.int32)
    # Crops: origin so the candidate sits in the middle, clipped inside the field of view.
    y0 = np.clip(iy - half, 0, max(0, h - crop)).astype(np.int32)
    x0 = np.clip(ix - half, 0, max(0, w - crop)).astype(np.int32)
    ly = np.arange(crop)
    cfy = (y0[:, None] + ly[None])[:, :, None]
    cfx = (x0[:, None] + ly[None])[:, None, :]
    crop_fp = np.exp(
        -0.5 * (((cfy - cy[:, None, None]) / sy[:, None, None]) ** 2 + ((cfx - cx[:, None, None]) / sx[:, None, None]) ** 2)
    ).astype(np.float32)
    crop_fp[crop_fp < 0.05] = 0
    # Snapshots: footprint x a transient over the clip, plus noise, quantised to uint8.
    bump = np.exp(-0.5 * ((np.arange(clip) - clip // 2) / 2.0) ** 2).astype(np.float32)
    amp = np.where(is_cell, 200.0, 60.0).astype(np.float32)
    snaps = np.empty((n, n_events, clip, crop, crop), np.uint8)
    block = 2048
    for s in range(0, n, block):  # bounded memory: one block of candidates at a time
        e = min(n, s + block)
        sig = amp[s:e, None, None, None, None] * bump[None, None, :, None, None] * crop_fp[s:e, None, None]
        noise = rng.normal(20, 8, sig.shape).astype(np.float32)
        snaps[s:e] = np.clip(sig + noise, 0, 255).astype(np.uint8)
    # Summary images.
    dense_sum = np.zeros((h, w), np.float32)
    np.add.at(dense_sum, (fp.coords[1], fp.coords[2]), fp.data)
    max_image = (dense_sum + rng.normal(0.2, 0.05, (h, w))).astype(np.float32)
    mean_image = (0.5 * dense_sum + 0.5 + rng.normal(0, 0.05, (h, w))).astype(np.float32)
    corr_image = np.clip(dense_sum / max(dense_sum.max(), 1e-6), 0, 1).astype(np.float32)
    # Features: informative shift for cells, noise elsewhere.
    feats = rng.normal(0, 1, (n, len(FEATURE_NAMES))).astype(np.float32)
    feats[:, :8] += np.where(is_cell, 1.5, -1.5)[:, None]

    ds = candidate_set(
        fp,
        traces,
        summary_images={"max_image": max_image, "mean_image": mean_image, "corr_image": corr_image},
        frame_rate=frame_rate,
        source="tests/_sortset_factory",
        source_format="synthetic",
        candidate_vars={"is_cell": is_cell, "kind": np.where(is_cell, "cell", "noise")},
    )
    ds["features"] = (("candidate", "feature"), feats)
    ds = ds.assign_coords(feature=list(FEATURE_NAMES))
    ds["event_frame"] = (("candidate", "event"), event_frame)
    ds["snapshots"] = (("candidate", "event", "frame", "cy", "cx"), snaps)
    ds["snapshot_scale"] = (("candidate",), np.full(n, 1 / 255, np.float32))
    ds["snapshot_offset"] = (("candidate",), np.zeros(n, np.float32))
    ds["crop_origin"] = (("candidate", "corner"), np.stack([y0, x0], axis=1))
    ds = ds.assign_coords(corner=["y", "x"])
    ds["crop_footprint"] = (("candidate", "cy", "cx"), crop_fp)
    return ds
