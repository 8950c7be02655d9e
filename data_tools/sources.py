"""Locate (or download) the original MNIST and CIFAR-10 files and verify their checksums.

The raw-data directory comes from a flag, else $ISGD_DATA_DIR, else `data/raw`. Accepted layouts:
`<dir>/mnist/*.gz` (or the gunzipped IDX files) and `<dir>/cifar10/cifar-10-batches-bin/*.bin`
(or `<dir>/cifar10/cifar-10-binary.tar.gz`, extracted on demand).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from engine.errors import DataError

ENV_VAR = "ISGD_DATA_DIR"
DEFAULT_RAW_DIR = "data/raw"


@dataclass(frozen=True)
class RawFile:
    """One original distribution file: name, md5 of the file and (for .gz) of its content."""

    name: str
    md5: str
    content_md5: str | None = None  # md5 of the gunzipped content, for .gz files


MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_FILES = {
    "train_images": RawFile(
        "train-images-idx3-ubyte.gz",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "6bbc9ace898e44ae57da46a324031adb",
    ),
    "train_labels": RawFile(
        "train-labels-idx1-ubyte.gz",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "a25bea736e30d166cdddb491f175f624",
    ),
    "test_images": RawFile(
        "t10k-images-idx3-ubyte.gz",
        "9fb629c4189551a2d022fa330f9573f3",
        "2646ac647ad5339dbf082846283269ea",
    ),
    "test_labels": RawFile(
        "t10k-labels-idx1-ubyte.gz",
        "ec29112dd5afa0611ce80d1b7f02629c",
        "27ae3e4e09519cfbb04c329615203637",
    ),
}

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR_TAR = RawFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")
CIFAR_BATCH_DIR = "cifar-10-batches-bin"
CIFAR_FILES = {
    "data_batch_1": RawFile("data_batch_1.bin", "5dd7e06a14cb22eb9f671a540d1b7c25"),
    "data_batch_2": RawFile("data_batch_2.bin", "5ea93a67294ea407fff1d09f752e9692"),
    "data_batch_3": RawFile("data_batch_3.bin", "942cd6a4bcdd0dd3c604fbe906cb4421"),
    "data_batch_4": RawFile("data_batch_4.bin", "ae636b3ba5c66a11e91e8cb52e771fcb"),
    "data_batch_5": RawFile("data_batch_5.bin", "53f37980c15c3d472c316c40844f3f0d"),
    "test_batch": RawFile("test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d"),
}


def raw_dir(flag: str | os.PathLike | None = None) -> Path:
    """The raw-data directory: the flag if given, else $ISGD_DATA_DIR, else data/raw."""
    return Path(flag or os.environ.get(ENV_VAR) or DEFAULT_RAW_DIR)


def md5sum(path: Path, chunk: int = 1 << 22) -> str:
    """Hex md5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected: RawFile | str, what: str | None = None) -> None:
    """Raise DataError naming `path` unless its md5 matches (a .gz may match by content md5)."""
    want = {expected} if isinstance(expected, str) else {expected.md5}
    if isinstance(expected, RawFile) and expected.content_md5 and path.suffix != ".gz":
        want = {expected.content_md5}
    got = md5sum(path)
    if got not in want:
        raise DataError(
            f"{path}: wrong checksum (md5 {got}, expected {' or '.join(sorted(want))}); "
            f"the file is corrupt or not the original {what or path.name}: delete it and "
            "fetch it again"
        )


# What a user types to fetch missing originals: most come through `make data`.
DOWNLOAD_HINT = "run `make data DATA_ARGS=--download` (or add --download to `python -m data_tools`)"


def _candidates(base: Path, sub: str, name: str) -> list[Path]:
    plain = name[:-3] if name.endswith(".gz") else None
    out = []
    for d in (base / sub, base):
        out.append(d / name)
        if plain:
            out.append(d / plain)
    return out


def locate_mnist(base: Path, check: bool = True, download: bool = False) -> dict[str, Path]:
    """Paths of the four MNIST files under `base` (see module doc), md5-verified when `check`."""
    found: dict[str, Path] = {}
    missing = []
    for key, spec in MNIST_FILES.items():
        path = next((p for p in _candidates(base, "mnist", spec.name) if p.is_file()), None)
        if path is None and download:
            path = _download([u + spec.name for u in MNIST_URLS], base / "mnist" / spec.name)
        if path is None:
            missing.append(spec.name)
            continue
        if check:
            verify(path, spec, f"MNIST {spec.name}")
        found[key] = path
    if missing:
        raise DataError(
            f"MNIST files not found under {base}: missing {', '.join(missing)}. Put the four "
            f"original .gz files from http://yann.lecun.com/exdb/mnist/ in {base / 'mnist'}/ "
            f"(or set ${ENV_VAR} / --raw-dir to the directory holding mnist/), or, when online, "
            f"{DOWNLOAD_HINT}."
        )
    return found


def locate_cifar10(base: Path, check: bool = True, download: bool = False) -> Path:
    """The folder holding CIFAR-10's binary batches under `base`, md5-verified when `check`.

    A `cifar-10-binary.tar.gz` in `<base>/cifar10/` (or `<base>`) is verified and extracted.
    """
    folders = [base / "cifar10" / CIFAR_BATCH_DIR, base / CIFAR_BATCH_DIR, base / "cifar10", base]
    names = [spec.name for spec in CIFAR_FILES.values()]
    folder = next((d for d in folders if all((d / n).is_file() for n in names)), None)
    if folder is None:
        tar = next(
            (p for p in (base / "cifar10" / CIFAR_TAR.name, base / CIFAR_TAR.name) if p.is_file()),
            None,
        )
        if tar is None and download:
            tar = _download([CIFAR_URL], base / "cifar10" / CIFAR_TAR.name)
        if tar is None:
            raise DataError(
                f"CIFAR-10 binary batches not found under {base}: put data_batch_1..5.bin and "
                f"test_batch.bin in {base / 'cifar10' / CIFAR_BATCH_DIR}/, or "
                f"{CIFAR_TAR.name} (from {CIFAR_URL}) in {base / 'cifar10'}/ (or set "
                f"${ENV_VAR} / --raw-dir), or, when online, {DOWNLOAD_HINT}."
            )
        if check:
            verify(tar, CIFAR_TAR, "CIFAR-10 binary archive")
        folder = _extract(tar, tar.parent)
    if check:
        for spec in CIFAR_FILES.values():
            verify(folder / spec.name, spec, f"CIFAR-10 {spec.name}")
    return folder


def _extract(tar_path: Path, dest: Path) -> Path:
    """Extract the CIFAR-10 archive's batch files into dest/cifar-10-batches-bin (atomically)."""
    tmp = dest / (CIFAR_BATCH_DIR + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(tar_path, "r:gz") as tf:
            for member in tf.getmembers():
                name = Path(member.name).name
                if member.isfile() and name.endswith((".bin", ".txt", ".html")):
                    src = tf.extractfile(member)
                    with open(tmp / name, "wb") as out:
                        shutil.copyfileobj(src, out)
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{tar_path}: cannot extract ({exc})") from exc
    final = dest / CIFAR_BATCH_DIR
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def _download(urls: list[str], dest: Path) -> Path | None:
    """Fetch the first reachable URL to dest (via a .part file); None when offline."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for url in urls:
        try:
            print(f"downloading {url} -> {dest}", file=sys.stderr)
            with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as exc:
            print(f"  failed: {exc}", file=sys.stderr)
            part.unlink(missing_ok=True)
            continue
        part.rename(dest)
        return dest
    return None
