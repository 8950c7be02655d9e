"""The ImageNet row's path end to end on a small generated image folder: convert_imageset, the
mean, AlexNet with the loss-band lr for a few iterations through the experiment driver, and a
test scored by Caffe's Accuracy with top_k 5 (section 5.2's 81 % top-5 target)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_tools.convert_imageset import convert_imageset
from data_tools.image_mean import compute_mean, write_mean
from scripts import runner
from scripts.profiles import Plan, load_profile
from scripts.run_rows import run_row
from scripts.runs import RunSpec, run

Image = pytest.importorskip("PIL.Image", reason="Pillow not installed")


def image_folder(root: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        label = i % 7
        rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        rgb[..., label % 3] = 40 * label  # a little class signal
        name = f"n{label:03d}/img_{i}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / name)
        lines.append(f"{name} {label}")
    listing = root / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def test_alexnet_row_from_an_image_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("scripts.runs.RUNS_DIR", tmp_path / "runs")
    train, val = tmp_path / "train_lmdb", tmp_path / "val_lmdb"
    for listing, db, n, seed in ((tmp_path / "tr", train, 8, 1), (tmp_path / "va", val, 6, 2)):
        lst = image_folder(listing, n, seed)
        convert_imageset(listing, lst, db, resize_height=256, resize_width=256, progress=False)
    mean = tmp_path / "mean.binaryproto"
    write_mean(compute_mean(train, progress=False), mean)
    monkeypatch.setenv("IMAGENET_TRAIN", str(train))
    monkeypatch.setenv("IMAGENET_VAL", str(val))
    monkeypatch.setenv("IMAGENET_MEAN", str(mean))
    monkeypatch.setenv("ISGD_JIT", "1")  # AlexNet's 61 M Gaussian draws need the compiled sampler
    profile = load_profile("paper", ["imagenet"], runs=1)
    sources = runner.ensure_data(profile, lambda _: None)["imagenet"]
    paper = profile.plans["imagenet"]
    plan = Plan(
        paper.dataset,
        batch_size=2,
        budget_grad_evals=3,
        test_interval_seconds=1e6,
        snapshot_every=100,
        display=1,
    )
    spec = RunSpec(profile="t", group="table1", plan=plan, arm="isgd", seed=1, **sources)
    log = run(spec, lambda _: None, lambda p: None)
    assert log.finished and len(log.of("iter")) == 3
    assert {e["lr"] for e in log.of("iter")} <= {0.015, 0.0015, 0.00015}, "the loss-band lr"
    tests = log.of("test")
    assert [t["iter"] for t in tests] == [0, 3] and "accuracy_top5" in tests[-1]["outputs"]
    top5, top1 = tests[-1]["outputs"]["accuracy_top5"], tests[-1]["outputs"]["accuracy"]
    assert 0.0 <= top1 <= top5 <= 1.0
    row = run_row(log, paper.dataset, "isgd")
    assert row.metric == "accuracy_top5" and row.target == 0.81 and row.final_acc == top5


def test_imagenet_variables_are_checked_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty IMAGENET_TRAIN folder, an LMDB without records, a missing mean file and an unset
    IMAGENET_MEAN without the default mean: each one line at start-up, never inside the run."""
    from scripts.profiles import ProfileError

    val = tmp_path / "val_lmdb"
    lst = image_folder(tmp_path / "va", 3, 2)
    convert_imageset(tmp_path / "va", lst, val, resize_height=256, resize_width=256, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("IMAGENET_TRAIN", str(empty))
    monkeypatch.setenv("IMAGENET_VAL", str(val))
    monkeypatch.delenv("IMAGENET_MEAN", raising=False)
    profile = load_profile("paper", ["imagenet"], runs=1)
    with pytest.raises(ProfileError, match=r"IMAGENET_TRAIN=.*empty: no data\.mdb in it"):
        runner.ensure_data(profile, lambda _: None)
    import lmdb

    lmdb.open(str(empty), map_size=1 << 20).close()  # an LMDB with no record
    with pytest.raises(ProfileError, match=r"IMAGENET_TRAIN=.*the LMDB holds no records"):
        runner.ensure_data(profile, lambda _: None)
    monkeypatch.setenv("IMAGENET_TRAIN", str(val))
    monkeypatch.setattr("scripts.runs.ROOT", tmp_path)  # no default mean under this root
    with pytest.raises(ProfileError, match=r"IMAGENET_MEAN is not set and the default mean"):
        runner.ensure_data(profile, lambda _: None)
    monkeypatch.setenv("IMAGENET_MEAN", str(tmp_path / "nope.binaryproto"))
    with pytest.raises(ProfileError, match=r"IMAGENET_MEAN=.*nope\.binaryproto: no such file"):
        runner.ensure_data(profile, lambda _: None)
