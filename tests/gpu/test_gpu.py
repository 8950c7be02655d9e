"""On a real GPU (marker `gpu`; skipped with the reason where CuPy or a CUDA device is absent).

    pip install -e '.[gpu]'           # cupy-cuda12x; match your CUDA version
    python -m pytest -m gpu tests/gpu # or `make test-gpu`; scripts/gpu_check.sh adds the timing

What the default suite proves on the strict stand-in (tests/cupy_standin.py), checked here
against CuPy itself: the stand-in's assumptions about CuPy, LeNet and CIFAR-10 quick for 20
iterations against the CPU (first 5 losses to 1e-4 relative, mean loss to 1 %), an exact
snapshot/resume with Dropout on the device, and `mpiexec -n 2 ... -gpu all` with two devices.
Setting ISGD_TEST_REAL_CUPY=1 also runs every backend-parametrized test (the `xp` fixture:
layers, Caffe references, solver resume) on CuPy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.backend import DeviceRNG, device_count, make_rng, rng_state, set_rng_state, to_numpy
from engine.net import Net
from solvers.solver import Solver
from solvers.train_log import TrainLog
from tests.solvers.conftest import Tiny
from tests.solvers.test_standin_runs import _solver_param, make_tree

try:
    import cupy

    N_DEVICES = device_count(cupy)
    WHY = "" if N_DEVICES else "CuPy is installed but no CUDA device is visible"
except ImportError:
    cupy, N_DEVICES, WHY = None, 0, "CuPy is not installed (pip install -e '.[gpu]')"

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(N_DEVICES == 0, reason=WHY or "no GPU")]

ITERS = 20


# ------------------------------------------------------------------------ the stand-in's claims
def test_cupy_refuses_what_the_standin_refuses() -> None:
    a = cupy.arange(6, dtype=cupy.float32)
    with pytest.raises(TypeError):
        np.asarray(a)
    with pytest.raises(TypeError):
        cupy.lib.stride_tricks.as_strided(a, (2,), (4,), writeable=False)
    with pytest.raises(TypeError):
        cupy.add(a, a, where=True)
    assert callable(cupy.random.default_rng(1).bit_generator.state)
    assert isinstance(a[0], cupy.ndarray) and a[0].shape == ()


def test_device_rng_restores_the_stream_exactly() -> None:
    rng = make_rng(cupy, 7)
    assert isinstance(rng, DeviceRNG)
    rng.random((100,), dtype=np.float32)
    state = json.loads(json.dumps(rng_state(rng)))
    want = to_numpy(rng.random((1000,), dtype=np.float32))
    other = make_rng(cupy, 1)
    set_rng_state(other, state)
    np.testing.assert_array_equal(to_numpy(other.random((1000,), dtype=np.float32)), want)
    assert 0.45 < float(want.mean()) < 0.55


# ------------------------------------------------------------------------ the paper's nets
@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("paper_nets_gpu"))


def losses(tree_: Path, name: str, xp: object, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    monkeypatch.chdir(tree_)
    param = _solver_param(tree_, name)
    param.max_iter = ITERS
    log = TrainLog(stream=None, json_path=None, progress=False)
    events: list[dict] = []
    log.event = events.append  # type: ignore[method-assign]
    Solver(param, xp=xp, log=log).solve()
    return [e["loss"] for e in events if e["event"] == "iter"]


@pytest.mark.parametrize("name", ["lenet", "cifar10_quick"])
def test_paper_nets_on_the_gpu_track_the_cpu(
    tree: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = losses(tree, name, np, monkeypatch)
    gpu = losses(tree, name, "cupy", monkeypatch)
    assert len(cpu) == len(gpu) == ITERS
    np.testing.assert_allclose(gpu[:5], cpu[:5], rtol=1e-4, atol=0)
    assert np.mean(gpu) == pytest.approx(np.mean(cpu), rel=0.01)


def test_net_accepts_xp_cupy_by_name(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    net = Net("prototxt/lenet_train_test.prototxt", "TEST", xp="cupy", seed=1)
    out = net.forward()
    assert isinstance(out["accuracy"], cupy.ndarray) and 0 <= float(out["accuracy"]) <= 1


# ------------------------------------------------------------------------ snapshot and resume
def test_resume_with_dropout_on_the_gpu_is_exact(tmp_path: Path) -> None:
    tiny = Tiny(tmp_path)
    relu = 'layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }'
    drop = 'layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" }'
    tiny.net.write_text(tiny.net.read_text().replace(relu, relu + "\n" + drop))

    def run(name: str, max_iter: int, resume: str | None = None) -> np.ndarray:
        log = TrainLog(stream=None, json_path=None, progress=False)
        solver = Solver(str(tiny.solver(name=name, max_iter=max_iter)), log=log, xp="cupy")
        solver.solve(resume)
        return to_numpy(solver.net.flat_data)

    straight = run("straight", 12)
    run("first", 6)
    resumed = run("second", 12, str(tiny.root / "snap" / "first_iter_6.solverstate"))
    np.testing.assert_array_equal(resumed, straight)


# ------------------------------------------------------------------------ two GPUs, two ranks
@pytest.mark.mpi
@pytest.mark.skipif(N_DEVICES < 2, reason="needs two CUDA devices")
def test_mpiexec_two_ranks_gpu_all(tmp_path: Path) -> None:
    from tests.solvers.mpi_scripts.runner import have_mpi, run_mpi
    from tests.solvers.test_mpi_training import write_cli_run

    ok, why = have_mpi()
    if not ok:
        pytest.skip(why)
    write_cli_run(tmp_path)
    result = run_mpi(
        2, "-m", "solvers", "train", "-solver", "solver.prototxt", "-gpu", "all",
        "--no-progress", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.output[-4000:]
    assert re.search(r"2 ranks use GPUs \[0, 1\]", result.output), result.output[-3000:]
    events = [json.loads(x) for x in (tmp_path / "snap" / "run_log.jsonl").open()]
    assert [e["iter"] for e in events if e.get("event") == "iter"] == list(range(6))
