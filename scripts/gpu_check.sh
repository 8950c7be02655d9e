#!/usr/bin/env bash
# The prepared GPU check, in one go with a time cap per phase (a lent GPU has minutes, not hours):
#   1. the `gpu` tests (tests/gpu): CuPy's behaviour the stand-in assumes, LeNet and CIFAR-10
#      quick on the GPU against the CPU, exact snapshot/resume with Dropout, mpiexec -n 2 -gpu all
#      when two devices exist;
#   2. every backend-parametrized test (layers, Caffe references, net state, resume) on CuPy itself;
#   3. the GPU timing of bench.py's four nets (scripts/gpu_bench.py, synchronized), JSON lines.
# Needs CuPy for the machine's CUDA (pip install -e '.[dev,mpi,gpu]').
# Usage: scripts/gpu_check.sh [OUT_DIR]   (default results/gpu; timeouts via GPU_*_TIMEOUT)
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/gpu}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
status=0

if ! "$PY" -c "import cupy; n = cupy.cuda.runtime.getDeviceCount(); print(f'CuPy {cupy.__version__}, {n} device(s)'); assert n > 0" 2>&1 | tee "$OUT/devices.txt"; then
    echo "gpu_check: CuPy is not installed or no CUDA device is visible (pip install -e '.[gpu]')" >&2
    exit 2
fi
nvidia-smi -L >> "$OUT/devices.txt" 2>&1 || true

echo "== 1/3 gpu tests" | tee "$OUT/summary.txt"
timeout "${GPU_TEST_TIMEOUT:-300}" "$PY" -m pytest -q -rs -m gpu tests/gpu 2>&1 \
    | tee "$OUT/gpu_tests.txt" || status=1
tail -n 1 "$OUT/gpu_tests.txt" >> "$OUT/summary.txt"

echo "== 2/3 backend-parametrized tests on CuPy" | tee -a "$OUT/summary.txt"
ISGD_TEST_REAL_CUPY=1 timeout "${GPU_XP_TIMEOUT:-240}" "$PY" -m pytest -q -x -k "cupy" \
    tests/engine/layers tests/engine/test_caffe_reference.py tests/solvers/test_net_state.py \
    tests/solvers/test_solver.py tests/test_cupy_standin.py 2>&1 \
    | tee "$OUT/cupy_backend_tests.txt" || status=1
tail -n 1 "$OUT/cupy_backend_tests.txt" >> "$OUT/summary.txt"

echo "== 3/3 GPU timing (ms per iteration, forward + backward)" | tee -a "$OUT/summary.txt"
timeout "${GPU_BENCH_TIMEOUT:-240}" "$PY" scripts/gpu_bench.py --json --iterations 20 \
    > "$OUT/gpu_bench.jsonl" || status=1
"$PY" - "$OUT/gpu_bench.jsonl" <<'PYEOF' | tee -a "$OUT/summary.txt"
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['net']:>10} batch {r['batch']:>4}: {r['ms_per_iter']:8.2f} ms/iter "
          f"(median {r['ms_per_iter_median']:.2f}), {r['images_per_s']:9.0f} images/s, "
          f"{100 * r['peak_fraction']:5.1f}% of {r['peak_gflops']:.0f} GFLOP/s")
PYEOF
exit $status
