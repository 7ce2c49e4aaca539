"""How the GPU paths are verified on a machine without a GPU: the Triton kernels compile ahead of time for
Hopper and vectorise; the _cuda module holds sm_90 code, spills nothing, uses 128-bit loads and fails clearly
without a driver. Also the build knobs."""

import os
import re
import shutil
import subprocess
import sys
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


def _cuobjdump_lists(tool: str, so) -> tuple[set[str], set[str]]:
    """({"sm_80", ...} with SASS, {"compute_90", ...} with PTX) in a compiled module."""
    elfs = subprocess.run([tool, "--list-elf", str(so)], capture_output=True, text=True, check=True).stdout
    ptx = subprocess.run([tool, "--list-ptx", str(so)], capture_output=True, text=True).stdout
    ptx_targets = {f"compute_{n}" for n in re.findall(r"\.sm_(\d+a?)\.ptx", ptx)}
    return set(re.findall(r"\.(sm_\d+a?)\.cubin", elfs)), ptx_targets


def _recorded_targets() -> tuple[set[str], set[str]]:
    """The SASS and PTX targets the build recorded it compiled for (its FASTERCACHE_CUDA_ARCHS)."""
    archs = _ext.build_info().get("cuda", "").rsplit(" for ", 1)[-1].split(";")
    sass = {f"sm_{a.split('-')[0]}" for a in archs if not a.endswith("-virtual")}
    return sass, {f"compute_{a.split('-')[0]}" for a in archs if not a.endswith("-real")}


@pytest.mark.skipif(_cuda_so() is None, reason="_cuda is not built")
def test_cuda_module_holds_the_recorded_architectures():
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (it ships with triton)")
    sass, ptx = _recorded_targets()
    assert sass, _ext.build_info()
    assert _cuobjdump_lists(tool, _cuda_so()) == (sass, ptx)


@pytest.mark.skipif(_cuda_so() is None, reason="_cuda is not built")
def test_cuda_module_sm90_uses_vector_loads():
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (it ships with triton)")
    if "sm_90" not in _cuobjdump_lists(tool, _cuda_so())[0]:
        pytest.skip("_cuda holds no sm_90 code (make test builds it with TORCH_CUDA_ARCH_LIST=9.0 where no GPU is)")
    sass = subprocess.run([tool, "--dump-sass", "--gpu-architecture", "sm_90", str(_cuda_so())],
                          capture_output=True, text=True, check=True).stdout
    assert "LDG.E.128" in sass and "STG.E.128" in sass


@pytest.mark.skipif(_cuda_so() is None or torch.cuda.is_available(), reason="needs _cuda built and no GPU")
def test_cuda_launcher_without_driver_raises_clearly():
    mod = _ext.cuda()
    with pytest.raises(RuntimeError, match="no usable CUDA driver or device"):
        mod.forecast(0, 0, [0, 0], 0, 0, 16, 0)


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


@pytest.mark.skipif(_cuda_so() is None or torch.cuda.is_available(), reason="needs _cuda built and no GPU")
def test_elementwise_launchers_without_driver_raise_clearly():
    mod = _ext.cuda()
    calls = {
        "cfg_recombine": lambda: mod.cfg_recombine(0, 2, 0, 0, 0, 0, 0, 0, 16, 0),
        "cfg_recombine_guided": lambda: mod.cfg_recombine_guided(0, 2, 0, 0, 0, 0, 0, 0, 0, 16, 0),
        "cfg_residual_split": lambda: mod.cfg_residual_split_diff(0, 1, 0, 0, 0, 16, 0),
        "forecast": lambda: mod.forecast(2, 0, [0, 0, 0], 0, 0, 64, 0),
        "residual_sum": lambda: mod.residual_sum(1, 0, 0, [0] * 3, 16, 0, 0),
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match=f"fastercache CUDA {name}: .*no usable CUDA driver or device"):
            call()
    # more residuals than one launch carries need the fp32 workspace; checked before anything is launched
    assert mod.RESIDUAL_SUM_CAPACITY == 64
    with pytest.raises(ValueError, match="need an fp32 workspace"):
        mod.residual_sum(1, 0, 0, [0] * 65, 16, 0, 0)
