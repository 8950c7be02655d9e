"""Data layer: Caffe's DataTransformer by hand, the FCPR cycle, prefetch, rank slices, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from google.protobuf import text_format

from data_tools.image_mean import write_mean
from data_tools.lmdb_io import LmdbWriter
from engine.datum import serialize_records
from engine.errors import NetError
from engine.layer import layer_class
from engine.layers.data import DataLayer
from engine.proto import caffe_pb2
from tests.backends import Blob, assert_array_equal, host
from tests.backends import current as backend


def make_db(path, images, labels=None, key="{:08d}"):
    labels = np.arange(len(images)) if labels is None else labels
    with LmdbWriter(path, progress=False) as db:
        for i, v in enumerate(serialize_records(images, labels)):
            db.put(key.format(i).encode(), v)
    return str(path)


def make_layer(text, phase="TRAIN", seed=0, dtype=np.float32, tops=2):
    param = text_format.Parse(f'name: "d" type: "Data" {text}', caffe_pb2.LayerParameter())
    layer = DataLayer(param, phase, backend(), dtype, seed)
    top = [Blob((), backend(), dtype) for _ in range(tops)]
    layer.setup([], top)
    return layer, top


def step(layer, top):
    layer.reshape([], top)
    layer.forward([], top)
    return [host(t.data).copy() for t in top]


def caffe_transform(x, h_off, w_off, mirror, crop, scale, mean=None, mean_values=None):
    """Caffe's per-element loop: out[c, h, w'] = (x[c, h_off+h, w_off+w] - mean[...]) * scale."""
    c_n, height, width = x.shape
    oh = ow = crop or None
    oh, ow = (crop, crop) if crop else (height, width)
    out = np.zeros((c_n, oh, ow), np.float32)
    for c, h, w in itertools.product(range(c_n), range(oh), range(ow)):
        src = (c, h_off + h, w_off + w)
        val = np.float32(x[src])
        if mean is not None:
            val = np.float32(val - mean[src])
        elif mean_values is not None:
            val = np.float32(val - np.float32(mean_values[c]))
        out[c, h, ow - 1 - w if mirror else w] = np.float32(val * np.float32(scale))
    return out


@pytest.fixture
def images():
    return np.random.default_rng(11).integers(0, 256, (12, 3, 7, 6), dtype=np.uint8)


def test_registered_under_type_and_v1_name():
    assert layer_class("Data") is DataLayer and layer_class("DATA") is DataLayer


def test_mean_file_then_scale_exact(tmp_path, images):
    mean = np.random.default_rng(1).uniform(0, 255, (3, 7, 6)).astype(np.float32)
    write_mean(mean, tmp_path / "mean.binaryproto")
    src = make_db(tmp_path / "db", images)
    layer, top = make_layer(
        f'transform_param {{ scale: 0.00390625 mean_file: "{tmp_path}/mean.binaryproto" }} '
        f'data_param {{ source: "{src}" batch_size: 4 backend: LMDB }}',
        "TEST",
    )
    data, label = step(layer, top)
    assert data.shape == (4, 3, 7, 6) and label.shape == (4,)
    for i in range(4):
        want = caffe_transform(images[i], 0, 0, False, 0, 0.00390625, mean=mean)
        assert_array_equal(data[i], want)
    assert_array_equal(label, [0, 1, 2, 3])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [0.00390625, 0.1, 1.0])
def test_scale_only_exact(tmp_path, images, dtype, scale):
    """LeNet's transform (scale, no mean): Caffe's Dtype(x) * scale in the blob's precision,
    scale being the proto's float field."""
    src = make_db(tmp_path / "db", images)
    layer, top = make_layer(
        f'transform_param {{ scale: {scale} }} data_param {{ source: "{src}" batch_size: 5 }}',
        dtype=dtype,
    )
    data, _ = step(layer, top)
    want = images[:5].astype(dtype) * dtype(np.float32(scale))
    assert data.dtype == dtype
    assert_array_equal(data, want)


