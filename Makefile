# make test: create .venv, install everything, run the whole suite.   make demo: the main job.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch 2.13.0: on a machine without a GPU this resolves to the CPU build (the file on disk here); never leave
# torch unpinned, or pip pulls a multi-GB CUDA build. triton 3.7.1 is the release torch 2.13 pairs with.
PINS   := torch==2.13.0 triton==3.7.1
TEST_PINS := diffusers==0.42.1 transformers==5.23.0 accelerate==1.15.0 safetensors pytest hypothesis \
             pytest-benchmark tqdm scikit-image matplotlib pillow
BUILD_DEPS := 'setuptools>=64' wheel 'pybind11>=2.12' 'cmake>=3.24' ninja
SOURCES := $(shell find csrc -type f) CMakeLists.txt setup.py pyproject.toml

.PHONY: install test demo bench info clean gpu-check

$(VENV)/.deps: Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(PINS)
	$(PIP) install -q $(BUILD_DEPS) $(TEST_PINS)
	touch $@

# Editable install with a persistent CMake tree, so a rebuild after a source change is incremental.
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	FASTERCACHE_BUILD_DIR=build/cmake $(PIP) install -q --no-build-isolation --no-deps -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest

demo: install
	$(PY) -m fastercache_kernels demo

bench: install
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-columns=median,ops --benchmark-sort=name

# On a GPU machine, one command: the install (CPU modules only: the 3-architecture CUDA build takes ~6 minutes),
# then `gpu-check` builds _cuda for the visible GPU alone and runs the GPU tests and benchmarks within the budget,
# which counts from here. GPU_CHECK_ARGS: e.g. --budget-s 400 --out results/gpu-check.
GPU_CHECK_START := $(shell date +%s)
gpu-check:
	FASTERCACHE_CUDA=off $(MAKE) install
	$(PY) -m fastercache_kernels gpu-check --started-at $(GPU_CHECK_START) $(GPU_CHECK_ARGS)

info: install
	$(PY) -m fastercache_kernels info

clean:
	rm -rf build $(VENV) fastercache_kernels/*.so fastercache_kernels/_build_info.json
