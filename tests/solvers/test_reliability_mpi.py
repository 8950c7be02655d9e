"""Issue 15 under mpiexec: the text log's train outputs are global values, and a start that the
ranks refuse (batch not divisible by n) leaves the earlier run's files untouched."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.solvers.mpi_scripts.runner import MpiResult, have_mpi, run_mpi
from tests.solvers.test_mpi_training import write_cli_run
from tests.solvers.test_reliability import digest

MPI_OK, MPI_WHY = have_mpi()
pytestmark = [pytest.mark.mpi, pytest.mark.skipif(not MPI_OK, reason=MPI_WHY)]

ITERATION = re.compile(r"\] Iteration (\d+) \(.*\), loss = ([-\d.e+]+)$")
OUTPUT = re.compile(r"\]     Train net output #0: loss = ([-\d.e+]+)")


ARGS = ["-m", "solvers", "train", "-solver", "solver.prototxt", "--no-progress"]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MpiResult]:
    """One finished `mpiexec -n 2 ... train` (master/worker, display 1), shared read-only: its
    folder and its output."""
    folder = tmp_path_factory.mktemp("two_ranks")
    write_cli_run(folder)
    solver = folder / "solver.prototxt"
    solver.write_text(solver.read_text().replace("display: 0", "display: 1"))
    result = run_mpi(2, *ARGS, cwd=folder, timeout=120)
    assert result.returncode == 0, result.output[-4000:]
    return folder, result


def test_train_net_output_under_mpiexec_is_the_global_loss(
    two_rank_run: tuple[Path, MpiResult],
) -> None:
    """With average_loss 1 the `Iteration N ..., loss =` line is the reduced batch loss; each
    `Train net output #0: loss` line under it must print the same global value, not rank 0's
    slice of the batch."""
    result = two_rank_run[1]
    lines = result.output.splitlines()
    pairs = []
    for i, line in enumerate(lines):
        m = ITERATION.search(line)
        if m:
            out = next(OUTPUT.search(x) for x in lines[i + 1 :] if OUTPUT.search(x))
            pairs.append((float(m.group(2)), float(out.group(1))))
    assert len(pairs) == 6
    for smoothed, printed in pairs:
        assert printed == pytest.approx(smoothed, rel=2e-5)


def test_ranks_refusing_the_batch_split_change_no_earlier_file(
    two_rank_run: tuple[Path, MpiResult], tmp_path: Path
) -> None:
    """A 3-rank start on a global batch of 8 fails on every rank before any file is opened."""
    shutil.copytree(two_rank_run[0], tmp_path, dirs_exist_ok=True)  # the earlier run, a copy
    before = digest([tmp_path / "snap"])
    assert any(name.endswith(".solverstate") for name in before), "the earlier run's snapshots"
    result = run_mpi(3, *ARGS, "-overwrite_log", cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "batch_size 8 (the global batch) is not divisible by the 3 ranks" in result.output
    assert digest([tmp_path / "snap"]) == before


def test_every_rank_names_the_same_last_good_snapshot_when_training_diverges(
    tmp_path: Path,
) -> None:
    write_cli_run(tmp_path, base_lr="1e6")
    solver = tmp_path / "solver.prototxt"
    text = solver.read_text().replace("snapshot: 3", "snapshot: 1").replace("max_iter: 6", "")
    solver.write_text(text + "max_iter: 300\n")
    result = run_mpi(2, *ARGS, cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    named = set(re.findall(r"The last good snapshot is: (\S+)", result.output))
    assert len(named) == 1, result.output[-3000:]
    assert "none written" not in result.output
    assert "RuntimeWarning" not in result.output
