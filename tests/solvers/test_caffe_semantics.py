"""Regression tests from a line-by-line review of our solvers against Caffe 1.0's source.

Each test names the Caffe function whose behaviour it pins: Solver::Step / Solve / Test /
UpdateSmoothedLoss, SGDSolver::ApplyUpdate / ClipGradients / Normalize / Regularize,
NesterovSolver::ComputeUpdateValue, RestoreSolverStateFromBinaryProto and tools/caffe.cpp.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.net import Net
from engine.proto import caffe_pb2
from solvers.cli import main, solver_mode_gpu
from solvers.solver import Solver
from solvers.update_rules import make_rule

from .conftest import Tiny

f32 = np.float32
GLOG = re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ")
# The regular expressions Caffe's tools/extra/parse_log.py applies to a training log.
RE_ITER_LOSS = re.compile(
    r"Iteration (\d+) \([\d.e+-]+ iter/s, [\d.e+-]+s/\d+ iters\), loss = (\S+)"
)
RE_LR = re.compile(r"Iteration (\d+), lr = (\S+)")
RE_OUTPUT = re.compile(
    r"(Train|Test) net output #(\d+): (\S+) = (\S+)(?: \(\* (\S+) = (\S+) loss\))?"
)


def bodies(text: str) -> list[str]:
    return [GLOG.sub("", line) for line in text.splitlines()]


def caffe_state(ours: Path, out: Path) -> Path:
    """Our .solverstate reduced to the fields Caffe writes (iter, learned_net, history, step)."""
    state = caffe_pb2.SolverState.FromString(ours.read_bytes())
    for name in (
        "isgd_state",
        "data_cursor",
        "data_rng_state",
        "data_cursors",
        "layer_rng_state",
        "integrity",
    ):
        state.ClearField(name)
    out.write_bytes(state.SerializeToString())
    return out


def fake_passes(solver: Solver, grads: list[list[np.ndarray]], losses: list[float]) -> None:
    """Replace ForwardBackward: pass k adds grads[k] to the param diffs and returns losses[k]."""
    queue = list(zip(grads, losses, strict=True))

    def forward_backward(diffs_zero: bool = False) -> float:
        g, loss = queue.pop(0)
        for blob, gi in zip(solver.net.learnable_params, g, strict=True):
            blob.diff += gi
        return loss

    solver.net.forward_backward = forward_backward  # type: ignore[method-assign]


def test_apply_update_clips_the_accumulated_gradient_before_normalize_then_nesterov(
    tiny: Tiny, quiet_log
) -> None:
    """SGDSolver::ApplyUpdate: GetLearningRate, ClipGradients on the iter_size SUM, then per param
    Normalize (1/iter_size), Regularize (L2, decay_mult), NesterovSolver's axpby pair, Update.
    The clip threshold sits between |g1+g2|/2 and |g1+g2|, so normalizing first would not clip."""
    log, text, _ = quiet_log()
    path = tiny.solver(
        type="Nesterov",
        iter_size=2,
        lr_policy="step",
        gamma=0.5,
        stepsize=5,
        test_interval=0,
        display=1,
        weight_decay=0.01,
    )
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    solver = Solver(str(path), log=log)
    blobs = solver.net.learnable_params
    rng = np.random.default_rng(3)
    grads = [[rng.standard_normal(b.shape).astype(f32) for b in blobs] for _ in range(2)]
    total = [a + b for a, b in zip(*grads, strict=True)]
    norm = float(np.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in total)))
    clip = f32(0.75 * norm)
    solver.param.clip_gradients = float(clip)
    history = [rng.standard_normal(b.shape).astype(f32) * f32(0.01) for b in blobs]
    for i, h in enumerate(history):
        solver.history[i][0][...] = h
    w0 = [b.data.copy() for b in blobs]
    fake_passes(solver, grads, [1.0, 2.0])
    solver.iter = 7  # step policy: 0.1 * 0.5 ** (7 // 5)
    solver.step(1)

    rate, m = f32(0.05), f32(0.9)
    sumsq = f32(0.0)
    for g in total:
        sumsq = f32(sumsq + f32(np.dot(g.ravel(), g.ravel())))
    scale = f32(clip / f32(np.sqrt(sumsq)))
    for i, blob in enumerate(blobs):
        g = total[i] * scale * f32(0.5)
        g = g + f32(f32(0.01) * f32(solver.net.params_weight_decay[i])) * w0[i]
        h_new = m * history[i] + f32(rate * f32(solver.net.params_lr[i])) * g
        step = f32(1 + m) * h_new - m * history[i]
        np.testing.assert_allclose(solver.history[i][0], h_new, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(blob.data, w0[i] - step, rtol=1e-5, atol=1e-8)
    lines = bodies(text.getvalue())
    assert "Iteration 7, lr = 0.05" in lines
    assert any(x.startswith("Gradient clipping: scaling down gradients (L2 norm ") for x in lines)
    shown = [RE_ITER_LOSS.fullmatch(x) for x in lines]
    assert [(m_.group(1), m_.group(2)) for m_ in shown if m_] == [("7", "1.5")]  # mean of passes


def test_displayed_loss_is_update_smoothed_loss_and_lr_line_shows_the_same_iteration(
    tiny: Tiny, quiet_log
) -> None:
    """Solver::UpdateSmoothedLoss: mean of the last average_loss losses (ring indexed by
    iter - start_iter); Step resets it; ApplyUpdate logs "Iteration N, lr" before ++iter_."""
    log, text, _ = quiet_log()
    path = tiny.solver(
        average_loss=3, test_interval=0, display=1, lr_policy="inv", gamma=0.1, power=0.75
    )
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    solver = Solver(str(path), log=log)
    zeros = [np.zeros(b.shape, f32) for b in solver.net.learnable_params]
    losses = [4.0, 1.0, 7.0, 2.0, 5.0, 3.0, 6.0]
    fake_passes(solver, [zeros] * len(losses), losses)
    solver.step(5)
    solver.step(2)  # a new Step (as after a resume) starts a new average
    lines = bodies(text.getvalue())
    shown = [
        (int(m_.group(1)), float(m_.group(2))) for x in lines if (m_ := RE_ITER_LOSS.fullmatch(x))
    ]
    expected = [4.0, 2.5, 4.0, 10 / 3, 14 / 3, 3.0, 4.5]
    assert [k for k, _ in shown] == list(range(7))
    np.testing.assert_allclose([v for _, v in shown], expected, rtol=1e-5)
    rates = [(int(m_.group(1)), float(m_.group(2))) for x in lines if (m_ := RE_LR.fullmatch(x))]
    assert [k for k, _ in rates] == list(range(7))
    for k, r in rates:  # inv: base_lr * (1 + gamma * iter) ^ -power
        assert r == pytest.approx(0.1 * (1 + 0.1 * k) ** -0.75, rel=2e-6)


def test_one_step_from_a_caffe_solverstate_restores_iter_step_history_and_restarts_data(
    tiny: Tiny, quiet_log
) -> None:
    """RestoreSolverStateFromBinaryProto sets iter_, current_step_ (multistep keeps its place),
    history; Caffe's state has no data position, so the Data layer starts at record 0. The first
    update then equals w_{k+1} - w_k = -(m h_k + lr (g(w_k; batch 0) + decay w_k))."""
    fields = dict(lr_policy="multistep", gamma=0.5, test_interval=0, display=1)
    extra = "stepvalue: 2\nstepvalue: 3\n"
    log, _, _ = quiet_log("first")
    path = tiny.solver(extra, name="first", max_iter=4, **fields)
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    Solver(str(path), log=log).solve()
    ours = tiny.root / "snap" / "first_iter_4.solverstate"
    state = caffe_state(ours, tiny.root / "caffe_iter_4.solverstate")
    saved = caffe_pb2.SolverState.FromString(state.read_bytes())
    assert saved.current_step == 2 and not saved.HasField("data_cursor")

    log, text, _ = quiet_log("resumed")
    path = tiny.solver(extra, name="resumed", max_iter=5, **fields)
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    solver = Solver(str(path), log=log)
    solver.solve(str(state))
    lines = bodies(text.getvalue())
    assert "Iteration 4, lr = 0.025" in lines  # 0.1 * 0.5^2: current_step came back as 2

    ref = Net(str(tiny.net), phase="TRAIN")
    ref.copy_from(saved.learned_net)
    loss = ref.forward_backward()  # a fresh Data layer: records 0..3
    shown = next(m_ for x in lines if (m_ := RE_ITER_LOSS.fullmatch(x)))
    assert shown.group(1) == "4" and float(shown.group(2)) == pytest.approx(loss, rel=1e-5)
    expected, actual = [], []
    for i, blob in enumerate(ref.learnable_params):
        h = np.frombuffer(np.asarray(saved.history[i].data, f32).tobytes(), f32).reshape(blob.shape)
        g = blob.diff + f32(0.01 * ref.params_weight_decay[i]) * blob.data
        expected.append(-(f32(0.9) * h + f32(0.025 * ref.params_lr[i]) * g).ravel())
        actual.append((solver.net.learnable_params[i].data - blob.data).ravel())
    expected_all, actual_all = np.concatenate(expected), np.concatenate(actual)
    assert np.linalg.norm(actual_all - expected_all) <= 1e-5 * np.linalg.norm(expected_all)


def test_test_scores_are_means_over_test_iter_with_loss_weighted_suffix(
    tiny: Tiny, quiet_log
) -> None:
    """Solver::Test sums every output over test_iter forwards (the test Data layer keeps its
    place across tests), divides by test_iter and prints "(* w = w*mean loss)" for loss outputs."""
    log, text, _ = quiet_log()
    solver = Solver(str(tiny.solver(test_iter=3, max_iter=0, display=0)), log=log)
    solver.test_all()
    solver.test_all()
    ref = Net(str(tiny.net), phase="TEST")
    ref.share_weights_with(solver.net)
    runs = []
    for _ in range(6):  # two tests of 3 batches over 8 records of batch 4 (wrapping)
        ref.forward_loss()
        runs.append((float(ref.blobs["accuracy"].data), float(ref.blobs["loss"].data)))
    lines = bodies(text.getvalue())
    outputs = [m_.groups() for x in lines if (m_ := RE_OUTPUT.fullmatch(x.strip()))]
    assert [o[:3] for o in outputs] == [("Test", "0", "accuracy"), ("Test", "1", "loss")] * 2
    for t, start in enumerate((0, 3)):
        acc, loss = np.mean(runs[start : start + 3], axis=0)
        assert float(outputs[2 * t][3]) == pytest.approx(acc, rel=1e-5, abs=1e-6)
        assert float(outputs[2 * t + 1][3]) == pytest.approx(loss, rel=1e-5)
        assert outputs[2 * t + 1][4:] == ("1", outputs[2 * t + 1][3])
        assert outputs[2 * t][4] is None


def test_solver_mode_gpu_uses_device_id_or_falls_back_to_cpu(tiny: Tiny, monkeypatch, capsys):
    """tools/caffe.cpp train(): with no -gpu flag, an explicit `solver_mode: GPU` selects GPU
    device_id (default 0); without a visible GPU we run on the CPU and say so."""
    import solvers.launch as launch
    from solvers.train_log import TrainLog

    param = caffe_pb2.SolverParameter(solver_mode=caffe_pb2.SolverParameter.GPU, device_id=3)
    log = TrainLog(progress=False)
    monkeypatch.setattr(launch, "visible_gpu_count", lambda: 4)
    assert solver_mode_gpu("", param, log) == "3"
    assert solver_mode_gpu("1", param, log) == "1"  # the flag wins
    assert solver_mode_gpu("", caffe_pb2.SolverParameter(), log) == ""  # mode not given: CPU
    monkeypatch.setattr(launch, "visible_gpu_count", lambda: 0)
    assert solver_mode_gpu("", param, log) == ""
    capsys.readouterr()
    monkeypatch.chdir(tiny.root)
    solver = tiny.solver(max_iter=1, solver_mode="=GPU")
    assert main(["train", "-solver", solver.name, "-no_progress"]) == 0
    lines = bodies(capsys.readouterr().err)
    assert any(x.startswith("solver_mode is GPU but no GPU is visible") for x in lines)
    assert "Use CPU." in lines


def test_weights_flag_and_solver_weights_load_in_order_and_flag_replaces_field(
    tiny: Tiny, capsys, monkeypatch
) -> None:
    """CopyLayers splits -weights on ',' and copies each file in turn into the train and test
    nets (later files win); the solver's `weights` field does the same unless a flag is given."""
    monkeypatch.chdir(tiny.root)
    for n in (2, 4):
        assert main(["train", "-solver", tiny.solver(name=f"w{n}", max_iter=n).name]) == 0
    a, b = "snap/w2_iter_2.caffemodel", "snap/w4_iter_4.caffemodel"

    def start_weights(name: str, flags: list[str], extra: str = "") -> np.ndarray:
        path = tiny.solver(extra, name=name, max_iter=0)
        path.write_text(path.read_text().replace("snapshot_prefix", "snapshot: 0\nsnapshot_prefix"))
        assert main(["train", "-solver", path.name, *flags]) == 0
        net = Net(str(tiny.net), phase="TRAIN")
        net.copy_from(f"snap/{name}_iter_0.caffemodel")
        return net.flat_data.copy()

    def weights_of(path: str) -> np.ndarray:
        net = Net(str(tiny.net), phase="TRAIN")
        net.copy_from(path)
        return net.flat_data.copy()

    np.testing.assert_array_equal(start_weights("ab", ["-weights", f"{a},{b}"]), weights_of(b))
    np.testing.assert_array_equal(start_weights("ba", ["-weights", f"{b},{a}"]), weights_of(a))
    field = f'weights: "{b}"'
    np.testing.assert_array_equal(start_weights("field", [], field), weights_of(b))
    np.testing.assert_array_equal(start_weights("flag", ["-weights", a], field), weights_of(a))
    assert "Finetuning from " + b in bodies(capsys.readouterr().err)


