"""The package imports lean: no CUDA initialisation, and it works with no compiled module, with _cpu only,
and with every module built."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastercache_kernels

PKG = Path(fastercache_kernels.__file__).resolve().parent

_NO_CUDA = textwrap.dedent(
    """
    import torch
    def _boom(*a, **k):
        raise AssertionError("CUDA was touched during import")
    for name in ("init", "_lazy_init", "is_available", "device_count", "current_device", "synchronize"):
        setattr(torch.cuda, name, _boom)
    torch._C._cuda_init = _boom
    import fastercache_kernels as fk
    import fastercache_kernels.ops, fastercache_kernels.reference
    """
)


def _run(code: str, path: Path | None = None) -> str:
    """Runs `code` in a fresh interpreter, importing the package from `path` when given (ahead of an
    editable install's import hook)."""
    if path is not None:
        code = (
            "import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in (getattr(f, '__module__', '') or '')]\n"
            f"sys.path.insert(0, {str(path)!r})\n" + code
        )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_import_never_initialises_cuda():
    _run(_NO_CUDA + "print(fk.__version__)")


def test_copied_package_is_the_one_imported(tmp_path):
    path = _copy_package(tmp_path, ())
    assert _run("import fastercache_kernels as fk; print(fk.__file__)", path).startswith(str(path))


def _copy_package(tmp_path: Path, keep: tuple[str, ...]) -> Path:
    dst = tmp_path / "fastercache_kernels"
    shutil.copytree(PKG, dst, ignore=shutil.ignore_patterns("*.so", "__pycache__", "_build_info.json"))
    for name in keep:
        for so in PKG.glob(f"{name}.*so"):
            shutil.copy(so, dst / so.name)
    return tmp_path


_USE = textwrap.dedent(
    """
    import torch, fastercache_kernels as fk
    from fastercache_kernels import _backend, _ext, reference
    a, b = torch.randn(100), torch.randn(100)
    assert torch.equal(fk.ops.extrapolate(a, b, 0.5), reference.extrapolate(a, b, 0.5))
    print(_backend.select(torch.device("cpu")), "|", _ext.why_not("_cpu"), "|", _ext.why_not("_cuda"))
    """
)


def test_works_without_compiled_modules(tmp_path):
    out = _run(_NO_CUDA + _USE, _copy_package(tmp_path, ()))
    backend, cpu_why, cuda_why = (s.strip() for s in out.split("|"))
    assert backend == "reference"
    assert "_cpu is not built" in cpu_why and "_cuda is not built" in cuda_why


@pytest.mark.skipif(not list(PKG.glob("_cpu.*so")), reason="_cpu is not built")
def test_works_with_cpu_module_only(tmp_path):
    out = _run(_NO_CUDA + _USE, _copy_package(tmp_path, ("_cpu",)))
    backend, cpu_why, _ = (s.strip() for s in out.split("|"))
    assert backend == "cpu" and cpu_why == "None"


def test_info_lists_backends_and_reasons(tmp_path):
    out = _run("from fastercache_kernels.__main__ import main; main(['info'])", _copy_package(tmp_path, ()))
    assert "torch" in out and "reference" in out
    assert "_cpu is not built" in out
    full = _run("from fastercache_kernels.__main__ import main; main(['info'])")
    assert "cpu: available" in full
