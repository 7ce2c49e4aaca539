"""How the GPU paths are verified on a machine without a GPU: the Triton kernels compile ahead of time for
Hopper and vectorise; the _cuda module holds sm_90 code, spills nothing, uses 128-bit loads and fails clearly
without a driver. Also the build knobs."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import fastercache_kernels
from fastercache_kernels import _ext

ROOT = Path(__file__).resolve().parents[1]
PKG = Path(fastercache_kernels.__file__).resolve().parent
NVCC = shutil.which("nvcc")
CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
TRITON_MODULES = sorted(p.stem for p in (PKG / "triton").glob("*.py") if not p.stem.startswith("_") and p.stem != "aot")


def _cuobjdump():
    try:
        import triton
    except ImportError:
        return None
    exe = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(exe) if exe.exists() else shutil.which("cuobjdump")


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("module", TRITON_MODULES)
def test_triton_aot_sm90_vectorises(module, dtype):
    pytest.importorskip("triton")
    from fastercache_kernels.triton.aot import compile_ptx

    ptx = compile_ptx(module, dtype, arch=90)
    assert ".target sm_90" in ptx
    assert re.search(r"ld\.global(\.\w+)*\.v4", ptx), f"{module} {dtype}: no 128-bit global loads in the PTX"


def _cuda_so():
    return next(iter(PKG.glob("_cuda.*so")), None)


@pytest.mark.skipif(_cuda_so() is None, reason="_cuda is not built")
def test_cuda_module_holds_sm90_and_vector_loads():
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (it ships with triton)")
    elfs = subprocess.run([tool, "--list-elf", str(_cuda_so())], capture_output=True, text=True, check=True).stdout
    for arch in ("sm_80", "sm_90", "sm_90a"):
        assert re.search(rf"\.{arch}\.cubin", elfs), f"no {arch} code in _cuda:\n{elfs}"
    ptx = subprocess.run([tool, "--list-ptx", str(_cuda_so())], capture_output=True, text=True).stdout
    assert "sm_90" in ptx, "no PTX for newer GPUs in _cuda"
    sass = subprocess.run([tool, "--dump-sass", "--gpu-architecture", "sm_90", str(_cuda_so())],
                          capture_output=True, text=True, check=True).stdout
    assert "LDG.E.128" in sass and "STG.E.128" in sass


@pytest.mark.skipif(_cuda_so() is None or torch.cuda.is_available(), reason="needs _cuda built and no GPU")
def test_cuda_launcher_without_driver_raises_clearly():
    mod = _ext.cuda()
    with pytest.raises(RuntimeError, match="no usable CUDA driver or device"):
        mod.extrapolate(0, 0, 0, 0, 0, 16, 0)


@pytest.mark.skipif(NVCC is None, reason="no nvcc")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_cuda_kernels_do_not_spill(source, tmp_path):
    inc = [f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc' / 'cuda'}"]
    res = subprocess.run([NVCC, "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-arch=sm_90", "-cubin",
                          "-Xptxas", "-v", *inc, "-o", str(tmp_path / "k.cubin"), str(source)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", res.stderr)
    assert spills, res.stderr
    assert all(s == "0" and l == "0" for s, l in spills), res.stderr


def test_cuda_on_without_nvcc_fails_with_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CUDACXX"}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                  if not (Path(p) / "nvcc").exists())
    env["FASTERCACHE_CUDA"] = "on"
    res = subprocess.run([sys.executable, "setup.py", "build_ext", "-b", str(tmp_path), "-t", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode != 0
    assert "FASTERCACHE_CUDA=on but nvcc is not on the PATH" in res.stdout + res.stderr


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="no nvcc: the wheel would hold _cpu only")
def test_wheel_holds_both_modules(tmp_path):
    pytest.importorskip("pybind11")
    if os.environ.get("FASTERCACHE_CUDA", "").lower() == "off":
        pytest.skip("FASTERCACHE_CUDA=off: no CUDA module wanted")
    tree = ROOT / "build" / "cmake"  # the Makefile's persistent tree: reusing it links, where a new one recompiles
    if (tree / "CMakeCache.txt").exists():
        env = dict(os.environ, FASTERCACHE_CUDA="auto", FASTERCACHE_BUILD_DIR=str(tree))
        env.pop("FASTERCACHE_CUDA_ARCHS", None)
    else:
        env = dict(os.environ, FASTERCACHE_CUDA_ARCHS="90-real", FASTERCACHE_BUILD_DIR=str(tmp_path / "build"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path), str(ROOT)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    wheel = next(tmp_path.glob("fastercache_kernels-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(re.match(r"fastercache_kernels/_cpu\..*so$", n) for n in names), names
    assert any(re.match(r"fastercache_kernels/_cuda\..*so$", n) for n in names), names


@pytest.mark.skipif(_cuda_so() is None or torch.cuda.is_available(), reason="needs _cuda built and no GPU")
def test_elementwise_launchers_without_driver_raise_clearly():
    mod = _ext.cuda()
    calls = {
        "cfg_recombine": lambda: mod.cfg_recombine(0, 2, 0, 0, 0, 0, 0, 0, 16, 0),
        "cfg_recombine_guided": lambda: mod.cfg_recombine_guided(0, 2, 0, 0, 0, 0, 0, 0, 0, 16, 0),
        "cfg_residual_split": lambda: mod.cfg_residual_split_diff(0, 1, 0, 0, 0, 16, 0),
        "extrapolate_residual": lambda: mod.extrapolate_residual(2, 2, 0, 0, 0, 0, 0, 8, 64, 8, 64, 0),
        "residual_sum": lambda: mod.residual_sum(1, 0, 0, [0] * 3, 16, 0, 0),
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match=f"fastercache CUDA {name}: .*no usable CUDA driver or device"):
            call()
    # more residuals than one launch carries need the fp32 workspace; checked before anything is launched
    assert mod.RESIDUAL_SUM_CAPACITY == 64
    with pytest.raises(ValueError, match="need an fp32 workspace"):
        mod.residual_sum(1, 0, 0, [0] * 65, 16, 0, 0)