@pytest.mark.parametrize("values", [[10.5], [10.0, 20.0, 30.0]])
def test_mean_value_one_or_per_channel(tmp_path, images, values):
    src = make_db(tmp_path / "db", images)
    mv = " ".join(f"mean_value: {v}" for v in values)
    layer, top = make_layer(
        f'transform_param {{ scale: 2 {mv} }} data_param {{ source: "{src}" batch_size: 3 }}'
    )
    data, _ = step(layer, top)
    for i in range(3):
        want = caffe_transform(
            images[i], 0, 0, False, 0, 2.0, mean_values=values * (3 // len(values))
        )
        assert_array_equal(data[i], want)


def test_test_phase_centre_crop_floors(tmp_path, images):
    """TEST crops at ((H - crop) / 2, (W - crop) / 2) rounded down: (1, 1) for 7x6 and crop 4."""
    mean = np.random.default_rng(2).uniform(0, 255, (3, 7, 6)).astype(np.float32)
    write_mean(mean, tmp_path / "m.binaryproto")
    src = make_db(tmp_path / "db", images)
    layer, top = make_layer(
        f'transform_param {{ crop_size: 4 mean_file: "{tmp_path}/m.binaryproto" }} '
        f'data_param {{ source: "{src}" batch_size: 5 }}',
        "TEST",
    )
    data, _ = step(layer, top)
    assert data.shape == (5, 3, 4, 4)
    for i in range(5):
        assert_array_equal(data[i], caffe_transform(images[i], 1, 1, False, 4, 1, mean))


def _match_offsets(x, out, crop, mean, scale=1.0):
    """The (h_off, w_off, mirror) under which Caffe's transform of x gives out, or None."""
    c, h, w = x.shape
    for ho, wo, m in itertools.product(range(h - crop + 1), range(w - crop + 1), (False, True)):
        if np.array_equal(out, caffe_transform(x, ho, wo, m, crop, scale, mean)):
            return ho, wo, m
    return None


def test_train_random_crop_and_mirror_match_caffe(tmp_path, images):
    """TRAIN: each record is Caffe's transform at some valid random offset, mirrored or not,
    with the mean file cropped at the same offsets; offsets and mirror flags vary."""
    mean = np.random.default_rng(3).uniform(0, 255, (3, 7, 6)).astype(np.float32)
    write_mean(mean, tmp_path / "m.binaryproto")
    src = make_db(tmp_path / "db", images)
    layer, top = make_layer(
        f'transform_param {{ crop_size: 3 mirror: true mean_file: "{tmp_path}/m.binaryproto" }} '
        f'data_param {{ source: "{src}" batch_size: 12 }}',
        seed=4,
    )
    found = set()
    for _ in range(3):
        data, _ = step(layer, top)
        for i in range(12):
            hit = _match_offsets(images[i], data[i], 3, mean)
            assert hit is not None, f"record {i} is no Caffe crop/mirror of its datum"
            found.add(hit)
    assert len({f[:2] for f in found}) > 3 and {f[2] for f in found} == {False, True}


def test_mirror_is_tossed_in_test_phase_too(tmp_path, images):
    """Caffe's do_mirror = param.mirror() && Rand(2) does not look at the phase."""
    src = make_db(tmp_path / "db", images)
    layer, top = make_layer(
        f'transform_param {{ mirror: true }} data_param {{ source: "{src}" batch_size: 12 }}',
        "TEST",
        seed=1,
    )
    data, _ = step(layer, top)
    flipped = [np.array_equal(data[i], images[i][:, :, ::-1]) for i in range(12)]
    plain = [np.array_equal(data[i], images[i]) for i in range(12)]
    assert all(a or b for a, b in zip(flipped, plain, strict=True))
    assert any(flipped) and any(plain)


def test_fixed_cycle_wraps_and_batch_index(tmp_path, images):
    """Batch k holds records (4k + i) mod 10; 10 records and batch 4 make a cycle of 5 batches."""
    src = make_db(tmp_path / "db", images[:10])
    layer, top = make_layer(f'data_param {{ source: "{src}" batch_size: 4 }}')
    assert layer.cycle_length == 5 and layer.batch_index == -1 and layer.next_batch_index == 0
    seen = []
    for k in range(11):
        _, label = step(layer, top)
        assert_array_equal(label, (4 * k + np.arange(4)) % 10)
        seen.append(layer.batch_index)
    assert seen == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0]
    assert layer.cursor == 4


