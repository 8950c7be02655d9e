"""The same seed gives Caffe's random draws: against real Caffe 1.0 (CPU, boost 1.74) runs in
../shared/caffe-reference/random-streams (skipped where that folder is absent).

- fillers/: every filler type's initial weights at random_seed 1701 and 42, byte for byte;
- transform/: the Data layer's crop (32 of 40) and mirror, whose losses reveal each crop drawn;
- dropout/: Dropout masks (ratios 0.5 and 0.3) from the global stream, and Caffe's resume
  (a .solverstate holds no generator, so the stream replays from the seed).
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.net import Net
from engine.proto_io import blob_proto_to_array, read_net_weights
from solvers import snapshot
from solvers.solver import Solver
from solvers.train_log import TrainLog

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "caffe-reference"
STREAMS = REFERENCE / "random-streams"
ITER_LINE = re.compile(r"Iteration (\d+) \(.*\), loss = (\S+)")
FINAL_LINE = re.compile(r"Iteration (\d+), loss = (\S+)")


def case(name: str) -> Path:
    folder = STREAMS / name
    if not folder.is_dir():
        pytest.skip(f"Caffe's reference runs are absent ({folder} not found)")
    return folder


def in_copy(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in a copy of the case folder (runs write snapshots; paths are relative to it)."""
    work = tmp_path / name
    shutil.copytree(case(name), work, ignore=shutil.ignore_patterns("lock.mdb"))
    monkeypatch.chdir(work)
    return work


def train(solver_file: str, resume: str | None = None) -> tuple[dict[int, str], str]:
    """Run a solver file; the printed losses by iteration, the final pass's, and the log."""
    text = io.StringIO()
    log = TrainLog(stream=text, json_path=None, progress=False)
    Solver(solver_file, log=log).solve(resume)
    log.close()
    losses: dict[int, str] = {}
    for line in text.getvalue().splitlines():
        if m := ITER_LINE.search(line):
            losses[int(m.group(1))] = m.group(2)
        elif m := FINAL_LINE.search(line):
            losses[-int(m.group(1))] = m.group(2)  # the final forward, keyed by -max_iter
    return losses, text.getvalue()


def printed(values: list[float]) -> list[str]:
    """Caffe's "%g" of the logged losses (losses.json keeps them as numbers)."""
    return [f"{v:g}" for v in values]


@pytest.mark.parametrize("seed", [1701, 42])
def test_initial_weights_are_caffes_byte_for_byte(seed: int) -> None:
    """Caffe's fillers (constant, uniform, gaussian, sparse gaussian, positive_unitball,
    xavier, msra, bilinear) draw from boost's mt19937 seeded with random_seed, layer by layer,
    weights then bias: every blob equals Caffe's float32 bytes, -0.0 of the sparse mask too."""
    folder = case("fillers")
    net = Net(str(folder / "net.prototxt"), "TRAIN", seed=seed)
    ref = read_net_weights(str(folder / f"seed{seed}" / "fillers_iter_0.caffemodel"))
    compared = 0
    for layer in ref.layer:
        for j, bp in enumerate(layer.blobs):
            want = np.asarray(blob_proto_to_array(bp), np.float32)
            got = np.asarray(net.params[layer.name][j].data, np.float32)
            assert got.shape == want.shape
            assert got.tobytes() == want.tobytes(), f"{layer.name} blob {j} (seed {seed})"
            compared += 1
    assert compared == 19


def test_solver_seeds_the_fillers_from_random_seed(tmp_path, monkeypatch) -> None:
    """Solver::Init seeds the stream with random_seed before building the net: max_iter 0 with
    snapshot_after_train writes Caffe's initial weights."""
    in_copy("fillers", tmp_path, monkeypatch)
    Path("seed42").joinpath("fillers_iter_0.caffemodel").rename("caffe.caffemodel")
    train("solver_seed42.prototxt")
    ours, caffe = read_net_weights("seed42/fillers_iter_0.caffemodel"), read_net_weights(
        "caffe.caffemodel"
    )
    pairs = [(a, b) for la, lb in zip(ours.layer, caffe.layer, strict=False) for a, b in
             zip(la.blobs, lb.blobs, strict=True)]
    assert len(pairs) == 19
    for a, b in pairs:
        assert np.array_equal(blob_proto_to_array(a), blob_proto_to_array(b))


