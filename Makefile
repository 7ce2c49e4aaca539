# make test: create .venv, install everything (CUDA module included where nvcc is found), run the whole suite.
# make demo: the main job; builds the CUDA module only when a GPU is visible (docs/build.md).
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

.PHONY: install test demo demo-full bench info clean gpu-check

$(VENV)/.deps: Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(PINS)
	$(PIP) install -q $(BUILD_DEPS) $(TEST_PINS)
	touch $@

# FASTERCACHE_CUDA=auto|on|off from the environment is passed on to the build (docs/build.md).
FASTERCACHE_CUDA ?= auto
# On a machine with nvcc but no GPU the _cuda module was 380 of 652 compile job-seconds of a fresh set-up, for
# code that cannot run there: `make demo` skips it unless nvidia-smi lists a GPU.
GPU_VISIBLE := $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU' && echo yes)
# setup.py's auto builds _cuda only where a GPU is visible (or TORCH_CUDA_ARCH_LIST asks); `make test` asks for it
# wherever nvcc is found, since it is the suite's only compile check of csrc/cuda. With no GPU, one architecture
# does for that check: sm_90, whose SASS tests/test_build.py inspects (the wheel test of make test builds sm_80);
# the 3-architecture default took ~6 of CI's 14 minutes. TORCH_CUDA_ARCH_LIST/FASTERCACHE_CUDA_ARCHS override.
NVCC_FOUND  := $(or $(CUDACXX),$(shell command -v nvcc 2>/dev/null))
CUDA_MODE   := $(if $(filter on,$(FASTERCACHE_CUDA)),on,$(if $(NVCC_FOUND),on,auto))
CUDA_ARCHS  := $(if $(filter on,$(CUDA_MODE)),$(if $(or $(GPU_VISIBLE),$(TORCH_CUDA_ARCH_LIST),\
               $(FASTERCACHE_CUDA_ARCHS)),,TORCH_CUDA_ARCH_LIST=9.0))
CUDA_NOTE   := $(if $(filter on,$(CUDA_MODE)),the CPU modules and _cuda (nvcc found$(if $(GPU_VISIBLE),; for the \
               visible GPU,$(if $(CUDA_ARCHS),; no GPU visible: sm_90 only as the compile check))); \
               FASTERCACHE_CUDA=off skips _cuda,the CPU modules only (no nvcc found))
# Two stamps: .installed-cpu (CPU modules current) and .installed-cuda (CUDA module current as well). A CUDA build
# refreshes both; a CPU-only build deletes the stale _cuda module and the CUDA stamp, so `make demo` then
# `make test` adds the CUDA module to the same persistent CMake tree (the CPU objects are not recompiled).
STAMP_CPU   := $(VENV)/.installed-cpu
STAMP_CUDA  := $(VENV)/.installed-cuda
INSTALLED   := $(if $(filter off,$(FASTERCACHE_CUDA)),$(STAMP_CPU),$(STAMP_CUDA))
DEMO_STAMP  := $(if $(filter off,$(FASTERCACHE_CUDA)),$(STAMP_CPU),$(if $(GPU_VISIBLE),$(STAMP_CUDA),$(STAMP_CPU)))
# setuptools' note on every editable install (a BuildBackendWarning that folders named like the package may shadow it)
# says nothing about this project; the filter hides only that one.
EDITABLE    := PYTHONWARNINGS="ignore:Editable installation" FASTERCACHE_BUILD_DIR=build/cmake \
               $(PIP) install -q --no-build-isolation --no-deps -e ".[test]"

# Editable install with a persistent CMake tree, so a rebuild after a source change is incremental.
$(STAMP_CPU): $(VENV)/.deps $(SOURCES)
	@if [ -f $(STAMP_CUDA) ] && [ -z "$$(find $? -newer $(STAMP_CUDA) 2>/dev/null)" ]; then \
	  touch $@; \
	else \
	  rm -f $(STAMP_CUDA) fastercache_kernels/_cuda.*so; \
	  echo "building the CPU modules only (no GPU visible; FASTERCACHE_CUDA in docs/build.md)"; \
	  FASTERCACHE_CUDA=off $(EDITABLE) && touch $@; \
	fi

$(STAMP_CUDA): $(VENV)/.deps $(SOURCES)
	@echo "building $(CUDA_NOTE) (docs/build.md)"
	FASTERCACHE_CUDA=$(CUDA_MODE) $(CUDA_ARCHS) $(EDITABLE)
	touch $@ $(STAMP_CPU)

install: $(INSTALLED)

test: $(INSTALLED)
	$(PY) -m pytest

# demo: no cache against each model's recommended setting, one summary line each (about a minute of sampling);
# demo-full: every setting, both models, GIFs and the op table (docs/demo.md).
demo: $(DEMO_STAMP)
	$(PY) -m fastercache_kernels demo

demo-full: $(DEMO_STAMP)
	$(PY) -m fastercache_kernels quality

bench: $(DEMO_STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-columns=median,ops --benchmark-sort=name

# On a GPU machine, one command: the install (CPU modules only: the 3-architecture CUDA build takes ~6 minutes),
# then `gpu-check` builds _cuda for the visible GPU alone and runs the GPU tests and benchmarks within the budget,
# which counts from here. GPU_CHECK_ARGS: e.g. --budget-s 400 --out results/gpu-check.
GPU_CHECK_START := $(shell date +%s)
gpu-check:
	FASTERCACHE_CUDA=off $(MAKE) install
	$(PY) -m fastercache_kernels gpu-check --started-at $(GPU_CHECK_START) $(GPU_CHECK_ARGS)

info: $(DEMO_STAMP)
	$(PY) -m fastercache_kernels info

clean:
	rm -rf build $(VENV) fastercache_kernels/*.so fastercache_kernels/_build_info.json