def test_relative_net_path_resolves_against_the_working_directory(
    tiny: Tiny, capsys, monkeypatch
) -> None:
    """ReadNetParamsFromTextFileOrDie opens `net` as given: relative to the CWD, not to the
    solver file's folder (Caffe's examples are run from the Caffe root)."""
    monkeypatch.chdir(tiny.root)
    (tiny.root / "sub").mkdir()
    text = tiny.solver(max_iter=1).read_text().replace(str(tiny.net), tiny.net.name)
    (tiny.root / "sub" / "s.prototxt").write_text(text)
    assert main(["train", "-solver", "sub/s.prototxt"]) == 0
    monkeypatch.chdir(tiny.root / "sub")
    assert main(["train", "-solver", "s.prototxt"]) == 1
    assert tiny.net.name in capsys.readouterr().err


def test_rmsprop_refuses_momentum_and_rms_decay_outside_unit_interval() -> None:
    """RMSPropSolver's constructor_sanity_check: momentum 0 and 0 <= rms_decay < 1."""
    make_rule(caffe_pb2.SolverParameter(type="RMSProp", rms_decay=0.98))
    with pytest.raises(ValueError, match="RMSProp: momentum must be 0"):
        make_rule(caffe_pb2.SolverParameter(type="RMSProp", momentum=0.9))
    with pytest.raises(ValueError, match="rms_decay"):
        make_rule(caffe_pb2.SolverParameter(type="RMSProp", rms_decay=1.0))


