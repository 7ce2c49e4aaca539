"""What a benchmark run records besides its timings (machine, versions, commit, date) and its PNG chart."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict:
    m = {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gb": memory_gb(), "platform": platform.platform(),
         "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        m["gpu"] = torch.cuda.get_device_name()
    return m


def machine_line(m: dict) -> str:
    line = (f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['torch_threads']} torch threads, "
            f"{m['cpu_capability']}")
    return line + (f", GPU {m['gpu']}" if "gpu" in m else "")


def versions() -> dict:
    from .. import __version__

    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = None
    return {"python": platform.python_version(), "torch": torch.__version__, "triton": tv,
            "fastercache_kernels": __version__}


def git_commit(where: str | Path | None = None) -> str:
    """HEAD of the checkout `where` (default: the package's) is in, "-dirty" when tracked files changed;
    "unknown" outside a checkout."""
    here = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True, cwd=here,
                              timeout=5)
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False,
                               capture_output=True, text=True, cwd=here, timeout=5).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def plot(record: dict, path: str | Path) -> None:
    """One panel per op: GB/s of every implementation per case (bars), the copy bandwidth measured beside each
    case (a black line across its group), and the ratio to eager over the fused bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_op: dict[str, list[dict]] = {}
    for r in record["rows"]:
        by_op.setdefault(r["op"], []).append(r)
    fig_h = 3.6 * max(1, len(by_op))
    most = max((len({r["case"] for r in rows}) for rows in by_op.values()), default=1)
    fig, axes = plt.subplots(len(by_op) or 1, 1, figsize=(max(10.0, 1.7 * most + 3), fig_h), squeeze=False)
    cmap = plt.get_cmap("tab10")
    colour = {impl: cmap(i % 10) for i, impl in enumerate(dict.fromkeys(r["impl"] for r in record["rows"]))}
    for ax, (op, rows) in zip(axes[:, 0], by_op.items()):
        cases = list(dict.fromkeys(r["case"] for r in rows))
        impls = list(dict.fromkeys(r["impl"] for r in rows))
        width = 0.8 / len(impls)
        for j, impl in enumerate(impls):
            xs, ys, labels = [], [], []
            for i, case in enumerate(cases):
                r = next((r for r in rows if r["case"] == case and r["impl"] == impl), None)
                if r is None or r["gbps"] is None:
                    continue
                xs.append(i - 0.4 + (j + 0.5) * width)
                ys.append(r["gbps"])
                labels.append("" if r["vs_eager"] is None or impl.startswith("eager") else f"{r['vs_eager']:.1f}x")
            bars = ax.bar(xs, ys, width, label=impl, color=colour[impl])
            if impl.startswith("fk"):
                ax.bar_label(bars, labels, fontsize=6, rotation=90, padding=2)
        copy_label = "copy (same run)"
        for i, case in enumerate(cases):
            of = next((r for r in rows if r["case"] == case and r["of_copy"]), None)
            if of is not None:
                ax.hlines(of["gbps"] / of["of_copy"], i - 0.45, i + 0.45, colors="black", linewidth=2,
                          label=copy_label)
                copy_label = None
        ax.set_xticks(range(len(cases)), [c.replace(" [", "\n[").replace("] ", "]\n") for c in cases], fontsize=7)
        ax.set_ylabel("GB/s (bytes the op must move)")
        ax.set_title(op, loc="left", fontsize=10, fontweight="bold")
        ax.margins(y=0.18)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="y", alpha=0.3)
    m = record.get("machine", {})
    fig.suptitle(f"fastercache_kernels bench, {record.get('date', '')[:10]}: {machine_line(m) if m else ''}\n"
                 "labels over fk bars: time of the eager formula / time of the op", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig_h))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(records: list[dict]) -> dict:
    """One record from several runs of the same command: per (op, case, impl) the median of the runs' median
    times, with GB/s and the ratios recomputed from those medians (the copy bandwidth: the median of the runs')."""
    import statistics

    first = records[0]
    keyed: dict[tuple, list[dict]] = {}
    for rec in records:
        for r in rec["rows"]:
            keyed.setdefault((r["op"], r["case"], r["impl"]), []).append(r)
    # what each case's ratios are taken against: the impl whose vs_eager is exactly 1 (eager, or the FFT reference)
    base_impl = {(r["op"], r["case"]): r["impl"] for r in first["rows"] if r["vs_eager"] == 1.0}
    ms = {k: statistics.median(r["ms"] for r in rs) for k, rs in keyed.items()}
    copies: dict[tuple, list[float]] = {}
    for rec in records:
        for r in rec["rows"]:
            if r["of_copy"]:
                copies.setdefault((r["op"], r["case"]), []).append(r["gbps"] / r["of_copy"])
    copy = {k: statistics.median(v) for k, v in copies.items()}
    rows = []
    for (op, case, impl), rs in keyed.items():
        r0, t = rs[0], ms[(op, case, impl)]
        base = ms.get((op, case, base_impl.get((op, case))))
        gbps = r0["gbps"] * r0["ms"] / t if r0["gbps"] else None
        extra = {"runs": len(rs), "ms_per_run": [r["ms"] for r in rs]}
        spec = ms.get((op, case, "spec FFT path"))
        if spec:
            extra["x spec path"] = spec / t
        rows.append({"op": op, "case": case, "impl": impl, "ms": t, "gbps": gbps,
                     "vs_eager": base / t if base else None,
                     "of_copy": gbps / copy[(op, case)] if gbps and (op, case) in copy else None, "extra": extra})
    out = {k: v for k, v in first.items() if k not in ("rows", "date", "commit", "seconds", "load")}
    out.update(date=first["date"], commit=first["commit"], rows=rows, merged_from=[
        {k: rec.get(k) for k in ("date", "commit", "seconds", "load", "command")} for rec in records])
    return out


def markdown(record: dict) -> str:
    """A compact table for a README: per op and case, the eager formula and the fused op on the backend automatic
    dispatch picks (the last one timed: cpu-avx2 on x86-64, cuda on a GPU), allocating and with out=."""
    timed = record["backends"]["timed"]
    auto = f"fk {timed[-1]}" if timed else None
    head = f"| op | case | eager ms | {auto} ms (x eager) | out= ms (x eager) | GB/s | of copy | fk reference x eager |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for op, case in dict.fromkeys((r["op"], r["case"]) for r in record["rows"]):
        rows = {r["impl"]: r for r in record["rows"] if r["op"] == op and r["case"] == case}
        base = next((r for r in rows.values() if r["vs_eager"] == 1.0), None)
        fk, out, ref = rows.get(auto), rows.get(f"{auto} out="), rows.get("fk reference")
        if fk is None or base is None:
            continue
        best = out if out is not None and out["ms"] < fk["ms"] else fk
        lines.append("| " + " | ".join([
            op, case.replace("|", "/"), f"{base['ms']:.2f}" + ("" if base["impl"] == "eager" else f" ({base['impl']})"),
            f"{fk['ms']:.2f} ({fk['vs_eager']:.2f}x)",
            "" if out is None else f"{out['ms']:.2f} ({out['vs_eager']:.2f}x)",
            "" if best["gbps"] is None else f"{best['gbps']:.1f}",
            "" if not best["of_copy"] else f"{best['of_copy']:.0%}",
            "" if ref is None else f"{ref['vs_eager']:.2f}x"]) + " |")
    return "\n".join(lines)
