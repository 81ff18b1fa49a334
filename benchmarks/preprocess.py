"""Benchmark the streaming pre-processing against one plain read of the same movie file.

For each movie length it

1. simulates ``--candidates`` candidates on a ``--size``² field of view and streams
   their uint16 movie to an HDF5 file (``actsort_nb.synthetic.write_movie``; the
   traces go to a second HDF5 file, so the measured process reads them lazily);
2. in a fresh process (so peak RSS is the pre-processing's own): reads the movie
   file once to warm the page cache, then times one plain sequential read of the
   file (``readinto`` a 16 MB buffer), one read through the lazy reader
   (``actsort_nb.io.open_movie``, block by block), and ``preprocess(out=...)`` as the CLI
   runs it (the streaming pass, writing the traces into the sort set meanwhile, then the
   rest of the write; features timed separately when the feature engine is installed);
   then ``--cold-repeats`` pairs of a cold plain read and a cold pass + write (with, in
   each pair, a direct-I/O read of the file too: the disk's own speed, since a plain
   read also pays the page cache's cost in system time, which the pass avoids);
3. reports wall time as a ratio to the plain read (cold: the median pair), frames/s, peak RSS, and the sort
   set's size as a fraction of the movie (with a per-variable breakdown); and the CPU time
   of the cold pass + write, spread perfectly over the cores, as a ratio to the cold read:
   the floor no overlap of reading and computing can go below (the disk's speed varies
   run to run on shared machines; the CPU time much less).

The warm columns read the movie file from the page cache; the cold ones after evicting
it (``posix_fadvise(DONTNEED)``, this file only). The plain read goes through the page
cache, as ``cat`` would; the pass reads movies of 1 GiB or more with direct I/O
(``actsort_nb.preprocess.stream.DIRECT_MIN_BYTES``), so its "warm" runs read such a
movie from the disk too.

Usage::

    python benchmarks/preprocess.py                # full: 512x512, 10,000 candidates, 4,096 and 8,192 frames (2.1 and 4.3 GB)
    python benchmarks/preprocess.py --quick        # small: 256x256, 2,500 candidates, 500 and 1,000 frames
    python benchmarks/preprocess.py --workdir /data/bench --keep   # reuse generated movies
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FULL = {"size": 512, "candidates": 10_000, "frames": [4096, 8192]}
QUICK = {"size": 256, "candidates": 2_500, "frames": [500, 1000]}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux


def generate(workdir: Path, size: int, n_candidates: int, n_frames: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``movie.h5`` (dataset ``mov``) and ``candidates.h5`` for one length (skipped if present)."""
    import h5py

    from actsort_nb.synthetic import simulate_candidates, write_movie

    movie = workdir / f"movie_{size}_{n_candidates}_{n_frames}.h5"
    cands = workdir / f"candidates_{size}_{n_candidates}_{n_frames}.h5"
    if movie.exists() and cands.exists():
        return movie, cands
    ds = simulate_candidates(n_candidates, (size, size), n_frames, seed=seed, movie="lazy", chunk_frames=64)
    tmp = cands.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        fp = ds.footprints.data
        f["coords"] = fp.coords.astype(np.int32)
        f["data"] = fp.data
        f.attrs["shape"] = fp.shape
        f.create_dataset("traces", data=ds.traces.values.astype(np.float32), chunks=(min(1024, n_candidates), n_frames))
        f["kind"] = ds.kind.values.astype("S")
        f.attrs["frame_rate"] = float(ds.attrs.get("frame_rate", 10.0))
    t0 = time.perf_counter()
    write_movie(ds, movie.with_suffix(".tmp.h5"), format="h5")
    os.replace(movie.with_suffix(".tmp.h5"), movie)
    os.replace(tmp, cands)
    print(f"  generated {movie.name} ({movie.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s", flush=True)
    return movie, cands