# ------------------------------------------------------------------ the held-out method, our side
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT.parent / "shared" / "caffe-examples" / "examples" / "mnist"
RAW_MNIST = Path(os.environ.get("ISGD_DATA_DIR", ROOT.parent / "shared" / "data")) / "mnist"


def lenet_tree(root: Path) -> Path:
    """A Caffe-style tree: examples/mnist/ with Caffe's LeNet files and LMDBs in file order (as
    Caffe's convert_mnist_data writes them). Returns the examples/mnist folder."""
    from data_tools.convert_mnist import convert_mnist

    mnist = root / "examples" / "mnist"
    mnist.mkdir(parents=True)
    for name in ("lenet_solver.prototxt", "lenet_train_test.prototxt"):
        shutil.copy(EXAMPLES / name, mnist / name)
    for split, name in (("train", "train"), ("t10k", "test")):
        convert_mnist(
            RAW_MNIST / f"{split}-images-idx3-ubyte.gz",
            RAW_MNIST / f"{split}-labels-idx1-ubyte.gz",
            mnist / f"mnist_{name}_lmdb",
            shuffle=False,
            progress=False,
        )
    return mnist


def short_solver(mnist: Path, name: str, max_iter: int) -> str:
    """Caffe's lenet_solver.prototxt with only the run length, display, snapshot and test
    batches shortened (solver_mode: GPU stays: with no GPU it must run on the CPU)."""
    text = (mnist / "lenet_solver.prototxt").read_text()
    for old, new in (
        ("max_iter: 10000", f"max_iter: {max_iter}"),
        ("display: 100", "display: 1"),
        ("snapshot: 5000", "snapshot: 3"),
        ("test_iter: 100", "test_iter: 5"),
    ):
        assert old in text
        text = text.replace(old, new)
    (mnist / name).write_text(text)
    return f"examples/mnist/{name}"


