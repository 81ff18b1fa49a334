"""Compiled (numba) per-candidate pass of the spatiotemporal features over its snapshot clips.

For each candidate the ``E·F`` clip frames (``K`` frames of ``P`` crop pixels) are
dequantised once into a cache-resident scratch array and every statistic that
needs the pixels is taken from it: the baseline, the footprint projections, the
robust ε fit, the trace-projected map and the surround projection. The numpy
formulation made ~25 passes over ``(block, K, P)`` float32 arrays. Everything
weighted by the footprint only touches the footprint's support (the pixels with
weight > 0), kept frame-contiguous so that the per-frame sums are plain vector
updates. The kernel releases the GIL (blocks of candidates run in threads) and is
cached on disk (after editing :mod:`._select`, which it calls, delete
``features/__pycache__/*.nb*``: numba's cache does not notice).

Element-wise arithmetic is :mod:`.spatiotemporal`'s, in the same float32/float64
types (dequantisation, baseline, residuals, thresholds); the projections are
summed in float64 (the numpy code used float32 matrix products), so results
differ from it at float32 rounding level.
"""
# min/max are spelled as comparisons on purpose: numba's builtin min/max carry Python's
# NaN semantics and vectorise worse (as in actsort_nb/preprocess/_kernels.py).
# ruff: noqa: FURB136
from __future__ import annotations

import numpy as np
from numba import njit

from ._select import N_BINS, order_stats

__all__ = ["clip_statistics"]

#: Rows of ``frames`` written by :func:`clip_statistics`.
PROJ, EPS, T_OUT, SB, B1, B2 = range(6)


@njit(nogil=True, cache=True)
def _blur(a, sup_idx, n_sup, gy, gx, tmp_t, used, out):  # pragma: no cover - compiled
    """``out = gy @ A @ gx`` for the ``(cy, cx)`` image ``A`` that is ``a`` on its support, 0 elsewhere.

    ``gy``, ``gx`` are symmetric (Gaussian filters as matrices). Only the support's
    pixels and columns are visited. ``tmp_t`` is ``(cx, cy)`` and ``used`` ``(cx,)`` scratch.
    """
    cy, cx = out.shape
    tmp_t[:, :] = 0.0
    used[:] = False
    for s in range(n_sup):  # tmp = gy @ A, stored transposed: column j of tmp is tmp_t[j]
        p = sup_idx[s]
        k = p // cx
        j = p - k * cx
        v = a[p]
        used[j] = True
        for i in range(cy):
            tmp_t[j, i] += gy[k, i] * v
    out[:, :] = 0.0
    for k in range(cx):  # out = tmp @ gx
        if used[k]:
            for i in range(cy):
                v = tmp_t[k, i]
                for j in range(cx):
                    out[i, j] += v * gx[k, j]


