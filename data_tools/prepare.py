"""prepare: build every default database the prototxt/ nets read (what `make data` runs).

data/mnist/mnist_{train,test}_lmdb, data/cifar10/cifar10_{train,test}_lmdb,
data/cifar10/mean.binaryproto and the Fig. 1 controlled sets; existing outputs are kept unless
--overwrite. Training sets are in FCPR order from --seed; test sets keep file order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_tools.controlled import make_controlled
from data_tools.convert_cifar import convert_cifar
from data_tools.convert_mnist import convert_mnist
from data_tools.fcpr import DEFAULT_SEED
from data_tools.image_mean import compute_mean, write_mean
from data_tools.prepare_record import RECORD, check_seed, write_record
from data_tools.sources import CIFAR_FILES, ENV_VAR, locate_cifar10, locate_mnist, raw_dir
from engine.errors import DataError, EngineError
from engine.lmdb_reader import LmdbReader

DATASETS = ("mnist", "cifar10", "controlled")
# The outputs in FCPR order of --seed (the others keep the originals' order, or are derived).
ORDERED = (
    "mnist_train_lmdb",
    "cifar10_train_lmdb",
    "cifar10_single_class_lmdb",
    "cifar10_iid_lmdb",
)
# Records in the original distributions (their files are md5-checked, so these never vary).
KNOWN_RECORDS = {
    "mnist_train_lmdb": 60000,
    "mnist_test_lmdb": 10000,
    "cifar10_train_lmdb": 50000,
    "cifar10_test_lmdb": 10000,
}


def check_known_lmdb(path: Path) -> None:
    """Refuse an existing LMDB of a known dataset whose record count is not the original's (a
    conversion cut short by hand, or another database put in its place)."""
    expected = KNOWN_RECORDS.get(path.name)
    if expected is None or not path.is_dir():
        return
    try:
        reader = LmdbReader(path)
        held = len(reader)
        reader.close()
    except EngineError as exc:
        raise DataError(f"{path}: unreadable ({exc}); delete it and run `make data`") from None
    if held != expected:
        raise DataError(
            f"{path} holds {held} records, the original dataset has {expected}: it is not "
            "this dataset's full conversion. Delete it (or pass --overwrite) and run `make "
            "data` again."
        )


def prepare(
    raw: str | None = None,
    out: str = "data",
    only: tuple[str, ...] = DATASETS,
    seed: int = DEFAULT_SEED,
    download: bool = False,
    verify: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Build the requested datasets under `out`; the paths written (existing ones are skipped,
    once their recorded FCPR seed is `seed`: another seed is refused, see prepare_record). Each
    folder's prepare.json records the seed and the originals' SHA-256."""
    base, root = raw_dir(raw), Path(out)
    written: list[Path] = []

    def todo(*paths: Path) -> bool:
        if overwrite:
            return True
        for p in paths:
            if verify:  # unverified originals may be any size (generated test data)
                check_known_lmdb(p)
        if not all(p.exists() for p in paths):
            return True
        note = check_seed(list(paths), seed, ORDERED)
        if note and progress:
            print(note, file=sys.stderr)
        return False

    if "mnist" in only:
        d = root / "mnist"
        train, test = d / "mnist_train_lmdb", d / "mnist_test_lmdb"
        if todo(train, test):
            f = locate_mnist(base, verify, download)
            convert_mnist(f["train_images"], f["train_labels"], train, True, seed, True, progress)
            convert_mnist(f["test_images"], f["test_labels"], test, False, seed, True, progress)
            write_record([train, test], seed, list(f.values()), ORDERED)
            written += [train, test]
    if "cifar10" in only or "controlled" in only:
        d = root / "cifar10"
        train, test, mean = (
            d / "cifar10_train_lmdb",
            d / "cifar10_test_lmdb",
            d / "mean.binaryproto",
        )
        single, iid = d / "cifar10_single_class_lmdb", d / "cifar10_iid_lmdb"
        need_cifar = "cifar10" in only and todo(train, test, mean)
        need_ctrl = "controlled" in only and todo(single, iid)
        folder = locate_cifar10(base, verify, download) if need_cifar or need_ctrl else None
        if need_cifar:
            convert_cifar(folder, d, True, seed, True, progress)
            write_mean(compute_mean(train, progress), mean)
            write_record([train, test, mean], seed, _cifar_originals(folder), ORDERED)
            written += [train, test, mean]
        if need_ctrl:
            made = list(make_controlled(folder, d, seed=seed, overwrite=True, progress=progress))
            write_record(made, seed, _cifar_originals(folder), ORDERED)
            written += made
    return written


def _cifar_originals(folder: Path | None) -> list[Path]:
    assert folder is not None
    return [folder / spec.name for spec in CIFAR_FILES.values()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raw-dir", help=f"original files (default ${ENV_VAR}, else data/raw)")
    p.add_argument("--out", default="data", help="output root (default data)")
    p.add_argument("--only", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="FCPR permutation seed")
    p.add_argument("--download", action="store_true", help="fetch missing originals")
    p.add_argument("--no-verify", action="store_true", help="skip md5 checks")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"rebuild existing outputs (needed to change the seed of outputs whose {RECORD} "
        "records another; make data DATA_ARGS=--overwrite)",
    )
    p.add_argument("--quiet", action="store_true")


def main(args: argparse.Namespace) -> int:
    paths = prepare(
        args.raw_dir,
        args.out,
        tuple(args.only),
        args.seed,
        args.download,
        not args.no_verify,
        args.overwrite,
        not args.quiet,
    )
    print("\n".join(f"wrote {p}" for p in paths) or "all outputs already exist")
    return 0
