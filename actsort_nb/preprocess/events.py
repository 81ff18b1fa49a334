"""Top events of each candidate's trace: the frames whose snapshots a human looks at.

ActSort's rule (``find_spike_indices.m``/``find_spikes.m``): zero the first and last
``edge`` frames (so a clip of ±5 frames never leaves the movie), shift the trace so
it is non-negative, find peaks with prominence ≥ std(trace) (MATLAB's, N − 1) that are separated by
more than 1 % of the trace length, keep the ``n_events`` highest (highest first);
if there is no such peak, use the arg-max. Missing events are ``-1`` (ActSort: NaN).

Two departures, both at the level of single frames: the peaks are found as
:func:`scipy.signal.find_peaks` finds them, so a flat-topped peak (a plateau, e.g. in
integer traces) is placed at the middle of the plateau, where MATLAB's ``findpeaks``
takes its first frame; and the last ``edge`` frames are zeroed as the reference says
(ActSort's ``set_trace_event_interval`` zeroes one more at the end).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import dask.array as da
import numpy as np
import scipy.signal

from .._validation import InputError, check_ndim
from ._kernels import top_events_traces
from .stream import _array_source

__all__ = ["EDGE_FRAMES", "N_EVENTS", "top_events"]

#: Events kept per candidate.
N_EVENTS = 5
#: Frames zeroed at each end of a trace before peak finding.
EDGE_FRAMES = 7


def _separated(peaks: np.ndarray, heights: np.ndarray, min_distance: float, n_keep: int) -> np.ndarray:
    """Indices into ``peaks`` of the ``n_keep`` highest peaks separated by more than ``min_distance``.

    MATLAB ``findpeaks``'s selection (``MinPeakDistance`` then ``SortStr='descend'``,
    ``NPeaks``): taller peaks win, a peak within ``min_distance`` of a taller kept one is
    dropped; ties in height keep the earlier peak. Stops once ``n_keep`` are found.
    """
    order = np.lexsort((peaks, -heights))  # highest first, then earliest
    kept: list[int] = []
    for i in order:
        if all(abs(int(peaks[i]) - int(peaks[k])) > min_distance for k in kept):
            kept.append(int(i))
            if len(kept) == n_keep:
                break
    return np.asarray(kept, dtype=np.int64)


def top_events(
    traces,
    *,
    n_events: int = N_EVENTS,
    edge: int = EDGE_FRAMES,
    min_distance_fraction: float = 0.01,
) -> np.ndarray:
    """Frames of the top ``n_events`` events of each trace, highest first.

    Parameters
    ----------
    traces : array-like
        ``(candidate, time)`` traces (numpy or dask; read in blocks of candidates).
    n_events : int
        Events per candidate.
    edge : int
        Frames at each end that cannot hold an event.
    min_distance_fraction : float
        Peaks must be more than this fraction of the trace length apart.

    Returns
    -------
    numpy.ndarray
        ``(candidate, n_events)`` int32 frame indices, ``-1`` where a candidate has
        fewer events.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((1, 200), np.float32); t[0, [50, 120]] = [3.0, 5.0]
    >>> top_events(t)
    array([[120,  50,  -1,  -1,  -1]], dtype=int32)
    """
    check_ndim(traces, 2, "traces", dims=("candidate", "time"))
    n, n_t = (int(s) for s in traces.shape)
    if n_events < 1:
        raise InputError(f"n_events must be at least 1, got {n_events}.")
    out = np.full((n, n_events), -1, np.int32)
    if n_t == 0:
        return out
    min_distance = n_t * float(min_distance_fraction)
    # a plain dask view of an HDF5 dataset / numpy array is sliced directly (no scheduler per block)
    source = _array_source(traces) if isinstance(traces, da.Array) else None
    source = traces if source is None else source
    block = max(1, int(2**23 // max(n_t, 1)))  # ~32 MB of float32 traces per block of candidates

    def find(x: np.ndarray, dest: np.ndarray) -> None:
        if top_events_traces(x, edge, min_distance, dest) >= 0:
            raise InputError("traces hold NaN/inf values; replace them (e.g. with 0) before pre-processing.")

    # Two threads each take half of a block of rows (the compiled loop prepares one
    # row at a time in a buffer of its own and releases the GIL) while this thread
    # reads the next block.
    two = (os.cpu_count() or 1) > 1
    with ThreadPoolExecutor(max_workers=2 if two else 1) as pool:
        running: list = []
        for s in range(0, n, block):
            x = np.asarray(source[s : s + block])
            for f in running:
                f.result()
            rows = x.shape[0]
            half = (rows + 1) // 2 if rows >= 64 and two else rows
            running = [pool.submit(find, x[a : a + half], out[s + a : s + a + half]) for a in range(0, rows, half)]
        for f in running:
            f.result()
    return out


def _top_events_reference(x: np.ndarray, prominence: np.ndarray, min_distance: float, out: np.ndarray) -> None:
    """The scipy form of the per-trace loop that :func:`._kernels.top_events_block` compiles.

    ``scipy.signal.find_peaks`` with ``prominence`` per row, then :func:`_separated`;
    the arg-max when a row has no peak. Kept as the reference the tests hold the
    compiled loop to (same frames).
    """
    n_events = out.shape[1]
    for i in range(x.shape[0]):
        row = x[i]
        peaks, _ = scipy.signal.find_peaks(row, prominence=prominence[i])
        if peaks.size:
            kept = _separated(peaks, row[peaks], min_distance, n_events)
            out[i, : kept.size] = peaks[kept]
        else:
            out[i, 0] = int(np.argmax(row))
