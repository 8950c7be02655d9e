"""fetch: locate (or download with --download) the originals and verify their md5 checksums."""

from __future__ import annotations

import argparse

from data_tools.sources import ENV_VAR, locate_cifar10, locate_mnist, raw_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raw-dir", help=f"original files (default ${ENV_VAR}, else data/raw)")
    p.add_argument("--only", nargs="+", choices=["mnist", "cifar10"], default=["mnist", "cifar10"])
    p.add_argument("--download", action="store_true", help="fetch missing files when online")


def main(args: argparse.Namespace) -> int:
    base = raw_dir(args.raw_dir)
    if "mnist" in args.only:
        for path in locate_mnist(base, True, args.download).values():
            print(f"ok {path}")
    if "cifar10" in args.only:
        print(f"ok {locate_cifar10(base, True, args.download)}")
    return 0
