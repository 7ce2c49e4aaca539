"""Installing says what it does: setup.py's plan for the CUDA module (GPU seen, nvcc found, architectures from
TORCH_CUDA_ARCH_LIST or the visible GPU) and the message naming the variable that asks for it; a wheel built for a
chosen architecture installs into a fresh venv, imports on the CPU and carries the CUDA kernels for that
architecture; the LICENSE matches the metadata."""

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from fastercache_kernels import _ext

ROOT = Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc")


@pytest.fixture(scope="module")
def setup_py():
    return runpy.run_path(str(ROOT / "setup.py"), run_name="fastercache_setup")  # its functions, no build


def _tools(tmp_path: Path, nvcc=True, gpu: str | None = None) -> dict:
    """An environment whose PATH holds only a stand-in nvcc and/or nvidia-smi (printing `gpu`, as
    `nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader` does)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if nvcc:
        (bin_dir / "nvcc").write_text("#!/bin/sh\nexit 0\n")
    if gpu is not None:
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\necho '{gpu}'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return {"PATH": str(bin_dir)}


def test_nvcc_without_gpu_builds_cpu_only_and_names_the_variables(setup_py, tmp_path):
    plan = setup_py["cuda_plan"](_tools(tmp_path))
    assert not plan["build"] and plan["archs"] is None
    text = plan["text"]
    assert "GPU:   none visible (nvidia-smi not found)" in text
    assert f"nvcc:  {tmp_path / 'bin' / 'nvcc'}" in text
    assert "CPU modules: _cpu" in text
    assert "_cuda: not built: nvcc is here but no GPU is visible" in text
    assert "TORCH_CUDA_ARCH_LIST" in text and "FASTERCACHE_CUDA=on" in text
    # what _build_info.json records, and `python -m fastercache_kernels info` then says
    assert "no GPU was visible at build time" in plan["reason"]


def test_visible_gpu_chooses_its_architecture(setup_py, tmp_path):
    plan = setup_py["cuda_plan"](_tools(tmp_path, gpu="NVIDIA H100 80GB HBM3, 9.0"))
    assert plan["build"] and plan["archs"] == "90-real"
    assert "GPU:   NVIDIA H100 80GB HBM3 (sm_90)" in plan["text"]
    assert "_cuda: building, as a GPU is visible, for sm_90, from the visible GPU" in plan["text"]


def test_arch_list_asks_for_cuda_without_gpu(setup_py, tmp_path):
    env = {**_tools(tmp_path), "TORCH_CUDA_ARCH_LIST": "8.0 9.0+PTX"}
    plan = setup_py["cuda_plan"](env)
    assert plan["build"] and plan["archs"] == "80-real;90-real;90-virtual"
    assert ("building, as TORCH_CUDA_ARCH_LIST is set, for sm_80, sm_90 (+ PTX for compute_90), "
            "from TORCH_CUDA_ARCH_LIST=8.0 9.0+PTX") in plan["text"]
    # the project's own CMake list wins over torch's convention, and an explicit list over the visible GPU
    env = {**_tools(tmp_path, gpu="NVIDIA A100, 8.0"), "TORCH_CUDA_ARCH_LIST": "9.0",
           "FASTERCACHE_CUDA_ARCHS": "86-real"}
    assert setup_py["cuda_plan"](env)["archs"] == "86-real"
    del env["FASTERCACHE_CUDA_ARCHS"]
    assert setup_py["cuda_plan"](env)["archs"] == "90-real"


def test_on_without_list_or_gpu_uses_cmakes_default(setup_py, tmp_path):
    plan = setup_py["cuda_plan"]({**_tools(tmp_path), "FASTERCACHE_CUDA": "on"})
    assert plan["build"] and "as FASTERCACHE_CUDA=on asks for it" in plan["text"]
    cmake_default = re.search(r'set\(FASTERCACHE_CUDA_ARCHS "([^"]+)"', (ROOT / "CMakeLists.txt").read_text())[1]
    assert plan["archs"] == setup_py["DEFAULT_CUDA_ARCHS"] == cmake_default


def test_no_nvcc_or_off_builds_cpu_only(setup_py, tmp_path):
    plan = setup_py["cuda_plan"](_tools(tmp_path, nvcc=False, gpu="NVIDIA H100, 9.0"))
    assert not plan["build"] and "no nvcc was found" in plan["text"]
    plan = setup_py["cuda_plan"]({**_tools(tmp_path, gpu="NVIDIA H100, 9.0"), "FASTERCACHE_CUDA": "off"})
    assert not plan["build"] and "_cuda: not built: the build ran with FASTERCACHE_CUDA=off" in plan["text"]


@pytest.mark.parametrize("value, archs", [
    ("8.0", "80-real"),
    ("8.0;9.0", "80-real;90-real"),
    (" 8.6  9.0a ", "86-real;90a-real"),
    ("9.0+PTX;9.0", "90-real;90-virtual"),
    ("10.0;12.0+PTX", "100-real;120-real;120-virtual"),
])
def test_torch_arch_list_convention(setup_py, value, archs):
    assert setup_py["torch_arch_list"](value) == archs


def test_torch_arch_list_rejects_what_it_cannot_read(setup_py, tmp_path):
    with pytest.raises(SystemExit, match=r"TORCH_CUDA_ARCH_LIST='Ampere': 'Ampere' is not a compute capability"):
        setup_py["cuda_plan"]({**_tools(tmp_path), "TORCH_CUDA_ARCH_LIST": "Ampere"})


def test_build_info_reason_reaches_why_not(monkeypatch):
    def missing(name):
        raise ImportError(name)

    monkeypatch.setattr(_ext.importlib, "import_module", missing)
    monkeypatch.setattr(_ext, "_PKG", ROOT / "nowhere")
    monkeypatch.setattr(_ext, "build_info", lambda: {"cuda": "off (no GPU was visible at build time, as said)"})
    assert _ext._load.__wrapped__("_cuda")[1] == "_cuda is not built: no GPU was visible at build time, as said"


def test_license_matches_metadata():
    assert re.search(r'^license = "Apache-2.0"$', (ROOT / "pyproject.toml").read_text(), re.M)
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text


# --- a wheel for one chosen architecture -------------------------------------------------------------------------

WHEEL_ARCH = "8.0"  # one architecture: the wheel test compiles the CUDA sources once (~1 minute here)
KERNELS = sorted({m for src in (ROOT / "csrc" / "cuda").glob("*.cu") for m in re.findall(
    r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(", src.read_text())})


def _cuobjdump():
    try:
        import triton
    except ImportError:
        return None
    exe = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(exe) if exe.exists() else shutil.which("cuobjdump")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """docs/build.md's wheel command with TORCH_CUDA_ARCH_LIST=8.0: (the wheel, pip's -v output, seconds)."""
    if NVCC is None:
        pytest.skip("no nvcc: the wheel would hold the CPU modules only")
    if os.environ.get("FASTERCACHE_CUDA", "").lower() == "off":
        pytest.skip("FASTERCACHE_CUDA=off: no CUDA module wanted")
    pytest.importorskip("pybind11")
    out = tmp_path_factory.mktemp("wheel")
    # FASTERCACHE_CUDA left at auto: the list alone asks for _cuda. The Makefile's persistent CMake tree: its CPU
    # objects are reused, only the CUDA sources compile (for sm_80, where make test's editable build has sm_90).
    env = {k: v for k, v in os.environ.items() if k not in ("FASTERCACHE_CUDA", "FASTERCACHE_CUDA_ARCHS")}
    env.update(TORCH_CUDA_ARCH_LIST=WHEEL_ARCH, FASTERCACHE_BUILD_DIR=str(ROOT / "build" / "cmake"))
    t0 = time.perf_counter()
    # a new session has no terminal: the plan goes to stderr only, which pip -v shows
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                          "-w", str(out), str(ROOT)], env=env, capture_output=True, text=True, start_new_session=True)
    seconds = time.perf_counter() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return next(out.glob("fastercache_kernels-*.whl")), res.stdout + res.stderr, seconds


@pytest.mark.slow
def test_wheel_build_says_what_it_builds(wheel):
    _, log, seconds = wheel
    print(f"wheel built in {seconds:.0f} s")
    assert "fastercache_kernels build (docs/build.md):" in log
    assert f"_cuda: building, as TORCH_CUDA_ARCH_LIST is set, for sm_80, from TORCH_CUDA_ARCH_LIST={WHEEL_ARCH};" \
        in log, log[-3000:]
    assert re.search(r"fastercache_kernels: built _cpu.*, _cuda in \d+ s", log)


@pytest.mark.slow
def test_wheel_holds_modules_and_license(wheel):
    names = zipfile.ZipFile(wheel[0]).namelist()
    for module in ("_cpu", "_cuda"):
        assert any(re.fullmatch(rf"fastercache_kernels/{module}\.[^/]*\.so", n) for n in names), names
    assert any(re.fullmatch(r"fastercache_kernels-[^/]*\.dist-info/licenses/LICENSE", n) for n in names), names
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel[0]).read(meta).decode()


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """The wheel installed into a fresh venv; torch and numpy come from this environment through a .pth file
    (installing torch again would download it), the package itself only from the wheel."""
    root = tmp_path_factory.mktemp("venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "outer_env.pth").write_text("\n".join(outer) + "\n")
    # --ignore-installed: the outer environment's own (editable) install is visible through the .pth and would
    # otherwise count as "already satisfied"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    "--ignore-installed", str(wheel[0])], check=True)
    return py, site


_USE_ON_CPU = """
import json, torch, fastercache_kernels as fk
from fastercache_kernels import _ext, reference
a, b = torch.randn(1000), torch.randn(1000)
with fk.use_backend("cpu"):
    h, w = torch.stack([a, b]), fk.ops.extrapolation_weights(0.5)
    ok = torch.equal(fk.ops.forecast(h, w), reference.forecast(h, w))
