# Caffe-faithful ISGD harness. `make setup` once, then `make test` / `make bench` / `make data`.
VENV ?= .venv
PY := $(shell [ -x $(VENV)/bin/python ] && echo $(VENV)/bin/python || echo python3)
ISGD_DATA_DIR ?= data/raw
export ISGD_DATA_DIR

.PHONY: setup test test-slow test-mpi test-gpu gpu-check lint bench bench-gpu proto data \
	data-verify clean help reproduce-table1 table1 figures sweep-isgd sweep-lr
DATA_SEED ?= 1
DATA_ARGS ?=
PROFILE ?= default
DATASETS ?=
RUNS ?=
REDO ?=
JOBS ?=
WAIT ?=
EXPERIMENT_ARGS = --profile $(PROFILE) $(if $(DATASETS),--datasets $(DATASETS)) $(if $(RUNS),--runs $(RUNS)) \
	$(if $(REDO),--redo-changed) $(if $(JOBS),--jobs $(JOBS)) $(if $(WAIT),--wait)

help:
	@echo "make reproduce-table1 [PROFILE=smoke|default|paper] [DATASETS=mnist,cifar10] [RUNS=N]"
	@echo "                 [JOBS=1|2] [REDO=1: move runs made with other settings to stale/] [WAIT=1]"
	@echo "                 train every SGD/ISGD pair of the profile, then write results/table1.*"
	@echo "make table1      rebuild the Table 1 files from the runs' logs (no training)"
	@echo "make figures     the paper's figures 1-3, 5-9 (runs what they need first)"
	@echo "make sweep-isgd  the readings the paper leaves open, against SGD (results/sweep.*)"
	@echo "make sweep-lr    each arm at its own best lr, scored on held-out seeds (results/sweep_lr.*)"
	@echo "make setup      create $(VENV) and install the project (numpy, numba, protobuf, lmdb, mpi4py, mpich)"
	@echo "make test       run the default test suite (< 10 min on 2 cores) and ruff"
	@echo "                 [TEST_WORKERS=2] (pytest-xdist workers; 0 runs it in one process)"
	@echo "make test-slow  run the long checks too (real-data training)"
	@echo "make bench      time LeNet, CIFAR-10 quick and AlexNet (scripts/bench.py)"
	@echo "make test-mpi   only the MPI tests (mpiexec -n 2 and -n 4; oversubscribed is fine)"
	@echo "make test-gpu   the gpu tests (need CuPy and a CUDA device: pip install -e '.[gpu]')"
	@echo "make bench-gpu  time the benchmark nets on the GPU (scripts/gpu_bench.py)"
	@echo "make gpu-check  gpu tests + CuPy under the backend tests + GPU timing (scripts/gpu_check.sh)"
	@echo "make data       MNIST / CIFAR-10 originals in ISGD_DATA_DIR -> LMDBs (FCPR order) under data/"
	@echo "                 [DATA_SEED=1] [DATA_ARGS='--overwrite --download'] (another seed needs --overwrite)"
	@echo "make data-verify  md5-check the originals in ISGD_DATA_DIR"
	@echo "make proto      regenerate engine/proto/caffe_pb2.py from engine/proto/caffe.proto"

setup:
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,mpi]'

# Two pytest workers (pytest-xdist), a test file each at a time (its module fixtures run once);
# each worker's OpenBLAS on one thread, so the two do not oversubscribe the cores. Compiled
# bytecode is kept under $(VENV) even where PYTHONDONTWRITEBYTECODE is set: the trainers and MPI
# ranks the tests start would otherwise compile the project's sources anew at every start.
TEST_WORKERS ?= 2
TEST_ENV = OPENBLAS_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=$(CURDIR)/$(VENV)/pycache
test:
	$(PY) -m ruff check .
	$(TEST_ENV) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-slow:
	$(PY) -m pytest -q -m slow

test-mpi:
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m mpi tests/solvers/test_mpi_comm.py tests/solvers/test_mpi_training.py

test-gpu:
	$(PY) -m pytest -q -rs -m gpu tests/gpu

bench-gpu:
	$(PY) scripts/gpu_bench.py

gpu-check:
	PY=$(PY) scripts/gpu_check.sh

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench:
	$(PY) scripts/bench.py

data:
	$(PY) -m data_tools prepare --out data --seed $(DATA_SEED) $(DATA_ARGS)

data-verify:
	$(PY) -m data_tools fetch

proto:
	$(PY) -m grpc_tools.protoc -I engine/proto --python_out=engine/proto engine/proto/caffe.proto

reproduce-table1:
	$(PY) -m scripts.reproduce $(EXPERIMENT_ARGS)

table1:
	$(PY) -m scripts.table1 --profile $(PROFILE) $(if $(DATASETS),--datasets $(DATASETS))

figures:
	$(PY) -m scripts.figures $(EXPERIMENT_ARGS)

sweep-isgd:
	$(PY) -m scripts.sweep $(EXPERIMENT_ARGS)

sweep-lr:
	$(PY) -m scripts.sweep_lr --profile $(PROFILE) $(if $(DATASETS),--datasets $(DATASETS)) \
		$(if $(REDO),--redo-changed) $(if $(JOBS),--jobs $(JOBS)) $(if $(WAIT),--wait)

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache
