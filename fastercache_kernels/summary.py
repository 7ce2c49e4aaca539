"""`handle.summary()` and `handle.plot(path)`: what each call of the current video ran and reused, per state key
(the batched CFG call, or each branch of a `cache_context("cond" | "uncond")`), the reuse rate, the cache memory
and the adaptive policies' indicator against their threshold.

The engine gives every finished call to `CallLog.record` (outside compiled graphs). It keeps what the host already
knows (call count, step, FasterCache's call kind, a host-mode adaptive decision) and, for values that live on the
device (the indicator, a device-mode decision), small clones of the policy's 0-d tensors: no host read per call.
They are read, all at once, when a summary or a plot is asked for (an indicator a host-mode policy read anyway,
First-Block-Cache's metric, is kept as the float it read). At most `cap` calls are kept per key (the
latest), and a key's log restarts with each video.
"""

from __future__ import annotations

import math
import sys
from collections import deque

import torch

CAP = 1000  # calls kept per key and video; 0-d clones cost one small allocation each (512 B on CUDA)
PER_LINE = 50  # calls per line of a strip
VALUES_PER_LINE = 10

LEGEND = {
    "C": "computed",
    "r": "blocks reused by the adaptive policy",
    "A": "ran, attention reused",
    "s": "CFG skip call: one half ran, the other was rebuilt",
    "a": "CFG skip call, attention reused",
    "R": "branch rebuilt from the other one, the model did not run",
}
INDICATOR = {"teacache": "acc_seen", "fbcache": "metric", "adacache": "metric", "seacache": "acc_seen",
             "magcache": "metric"}  # the runtime's 0-d tensor


def _policies(engine):
    fc = next((p for p in engine.policies if p.name == "fastercache"), None)
    ad = next((p for p in engine.policies if p.name != "fastercache"), None)
    return fc, ad


def _fc_char(fc, call) -> str:
    if call.skips_model:
        return "R"
    plan = fc.plan
    reused = plan is not None and any(plan.reuse.get(c.kind, False) for c in fc.caches if c.active)
    if call.branch is None and fc.split and not fc.full:
        return "a" if reused else "s"
    return "A" if reused else "C"


class CallLog:
    """Per-call decisions of one patched model (see the module docstring)."""

    def __init__(self, cap: int = CAP):
        self.cap = cap
        self.entries: dict[str, deque] = {}  # key -> (c, step, branch, char, decided on the host, device values)
        self.videos: dict[str, int] = {}
        self._engine, self._policies = None, (None, None)

    def record(self, engine, call) -> None:
        key = call.key
        if call.c == 1 or key not in self.entries:
            self.entries[key] = deque(maxlen=self.cap)
            self.videos[key] = self.videos.get(key, 0) + 1
        if self._engine is not engine:  # the policies of a patched model do not change: found once
            self._engine, self._policies = engine, _policies(engine)
        fc, ad = self._policies
        char = _fc_char(fc, call) if fc is not None else "C"
        go, values = None, None
        if ad is not None and not call.skips_model:
            if ad._go_read or not ad.device_mode:
                go = bool(ad.go)  # already on the host: read once per call by the policy itself
                values = ad.host_indicator  # a float where the policy read it on the host
                if values is None:
                    ind = getattr(ad, INDICATOR.get(ad.policy, "metric"))
                    values = ind.clone() if not ind.requires_grad else ind.detach().clone()  # state: never tracked
            else:  # the decision lives on the device too
                ind = getattr(ad, INDICATOR.get(ad.policy, "metric"))
                values = torch.stack([ad.pred.detach().to(ind.dtype), ind.detach()])
        self.entries[key].append((call.c, call.step, call.branch, char, go, values))

    def read(self) -> dict:
        """key -> list of per-call dicts; the one host read of the device values happens here."""
        out = {}
        for key, entries in self.entries.items():
            vals = [e[5] for e in entries if isinstance(e[5], torch.Tensor)]
            host = torch.stack([v.float().reshape(-1) for v in vals]).cpu().tolist() if vals else []
            rows, i = [], 0
            for c, step, branch, char, go, v in entries:
                ind = None
                if isinstance(v, float):  # read on the host by the policy
                    ind = v
                elif v is not None:
                    got = host[i]
                    i += 1
                    if go is None:
                        go, ind = bool(got[0]), got[1]
                    else:
                        ind = got[0]
                if v is not None and not go:
                    char = "r"
                rows.append({"call": c, "step": step, "branch": branch, "kind": char, "computed": char == "C",
                             "adaptive_computed": go, "indicator": ind})
            out[key] = rows
        return out