def test_cursor_restore_discards_prefetch_and_matches_no_prefetch(tmp_path, images):
    """Prefetching gives the same batches as reading synchronously, across a cursor reset."""
    src = make_db(tmp_path / "db", images)
    spec = (
        "transform_param {{ crop_size: 4 mirror: true }} "
        'data_param {{ source: "{}" batch_size: 5 {} }}'
    )
    fast, ftop = make_layer(spec.format(src, "prefetch: 4"), seed=9)
    slow, stop = make_layer(spec.format(src, "prefetch: 0"), seed=9)
    assert fast.prefetch and not slow.prefetch
    for k in range(7):
        if k == 3:
            saved = fast.cursor
            fast.cursor = slow.cursor = 7
            assert fast.next_batch_index == 11  # 11 * 5 = 7 (mod 12): batch 11 of the cycle
        if k == 5:
            fast.cursor = slow.cursor = saved
        a, b = step(fast, ftop), step(slow, stop)
        assert_array_equal(a[0], b[0])
        assert_array_equal(a[1], b[1])
    fast.close()
    with pytest.raises(NetError, match="cursor 12 out of range for 12 records"):
        slow.cursor = 12


@pytest.mark.parametrize("cores, prefetch", [(2, False), (3, True)])
def test_unset_prefetch_uses_a_thread_only_where_it_has_a_core(
    tmp_path, images, monkeypatch, cores, prefetch
):
    """Caffe's prefetch: 4 (or 0) is obeyed; unset, the loader thread runs when the process
    may use a core beyond the engine's threads (always on a device)."""
    import engine.threads

    monkeypatch.setattr(engine.threads, "THREADS", 2)
    monkeypatch.setattr(engine.threads, "usable_cores", lambda: cores)
    src = make_db(tmp_path / "db", images)
    unset, _ = make_layer(f'data_param {{ source: "{src}" batch_size: 2 }}')
    assert unset.prefetch == (prefetch or backend() is not np)
    for value, want in (("4", True), ("0", False)):
        layer, _ = make_layer(f'data_param {{ source: "{src}" batch_size: 2 prefetch: {value} }}')
        assert layer.prefetch is want


def test_resume_from_cursor_and_rng_state(tmp_path, images):
    """A new layer given a saved cursor and rng_state continues the exact batch sequence."""
    src = make_db(tmp_path / "db", images)
    spec = (
        f"transform_param {{ crop_size: 4 mirror: true }} "
        f'data_param {{ source: "{src}" batch_size: 5 }}'
    )
    first, ftop = make_layer(spec, seed=2)
    for _ in range(3):
        step(first, ftop)
    saved = (first.cursor, first.rng_state)
    expected = [step(first, ftop) for _ in range(3)]
    resumed, rtop = make_layer(spec, seed=77)
    resumed.cursor, resumed.rng_state = saved
    for want in expected:
        got = step(resumed, rtop)
        assert_array_equal(got[0], want[0])
        assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("world", [2, 4])
def test_rank_slices_concatenate_to_global_batch(tmp_path, images, world):
    src = make_db(tmp_path / "db", images)
    spec = (
        f"transform_param {{ crop_size: 5 mirror: true scale: 0.5 }} "
        f'data_param {{ source: "{src}" batch_size: 8 }}'
    )
    whole, wtop = make_layer(spec, seed=5)
    parts = []
    for r in range(world):
        layer, top = make_layer(spec, seed=5)
        layer.set_rank(r, world)
        parts.append((layer, top))
    for _ in range(4):
        data, label = step(whole, wtop)
        got = [step(layer, top) for layer, top in parts]
        assert got[0][0].shape[0] == 8 // world
        assert_array_equal(np.concatenate([g[0] for g in got]), data)
        assert_array_equal(np.concatenate([g[1] for g in got]), label)
        assert {layer.batch_index for layer, _ in parts} == {whole.batch_index}


def test_rank_must_divide_global_batch(tmp_path, images):
    src = make_db(tmp_path / "db", images)
    layer, _ = make_layer(f'data_param {{ source: "{src}" batch_size: 6 }}')
    with pytest.raises(NetError, match="batch_size 6 .* not divisible by the 4 ranks"):
        layer.set_rank(0, 4)


def test_reads_an_lmdb_written_as_caffe_does(tmp_path):
    """Records byte-for-byte as Caffe's convert_mnist_data writes them, under "%08d" keys."""
    from tests.engine.test_datum import caffe_wire_datum

    x = np.random.default_rng(6).integers(0, 256, (5, 1, 4, 4), dtype=np.uint8)
    with LmdbWriter(tmp_path / "caffe_lmdb", progress=False) as db:
        for i in range(5):
            db.put(b"%08d" % i, caffe_wire_datum(x[i], 9 - i))
    layer, top = make_layer(
        f'data_param {{ source: "{tmp_path}/caffe_lmdb" batch_size: 5 backend: LMDB }}', "TEST"
    )
    data, label = step(layer, top)
    assert_array_equal(data, x.astype(np.float32))
    assert_array_equal(label, 9 - np.arange(5))


