"""Command line of the data tools: `python -m data_tools <tool> ...` (also `isgd data <tool>`)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from engine.errors import EngineError

TOOLS = {
    "fetch": ("data_tools.fetch", "locate/download the originals and verify checksums"),
    "convert_mnist_data": ("data_tools.convert_mnist", "MNIST IDX pair -> LMDB"),
    "convert_cifar_data": ("data_tools.convert_cifar", "CIFAR-10 batches -> train/test LMDBs"),
    "convert_imageset": ("data_tools.convert_imageset", "image folder + list file -> LMDB"),
    "compute_image_mean": ("data_tools.image_mean", "LMDB -> mean .binaryproto"),
    "make_controlled": ("data_tools.controlled", "Fig. 1 single-class and i.i.d. LMDBs"),
    "prepare": ("data_tools.prepare", "build every default database (make data)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools", description=__doc__)
    sub = parser.add_subparsers(dest="tool", required=True, metavar="tool")
    for name, (module, help_text) in TOOLS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=mod.__doc__)
        mod.add_arguments(p)
        p.set_defaults(run=mod.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one tool; bad input exits with status 1 and a one-line error naming the file."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (EngineError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\n{args.tool}: interrupted; the output being written was discarded (finished "
            "outputs are kept; run the same command again to continue)",
            file=sys.stderr,
        )
        return 130
