"""The README's commands work as written: every `make` target exists, every `isgd` command parses
with exact flags and names files that exist or that an earlier README command writes, the Python
example compiles; a slow test runs the cheap command blocks for real (make test-slow)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from engine.proto_io import read_solver_param
from solvers.cli import build_parser, unknown_flag

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHARED_DATA = ROOT.parent / "shared" / "data"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def commands() -> list[str]:
    """Every command line of the README's sh blocks, comments and continuations resolved."""
    out = []
    for block in blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def _split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    return env, words


def test_every_make_command_names_a_real_target() -> None:
    makes = [c for c in commands() if "make " in c]
    assert any("make setup" in c for c in makes) and any("make test" in c for c in makes)
    assert any("make reproduce-table1" in c for c in makes), "the main job is in the README"
    for line in makes:
        for part in line.split("&&"):
            env, words = _split_env(shlex.split(part))
            if words[:1] != ["make"]:
                continue
            result = subprocess.run(
                ["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 0, f"README: `{part.strip()}`: {result.stderr}"


def test_every_isgd_command_parses_and_its_files_exist_or_come_from_earlier_commands() -> None:
    parser = build_parser()
    produced: set[str] = set()
    checked = 0
    for line in commands():
        env, words = _split_env(shlex.split(line))
        if words[:1] != ["isgd"]:
            continue
        argv = words[1:]
        assert unknown_flag(parser, argv) is None, f"README: `{line}`"
        args = parser.parse_args(argv)
        for flag in ("solver", "model"):
            path = getattr(args, flag)
            if path:
                assert (ROOT / path).is_file(), f"README: `{line}`: {path} does not exist"
        for flag in ("weights", "snapshot"):
            path = getattr(args, flag)
            if path:
                assert path in produced, f"README: `{line}`: nothing before writes {path}"
        if args.command == "train":
            solver = read_solver_param(str(ROOT / args.solver))
            iters = args.iterations or solver.max_iter
            for ext in (".caffemodel", ".solverstate"):
                produced.add(f"{solver.snapshot_prefix}_iter_{iters}{ext}")
        checked += 1
    assert checked >= 4


def test_the_python_example_compiles_and_its_weights_come_from_the_training_example() -> None:
    [example] = [b for b in blocks("python") if "engine.Net" in b and "weights=" in b]
    compile(example, "README.md", "exec")
    weights = re.search(r'weights="([^"]+)"', example).group(1)
    assert weights in " ".join(commands()), "the Python example reads a file the README makes"


@pytest.mark.slow
def test_the_readme_first_hour_runs_as_written(tmp_path: Path) -> None:
    """`make data`, the Training block and the Python example, in a fresh clone of HEAD with the
    project's environment active (what `. .venv/bin/activate` gives)."""
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the MNIST originals are not in {SHARED_DATA}")
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent)  # ../shared beside the clone
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = dict(os.environ)
    env.pop("ISGD_JIT", None)  # a user's shell: the compiled loops, not the test trainers' setting
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(clone)
    env["ISGD_DATA_DIR"] = str(SHARED_DATA)
    env["VENV"] = str(Path(sys.executable).parent.parent)
    lines = [c for c in commands() if c.startswith(("ISGD_DATA_DIR=", "isgd "))]
    lines = [c for c in lines if "/path/to" not in c and "-gpu" not in c]  # GPU: tests/gpu
    outputs = []
    for line in lines:
        result = subprocess.run(
            line, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, f"README: `{line}` failed:\n{result.stderr[-3000:]}"
        outputs.append(result.stderr + result.stdout)
    first_train = next(o for line, o in zip(lines, outputs, strict=True) if "train" in line)
    accuracy = re.findall(r"Test net output #0: accuracy = ([\d.]+)", first_train)
    assert accuracy and float(accuracy[-1]) >= 0.98, "the accuracy the README claims"
    assert "Training clock" in first_train and "wall time" in first_train
    [example] = [b for b in blocks("python") if "engine.Net" in b and "weights=" in b]
    result = subprocess.run(
        [sys.executable, "-c", example], cwd=clone, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
