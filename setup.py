"""Thin driver: decides whether to build the CUDA module and for which GPUs, says so, then runs CMake with Ninja
and places the compiled modules (_cpu, and _cuda when built) in the package.

Environment knobs (docs/build.md): FASTERCACHE_CUDA=auto|on|off; TORCH_CUDA_ARCH_LIST (torch's convention,
e.g. "8.0;9.0+PTX") or FASTERCACHE_CUDA_ARCHS (a CMake list, e.g. "80-real;90-real", wins over the former);
FASTERCACHE_BUILD_JOBS (parallel compile jobs); FASTERCACHE_BUILD_DIR (persistent CMake build tree).
No torch is needed to build: the modules take raw pointers and do not link libtorch.
"""

import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# Equal to the default of FASTERCACHE_CUDA_ARCHS in CMakeLists.txt (tests/test_build.py checks): SASS for sm_80,
# sm_90, sm_90a and PTX of compute_90 for newer GPUs; used when CUDA is asked for and neither a list nor a GPU says.
DEFAULT_CUDA_ARCHS = "80-real;90-real;90a-real;90-virtual"
_TORCH_ARCH = re.compile(r"(\d+)\.(\d+)([af]?)(\+PTX)?")


def torch_arch_list(value: str) -> str:
    """TORCH_CUDA_ARCH_LIST in torch's convention ("8.0;9.0+PTX", ";" or spaces between) as CMake CUDA
    architectures ("80-real;90-real;90-virtual"): SASS for each entry, plus PTX where it ends in +PTX."""
    out = []
    for entry in filter(None, re.split(r"[;\s]+", value.strip())):
        m = _TORCH_ARCH.fullmatch(entry)
        if not m:
            raise SystemExit(f"TORCH_CUDA_ARCH_LIST={value!r}: {entry!r} is not a compute capability; write them "
                             f"as torch does, e.g. TORCH_CUDA_ARCH_LIST=\"8.0;9.0+PTX\"")
        sm = f"{m[1]}{m[2]}{m[3]}"
        out += [f"{sm}-real"] + ([f"{sm}-virtual"] if m[4] else [])
    return ";".join(dict.fromkeys(out))