def _label(key: str, rows: list) -> str:
    branch = rows[0]["branch"] if rows else None
    if branch is not None:
        return f"branch {branch}"
    return "batched" if key == "" else f"batched (cache_context {key!r})"


def _threshold(ad) -> tuple[str, object]:
    """(what the indicator is and when it computes, the threshold(s) to draw)."""
    cfg = ad.config
    if ad.policy == "fbcache":
        source = getattr(cfg, "source", None)
        if source is not None:  # diffusers' FirstBlockCacheConfig: computes when strictly above its threshold
            return f"{cfg.metric} change of the first block's residual, computes when > {source.threshold:g}", \
                source.threshold
        return f"{cfg.metric} change of the first block's residual, computes when >= {cfg.threshold:g}", cfg.threshold
    if ad.policy == "teacache":
        return f"accumulated rescaled change of the {ad.indicator}, computes when >= {cfg.threshold:g}", cfg.threshold
    if hasattr(ad, "indicator_text"):  # a policy that describes its own rule (TaylorSeer: a fixed schedule)
        return ad.indicator_text()
    if ad.policy == "seacache":
        return f"accumulated relative L1 change of the SEA-filtered latents, computes when >= {cfg.threshold:g}", \
            cfg.threshold
    if ad.policy == "magcache":
        return f"accumulated magnitude-ratio error, computes when > {cfg.threshold:g}", cfg.threshold
    thresholds = [t for t, _ in cfg.codebook]
    book = ", ".join(f"<{t:g}: {r}" for t, r in cfg.codebook)
    return f"distance between computes (on computed calls), rate from the codebook {book}", thresholds


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return ""


def report(handle) -> dict:
    """The summary's content, as data: policies, state, cache memory, and per key its calls (`rows`), strip, counts,
    reuse rate and indicator description."""
    engine = handle.engine
    _, ad = _policies(engine)
    stats = handle.stats()
    what, thr = _threshold(ad) if ad is not None else (None, None)
    keys = {}
    for key, rows in engine.log.read().items() if engine.log is not None else ():
        n = len(rows)
        computed = sum(r["computed"] for r in rows)
        first = rows[0]["call"] if rows else 1
        keys[_label(key, rows)] = {
            "key": key, "rows": rows, "strip": " ".join(r["kind"] for r in rows), "calls": n,
            "computed": computed, "reused": n - computed, "reuse_rate": (n - computed) / n if n else 0.0,
            "video": engine.log.videos.get(key, 0), "first_call": first,
            "indicator": [r["indicator"] for r in rows] if ad is not None else None,
        }
    return {"model": type(handle.model).__name__, "policies": [_policy_name(p) for p in engine.policies],
            "active": handle.active, "cache_bytes": stats.get("cache_bytes", 0), "indicator": what,
            "threshold": thr, "keys": keys}


def _policy_name(p) -> str:
    cfg = getattr(p, "config", None) or getattr(getattr(p, "schedule", None), "config", None)
    name = getattr(cfg, "name", None)
    return f"{p.name} ({name})" if name and name != "custom" else p.name


def _wrap(items: list[str], first: int, per_line: int, width: int) -> list[str]:
    lines = []
    for i in range(0, len(items), per_line):
        lo, hi = first + i, first + min(i + per_line, len(items)) - 1
        lines.append(f"    {f'{lo}-{hi}':>9}  " + " ".join(f"{s:>{width}}" for s in items[i:i + per_line]))
    return lines


