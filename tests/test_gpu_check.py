"""`python -m fastercache_kernels gpu-check` on this machine: without a GPU it skips the GPU stages with the reason,
still runs the GPU test selection (every case skipped with its reason) and finishes; the budget stops stages."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import HAS_GPU


def _check(tmp_path, *args):
    res = subprocess.run([sys.executable, "-m", "fastercache_kernels", "gpu-check", "--out", str(tmp_path), *args],
                         capture_output=True, text=True, timeout=600)
    record = json.loads((tmp_path / "gpu-check.json").read_text())
    return res, record, (tmp_path / "gpu-check.txt").read_text()


@pytest.mark.skipif(HAS_GPU, reason="the GPU run is gpu-check itself")
def test_without_a_gpu_skips_with_reasons_and_finishes(tmp_path):
    res, record, text = _check(tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    st = record["stages"]
    assert list(st) == ["env", "build", "tests", "ops", "e2e"]
    for name in ("build", "ops", "e2e"):
        assert st[name]["status"] == "skipped" and "no CUDA device" in st[name]["reason"]
    tests = st["tests"]
    assert tests["status"] == "all skipped" and tests["tests"] > 100 and tests["skipped"] == tests["tests"]
    assert all("no CUDA device" in reason for reason in tests["skip_reasons"])
    assert record["env"]["torch"] == torch.__version__ and record["seconds"] < record["budget_s"]
    for line in ("build", "tests", "ops", "e2e"):
        assert any(row.startswith(line) for row in text.splitlines())


def test_budget_stops_stages(tmp_path):
    res, record, _ = _check(tmp_path, "--budget-s", "5", "--skip-build")
    assert res.returncode == 0
    assert record["stages"]["tests"]["status"] == "skipped"
    assert "time budget" in record["stages"]["tests"]["reason"]