def visible_gpus(env) -> tuple[list[tuple[str, str]], str]:
    """([(name, compute capability or "")], how they were found) as nvidia-smi lists them; no torch at build time."""
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if smi is None:
        return [], "nvidia-smi not found"

    def query(*args):
        try:
            res = subprocess.run([smi, *args], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, str(e)
        return (res.stdout if res.returncode == 0 else None), (res.stdout + res.stderr).strip()[:200]

    out, _ = query("--query-gpu=name,compute_cap", "--format=csv,noheader")
    if out is not None:
        gpus = [tuple(p.strip() for p in line.rsplit(",", 1)) for line in out.splitlines() if "," in line]
        return gpus, "nvidia-smi"
    # drivers older than the compute_cap field: the GPUs are listed, their architecture is not
    out, err = query("-L")
    if out is None:
        return [], f"nvidia-smi lists none ({err})" if err else "nvidia-smi lists none"
    return [(line.split(":", 1)[1].split("(UUID")[0].strip(), "") for line in out.splitlines()
            if line.startswith("GPU ")], "nvidia-smi -L"


def cpu_modules() -> list[str]:
    # CMakeLists.txt builds _cpu_avx2 (x86-64-v3) next to the baseline _cpu on x86-64
    return ["_cpu", "_cpu_avx2"] if platform.machine().lower() in ("x86_64", "amd64") else ["_cpu"]


def _ext_module():
    # _ext.py needs only the standard library at import; loaded by path, since importing the package needs torch
    spec = importlib.util.spec_from_file_location("_fastercache_ext", ROOT / "fastercache_kernels" / "_ext.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cuda_plan(env=None) -> dict:
    """What the build does about _cuda and why, from the environment: {"build": bool, "archs": CMake list or None,
    "reason": one line (recorded in _build_info.json when not built), "text": the lines the build prints}."""
    env = os.environ if env is None else env
    mode = (env.get("FASTERCACHE_CUDA") or "auto").strip().lower()
    if mode not in ("auto", "on", "off"):
        raise SystemExit(f"FASTERCACHE_CUDA must be auto, on or off, not {mode!r}")
    nvcc = env.get("CUDACXX") or shutil.which("nvcc", path=env.get("PATH"))
    if mode == "on" and not nvcc:
        raise SystemExit("FASTERCACHE_CUDA=on but nvcc is not on the PATH (and CUDACXX is not set)")
    gpus, found_by = visible_gpus(env) if mode != "off" else ([], "not looked for")
    asked = None  # where an explicit architecture list came from
    if (env.get("FASTERCACHE_CUDA_ARCHS") or "").strip():
        archs = env["FASTERCACHE_CUDA_ARCHS"].strip()
        asked = origin = f"FASTERCACHE_CUDA_ARCHS={archs}"
    elif (env.get("TORCH_CUDA_ARCH_LIST") or "").strip():
        archs = torch_arch_list(env["TORCH_CUDA_ARCH_LIST"])
        asked = origin = f"TORCH_CUDA_ARCH_LIST={env['TORCH_CUDA_ARCH_LIST'].strip()}"
    elif gpus and all(_TORCH_ARCH.fullmatch(cap) for _, cap in gpus):
        archs = torch_arch_list(";".join(sorted({cap for _, cap in gpus})))
        origin = "the visible GPU" + ("s" if len(gpus) > 1 else "")
    else:
        archs = DEFAULT_CUDA_ARCHS
        origin = "the default list" + (" (the visible GPU's compute capability is unknown)" if gpus else "")

    if mode == "off":
        build, reason = False, "the build ran with FASTERCACHE_CUDA=off"
    elif not nvcc:
        build, reason = False, ("no nvcc was found at build time (not on the PATH, CUDACXX not set); put nvcc on "
                                "the PATH to build it")
    elif mode == "on" or gpus or asked:
        build = True
        reason = ("FASTERCACHE_CUDA=on asks for it" if mode == "on" else "a GPU is visible" if gpus
                  else f"{asked.split('=')[0]} is set")
    else:
        build, reason = False, ("no GPU was visible at build time; FASTERCACHE_CUDA=on or TORCH_CUDA_ARCH_LIST "
                                "builds it anyway")

    words = _ext_module().cuda_targets
    gpu_line = ", ".join(f"{name} (sm_{cap.replace('.', '')})" if cap else name for name, cap in gpus)
    lines = [
        "fastercache_kernels build (docs/build.md):",
        f"  FASTERCACHE_CUDA={mode}",
        f"  GPU:   {gpu_line or 'none visible'} ({found_by})" if mode != "off" else "  GPU:   not looked for",
        f"  nvcc:  {nvcc or 'not found (not on the PATH, CUDACXX not set)'}",
        f"  CPU modules: {', '.join(cpu_modules())}",
    ]
    if build:
        n = archs.count("-real") or len(archs.split(";"))
        lines.append(f"  _cuda: building, as {reason}, for {words(archs)}, from {origin}; compiling the CUDA "
                     f"sources for {n} architecture{'s' if n > 1 else ''} takes minutes")
    elif mode == "auto" and nvcc:
        lines.append(f"  _cuda: not built: nvcc is here but no GPU is visible. To build it anyway, set "
                     f"TORCH_CUDA_ARCH_LIST to the GPUs to build for (e.g. TORCH_CUDA_ARCH_LIST=\"8.0;9.0\"), "
                     f"or FASTERCACHE_CUDA=on for the default {words(DEFAULT_CUDA_ARCHS)}")
    else:
        lines.append(f"  _cuda: not built: {reason}")
    return {"build": build, "archs": archs if build else None, "reason": reason, "text": "\n".join(lines) + "\n"}


def announce(text: str) -> None:
    """To stderr (pip shows it with -v, or when the build fails) and, when stderr is captured as it is under
    pip, to the terminal as well: a plain `pip install .` otherwise shows nothing but a spinner for minutes."""
    sys.stderr.write(text)
    sys.stderr.flush()
    if sys.stderr.isatty():
        return
    try:
        with open("/dev/tty", "w") as tty:
            tty.write("\n" + text)  # pip's spinner leaves the cursor mid-line
    except OSError:  # no controlling terminal (CI, IDEs): stderr alone
        pass


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def run(self):
        plan = cuda_plan()
        announce(plan["text"])
        out_dir = Path(self.get_ext_fullpath(self.extensions[0].name)).parent.resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        build_dir = Path(os.environ.get("FASTERCACHE_BUILD_DIR") or (Path(self.build_temp) / "cmake")).resolve()
        # Modules link inside the build tree and are copied to out_dir: linking straight into out_dir relinked the
        # CPU modules (LTO, ~3 min on the loaded 2-core machine) whenever one tree served both an editable install
        # and a wheel build, as make test's tree does.
        modules_dir = build_dir / "fastercache_kernels"
        import pybind11

        # The reason is recorded in _build_info.json (CMake writes it into a JSON string: no quotes, no ";").
        reason = plan["reason"].replace('"', "'").replace(";", ",")
        cfg = [
            _cmake(), "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DFASTERCACHE_CUDA={'on' if plan['build'] else 'off'}",
            f"-DFASTERCACHE_CUDA_REASON={reason}",
            f"-DFASTERCACHE_OUTPUT_DIR={modules_dir}",
        ]
        if plan["build"]:
            # always passed: a persistent build tree would otherwise keep the list of its previous build
            cfg.append(f"-DFASTERCACHE_CUDA_ARCHS={plan['archs']}")
        ninja = _ninja()
        if ninja:
            cfg.append(f"-DCMAKE_MAKE_PROGRAM={ninja}")
        jobs = os.environ.get("FASTERCACHE_BUILD_JOBS") or str(os.cpu_count() or 1)
        t0 = time.perf_counter()
        subprocess.check_call(cfg)
        subprocess.check_call([_cmake(), "--build", str(build_dir), "-j", jobs])
        built = cpu_modules() + (["_cuda"] if plan["build"] else [])
        _place(modules_dir, out_dir, built)
        announce(f"fastercache_kernels: built {', '.join(built)} in {time.perf_counter() - t0:.0f} s\n")


def _place(modules_dir: Path, out_dir: Path, built: list[str]) -> None:
    """Copies the modules this build made (not others a shared tree still holds) and _build_info.json to out_dir;
    a _cuda there from an earlier build is removed when this one has none, or it would be installed as current."""
    if "_cuda" not in built:
        for stale in out_dir.glob("_cuda.*"):
            stale.unlink()
    files = [modules_dir / "_build_info.json"]
    for name in built:
        found = list(modules_dir.glob(f"{name}.*"))
        if len(found) != 1:
            raise SystemExit(f"the build should have made one {name} module in {modules_dir}, found {found}")
        files += found
    for f in files:
        tmp = out_dir / f".{f.name}.tmp"
        shutil.copy2(f, tmp)
        os.replace(tmp, out_dir / f.name)  # a new file, never rewritten in place: a running process may map it


def _cmake():
    try:
        import cmake

        return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    except ImportError:
        return shutil.which("cmake") or "cmake"


def _ninja():
    try:
        import ninja

        return str(Path(ninja.BIN_DIR) / "ninja")
    except ImportError:
        return shutil.which("ninja")


# setuptools' build backend runs this file as __main__; tests import it for cuda_plan without building
if __name__ == "__main__":
    setup(ext_modules=[CMakeExtension("fastercache_kernels._cpu")], cmdclass={"build_ext": CMakeBuild})
