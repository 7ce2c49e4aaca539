"""Every declared op has every layer (docs/adding-an-op.md), and every op is deterministic run to run on every
(device, backend) pair."""

import re
from pathlib import Path

import pytest
import torch

import fastercache_kernels as fk
from fastercache_kernels import _ext
from fastercache_kernels.bench.cases import CASES
from fastercache_kernels.bench.ops import BENCHES, SHAPE_KIND, TENSORS_HELD
from fastercache_kernels.ops._define import OPS
from conftest import device

ROOT = Path(__file__).resolve().parent.parent
_HEADER = (ROOT / "csrc/include/fastercache/launchers.h").read_text()
_TABLE = _HEADER[_HEADER.index("#define FASTERCACHE_LAUNCHERS(X)"):_HEADER.index("#define FASTERCACHE_CUDA_QUERIES")]
LAUNCHER_ROWS = re.findall(r"^\s*X\((\w+),", _TABLE, re.M)
NAMES = list(OPS)


def test_every_op_module_is_declared():
    modules = {p.stem for p in (ROOT / "fastercache_kernels/ops").glob("[!_]*.py")}
    assert modules == {d.module for d in OPS.values()}, "an ops/ module declares no op, or an op has no module"
    assert len(NAMES) >= 9


@pytest.mark.parametrize("name", NAMES)
def test_op_has_every_layer(name):
    d = OPS[name]
    mod = d.module
    for path in (f"fastercache_kernels/reference/{mod}.py", f"fastercache_kernels/triton/{d.triton}.py",
                 f"csrc/cpu/{mod}.cpp", f"csrc/cuda/{mod}.cu", f"tests/test_{mod}.py"):
        assert (ROOT / path).is_file(), f"{name}: missing {path}"
    assert d.reference.__module__.startswith("fastercache_kernels.reference"), name
    assert callable(d.triton_module().launch), name
    assert d.launcher in LAUNCHER_ROWS, f"{name}: launcher {d.launcher} is not a row of FASTERCACHE_LAUNCHERS"
    if _ext.why_not("_cpu") is None:
        assert callable(getattr(_ext.cpu(), d.launcher)), name
    if _ext.why_not("_cuda") is None:
        assert callable(getattr(_ext.cuda(), d.launcher)), name
    assert getattr(torch.ops.fastercache, name).default is not None
    if d.out is not None:
        assert getattr(torch.ops.fastercache, f"{name}_out").default is not None
    assert d.example is not None, f"{name}: no example"
    # every launcher is benchmarked by at least one of the ops that use it
    assert any(o.name in CASES for o in OPS.values() if o.launcher == d.launcher), name
    if name in CASES:
        assert name in BENCHES and SHAPE_KIND[name] in ("latent", "hidden") and TENSORS_HELD[name] > 0
    public = [getattr(fk.ops, n) for n in __import__(f"fastercache_kernels.ops.{mod}", fromlist=["x"]).__all__]
    assert public and all(callable(f) for f in public), name


def test_every_launcher_row_is_used():
    assert set(LAUNCHER_ROWS) == {d.launcher for d in OPS.values()}


@pytest.mark.parametrize("name", NAMES)
def test_fake_and_schema(name):
    d = OPS[name]
    args = d.example(torch.device("cpu"))
    torch.library.opcheck(d.op, args, test_utils=("test_schema", "test_faketensor"))


def _outputs(res):
    return [t for t in (res if isinstance(res, (tuple, list)) else (res,)) if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_run_to_run(backend, name):
    d = OPS[name]
    args = d.example(device())
    runs = []
    for _ in range(3):
        fresh = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]  # mutated arguments start alike
        res = d(*fresh)
        runs.append(_outputs(res) + [a for a in fresh if isinstance(a, torch.Tensor)])
    for later in runs[1:]:
        for a, b in zip(runs[0], later):
            assert torch.equal(a, b), f"{name} on {backend}: results differ between runs"
