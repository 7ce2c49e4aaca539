"""Thin driver: runs CMake with Ninja and places the compiled modules (_cpu, and _cuda when built) in the package.

Environment knobs: FASTERCACHE_CUDA=auto|on|off, FASTERCACHE_CUDA_ARCHS (CMake list, e.g. "80-real;90-real"),
FASTERCACHE_BUILD_JOBS (parallel compile jobs), FASTERCACHE_BUILD_DIR (persistent CMake build tree).
No torch is needed to build: the modules take raw pointers and do not link libtorch.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def run(self):
        cuda = os.environ.get("FASTERCACHE_CUDA", "auto").lower()
        if cuda not in ("auto", "on", "off"):
            raise SystemExit(f"FASTERCACHE_CUDA must be auto, on or off, not {cuda!r}")
        if cuda == "on" and not (shutil.which("nvcc") or os.environ.get("CUDACXX")):
            raise SystemExit("FASTERCACHE_CUDA=on but nvcc is not on the PATH (and CUDACXX is not set)")
        out_dir = Path(self.get_ext_fullpath(self.extensions[0].name)).parent.resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        build_dir = Path(os.environ.get("FASTERCACHE_BUILD_DIR") or (Path(self.build_temp) / "cmake")).resolve()
        import pybind11

        cfg = [
            _cmake(), "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DFASTERCACHE_CUDA={cuda}",
            f"-DFASTERCACHE_OUTPUT_DIR={out_dir}",
        ]
        ninja = _ninja()
        if ninja:
            cfg.append(f"-DCMAKE_MAKE_PROGRAM={ninja}")
        if os.environ.get("FASTERCACHE_CUDA_ARCHS"):
            cfg.append(f"-DFASTERCACHE_CUDA_ARCHS={os.environ['FASTERCACHE_CUDA_ARCHS']}")
        jobs = os.environ.get("FASTERCACHE_BUILD_JOBS") or str(os.cpu_count() or 1)
        subprocess.check_call(cfg)
        subprocess.check_call([_cmake(), "--build", str(build_dir), "-j", jobs])


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


setup(ext_modules=[CMakeExtension("fastercache_kernels._cpu")], cmdclass={"build_ext": CMakeBuild})
