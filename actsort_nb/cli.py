"""The ``actsort-nb`` command line: headless steps around the notebook panel.

Each subcommand is one ``_add_<name>`` function that declares its arguments and
sets ``func``; heavy imports happen inside the handler so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import sys

from ._validation import InputError


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="say what an extraction output, movie or sort set holds")
    p.add_argument("path", help="file or folder (EXTRACT .mat, CaImAn .hdf5, Suite2p plane folder, NWB, movie, sort set)")
    p.add_argument("--trust", action="store_true", help="allow reading Suite2p's pickled stat.npy/ops.npy")

    def run(args) -> int:
        from .io import describe

        print(describe(args.path, trust=args.trust))
        return 0

    p.set_defaults(func=run)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export labels from a label log to CSV, HDF5, Suite2p, CaImAn or NWB")
    p.add_argument("log", help="label log written while sorting (SQLite file or postgresql:// URL)")
    p.add_argument("--format", required=True, choices=["csv", "hdf5", "suite2p", "caiman", "nwb"],
                   help="csv/hdf5: a labels file; suite2p: iscell.npy in a plane folder (original backed up); "
                   "caiman/nwb: a copy of the results file with the labels")
    p.add_argument("--target", required=True,
                   help="csv/hdf5: file to write; suite2p: plane folder; caiman/nwb: the original results file")
    p.add_argument("--out", help="caiman/nwb: the copy to write (default <name>.actsort.<ext> beside the original)")
    p.add_argument("--n", type=int, help="number of candidates (default: from the target or the log)")
    p.add_argument("--annotator", help="whose labels: a name, 'consensus', or (default) the last decision by anyone")
    p.add_argument("--p-cell", dest="p_cell", help=".npy file of the model's P(cell) per candidate (optional)")
    p.add_argument("--threshold", type=float, default=0.5, help="P(cell) at which the model calls a cell")
    p.add_argument("--plane-segmentation", dest="plane_segmentation",
                   help="nwb: name of the PlaneSegmentation when the file holds several")

    def run(args) -> int:
        from pathlib import Path

        import numpy as np

        from .store import export

        kw = {"n": args.n, "annotator": args.annotator, "threshold": args.threshold}
        if args.p_cell:
            if not Path(args.p_cell).is_file():
                raise InputError(f"--p-cell file {args.p_cell} does not exist; give a .npy file of P(cell).")
            try:
                kw["p_cell"] = np.load(args.p_cell, allow_pickle=False)
            except ValueError as exc:
                raise InputError(f"--p-cell file {args.p_cell} is not a plain .npy array ({exc}).") from exc
        if args.format in ("caiman", "nwb"):
            kw["out"] = args.out
        elif args.out:
            raise InputError(f"--out applies to the caiman and nwb formats only; for {args.format} use --target.")
        if args.format == "nwb":
            kw["plane_segmentation"] = args.plane_segmentation
        written = export(args.log, args.format, args.target, **kw)
        print(f"wrote {written.path}" + (f" (previous file backed up to {written.backup})" if written.backup else ""))
        return 0

    p.set_defaults(func=run)


def _add_preprocess(sub) -> None:
    p = sub.add_parser(
        "preprocess",
        help="stream a movie once and write the sort set (events, snapshots, summary images, features)",
        description="Stream a movie once and write the sort set. The pass saves its progress beside the output "
        "every minute; re-run the same command after an interruption to resume it.",
    )
    p.add_argument("movie", help="the motion-corrected movie (HDF5, TIFF, .npy) the candidates were extracted from")
    p.add_argument("extraction", help="extraction output (EXTRACT .mat, CaImAn .hdf5, Suite2p plane folder, NWB, regions.json)")
    p.add_argument("-o", "--output", required=True, help="sort set to write (HDF5, e.g. SORTSET.h5)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, help="spread the chunks over a local dask cluster of N worker processes")
    where.add_argument("--scheduler", default=None, help="address of a running dask.distributed scheduler (tcp://host:8786)")
    p.add_argument("--chunk-frames", type=int, default=None, help="frames per time chunk (default: ~32 MB per chunk)")
    p.add_argument("--no-features", action="store_true", help="skip the 76 features")
    p.add_argument("--trace-step", type=float, default=None, metavar="K",
                   help="store traces to K x their noise s.d. (default 0.5; 0: 1/65535 of their range, ~4x larger)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--trust", action="store_true", help="allow reading Suite2p's pickled stat.npy/ops.npy")
    p.add_argument("--movie-dataset", default=None, metavar="NAME", help="HDF5 movie: the dataset holding the movie")
    p.add_argument("--matlab-order", action="store_true", default=None,
                   help="HDF5 movie written by MATLAB as [H W T] (default: guessed from the file)")
    p.add_argument("--trace-order", choices=["TN", "NT"], default=None,
                   help="EXTRACT .mat: traces saved as [T N] (EXTRACT's) or [N T]")
    p.add_argument("--footprint-order", choices=["HWN", "NHW"], default=None,
                   help="EXTRACT .mat: footprints saved as [H W N] (EXTRACT's) or [N H W]")

    def run(args) -> int:
        import contextlib

        from .io import open_candidates
        from .preprocess import preprocess

        if args.workers is not None and args.workers < 1:
            raise InputError(f"--workers must be at least 1, got {args.workers}.")
        if args.scheduler is not None and ("://" not in args.scheduler or not args.scheduler.rsplit(":", 1)[-1].isdigit()):
            raise InputError(f"--scheduler must be a dask.distributed scheduler address such as tcp://host:8786, "
                             f"got {args.scheduler!r}.")
        movie_opts = {k: v for k, v in (("movie_dataset", args.movie_dataset), ("matlab_order", args.matlab_order),
                                        ("trace_order", args.trace_order), ("footprint_order", args.footprint_order))
                      if v is not None}
        candidates = open_candidates(args.extraction, movie=args.movie, trust=args.trust, **movie_opts)
        with contextlib.ExitStack() as stack:
            client = None
            if args.workers is not None or args.scheduler is not None:
                try:
                    from distributed import Client, LocalCluster
                except ImportError:
                    raise InputError("--workers/--scheduler need dask.distributed; install it with pip install 'actsort_nb[cluster]'.") from None
                if args.scheduler is not None:
                    try:
                        client = stack.enter_context(Client(args.scheduler, timeout="10s"))
                    except OSError as exc:
                        raise InputError(f"--scheduler {args.scheduler}: no dask.distributed scheduler answered "
                                         f"({str(exc).splitlines()[0]}); start one (dask scheduler) or check the address.") from None
                else:
                    cluster = stack.enter_context(
                        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
                    )
                    client = stack.enter_context(Client(cluster))
            ss = preprocess(
                candidates,
                out=args.output,
                client=client,
                chunk_frames=args.chunk_frames,
                progress=not args.quiet,
                features=not args.no_features,
                trace_step=args.trace_step,
            )
        print(
            f"wrote {args.output}: {ss.sizes['candidate']} candidates, {ss.sizes['time']} frames, "
            f"crop {ss.attrs['crop_size']} px"
        )
        return 0

    p.set_defaults(func=run)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="open JupyterLab on the quickstart (or --headless: run it here and print results)")
    p.add_argument("--headless", action="store_true", help="no browser: simulate, pre-process, sort with a simulated annotator")
    p.add_argument("--dir", default="actsort-demo", help="working folder (default ./actsort-demo)")
    p.add_argument("--port", type=int, default=None, help="JupyterLab port")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.add_argument("--labels", type=int, default=60, help="labels the simulated annotator gives (--headless; default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation, learner and annotator (default 0)")

    def run(args) -> int:
        from . import demo

        if args.headless:
            demo.run_headless(labels=args.labels, seed=args.seed, out_dir=args.dir)
            return 0
        return demo.launch_lab(args.dir, port=args.port, open_browser=not args.no_browser)

    p.set_defaults(func=run)


def _add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="run one of the repository's benchmarks/ scripts and print its table")
    p.add_argument("name", help="script name in benchmarks/ without .py (e.g. label_efficiency, query_latency)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script (e.g. --quick)")

    def run(args) -> int:
        import subprocess
        from pathlib import Path

        folder = Path(__file__).resolve().parents[1] / "benchmarks"
        names = sorted(q.stem for q in folder.glob("*.py")) if folder.is_dir() else []
        if args.name not in names:
            raise InputError(
                f"there is no benchmark {args.name!r} in {folder} (found: {', '.join(names) or 'none'}); "
                "give one of those names, from a clone of the repository."
            )
        return subprocess.call([sys.executable, str(folder / f"{args.name}.py"), *args.args])

    p.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``actsort-nb`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="actsort-nb", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


_SUBCOMMANDS = [_add_info]
_SUBCOMMANDS.append(_add_export)
_SUBCOMMANDS.append(_add_preprocess)
_SUBCOMMANDS.append(_add_demo)
_SUBCOMMANDS.append(_add_benchmark)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 with one sentence on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError) as exc:
        print(f"actsort-nb {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = ("; the pass's progress is saved beside the output: run the same command again to resume"
                  if args.command == "preprocess" else "")
        print(f"\nactsort-nb {args.command}: interrupted{resume}.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