def parse_caffe_log(text: str) -> dict[str, dict[int, float]]:
    """The numbers Caffe's log parsers read: smoothed loss and lr per iteration."""
    lines = bodies(text)
    return {
        "loss": {
            int(m_.group(1)): float(m_.group(2)) for x in lines if (m_ := RE_ITER_LOSS.fullmatch(x))
        },
        "lr": {int(m_.group(1)): float(m_.group(2)) for x in lines if (m_ := RE_LR.fullmatch(x))},
    }


def test_caffe_lenet_example_from_iter_0_then_resume_from_a_caffe_state(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """The held-out comparison's method on our side: Caffe's LeNet solver from an iter_0
    caffemodel, then `-snapshot` from a Caffe-format .solverstate. Logged losses and lr parse with
    Caffe's regexes; lr follows "inv"; the first loss of each run equals a fresh forward of its
    weights on the first batch; one step from the state equals the SGD formula."""
    if not (RAW_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST originals not found in {RAW_MNIST} (set ISGD_DATA_DIR)")
    mnist = lenet_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    model = "examples/mnist/lenet_train_test.prototxt"
    Net(model, phase="TRAIN", seed=11).save("examples/mnist/lenet_iter_0.caffemodel")

    def first_batch(weights: str) -> Net:
        net = Net(model, phase="TRAIN")
        net.copy_from(weights)
        net.forward_backward()  # a fresh Data layer: records 0..63
        return net

    solver = short_solver(mnist, "lenet_solver_6.prototxt", 6)
    args = ["train", "-solver", solver, "-weights", "examples/mnist/lenet_iter_0.caffemodel"]
    assert main([*args, "-no_progress"]) == 0
    run = parse_caffe_log(capsys.readouterr().err)
    assert sorted(run["loss"]) == sorted(run["lr"]) == list(range(6))
    for k, rate in run["lr"].items():
        assert rate == pytest.approx(0.01 * (1 + 1e-4 * k) ** -0.75, rel=2e-6)
    assert all(np.isfinite(v) for v in run["loss"].values())
    reference = first_batch("examples/mnist/lenet_iter_0.caffemodel")
    assert run["loss"][0] == pytest.approx(reference.loss, rel=1e-5)

    state = caffe_state(mnist / "lenet_iter_3.solverstate", mnist / "caffe_iter_3.solverstate")
    assert caffe_pb2.SolverState.FromString(state.read_bytes()).learned_net.startswith("examples/")
    snapshot = "examples/mnist/caffe_iter_3.solverstate"
    assert main(["train", "-solver", solver, "-snapshot", snapshot, "-no_progress"]) == 0
    resumed = parse_caffe_log(capsys.readouterr().err)
    assert sorted(resumed["loss"]) == [3, 4, 5]
    at3 = first_batch("examples/mnist/lenet_iter_3.caffemodel")
    assert resumed["loss"][3] == pytest.approx(at3.loss, rel=1e-5)

    one = short_solver(mnist, "lenet_solver_4.prototxt", 4)
    assert main(["train", "-solver", one, "-snapshot", snapshot, "-no_progress"]) == 0
    capsys.readouterr()
    after = Net(model, phase="TRAIN")
    after.copy_from("examples/mnist/lenet_iter_4.caffemodel")
    saved = caffe_pb2.SolverState.FromString(state.read_bytes())
    rate = f32(0.01 * (1 + 1e-4 * 3) ** -0.75)
    expected, actual = [], []
    for i, blob in enumerate(at3.learnable_params):
        h = np.asarray(saved.history[i].data, f32).reshape(blob.shape)
        g = blob.diff + f32(0.0005 * at3.params_weight_decay[i]) * blob.data
        expected.append(-(f32(0.9) * h + f32(rate * f32(at3.params_lr[i])) * g).ravel())
        actual.append((after.learnable_params[i].data - blob.data).ravel())
    want, got = np.concatenate(expected), np.concatenate(actual)
    assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)


def test_train_net_test_net_files_and_test_state_stages_select_layers(
    tiny: Tiny, quiet_log
) -> None:
    """InitTrainNet/InitTestNets: train_net + test_net files instead of `net`; each test net's
    NetState is phase TEST merged with its test_state (stages pick include { stage } layers)."""
    staged = tiny.net.read_text() + (
        'layer { name: "top2" type: "Accuracy" bottom: "ip2" bottom: "label" top: "top2"\n'
        '  accuracy_param { top_k: 2 } include { phase: TEST stage: "val" } }\n'
    )
    net = tiny.root / "staged.prototxt"
    net.write_text(staged)
    text = tiny.solver(max_iter=0, display=0).read_text()
    text = text.replace(
        f'net: "{tiny.net}"', f'train_net: "{net}"\ntest_net: "{net}"\ntest_net: "{net}"'
    )
    text = text.replace(
        "test_iter: 2", 'test_iter: 2\ntest_iter: 2\ntest_state { }\ntest_state { stage: "val" }'
    )
    path = tiny.root / "variants.prototxt"
    path.write_text(text)
    log, _, _ = quiet_log()
    solver = Solver(str(path), log=log)
    assert "top2" not in solver.net.blobs
    assert [list(n.output_blob_names) for n in solver.test_nets] == [
        ["accuracy", "loss"],
        ["accuracy", "loss", "top2"],
    ]