print(json.dumps({"file": fk.__file__, "cpu": _ext.why_not("_cpu"), "cuda": _ext.why_not("_cuda"),
                  "cuda_for": _ext.cuda_built_for(), "equal": ok,
                  "cuda_so": [str(p) for p in _ext._PKG.glob("_cuda.*so")]}))
"""


@pytest.mark.slow
def test_wheel_installs_and_imports_on_cpu(installed, tmp_path):
    py, site = installed
    # -I and a neutral directory: the checkout's own package is not on the path
    res = subprocess.run([str(py), "-I", "-c", _USE_ON_CPU], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(site), got
    assert got["cpu"] is None and got["equal"], got
    assert got["cuda"] is None, got  # _cuda imports without a GPU: the CUDA runtime starts on the first launch
    assert got["cuda_for"] == "sm_80" and len(got["cuda_so"]) == 1, got


@pytest.mark.slow
def test_wheel_carries_the_kernels_for_the_architecture_asked(installed):
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (it ships with triton)")
    so = next((installed[1] / "fastercache_kernels").glob("_cuda.*so"))
    elfs = subprocess.run([tool, "--list-elf", str(so)], capture_output=True, text=True, check=True).stdout
    assert set(re.findall(r"\.(sm_\w+?)\.cubin", elfs)) == {"sm_80"}, elfs
    ptx = subprocess.run([tool, "--list-ptx", str(so)], capture_output=True, text=True).stdout
    assert ".ptx" not in ptx, ptx  # 8.0 without +PTX asks for SASS only
    usage = subprocess.run([tool, "--dump-resource-usage", str(so)], capture_output=True, text=True,
                           check=True).stdout
    names = " ".join(re.findall(r"Function (\S+):", usage))
    assert KERNELS and all(k in names for k in KERNELS), (KERNELS, usage[:3000])
    assert re.findall(r"arch = (sm_\d+)", usage) and set(re.findall(r"arch = (sm_\d+)", usage)) == {"sm_80"}
