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


def build_parser() -> argparse.ArgumentParser:
    """Return the ``actsort-nb`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="actsort-nb", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


_SUBCOMMANDS = [_add_info]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 with one sentence on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError) as exc:
        print(f"actsort-nb {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
