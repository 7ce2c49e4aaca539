"""`python -m fastercache_kernels gpu-check`: on a GPU machine, one command that says whether every GPU path is
right and how fast it is (docs/gpu.md).

Stages, each timed, each in a subprocess (the build replaces the _cuda module the later stages load), each given
what is left of --budget-s:
  env       the GPU, its architecture, torch / triton / nvcc versions
  build     the _cuda module for the visible architecture only (FASTERCACHE_CUDA_ARCHS=<sm>-real), then a check
            that it loads
  tests     pytest -m gpu: every op test on (cuda, cuda) and (cuda, triton compiled), the CUDA-graph tests
  ops       every declared op against its eager formula and a device copy (CUDA events, medians, GB/s)
  e2e       the small CogVideoX: no cache, diffusers' hook, fk eager, fk compiled, fk under CUDA graphs
Without a GPU the GPU stages are skipped with the reason and the command still finishes. Writes
<out>/gpu-check.json and <out>/gpu-check.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Seconds each stage needs at least to be worth starting (measured sizes of this command's own work: the one-arch
# build is ~2 minutes on 16 cores, the test selection and the benchmarks about a minute each on an H100-class GPU).
MIN_SECONDS = {"build": 60, "tests": 45, "ops": 30, "e2e": 45}


def _gpu() -> dict | None:
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {"name": torch.cuda.get_device_name(0), "capability": f"{major}.{minor}", "sm": f"{major}{minor}",
            "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}


def _env() -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "gpu": _gpu(), "nvcc": shutil.which("nvcc")}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def _run(cmd: list[str], timeout: float, env: dict | None = None, log: Path | None = None) -> tuple[int, str]:
    """(returncode, output tail); 124 on timeout. The whole output goes to `log`."""
    try:
        res = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                             timeout=timeout)
        out, rc = res.stdout + res.stderr, res.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out, rc = out + f"\n[gpu-check: stopped at the stage's time limit of {timeout:.0f} s]", 124
    if log is not None:
        log.write_text(out)
    return rc, out[-3000:]


class Stages:
    """Runs stages within the budget; records status, seconds and detail for each."""

    def __init__(self, budget_s: float):
        self.start = time.perf_counter()
        self.budget = budget_s
        self.results: dict[str, dict] = {}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def skip(self, name: str, reason: str) -> None:
        self.results[name] = {"status": "skipped", "reason": reason, "seconds": 0.0}
        print(f"[{name}] skipped: {reason}", flush=True)

    def run(self, name: str, fn) -> dict | None:
        need = MIN_SECONDS.get(name, 0)
        if self.left() < need:
            self.skip(name, f"time budget: {self.left():.0f} s left of --budget-s {self.budget:.0f}, the stage "
                            f"needs at least {need} s")
            return None
        print(f"[{name}] running ({self.left():.0f} s of the budget left)", flush=True)
        t0 = time.perf_counter()
        try:
            status, detail = fn(self.left())
        except Exception as e:  # a stage's failure is a result, not the end of the check
            status, detail = "failed", {"error": f"{type(e).__name__}: {e}"}
        r = {"status": status, "seconds": round(time.perf_counter() - t0, 1), **detail}
        self.results[name] = r
        print(f"[{name}] {status} in {r['seconds']:.1f} s", flush=True)
        return r


def _build(gpu: dict, out: Path):
    def stage(left):
        # the CMake tree of `make install`: its CPU objects are reused, only the CUDA sources compile
        env = {"FASTERCACHE_CUDA": "on", "FASTERCACHE_CUDA_ARCHS": f"{gpu['sm']}-real",
               "FASTERCACHE_BUILD_DIR": str(ROOT / "build" / "cmake")}
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "-e", str(ROOT)]
        rc, tail = _run(cmd, left, env, out / "build.log")
        if rc:
            return "failed", {"returncode": rc, "tail": tail, "archs": env["FASTERCACHE_CUDA_ARCHS"]}
        check = ("from fastercache_kernels import _ext; r = _ext.why_not('_cuda'); print(r or 'ok'); "
                 "raise SystemExit(bool(r))")
        rc, tail = _run([sys.executable, "-c", check], 60)
        return ("passed" if rc == 0 else "failed"), {"archs": env["FASTERCACHE_CUDA_ARCHS"], "load": tail.strip()}

    return stage


def _junit(path: Path) -> dict:
    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    reasons: dict[str, int] = {}
    for c in suite.iter("testcase"):
        s = c.find("skipped")
        if s is not None:
            msg = (s.get("message") or "").strip()
            reasons[msg] = reasons.get(msg, 0) + 1
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed_tests": failed[:50], "skip_reasons": reasons}


def _tests(out: Path, extra: list[str]):
    def stage(left):
        xml = out / "gpu-tests.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests", "-p", "no:cacheprovider", "-rs",
               f"--junitxml={xml}", *extra]
        rc, tail = _run(cmd, max(10.0, left - 5), None, out / "tests.log")
        counts = _junit(xml)
        if rc == 124:
            return "timed out", {**counts, "tail": tail}
        ok = rc == 0 and not counts.get("failures") and not counts.get("errors")
        if ok and counts.get("tests") and counts.get("skipped") == counts["tests"]:
            return "all skipped", counts  # no GPU: every case says why in skip_reasons
        return ("passed" if ok else "failed"), {**counts, "returncode": rc, **({} if ok else {"tail": tail})}

    return stage


def _sub_stage(name: str, out: Path, args: list[str]):
    def stage(left):
        path = out / f"{name}.json"
        cmd = [sys.executable, "-m", "fastercache_kernels.gpucheck", "--stage", name, "--stage-json", str(path), *args]
        rc, tail = _run(cmd, max(10.0, left - 5), None, out / f"{name}.log")
        if rc:
            return ("timed out" if rc == 124 else "failed"), {"returncode": rc, "tail": tail}
        return "passed", json.loads(path.read_text())

    return stage


# ---- the benchmark stages (run in their own process, after the build) --------------------------------------

def _ops_stage(repeat: int) -> dict:
    import torch

    from .bench.ops import BENCHES, SHAPE_KIND, SHAPES

    shape_of = {"latent": SHAPES["cogvideox-2b-latent"], "hidden": SHAPES["cogvideox-2b-hidden"]}
    rows = []
    for name in BENCHES:
        for dtype in (torch.bfloat16, torch.float32):
            rows += [r.as_dict() for r in BENCHES[name](dtype=dtype, device="cuda", shape=shape_of[SHAPE_KIND[name]],
                                                        repeat=repeat)]
            torch.cuda.empty_cache()
    return {"rows": rows, "timing": "CUDA events around each call, median of the interleaved rounds"}


def _e2e_stage(calls: int) -> dict:
    from .bench.e2e import bench_e2e, format_e2e

    result = bench_e2e(calls, compile=True, cudagraphs=True, repeat=1, threads=None, device="cuda",
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    result["text"] = format_e2e(result)
    return result


def _summary(record: dict) -> str:
    env = record["env"]
    gpu = env.get("gpu")
    lines = [f"fastercache_kernels gpu-check  {record['date']}  commit {record['commit']}",
             f"gpu: {gpu['name'] + ' (sm_' + gpu['sm'] + ')' if gpu else 'none'}  torch {env['torch']} "
             f"(CUDA {env['torch_cuda']})  triton {env['triton']}",
             f"total {record['seconds']:.1f} s of a {record['budget_s']:.0f} s budget ({record['before_s']:.1f} s of "
             f"it before this command: the install)", ""]
    for name, r in record["stages"].items():
        head = f"{name:<6} {r['status']:<11} {r['seconds']:>7.1f} s"
        if r["status"] == "skipped":
            head += f"  {r['reason']}"
        elif name == "tests" and "tests" in r:
            head += (f"  {r['passed']} passed, {r['failures'] + r['errors']} failed, {r['skipped']} skipped "
                     f"of {r['tests']}")
        elif "error" in r:
            head += f"  {r['error']}"
        lines.append(head)
        if name == "tests":
            for msg, n in list(r.get("skip_reasons", {}).items())[:5]:
                lines.append(f"         skipped x{n}: {msg[:110]}")
            for t in r.get("failed_tests", [])[:10]:
                lines.append(f"         FAILED {t}")
    ops = record["stages"].get("ops", {})
    if ops.get("rows"):
        from .bench.core import Row, format_table

        keep = [Row(**r) for r in ops["rows"] if r["impl"] in ("eager", "fk cuda", "fk triton")]
        lines += ["", "ops (median ms, GB/s, of copy; eager formula alongside):", format_table(keep)]
    e2e = record["stages"].get("e2e", {})
    if e2e.get("text"):
        lines += ["", "e2e small CogVideoX:", e2e["text"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastercache_kernels gpu-check",
                                description="On a GPU machine: build _cuda for its architecture, run the GPU tests, "
                                "the op and end-to-end benchmarks within a time budget (docs/gpu.md).")
    p.add_argument("--budget-s", type=float, default=450.0, help="stop starting stages past this many seconds "
                   "(a running stage is stopped at the budget); default 450")
    p.add_argument("--started-at", type=float, help="epoch seconds the budget counts from (make gpu-check passes its "
                   "own start, so the install counts too); default: now")
    p.add_argument("--out", default="results/gpu-check", help="where gpu-check.json, gpu-check.txt and the logs go")
    p.add_argument("--skip-build", action="store_true", help="use the _cuda module already installed")
    p.add_argument("--repeat", type=int, default=20, help="interleaved rounds per op benchmark median")
    p.add_argument("--calls", type=int, default=30, help="model calls per end-to-end video")
    p.add_argument("--stage", choices=("ops", "e2e"), help=argparse.SUPPRESS)
    p.add_argument("--stage-json", help=argparse.SUPPRESS)
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments for the tests stage (after --)")
    args = p.parse_args(argv)
    if args.stage:  # inside the subprocess of one benchmark stage
        result = _ops_stage(args.repeat) if args.stage == "ops" else _e2e_stage(args.calls)
        Path(args.stage_json).write_text(json.dumps(result, indent=1, default=str))
        return 0

    from .bench import report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spent = time.time() - args.started_at if args.started_at else 0.0
    if spent:
        print(f"[gpu-check] {spent:.1f} s spent before this command (the install)", flush=True)
    stages = Stages(args.budget_s - spent)
    t0 = time.perf_counter()
    env = _env()
    stages.results["env"] = {"status": "passed", "seconds": round(time.perf_counter() - t0, 1)}
    print(f"[env] gpu: {env['gpu'] or 'none'}; torch {env['torch']}; nvcc {env['nvcc'] or 'not found'}", flush=True)
    gpu = env["gpu"]
    no_gpu = "no CUDA device visible (torch.cuda.is_available() is False)"
    if gpu is None:
        stages.skip("build", no_gpu)
    elif args.skip_build:
        stages.skip("build", "--skip-build: the installed _cuda module is used")
    elif env["nvcc"] is None and not os.environ.get("CUDACXX"):
        stages.skip("build", "nvcc is not on the PATH (and CUDACXX is not set): the CUDA cases will be skipped")
    else:
        stages.run("build", _build(gpu, out))
    # without a GPU the selection still runs: every GPU test is then reported skipped with its reason
    stages.run("tests", _tests(out, args.pytest_args))
    for name, sub_args in (("ops", ["--repeat", str(args.repeat)]), ("e2e", ["--calls", str(args.calls)])):
        if gpu is None:
            stages.skip(name, no_gpu)
        else:
            stages.run(name, _sub_stage(name, out, sub_args))
    record = {"date": report.utc_now(), "commit": report.git_commit(ROOT), "budget_s": args.budget_s,
              "seconds": round(spent + time.perf_counter() - stages.start, 1), "before_s": round(spent, 1),
              "env": env, "machine": report.machine(),
              "stages": stages.results}
    (out / "gpu-check.json").write_text(json.dumps(record, indent=1, default=str))
    text = _summary(record)
    (out / "gpu-check.txt").write_text(text)
    print("\n" + text, flush=True)
    bad = [n for n, r in stages.results.items() if r["status"] in ("failed", "timed out")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