@njit(nogil=True, cache=True)
def clip_statistics(
    q, scale, offset, valid_e, fp, t_zm, g_near, g_far, params, frames, scalars
):  # pragma: no cover - compiled
    """Per-frame projections, ε and the corr_score of each candidate's clips.

    Parameters
    ----------
    q : (n, E, F, P) uint8 or float32
        Clips; the value is ``float32(q) * scale + offset`` (float32 arithmetic).
    scale, offset : (n,) float32
    valid_e : (n, E) bool
        Events that exist; the clips of the others are ignored.
    fp : (n, P) float
        Crop footprints (``P = cy · cx``); negative and non-finite weights count as 0.
    t_zm : (n, K) float64
        Trace weights of the trace-projected map (corr_score, surround).
    g_near, g_far : (2,) tuples of ``(cy, cy)`` and ``(cx, cx)`` float64
        Gaussian filters (as matrices) of the near and far neighbourhoods of the footprint.
    params : (8,) float64
        ``kappa, count_kappa, core_level, s_mask_level, q_tail, mad, n_iter, baseline_frames``.
    frames : (n, 6, K) float64, out
        Rows ``PROJ`` (⟨a, B_k⟩), ``EPS``, ``T_OUT`` (⟨surround, B_k⟩), ``SB`` (⟨s_c, B_k⟩),
        ``B1``/``B2`` (sum of ``B_k`` / ``B_k²`` over the support), with ``a`` the
        peak-normalised footprint and ``s_c`` its values centred on its support.
    scalars : (n, 5) float64, out
        corr_score, the surround map's norm, ``|a|``, ``|s_c|`` and the support's size.
    """
    n, n_e, n_f, n_p = q.shape
    n_k = n_e * n_f
    kappa, count_kappa, core_level, s_mask_level, q_tail, mad = params[0], params[1], params[2], params[3], params[4], params[5]
    n_iter = int(params[6])
    n_base = int(params[7])
    cy = g_near[0].shape[0]
    cx = g_near[1].shape[0]
    a = np.empty(n_p)
    s_c = np.empty(n_p)
    blur2d = np.empty((cy, cx))
    blur = blur2d.reshape(n_p)
    tmp_t = np.empty((cx, cy))
    used = np.empty(cx, np.bool_)
    near_mask = np.empty(n_p, np.bool_)
    far_mask = np.empty(n_p, np.bool_)
    B = np.empty((n_k, n_p), np.float32)
    base = np.empty(n_p, np.float32)
    q_hi = np.empty(n_p, q.dtype)
    q_lo = np.empty(n_p, q.dtype)
    pre = np.empty(n_p)
    sur = np.empty(n_p)
    sup_idx = np.empty(n_p, np.int64)
    ring_idx = np.empty(n_p, np.int64)
    Bs = np.empty((n_p, n_k), np.float32)  # support pixels' frames, frame-contiguous
    af = np.empty(n_p, np.float32)
    af2 = np.empty(n_p, np.float32)
    core = np.empty(n_p, np.bool_)
    x = np.zeros(n_k)
    x32 = np.zeros(n_k, np.float32)
    num = np.empty(n_k)
    den = np.empty(n_k)
    cnt = np.empty(n_k)
    step = max(1, (n_f * n_p) // 1024)
    per_event = (n_f * n_p + step - 1) // step
    res = np.empty(n_e * per_event, np.float32)
    buf = np.empty(n_e * per_event, np.float32)
    buf2 = np.empty(n_e * per_event, np.float32)
    counts = np.empty(N_BINS, np.int64)
    counts2 = np.empty(N_BINS, np.int64)
    med_ranks = np.empty(2, np.int64)
    med = np.empty(2, np.float32)
    two = np.float32(2.0)
    for c in range(n):
        for r in range(6):
            for k in range(n_k):
                frames[c, r, k] = 0.0
        for r in range(5):
            scalars[c, r] = 0.0
        ne = 0
        for e in range(n_e):
            ne += valid_e[c, e]
        # footprint: non-negative, peak-normalised; its support, norm and centred values
        peak = 0.0
        for p in range(n_p):
            v = np.float64(fp[c, p])
            v = v if (v > 0 and v < np.inf) else 0.0
            a[p] = v
            peak = v if v > peak else peak
        n_sup = 0
        a2 = 0.0
        s_sum = 0.0
        for p in range(n_p):
            if peak > 0:
                a[p] = a[p] / peak
            if a[p] > 0:
                sup_idx[n_sup] = p
                n_sup += 1
                s_sum += a[p]
            a2 += a[p] * a[p]
        if ne == 0 or n_sup == 0:  # no event or no footprint: every feature 0
            continue
        s_mean = s_sum / n_sup
        s_c2 = 0.0
        for p in range(n_p):
            s_c[p] = (a[p] - s_mean) if a[p] > 0 else 0.0
            s_c2 += s_c[p] * s_c[p]
        scalars[c, 2] = np.sqrt(a2)
        scalars[c, 3] = np.sqrt(s_c2)
        scalars[c, 4] = n_sup
        # neighbourhoods: the blurred footprint above 1 % of its peak
        _blur(a, sup_idx, n_sup, g_near[0], g_near[1], tmp_t, used, blur2d)
        mx = 0.0
        for p in range(n_p):
            mx = blur[p] if blur[p] > mx else mx
        for p in range(n_p):
            near_mask[p] = blur[p] > s_mask_level * mx
        _blur(a, sup_idx, n_sup, g_far[0], g_far[1], tmp_t, used, blur2d)
        mx = 0.0
        for p in range(n_p):
            mx = blur[p] if blur[p] > mx else mx
        for p in range(n_p):
            far_mask[p] = blur[p] > s_mask_level * mx
        sc = scale[c]
        off = offset[c]

        # dequantise; per-pixel baseline = mean over valid events of the first frames' mean.
        # max|B - baseline| comes from each pixel's extreme raw values (dequantising is monotone)
        first = True
        for e in range(n_e):
            if not valid_e[c, e]:
                continue
            if first:
                for p in range(n_p):
                    base[p] = 0.0
                    q_hi[p] = q[c, e, 0, p]
                    q_lo[p] = q[c, e, 0, p]
                first = False
            for f in range(n_f):
                k = e * n_f + f
                for p in range(n_p):
                    u = q[c, e, f, p]
                    B[k, p] = np.float32(u) * sc + off
                    h = q_hi[p]
                    q_hi[p] = u if u > h else h
                    lo_ = q_lo[p]
                    q_lo[p] = u if u < lo_ else lo_
            for p in range(n_p):  # np.mean of the first frames, in float32
                s32 = B[e * n_f, p]
                for f in range(1, n_base):
                    s32 += B[e * n_f + f, p]
                base[p] += s32 / np.float32(n_base)
        b_range = np.float32(0.0)  # the missing events' frames are 0
        for p in range(n_p):
            base[p] = np.float32(np.float64(base[p]) / ne)
            d_hi = abs((np.float32(q_hi[p]) * sc + off) - base[p])
            d_lo = abs((np.float32(q_lo[p]) * sc + off) - base[p])
            b_range = d_hi if d_hi > b_range else b_range
            b_range = d_lo if d_lo > b_range else b_range
        for e in range(n_e):
            for f in range(n_f):
                k = e * n_f + f
                if valid_e[c, e]:
                    for p in range(n_p):
                        B[k, p] = B[k, p] - base[p]
                else:
                    for p in range(n_p):
                        B[k, p] = 0.0

        # the support's frames, and the footprint-weighted sums over them
        for p in range(n_p):
            af[p] = np.float32(a[p])
            af2[p] = af[p] * af[p]
            core[p] = a[p] > core_level
        n_core = 0
        for i in range(n_sup):
            p = sup_idx[i]
            n_core += core[p]
            for k in range(n_k):
                Bs[i, k] = B[k, p]
        for i in range(n_sup):
            p = sup_idx[i]
            wa = np.float64(af[p])
            ws = s_c[p]
            for k in range(n_k):
                v = np.float64(Bs[i, k])
                frames[c, PROJ, k] += v * wa
                frames[c, SB, k] += v * ws
                frames[c, B1, k] += v
                frames[c, B2, k] += v * v

        # 47-50 ε: least-squares amplitude per frame, noise σ from the residuals' MAD,
        # n_iter one-sided Huber steps, then the share of core pixels far above the fit
        for k in range(n_k):
            x[k] = max(frames[c, PROJ, k] / (a2 if a2 > 0 else 1.0), 0.0)
            x32[k] = np.float32(x[k])
        m = 0
        for e in range(n_e):  # every step-th value of each valid event's (frame, pixel) residuals
            if not valid_e[c, e]:
                continue
            f = 0
            p = 0
            while f < n_f:
                k = e * n_f + f
                res[m] = abs(B[k, p] - x32[k] * af[p])
                m += 1
                p += step
                while p >= n_p:
                    p -= n_p
                    f += 1
        lo = res[0]
        hi = res[0]
        for i in range(1, m):
            lo = res[i] if res[i] < lo else lo
            hi = res[i] if res[i] > hi else hi
        med_ranks[0] = (m - 1) // 2
        med_ranks[1] = m // 2
        order_stats(res[:m], lo, hi, med_ranks, med, counts, counts2, buf, buf2)
        median = med[1] if m % 2 == 1 else (med[0] + med[1]) / two  # np.median of float32
        sigma_b = max(np.float64(median) / mad, np.float64(np.float32(1e-4) * b_range))
        kap = np.float32(kappa * sigma_b)
        for it in range(n_iter):
            for k in range(n_k):
                num[k] = 0.0
                den[k] = 0.0
            for i in range(n_sup):
                p = sup_idx[i]
                w = af[p]
                w2 = np.float64(af2[p])
                wd = np.float64(w)
                for k in range(n_k):
                    b = Bs[i, k]
                    inl = (b - x32[k] * w) <= kap
                    num[k] += np.float64(b if inl else kap) * wd
                    den[k] += w2 if inl else 0.0
            for k in range(n_k):
                x[k] = max(num[k] / den[k], 0.0) if den[k] > 0 else 0.0
                x32[k] = np.float32(x[k])
        kap2 = kap * np.float32(count_kappa / kappa)
        for k in range(n_k):
            cnt[k] = 0.0
        for i in range(n_sup):
            p = sup_idx[i]
            if not core[p]:
                continue
            w = af[p]
            for k in range(n_k):
                cnt[k] += (Bs[i, k] - x32[k] * w) > kap2
        for e in range(n_e):
            if not valid_e[c, e]:
                continue
            for f in range(n_f):
                k = e * n_f + f
                frac = cnt[k] / max(n_core, 1)
                frames[c, EPS, k] = min(max((frac - q_tail) / (1.0 - q_tail), 0.0), 1.0)

        # 51 corr_score: cosine of the footprint and the trace-projected map near it
        for p in range(n_p):
            pre[p] = 0.0
        for k in range(n_k):
            wt = np.float64(np.float32(t_zm[c, k]))
            if wt == 0:
                continue
            for p in range(n_p):
                pre[p] += wt * np.float64(B[k, p])
        ss = 0.0
        sa = 0.0
        for p in range(n_p):
            if near_mask[p]:
                ss += pre[p] * pre[p]
                sa += pre[p] * a[p]
        dnm = np.sqrt(ss) * np.sqrt(a2)
        scalars[c, 0] = sa / dnm if dnm > 0 else 0.0

        # 52-66 the surround: the positive map in the far neighbourhood outside the footprint
        smax = 0.0
        n_ring = 0
        for p in range(n_p):
            v = pre[p] if far_mask[p] else 0.0
            v = v if v > 0 else 0.0
            if a[p] > s_mask_level:
                v = 0.0
            sur[p] = v
            if v > 0:
                ring_idx[n_ring] = p
                n_ring += 1
            smax = v if v > smax else smax
        s2 = 0.0
        for i in range(n_ring):
            p = ring_idx[i]
            if smax > 0:
                sur[p] = sur[p] / smax
            s2 += sur[p] * sur[p]
        scalars[c, 1] = np.sqrt(s2)
        for i in range(n_ring):
            p = ring_idx[i]
            wr = sur[p]
            for k in range(n_k):
                frames[c, T_OUT, k] += np.float64(B[k, p]) * wr