def _evict(*paths: Path) -> None:
    """Drop these files' pages from the page cache (``posix_fadvise``; no root needed, other files untouched)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _plain_read(path: Path) -> float:
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(view):
            pass
    return time.perf_counter() - t0


def _direct_read(path: Path, block: int = 32 << 20, in_flight: int = 4) -> float | None:
    """Read the file with direct I/O (no page cache), ``in_flight`` blocks at a time: the disk's own speed.

    None where the file system has no direct I/O.
    """
    import mmap
    import threading
    from concurrent.futures import ThreadPoolExecutor

    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except (AttributeError, OSError):
        return None
    local = threading.local()

    def read(off: int) -> int:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = mmap.mmap(-1, block)  # page-aligned
        return os.preadv(fd, [buf], off)

    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(read, range(0, path.stat().st_size, block)))
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def measure(movie_path: Path, cands_path: Path, out: Path, workers: int, chunk_frames: int | None,
            cold_repeats: int = 3) -> dict:
    """Time the reads and the pre-processing in this (fresh) process."""
    import dask.array as da
    import h5py
    import sparse
    import xarray as xr

    from actsort_nb import candidate_set
    from actsort_nb.io import open_movie
    from actsort_nb.preprocess import add_features, preprocess

    movie_bytes = movie_path.stat().st_size
    _plain_read(movie_path)  # warm the page cache so both timings see the same state
    t_read = min(_plain_read(movie_path) for _ in range(2))

    mov = open_movie(movie_path, dataset="mov")
    mov[:1].compute(scheduler="synchronous")  # dask's one-time warm-up, not reading
    t0 = time.perf_counter()
    for i in range(len(mov.chunks[0])):
        mov.blocks[i].compute(scheduler="synchronous")
    t_reader = time.perf_counter() - t0

    f = h5py.File(cands_path, "r")
    fp = sparse.COO(f["coords"][...].astype(np.int64), f["data"][...], shape=tuple(f.attrs["shape"]))
    n, n_t = f["traces"].shape
    traces = da.from_array(f["traces"], chunks=(min(1024, n), n_t), lock=True)
    stub = candidate_set(fp, np.zeros((n, 1), np.float32), frame_rate=float(f.attrs["frame_rate"]))
    ds = xr.Dataset(
        {
            "footprints": stub.footprints,
            "traces": (("candidate", "time"), traces),
            "movie": (("time", "y", "x"), mov),
            "kind": (("candidate",), f["kind"][...].astype(str)),
        },
        coords={"candidate": stub.candidate},
        attrs=stub.attrs,
    )
    def cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    cpu = {}

    def run_pass(dest: Path):
        # as the CLI runs it: the traces are written into the sort set while the pass runs, the
        # rest after it; "pass" is up to the quantised clips, "write" what follows
        c0 = cpu_s()
        t0 = time.perf_counter()
        ss = preprocess(ds, out=dest, workers=workers, chunk_frames=chunk_frames, progress=False, features=False)
        total = time.perf_counter() - t0
        cpu[dest.name] = cpu_s() - c0  # this process's CPU time (the kernel's reads on its behalf included)
        t_pass = sum(float(ss.attrs[f"seconds_{k}"]) for k in ("events", "stream", "quantise"))
        return ss, t_pass, total - t_pass

    rss0 = _peak_rss_mb()
    ss, t_pass, t_write = run_pass(out)
    rss_pass = _peak_rss_mb()
    t_feat = None
    try:
        t0 = time.perf_counter()
        add_features(ss)
        t_feat = time.perf_counter() - t0
    except ImportError as exc:
        print(f"  (features skipped: {exc})", flush=True)
    rss_all = _peak_rss_mb()
    # The same from disk, in pairs: a plain read of the movie, then the pass + write, each after
    # evicting the movie (and the traces) from the page cache; the disk's speed drifts, so each
    # pass is compared with the read just before it, and the median pair is reported.
    pairs = []
    dest = out.with_name(out.stem + "_cold.h5")
    for _ in range(max(1, cold_repeats)):
        _evict(movie_path)
        t_r = _plain_read(movie_path)
        t_d = _direct_read(movie_path)
        _evict(movie_path, cands_path)
        cold, t_p, t_w = run_pass(dest)
        pairs.append({"read": t_r, "direct": t_d, "pass": t_p, "write": t_w, "cpu": cpu[dest.name],
                      "stream": float(cold.attrs["seconds_stream"]), "ratio": (t_p + t_w) / t_r,
                      "ratio_direct": None if t_d is None else (t_p + t_w) / t_d})
        dest.unlink()
    median = sorted(pairs, key=lambda q: q["ratio"])[len(pairs) // 2]
    t_read_cold, t_pass_cold, t_write_cold = median["read"], median["pass"], median["write"]
    cpu_warm, cpu_cold = cpu[out.name], median["cpu"]
    size = out.stat().st_size
    from actsort_nb.preprocess import open_sortset

    back = open_sortset(out)
    picks = np.random.default_rng(0).choice(n, min(50, n), replace=False)
    _ = back.snapshots.isel(candidate=int(picks[0])).values
    t0 = time.perf_counter()
    for i in picks:
        _ = back.snapshots.isel(candidate=int(i)).values
    t_one = (time.perf_counter() - t0) / len(picks)
    breakdown = {}
    with h5py.File(out, "r") as g:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                top = name.split("/")[1] if name.startswith("vars/") else name
                breakdown[top] = breakdown.get(top, 0) + obj.id.get_storage_size()
        g.visititems(visit)
    return {
        "frames": int(n_t),
        "candidates": int(n),
        "fov": list(ss.actsort.fov_shape),
        "crop_size": int(ss.attrs["crop_size"]),
        "chunk_frames": int(chunk_frames or mov.chunks[0][0]),
        "workers": workers,
        "movie_bytes": int(movie_bytes),
        "plain_read_s": t_read,
        "cold_read_s": t_read_cold,
        "cold_pass_s": t_pass_cold,
        "cold_write_s": t_write_cold,
        "cold_stream_s": median["stream"],
        "ratio_cold_pass_write": median["ratio"],
        "cold_ratios": [q["ratio"] for q in pairs],
        "cold_reads_s": [q["read"] for q in pairs],
        # the same pairs against a direct-I/O read of the file (4 blocks in flight): the disk itself,
        # without the page cache's cost (which a plain read pays in system time); it runs right after
        # the plain read, so a cache below this machine (a VM host's) may serve it faster: strict
        "cold_direct_reads_s": [q["direct"] for q in pairs],
        "cold_ratios_vs_direct_read": [q["ratio_direct"] for q in pairs],
        "ratio_cold_vs_direct_read": median["ratio_direct"],  # the median pair's
        "ratio_cold_total": (t_pass_cold + t_write_cold + (t_feat or 0.0)) / t_read_cold,
        "cpu_pass_write_s": cpu_warm,
        "cold_cpu_pass_write_s": cpu_cold,
        # CPU time spread perfectly over the cores, against the cold read: what no scheduling can beat
        "ratio_cold_cpu_floor": cpu_cold / max(1, os.cpu_count() or 1) / t_read_cold,
        "reader_read_s": t_reader,
        "pass_s": t_pass,
        "write_s": t_write,
        "features_s": t_feat,
        "events_s": ss.attrs["seconds_events"],
        "stream_s": ss.attrs["seconds_stream"],
        "quantise_s": ss.attrs["seconds_quantise"],
        "ratio_stream": ss.attrs["seconds_stream"] / t_read,
        "ratio_pass": t_pass / t_read,
        "ratio_pass_write": (t_pass + t_write) / t_read,
        "ratio_vs_reader": (t_pass + t_write) / t_reader,
        "frames_per_s": n_t / (t_pass + t_write),
        "rss_before_mb": rss0,
        "peak_rss_pass_mb": rss_pass,
        "peak_rss_with_features_mb": rss_all,
        "one_candidate_snapshots_ms": 1000 * t_one,
        "sortset_bytes": int(size),
        "sortset_fraction": size / movie_bytes,
        "sortset_breakdown_fraction": {k: v / movie_bytes for k, v in sorted(breakdown.items(), key=lambda kv: -kv[1])},
    }


def _table(rows: list[dict]) -> str:
    head = (
        "| frames | movie GB | candidates | crop | warm read s | pass s | write s | features s | "
        "pass/warm read | (pass+write)/warm read | cold read s | cold pass+write s | (pass+write)/cold read | "
        "(pass+write)/cold direct-I/O read | (pass+write+features)/cold read | frames/s | peak RSS MB | "
        "peak RSS with features MB | sort set / movie |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        feat = r["features_s"]
        lines.append(
            f"| {r['frames']} | {r['movie_bytes'] / 1e9:.2f} | {r['candidates']} | {r['crop_size']} | "
            f"{r['plain_read_s']:.2f} | {r['pass_s']:.2f} | {r['write_s']:.2f} | "
            f"{'-' if feat is None else format(feat, '.1f')} | "
            f"{r['ratio_pass']:.2f} | {r['ratio_pass_write']:.2f} | {r['cold_read_s']:.2f} | "
            f"{r['cold_pass_s'] + r['cold_write_s']:.2f} | {r['ratio_cold_pass_write']:.2f} | "
            f"{'-' if r['ratio_cold_vs_direct_read'] is None else format(r['ratio_cold_vs_direct_read'], '.2f')} | "
            f"{r['ratio_cold_total']:.2f} | "
            f"{r['frames_per_s']:.0f} | {r['peak_rss_pass_mb']:.0f} | {r['peak_rss_with_features_mb']:.0f} | "
            f"{100 * r['sortset_fraction']:.1f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small movie (256x256, 2,500 candidates, 500/1,000 frames)")
    p.add_argument("--workdir", type=Path, default=None, help="where movies and sort sets go (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep generated files")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--candidates", type=int, default=None)
    p.add_argument("--frames", type=int, nargs="+", default=None, help="movie lengths (peak RSS must be flat across them)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk-frames", type=int, default=None)
    p.add_argument("--cold-repeats", type=int, default=3, help="cold (read, pass + write) pairs; the median pair is reported")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--_measure", nargs=3, metavar=("MOVIE", "CANDS", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._measure:
        movie, cands, out = (Path(a) for a in args._measure)
        print("RESULT " + json.dumps(measure(movie, cands, out, args.workers, args.chunk_frames, args.cold_repeats)), flush=True)
        return 0

    cfg = dict(QUICK if args.quick else FULL)
    for key in ("size", "candidates", "frames"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="actsort_bench_")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n_frames in cfg["frames"]:
            print(f"{cfg['size']}x{cfg['size']}, {cfg['candidates']} candidates, {n_frames} frames:", flush=True)
            movie, cands = generate(workdir, cfg["size"], cfg["candidates"], n_frames)
            out = workdir / f"sortset_{n_frames}.h5"
            cmd = [sys.executable, __file__, "--_measure", str(movie), str(cands), str(out), "--workers", str(args.workers),
                   "--cold-repeats", str(args.cold_repeats)]
            if args.chunk_frames:
                cmd += ["--chunk-frames", str(args.chunk_frames)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return proc.returncode
            line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")][-1]
            rows.append(json.loads(line[len("RESULT ") :]))
            r = rows[-1]
            print(
                f"  plain read {r['plain_read_s']:.2f} s, reader {r['reader_read_s']:.2f} s, pass {r['pass_s']:.2f} s "
                f"(events {r['events_s']:.2f}, stream {r['stream_s']:.2f}, quantise {r['quantise_s']:.2f}), "
                f"write {r['write_s']:.2f} s -> pass {r['ratio_pass']:.2f}x, pass+write {r['ratio_pass_write']:.2f}x warm read; "
                f"cold read {r['cold_read_s']:.2f} s, cold pass {r['cold_pass_s']:.2f} s (stream {r['cold_stream_s']:.2f}) "
                f"+ write {r['cold_write_s']:.2f} s -> {r['ratio_cold_pass_write']:.2f}x cold read "
                f"(median of {len(r['cold_ratios'])} pairs: {', '.join(f'{x:.2f}' for x in r['cold_ratios'])}; "
                f"their reads {', '.join(f'{x:.2f}' for x in r['cold_reads_s'])} s; against a direct-I/O read of "
                f"{', '.join(f'{x:.2f}' for x in r['cold_direct_reads_s'] if x)} s: "
                f"{', '.join(f'{x:.2f}' for x in r['cold_ratios_vs_direct_read'] if x)}) "
                f"({r['ratio_cold_total']:.2f}x with features; CPU {r['cold_cpu_pass_write_s']:.1f} s, "
                f"{r['ratio_cold_cpu_floor']:.2f}x if spread perfectly over the cores), "
                f"{r['frames_per_s']:.0f} frames/s, features {r['features_s'] or float('nan'):.1f} s, "
                f"peak RSS {r['peak_rss_pass_mb']:.0f} MB ({r['peak_rss_with_features_mb']:.0f} MB with features), sort set {100 * r['sortset_fraction']:.1f} % of the movie, "
                f"one candidate's snapshots reopened in {r['one_candidate_snapshots_ms']:.1f} ms",
                flush=True,
            )
            if not args.keep:
                for path in (movie, cands, out):
                    path.unlink(missing_ok=True)
    finally:
        if tmp is not None and not args.keep:
            tmp.cleanup()
    print()
    print(_table(rows))
    print()
    for r in rows:
        parts = ", ".join(f"{k} {100 * v:.2f} %" for k, v in r["sortset_breakdown_fraction"].items() if v > 0.0005)
        print(f"sort set breakdown ({r['frames']} frames): {parts}")
    if len(rows) >= 2:
        for key, what in (("peak_rss_pass_mb", "pass + write"), ("peak_rss_with_features_mb", "with features")):
            rss = [r[key] for r in rows]
            print(f"peak RSS ({what}) across lengths {[r['frames'] for r in rows]}: {[round(x) for x in rss]} MB "
                  f"(growth {100 * (max(rss) / min(rss) - 1):.0f} %)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