def test_deprecated_data_param_transform_fields(tmp_path, images):
    src = make_db(tmp_path / "db", images)
    layer, top = make_layer(f'data_param {{ source: "{src}" batch_size: 2 scale: 0.5 }}')
    data, _ = step(layer, top)
    assert_array_equal(data, images[:2].astype(np.float32) * np.float32(0.5))


def test_single_top_and_float64(tmp_path, images):
    src = make_db(tmp_path / "db", images)
    layer, top = make_layer(
        f'data_param {{ source: "{src}" batch_size: 2 }}', dtype=np.float64, tops=1
    )
    (data,) = step(layer, top)
    assert data.dtype == np.float64 and data.shape == (2, 3, 7, 6)


def test_bad_input_errors_name_the_file(tmp_path, images):
    src = make_db(tmp_path / "db", images)
    with pytest.raises(NetError, match="layer 'd'.*no_such_lmdb: LMDB source does not exist"):
        make_layer(f'data_param {{ source: "{tmp_path}/no_such_lmdb" batch_size: 2 }}')
    with pytest.raises(NetError, match="mean file .*absent.binaryproto does not exist"):
        make_layer(
            f'transform_param {{ mean_file: "{tmp_path}/absent.binaryproto" }} '
            f'data_param {{ source: "{src}" batch_size: 2 }}'
        )
    with pytest.raises(NetError, match="only backend LMDB"):
        make_layer(f'data_param {{ source: "{src}" batch_size: 2 backend: LEVELDB }}')
    with pytest.raises(NetError, match="crop_size 8 exceeds record size 7x6"):
        make_layer(
            f'transform_param {{ crop_size: 8 }} data_param {{ source: "{src}" batch_size: 2 }}'
        )
    with pytest.raises(NetError, match="mean_file and mean_value"):
        make_layer(
            f'transform_param {{ mean_value: 1 mean_file: "x" }} '
            f'data_param {{ source: "{src}" batch_size: 2 }}'
        )
    write_mean(np.zeros((3, 5, 5), np.float32), tmp_path / "small.binaryproto")
    with pytest.raises(NetError, match=r"mean file shape \(3, 5, 5\) differs .* \(3, 7, 6\)"):
        make_layer(
            f'transform_param {{ mean_file: "{tmp_path}/small.binaryproto" }} '
            f'data_param {{ source: "{src}" batch_size: 2 }}'
        )


def test_records_of_differing_shape(tmp_path, images):
    """A record whose shape differs from the first is a NetError naming the source and key."""
    with LmdbWriter(tmp_path / "mixed", progress=False) as db:
        for i, v in enumerate(serialize_records(images[:3], np.arange(3))):
            db.put(b"%08d" % i, v)
        odd = images[:1, :, :5, :5].copy()
        db.put(b"%08d" % 3, next(iter(serialize_records(odd, np.array([3])))))
    layer, top = make_layer(f'data_param {{ source: "{tmp_path}/mixed" batch_size: 2 }}')
    step(layer, top)
    with pytest.raises(NetError, match=r"mixed: record b'00000003' has shape \(3, 5, 5\)"):
        step(layer, top)


def test_in_a_net(tmp_path, images):
    """A Net built from a prototxt with a Data layer runs forward on the LMDB's records."""
    from engine.net import Net

    src = make_db(tmp_path / "db", images, labels=np.arange(12) % 3)
    text = f"""
    name: "n"
    layer {{ name: "data" type: "Data" top: "data" top: "label"
             transform_param {{ scale: 0.00390625 }}
             data_param {{ source: "{src}" batch_size: 4 backend: LMDB }} }}
    layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
             inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
    layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
    """
    (tmp_path / "n.prototxt").write_text(text)
    net = Net(str(tmp_path / "n.prototxt"), "TRAIN", seed=1)
    out = net.forward()
    assert np.isfinite(net.loss) and out["loss"].shape == ()
    assert_array_equal(net.blobs["label"].data, [0, 1, 2, 0])
    assert_array_equal(net.blobs["data"].data, images[:4] * np.float32(0.00390625))
    net.forward()
    assert_array_equal(net.blobs["label"].data, [1, 2, 0, 1])
