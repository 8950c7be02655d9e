"""convert_imageset: an image folder plus a "relative/path label" list file -> LMDB of Datum.

Caffe's tool, with its flags (--gray, --resize_width/height, --check_size, --encoded,
--encode_type); keys are "%08d_<filename>" in write order, which is FCPR order from --seed
unless --no-shuffle. Raw records hold BGR planes (as OpenCV decodes); --encoded without
resizing stores the original file bytes. Resizing uses Pillow's bilinear filter, which is not
bit-identical to OpenCV's cv::resize. Needs Pillow.
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import numpy as np

from data_tools.convert_mnist import add_order_arguments, order_options
from data_tools.fcpr import DEFAULT_SEED, fcpr_order
from data_tools.lmdb_io import LmdbWriter
from engine.datum import encoded_datum, make_datum, parse_datum
from engine.errors import DataError

_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP"}


def read_list(list_file: str | os.PathLike) -> list[tuple[str, int]]:
    """(filename, label) pairs of a list file; the label follows the line's last space."""
    path = Path(list_file)
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        name, _, label = line.rpartition(" ")
        try:
            out.append((name.strip(), int(label)))
        except ValueError:
            raise DataError(
                f"{path}:{n}: expected '<file> <integer label>', got {line!r}"
            ) from None
        if not name.strip():
            raise DataError(f"{path}:{n}: expected '<file> <integer label>', got {line!r}")
    return out


def _pil():
    try:
        from PIL import Image  # optional dependency
    except ImportError as exc:
        raise DataError("convert_imageset needs Pillow to read images: pip install pillow") from exc
    return Image


def image_record(
    path: Path, label: int, color: bool, height: int, width: int, encode_type: str | None
) -> bytes:
    """One serialized Datum for an image file, as Caffe's ReadImageToDatum builds it.

    encode_type None: raw BGR/gray planes; "" : encoded, format guessed from the extension.
    """
    image_mod = _pil()
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        img = image_mod.open(path)
        img.load()
    except Exception as exc:  # Pillow raises many types for bad images
        raise DataError(f"{path}: cannot read image ({exc})") from exc
    native_color = img.mode not in ("L", "1", "I", "I;16", "F")
    img = img.convert("RGB" if color else "L")
    resize = height > 0 and width > 0
    if resize:
        img = img.resize((width, height), image_mod.Resampling.BILINEAR)
    if encode_type is not None:
        ext = path.suffix.lower().lstrip(".")
        fmt = encode_type.lower() or ext
        if fmt not in _FORMATS:
            raise DataError(f"{path}: cannot encode as {fmt!r} (use jpg, png or bmp)")
        if not resize and native_color == color and _FORMATS.get(ext) == _FORMATS[fmt]:
            return encoded_datum(path.read_bytes(), label).SerializeToString()
        buf = io.BytesIO()
        img.save(buf, _FORMATS[fmt])
        return encoded_datum(buf.getvalue(), label).SerializeToString()
    arr = np.asarray(img)
    chw = arr[:, :, ::-1].transpose(2, 0, 1) if color else arr[None]
    return make_datum(chw, label).SerializeToString()


def convert_imageset(
    root: str | os.PathLike,
    list_file: str | os.PathLike,
    db_path: str | os.PathLike,
    gray: bool = False,
    shuffle: bool = True,
    seed: int = DEFAULT_SEED,
    resize_height: int = 0,
    resize_width: int = 0,
    check_size: bool = False,
    encoded: bool = False,
    encode_type: str = "",
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Write the listed images (root + filename) as Datums in FCPR order; the number written."""

    lines = read_list(list_file)
    if not lines:
        raise DataError(f"{list_file}: list file names no images")
    order = fcpr_order(len(lines), seed, shuffle)
    size = None
    with LmdbWriter(db_path, total=len(lines), overwrite=overwrite, progress=progress) as db:
        for i, k in enumerate(order):
            name, label = lines[k]
            path = Path(root) / name
            value = image_record(
                path, label, not gray, resize_height, resize_width, encode_type if encoded else None
            )
            if check_size and not encoded:
                d = parse_datum(value)
                shape = (d.channels, d.height, d.width)
                if size is not None and shape != size:
                    raise DataError(f"{path}: image size {shape} differs from earlier {size}")
                size = shape
            db.put(f"{i:08d}_{name}".encode(), value)
    return len(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root_folder")
    p.add_argument("list_file")
    p.add_argument("db_name")
    p.add_argument("--gray", action="store_true", help="treat images as grayscale")
    p.add_argument("--shuffle", action="store_true", help="accepted for Caffe compatibility")
    p.add_argument("--resize_width", type=int, default=0)
    p.add_argument("--resize_height", type=int, default=0)
    p.add_argument("--check_size", action="store_true")
    p.add_argument("--encoded", action="store_true", help="store encoded images in the Datum")
    p.add_argument("--encode_type", default="", help="png, jpg, ... (default: the file's own)")
    add_order_arguments(p)


def main(args: argparse.Namespace) -> int:
    n = convert_imageset(
        args.root_folder,
        args.list_file,
        args.db_name,
        gray=args.gray,
        resize_height=args.resize_height,
        resize_width=args.resize_width,
        check_size=args.check_size,
        encoded=args.encoded,
        encode_type=args.encode_type,
        **order_options(args),
    )
    print(f"wrote {n} records to {args.db_name}")
    return 0
