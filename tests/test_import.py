"""The package imports lean: no CUDA initialisation, and it works with no compiled module, with _cpu only,
and with every module built."""

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

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
            "sys.meta_path[:] = [f for f in sys.meta_path\n"
            "                    if '__editable__' not in (getattr(f, '__module__', '') or '')]\n"
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
    h, w = torch.stack([a, b]), fk.ops.extrapolation_weights(0.5)
    assert torch.equal(fk.ops.forecast(h, w), reference.forecast(h, w))
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
    lines = [line.strip() for line in full.splitlines() if line.startswith("  ")]
    # one line per backend, each saying available or unavailable and why
    assert [line.split(":")[0] for line in lines] == ["reference", "cpu", "cuda", "triton"], full
    assert all(re.match(r"\w+: (available|unavailable): \S", line) for line in lines), full


def test_info_says_a_built_cuda_module_without_a_device_is_unused(monkeypatch):
    from fastercache_kernels import _backend, _ext

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status = "built with nvcc 13.0 for 80-real;90-real;90a-real;90-virtual"
    monkeypatch.setattr(_ext, "build_info", lambda: {"cuda": status})
    real_why_not = _ext.why_not
    monkeypatch.setattr(_ext, "why_not", lambda name: None if name == "_cuda" else real_why_not(name))
    ok, why = _backend.report()["cuda"]
    assert not ok
    assert why.startswith("module built for sm_80, sm_90, sm_90a (+ PTX for compute_90); no CUDA device visible")
    assert why.endswith("so unused")
    ok, why = _backend.report()["triton"]
    assert not ok or "TRITON_INTERPRET=1" in why


def test_cuda_targets_in_words():
    from fastercache_kernels import _ext

    assert _ext.cuda_targets("80-real;90-real;90a-real;90-virtual") == "sm_80, sm_90, sm_90a (+ PTX for compute_90)"
    assert _ext.cuda_targets("90") == "sm_90 (+ PTX for compute_90)"