def render(handle, title: str | None = None) -> str:
    rep = report(handle)
    state = "active" if rep["active"] else "removed"
    head = title or rep["model"]
    lines = [f"{head}: {' + '.join(rep['policies'])}, {state}, cache memory {_fmt_bytes(rep['cache_bytes'])}"]
    used = set()
    on_compute = ad_on_compute(handle)
    if not rep["keys"]:
        lines.append("  no call recorded yet")
    for label, k in rep["keys"].items():
        lines.append(f"  {label}: video {k['video']}, {k['calls']} calls, {k['computed']} computed, {k['reused']} "
                     f"reused ({100 * k['reuse_rate']:.0f}%)")
        kinds = [r["kind"] for r in k["rows"]]
        used.update(kinds)
        lines += _wrap(kinds, k["first_call"], PER_LINE, 1)
        if k["indicator"] is not None and any(v is not None for v in k["indicator"]):
            lines.append(f"    indicator: {rep['indicator']}")
            vals = ["-" if v is None or (on_compute and not r["adaptive_computed"]) else
                    ("nan" if math.isnan(v) else f"{v:.3g}") for v, r in zip(k["indicator"], k["rows"])]
            lines += _wrap(vals, k["first_call"], VALUES_PER_LINE, 7)
    if used:
        lines.append("  " + ", ".join(f"{c} = {LEGEND[c]}" for c in LEGEND if c in used))
    return "\n".join(lines)


def ad_on_compute(handle) -> bool:
    """AdaCache measures only on computed calls: its indicator on a reused call is the last computed one's."""
    _, ad = _policies(handle.engine)
    return ad is not None and ad.policy == "adacache"


def print_summary(handles: dict, file=None) -> None:
    file = file or sys.stdout
    texts = [render(h, title=(None if name is None else f"{name} ({type(h.model).__name__})"))
             for name, h in handles.items()]
    print("\n".join(texts), file=file)


def plot(handles: dict, path) -> str:
    """One panel per transformer and key: the indicator per call (filled: computed, hollow: reused) and the
    threshold(s); without an adaptive policy, the call kinds along the calls. Saved to `path`."""
    from ._extras import require

    require("plot", "handle.plot(path)")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = []
    for name, h in handles.items():
        rep = report(h)
        for label, k in rep["keys"].items():
            panels.append((f"{name or rep['model']}: {label}", rep, k))
    fig, axes = plt.subplots(max(len(panels), 1), 1, figsize=(9, 2.6 * max(len(panels), 1)), squeeze=False)
    for ax, (title, rep, k) in zip(axes[:, 0], panels):
        calls = [r["call"] for r in k["rows"]]
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("call in the video")
        if k["indicator"] is not None and any(v is not None for v in k["indicator"]):
            pts = [(c, v, r["adaptive_computed"]) for c, v, r in zip(calls, k["indicator"], k["rows"]) if v is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="0.6", lw=1)
            for computed, style in ((True, {"color": "C0", "label": "computed"}),
                                    (False, {"facecolors": "none", "edgecolors": "C0", "label": "reused"})):
                sel = [p for p in pts if p[2] == computed]
                if sel:
                    ax.scatter([p[0] for p in sel], [p[1] for p in sel], s=18, **style)
            thr = rep["threshold"]
            for i, t in enumerate(thr if isinstance(thr, list) else [thr]):
                ax.axhline(t, color="C3", ls="--", lw=1, label="threshold" if i == 0 else None)
            ax.set_ylabel("indicator")
            ax.legend(fontsize=7, loc="upper right")
        else:
            order = list(LEGEND)
            ax.scatter(calls, [order.index(r["kind"]) for r in k["rows"]], s=14)
            ax.set_yticks(range(len(order)), order)
            ax.set_ylabel("call kind")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)