def test_transform_crops_and_mirrors_are_caffes(tmp_path, monkeypatch) -> None:
    """The Data layer seeds its transformer from the global stream (draw 2 of 3 at setup);
    per record it draws mirror = Rand(2), then h_off and w_off = Rand(40 - 32 + 1). Every
    iteration's loss (which reveals the crop and flip of each record) is Caffe's as printed."""
    in_copy("transform", tmp_path, monkeypatch)
    ref = json.loads(Path("losses.json").read_text())
    losses, _ = train("solver.prototxt")
    assert [losses[i] for i in ref["iter"]] == printed(ref["loss"])
    assert losses[-10] == f"{ref['final']['loss']:g}"


def test_transform_draws_are_caffes_record_by_record(tmp_path, monkeypatch) -> None:
    """The draws recovered from Caffe's losses (draws.json): [record, mirror, h_off, w_off]."""
    in_copy("transform", tmp_path, monkeypatch)
    draws = json.loads(Path("draws.json").read_text())["batches"]
    net = Net("net.prototxt", "TRAIN", seed=1701)
    data = net.layer_dict["data"]
    try:
        for batch in draws:
            draw = data.transformer.draw(4, 40, 40, data.transform_rng)
            got = [[int(m), int(h), int(w)] for m, h, w in zip(
                draw.mirror, draw.h_off, draw.w_off, strict=True)]
            assert got == [entry[1:] for entry in batch]
    finally:
        data.close()


def test_dropout_masks_are_caffes() -> None:
    """Dropout draws Bernoulli(1 - ratio) per element from the global stream with boost's
    double comparison; masks.json holds Caffe's masks of iterations 0-9 (1 = kept)."""
    folder = case("dropout")
    masks = json.loads((folder / "masks.json").read_text())["masks"]
    net = Net(str(folder / "net.prototxt"), "TRAIN", seed=1701)
    for entry in masks:
        net.forward()
        for name in ("drop1", "drop2"):
            kept = np.asarray(net.layer_dict[name].mask).ravel() != 0
            assert "".join("1" if k else "0" for k in kept) == entry[name], (entry["iter"], name)


def test_dropout_losses_are_caffes(tmp_path, monkeypatch) -> None:
    in_copy("dropout", tmp_path, monkeypatch)
    ref = json.loads(Path("losses.json").read_text())
    losses, _ = train("solver.prototxt")
    assert [losses[i] for i in ref["iter"]] == printed(ref["loss"])
    assert losses[-10] == f"{ref['final']['loss']:g}"


def _as_caffe_wrote_it(path: str) -> None:
    """Keep only what Caffe's SolverState holds (iter, learned_net, history, current_step)."""
    ours = snapshot.load_state(path)
    state = type(ours)()
    state.iter, state.learned_net, state.current_step = ours.iter, ours.learned_net, ours.current_step
    state.history.extend(ours.history)
    snapshot.write_state(path, state)


def test_resume_from_a_caffe_solverstate_replays_the_stream_as_caffe(
    tmp_path, monkeypatch
) -> None:
    """Caffe restores no generator from a .solverstate: the resumed iterations 5-9 draw the
    masks of iterations 0-4 (dropout/resume/resume_losses.json), and the log says so. Our own
    snapshot holds the stream and continues it exactly (iterations 5-9 of the fresh run)."""
    in_copy("dropout", tmp_path, monkeypatch)
    fresh = json.loads(Path("losses.json").read_text())
    caffe_resumed = json.loads(Path("resume/resume_losses.json").read_text())
    train("resume/solver_first5.prototxt")
    shutil.copy("resume/dropout_iter_5.solverstate", "ours.solverstate")
    _as_caffe_wrote_it("resume/dropout_iter_5.solverstate")
    losses, text = train("resume/solver_resume.prototxt", "resume/dropout_iter_5.solverstate")
    assert [losses[i] for i in caffe_resumed["iter"]] == printed(caffe_resumed["loss"])
    assert losses[-10] == f"{caffe_resumed['final']['loss']:g}"
    assert "replays the stream from the seed" in text
    losses, text = train("resume/solver_resume.prototxt", "ours.solverstate")
    assert [losses[i] for i in range(5, 10)] == printed(fresh["loss"][5:10])
    assert "replays the stream" not in text
