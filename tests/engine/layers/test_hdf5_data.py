"""HDF5Data (Caffe's file cycle, shuffle, rank slices, cursor) and HDF5Output; the BVLC
hdf5_classification nets running on generated .h5 files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

from engine.errors import NetError
from engine.layers.hdf5_data import HDF5DataLayer
from engine.net import Net
from engine.proto import caffe_pb2
from tests.backends import Blob, assert_array_equal, host
from tests.backends import current as backend

EXAMPLES = Path(__file__).resolve().parents[4] / "shared" / "caffe-examples" / "examples"


def write_files(root: Path, rows: list[int], features: int = 2, start: int = 0) -> Path:
    """One .h5 per entry of `rows`; row r of the whole sequence has data [r, r + 0.5, ...] and
    integer label r, so every served row tells where it came from."""
    names = []
    r = start
    for i, n in enumerate(rows):
        path = root / f"part{i}.h5"
        ids = np.arange(r, r + n)
        with h5py.File(path, "w") as f:
            f["data"] = ids[:, None] + 0.5 * np.arange(features)[None, :]
            f["label"] = ids.astype(np.int64)
        names.append(str(path))
        r += n
    listing = root / "list.txt"
    listing.write_text("\n".join(names) + "\n")
    return listing


def make_layer(source, batch, shuffle=False, seed=0, tops=("data", "label"), extra=""):
    text = (
        f'name: "h5" type: "HDF5Data" {" ".join(f"top: {t!r}" for t in tops)} '
        f'hdf5_data_param {{ source: "{source}" batch_size: {batch} shuffle: {str(shuffle).lower()} }}'
        f" {extra}"
    )
    param = text_format.Parse(text.replace("'", '"'), caffe_pb2.LayerParameter())
    layer = HDF5DataLayer(param, "TRAIN", backend(), np.float32, seed)
    top = [Blob((), backend(), np.float32) for _ in tops]
    layer.setup([], top)
    return layer, top


def step(layer, top):
    layer.reshape([], top)
    layer.forward([], top)
    return [host(t.data).copy() for t in top]


def test_batches_run_through_the_files_in_list_order_and_wrap(tmp_path) -> None:
    """Caffe's Next(): rows in order, the next file at a file's end, the first file after the
    last; a batch may span files. Tops are (batch, row dims...) float."""
    listing = write_files(tmp_path, [5, 3, 4])
    layer, top = make_layer(listing, batch=5)
    assert top[0].shape == (5, 2) and top[1].shape == (5,)
    total = 12
    served = np.concatenate([step(layer, top)[1] for _ in range(7)])
    assert_array_equal(served, np.arange(35) % total)
    data = step(layer, top)[0]
    assert data.dtype == np.float32
    assert_array_equal(data[:, 1] - data[:, 0], 0.5)
    assert layer.num_records == total and layer.cursor == (8 * 5) % total


def test_shuffle_permutes_files_and_rows_each_pass_reproducibly(tmp_path) -> None:
    """shuffle: each pass serves every row once; a file's rows stay together (one file in memory);
    the order changes between passes; the same seed gives the same sequence."""
    rows = [4, 3, 5]
    listing = write_files(tmp_path, rows)
    layer, top = make_layer(listing, batch=6, shuffle=True, seed=11)
    passes = [np.concatenate([step(layer, top)[1] for _ in range(2)]) for _ in range(4)]
    bounds = np.cumsum([0, *rows])
    for p in passes:
        assert sorted(p) == list(range(12))
        which = np.searchsorted(bounds, p, side="right") - 1
        assert (np.diff(which) != 0).sum() == len(rows) - 1  # each file is one contiguous run
    assert any(not np.array_equal(passes[0], p) for p in passes[1:])
    again, top2 = make_layer(listing, batch=6, shuffle=True, seed=11)
    assert_array_equal(np.concatenate([step(again, top2)[1] for _ in range(2)]), passes[0])


def test_single_file_reshuffles_rows_at_every_wrap(tmp_path) -> None:
    listing = write_files(tmp_path, [8])
    layer, top = make_layer(listing, batch=8, shuffle=True, seed=2)
    first, second = step(layer, top)[1], step(layer, top)[1]
    assert sorted(first) == sorted(second) == list(range(8))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("shuffle", [False, True])
def test_rank_slices_concatenate_to_the_one_rank_batch(tmp_path, shuffle) -> None:
    listing = write_files(tmp_path, [5, 4])
    whole, top = make_layer(listing, batch=6, shuffle=shuffle, seed=3)
    ranks = []
    for r in range(3):
        layer, t = make_layer(listing, batch=6, shuffle=shuffle, seed=3)
        layer.set_rank(r, 3)
        ranks.append((layer, t))
    for _ in range(4):
        want = step(whole, top)
        parts = [step(layer, t) for layer, t in ranks]
        assert parts[0][0].shape == (2, 2)
        for k in range(2):
            assert_array_equal(np.concatenate([p[k] for p in parts]), want[k])
    with pytest.raises(NetError, match="not divisible by the 4 ranks"):
        whole.set_rank(0, 4)


@pytest.mark.parametrize("shuffle", [False, True])
def test_cursor_and_rng_state_restore_the_sequence(tmp_path, shuffle) -> None:
    """What the solver saves (cursor, rng_state) puts a fresh layer where the first one was."""
    listing = write_files(tmp_path, [5, 3, 4])
    a, ta = make_layer(listing, batch=5, shuffle=shuffle, seed=5)
    for _ in range(3):
        step(a, ta)
    cursor, state = a.cursor, a.rng_state
    assert (state is None) == (not shuffle)
    b, tb = make_layer(listing, batch=5, shuffle=shuffle, seed=99)
    step(b, tb)
    b.cursor = cursor
    if state is not None:
        b.rng_state = state
    assert b.cursor == cursor
    for _ in range(6):
        assert_array_equal(step(a, ta)[1], step(b, tb)[1])
    with pytest.raises(NetError, match="cursor 12 out of range for 12 rows"):
        b.cursor = 12


def test_rewinding_replays_a_batch_that_wraps_into_the_next_pass(tmp_path) -> None:
    """ISGD's Alg. 2 rewinds to the batch start (cursor, rng_state) and must see the same rows,
    also when the batch crosses into a freshly shuffled pass."""
    listing = write_files(tmp_path, [5, 3, 4])
    layer, top = make_layer(listing, batch=5, shuffle=True, seed=8)
    for _ in range(2):
        step(layer, top)
    saved = layer.cursor, layer.rng_state
    assert saved[0] == 10
    first = step(layer, top)[1]
    assert layer.rng_state != saved[1]  # a new pass began inside the batch
    for _ in range(2):
        layer.cursor = saved[0]
        layer.rng_state = saved[1]
        assert_array_equal(step(layer, top)[1], first)


def test_integer_and_multi_axis_datasets_and_any_top_names(tmp_path) -> None:
    path = tmp_path / "one.h5"
    with h5py.File(path, "w") as f:
        f["img"] = np.arange(4 * 2 * 3 * 3, dtype=np.uint8).reshape(4, 2, 3, 3)
        f["y"] = np.arange(4 * 2, dtype=np.int32).reshape(4, 2)
    (tmp_path / "l.txt").write_text(f"  {path}   \n\n")
    layer, top = make_layer(tmp_path / "l.txt", batch=3, tops=("img", "y"))
    img, y = step(layer, top)
    assert img.shape == (3, 2, 3, 3) and y.shape == (3, 2)
    assert_array_equal(img, np.arange(54).reshape(3, 2, 3, 3))


def test_bad_sources_and_files_are_named(tmp_path, monkeypatch) -> None:
    listing = write_files(tmp_path, [3, 2])
    with pytest.raises(NetError, match="failed to open source file .*nope.txt"):
        make_layer(tmp_path / "nope.txt", batch=2)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(NetError, match="must list at least one HDF5 file"):
        make_layer(tmp_path / "empty.txt", batch=2)
    with pytest.raises(NetError, match=r"part0\.h5: no float or integer dataset 'feat'"):
        make_layer(listing, batch=2, tops=("feat",))
    with pytest.raises(NetError, match="does not transform data"):
        make_layer(listing, batch=2, extra="transform_param { scale: 2 }")
    with pytest.raises(NetError, match="batch_size must be positive"):
        make_layer(listing, batch=0)
    odd = tmp_path / "odd.h5"
    with h5py.File(odd, "w") as f:
        f["data"] = np.zeros((3, 2))
        f["label"] = np.zeros(2)
    (tmp_path / "odd.txt").write_text(str(odd))
    with pytest.raises(NetError, match="'label' has 2 rows but 'data' has 3"):
        make_layer(tmp_path / "odd.txt", batch=2)
    wide = tmp_path / "wide.h5"
    with h5py.File(wide, "w") as f:
        f["data"] = np.zeros((3, 5))
        f["label"] = np.zeros(3)
    (tmp_path / "mixed.txt").write_text(f"{tmp_path / 'part0.h5'} {wide}")
    with pytest.raises(NetError, match=r"wide\.h5: row shapes .* differ"):
        make_layer(tmp_path / "mixed.txt", batch=2)
    (tmp_path / "missing.txt").write_text("gone.h5")
    monkeypatch.chdir(tmp_path)  # paths in the list are relative to the working directory
    with pytest.raises(NetError, match="gone.h5: HDF5 data file not found"):
        make_layer("missing.txt", batch=2)


def test_hdf5_output_writes_4d_rows_that_hdf5_data_reads_back(tmp_path) -> None:
    """HDF5Output stores data/label as (num, channels, height, width); later batches append."""
    out = tmp_path / "out.h5"
    net_text = f"""
    layer {{ name: "in" type: "Input" top: "x" top: "y"
      input_param {{ shape {{ dim: 3 dim: 4 }} shape {{ dim: 3 }} }} }}
    layer {{ name: "save" type: "HDF5Output" bottom: "x" bottom: "y"
      hdf5_output_param {{ file_name: "{out}" }} }}
    """
    net = Net(text_format.Parse(net_text, caffe_pb2.NetParameter()), "TEST")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    net.forward(x=x, y=np.array([0, 1, 2]))
    net.forward(x=x + 100, y=np.array([3, 4, 5]))
    with h5py.File(out, "r") as f:
        assert f["data"].shape == (6, 4, 1, 1) and f["label"].shape == (6, 1, 1, 1)
        assert_array_equal(f["data"][3:, :, 0, 0], x + 100)
    (tmp_path / "out.txt").write_text(str(out))
    layer, top = make_layer(tmp_path / "out.txt", batch=6)
    data, label = step(layer, top)
    assert_array_equal(label.reshape(-1), np.arange(6))
    assert_array_equal(data.reshape(6, 4)[:3], x)


def _example_copy(name: str, tmp_path: Path) -> Path:
    """A copy of an hdf5_classification net whose sources point at generated .h5 lists."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for split, n in (("train", 30), ("test", 20)):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
        half = n // 2
        parts = []
        for k, sl in enumerate((slice(0, half), slice(half, n))):
            p = data / f"{split}{k}.h5"
            with h5py.File(p, "w") as f:
                f["data"], f["label"] = x[sl], y[sl]
            parts.append(str(p))
        (data / f"{split}.txt").write_text("\n".join(parts) + "\n")
    text = (EXAMPLES / "hdf5_classification" / name).read_text()
    text = text.replace("examples/hdf5_classification/data/", f"{data}/")
    out = tmp_path / name
    out.write_text(text)
    return out


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"BVLC examples not found at {EXAMPLES}")
@pytest.mark.parametrize(
    "name",
    [
        "train_val.prototxt",
        "nonlinear_train_val.prototxt",
        "nonlinear_auto_train.prototxt",
        "nonlinear_auto_test.prototxt",
    ],
)
def test_hdf5_classification_example_nets_run_on_generated_files(tmp_path, name) -> None:
    path = _example_copy(name, tmp_path)
    for phase in ("TRAIN", "TEST"):
        net = Net(str(path), phase, seed=1)
        assert net.blobs["data"].shape == (10, 4) and net.blobs["label"].shape == (10,)
        loss = net.forward_loss()
        net.backward()
        assert np.isfinite(loss) and loss > 0
        assert np.abs(net.flat_diff).max() > 0
        first = net.blobs["label"].data.copy()
        net.forward_loss()
        assert not np.array_equal(first, net.blobs["label"].data)  # the next 10 rows
