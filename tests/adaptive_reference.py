"""Plain reference rules of the adaptive policies, written from docs/algorithms.md §4-5 (Python floats, fp64 sums), and
hooks that record the tensors each rule reads from a model run, so a patched model and its reference see the same
inputs."""

from __future__ import annotations

import numpy as np
import torch


def rel_l1(cur: torch.Tensor, prev: torch.Tensor) -> float:
    """mean|prev - cur| / mean|prev|."""
    cur, prev = cur.double(), prev.double()
    return float((prev - cur).abs().mean() / prev.abs().mean())


def teacache(us: list, coefficients, threshold: float, num_calls: int | None = None,
             forecast_metric: int = 0) -> list[dict]:
    """docs/algorithms.md §5: rel every call (u_prev updated every call), acc += poly(rel); acc < threshold reuses,
    else compute and acc = 0; first and last calls compute. `forecast_metric` n > 0 (§11): rel is the distance of u
    from the polynomial through u of the last n + 1 computed calls (fewer at the start) over the call index at this
    call, and acc = poly(rel), not accumulated."""
    poly = np.poly1d(coefficients)
    acc, prev, out, done = 0.0, None, [], []
    for c, u in enumerate(us, 1):
        if forecast_metric:
            prev = lagrange(done[-(forecast_metric + 1):], c) if done else None
        rel = None if prev is None else rel_l1(u, prev)
        if c == 1 or c == num_calls:
            compute, seen, acc = True, None, 0.0
        else:
            # fk clamps a negative rescaled distance to 0 (documented)
            acc = (0.0 if forecast_metric else acc) + max(float(poly(rel)), 0.0)
            seen = acc
            compute = not acc < threshold
            if compute:
                acc = 0.0
        out.append({"c": c, "compute": compute, "rel": rel, "acc": seen})
        if compute:
            done.append((c, u))
        if not forecast_metric:
            prev = u
    return out


def fbcache(r1s: list, threshold: float, num_calls: int | None = None, forecast_metric: int = 0) -> list[dict]:
    """docs/algorithms.md §5: diff = mean|r1_ref - r1| / mean|r1_ref|; below the threshold reuse, else compute and
    refresh r1_ref. `forecast_metric` n > 0 (§11): r1_ref is the polynomial through r1 of the last n + 1 computed
    calls (fewer at the start) over the call index, at this call."""
    ref, out, done = None, [], []
    for c, r1 in enumerate(r1s, 1):
        if forecast_metric and done:
            ref = lagrange(done[-(forecast_metric + 1):], c)
        diff = None if ref is None else rel_l1(r1, ref)
        compute = c == 1 or c == num_calls or not diff < threshold
        if compute:
            ref = r1
            done.append((c, r1))
        out.append({"c": c, "compute": compute, "diff": diff})
    return out


def motion(p: torch.Tensor, frames: int, stride: int = 1) -> float:
    """docs/algorithms.md §4: m = sum|p[:, S:] - p[:, :-S]| / (sum|p[:, S:]| + sum|p[:, :-S]|) on p laid out [B, T*S,
    C]."""
    p = p.double()
    s = p.shape[1] // frames * stride
    a, b = p[:, s:], p[:, :-s]
    return float((a - b).abs().sum() / (a.abs().sum() + b.abs().sum()))


def lagrange(points: list, at: float) -> torch.Tensor:
    """docs/algorithms.md §9: the polynomial through the (position, value) `points`, evaluated at `at` (fp64)."""
    total = 0.0
    for j, (xj, fj) in enumerate(points):
        w = 1.0
        for i, (xi, _) in enumerate(points):
            if i != j:
                w *= (at - xi) / (xj - xi)
        total = total + w * fj.double()
    return total


def adacache(p_at, num_calls: int, codebook, window, frames: int, *, moreg: bool = True, scale: float = 0.385,
             power: float = 8.0, gain: float = 10.0, compare_dtype=None, forecast_metric: int = 0) -> list[dict]:
    """docs/algorithms.md §4. `p_at(c)`: the metric layer's attention residual p ([B, T*S, C]) on compute call c.
    Compute calls:
    1, N-1, N and prev + rate; d = sum|p_prev - p| / sum|p_prev| / rate_in, times the MoReg factor; the rate is the
    first whose threshold is strictly greater than d (the last one beyond). The first call has no p_prev: rate 1.
    `forecast_metric` n > 0 (§11): p_prev is instead the polynomial through the p of the last n + 1 computed calls
    (fewer at the start of the video) over the call index, at this call."""
    pairs = sorted(codebook.items()) if isinstance(codebook, dict) else list(codebook)

    def rnd(v: float) -> float:  # the reference runs compare in bf16
        return v if compare_dtype is None else float(torch.tensor(v).to(compare_dtype).float())

    pairs = [(rnd(t), r) for t, r in pairs]
    nxt, rate_in, m_prev, prev, out, done = 1, 1.0, 1.0, None, [], []
    for c in range(1, num_calls + 1):
        if not (c == nxt or c >= num_calls - 1):
            out.append({"c": c, "compute": False})
            continue
        p = p_at(c)
        d = None
        if prev is None:
            rate = 1
        else:
            ref = lagrange(done[-(forecast_metric + 1):], c) if forecast_metric else prev
            d = rel_l1(p, ref) / rate_in
            if moreg:
                m = (motion(p, frames) / scale) ** power if window[0] <= c <= window[1] else 1.0
                g = gain * (m - m_prev) / rate_in
                m_prev = m
                d = d * (m + abs(g))
            d = rnd(d)
            rate = next((r for t, r in pairs if t > d), pairs[-1][1])
        out.append({"c": c, "compute": True, "d": d, "rate": rate})
        nxt, rate_in, prev = c + rate, float(rate), p
        done.append((c, p))
    return out


def forecast_residuals(schedule: list[dict], residual_at, order: int) -> dict:
    """docs/algorithms.md §11: on each reused call c of `schedule` (rows with "c" and "compute"), the residual a block
    adds to its input: the polynomial through its residuals `residual_at(c')` on the last order + 1 computed calls
    c' (fewer at the start of the video), over the call index, evaluated at c."""
    done, out = [], {}
    for row in schedule:
        if row["compute"]:
            done.append((row["c"], residual_at(row["c"])))
        else:
            out[row["c"]] = lagrange(done[-(order + 1):], row["c"])
    return out


class Recorder:
    """Forward hooks recording, per model call, a block's inputs/outputs and a submodule's inputs."""

    def __init__(self):
        self.calls: list[dict] = []
        self._hooks = []

    def new_call(self):
        self.calls.append({})

    def block(self, module, key: str):
        def pre(mod, args, kwargs):
            x = kwargs.get("hidden_states", args[0] if args else None)
            self.calls[-1][key + ".in"] = x.detach().clone()
            self.calls[-1][key + ".kwargs"] = {k: v for k, v in kwargs.items()}
            self.calls[-1][key + ".args"] = args

        def post(mod, args, kwargs, out):
            o = out[0] if isinstance(out, tuple) else out
            self.calls[-1][key + ".out"] = o.detach().clone()

        self._hooks.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        self._hooks.append(module.register_forward_hook(post, with_kwargs=True))

    def sub_input(self, module, key: str):
        def pre(mod, args, kwargs):
            self.calls[-1][key] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

        self._hooks.append(module.register_forward_pre_hook(pre, with_kwargs=True))

    def remove(self):
        for h in self._hooks:
            h.remove()


def run_patched(model, config, inputs, *, hooks=None, calls: int = 50, decide: str = "host", adapter=None,
                videos: int = 1):
    """Samples `videos` CFG videos through `model` patched with `config` (recording decisions), with `hooks(model,
    recorder)` installed after patching. Returns (handle, recorder, outputs per call)."""
    import fastercache_kernels as fk
    from dit_models import sample_loop

    handle = fk.apply(model, config, record=True, decide=decide, adapter=adapter)
    rec = Recorder()
    if hooks is not None:
        hooks(model, rec)
    lat, extra = inputs()
    outs = []
    for _ in range(videos):
        outs += sample_loop([model], lat, extra, calls=calls, on_call=lambda i, t: rec.new_call())
    rec.remove()
    return handle, rec, [row[0] for row in outs]


def decisions(handle) -> list[dict]:
    """The policy's recorded decisions as Python values."""
    rows = []
    for h in handle.history:
        rows.append({k: (bool(v) if v.dtype == torch.bool else v.item()) for k, v in h.items() if torch.is_tensor(v)})
    return rows


def assert_reuse_adds_last_residual(handle, rec) -> None:
    """On every reuse call, the output of block 1 equals the input of block 0 plus the residual of the last compute
    call (recorded as "b0" and "b1")."""
    last, checked = None, 0
    for g, c in zip(decisions(handle), rec.calls):
        if g["pred"]:
            last = c["b1.out"] - c["b0.in"]
        else:
            assert torch.allclose(c["b1.out"], c["b0.in"] + last, rtol=1e-5, atol=1e-5)
            checked += 1
    assert checked > 0, "no call reused"


def close(a: float, b: float, tol: float = 1e-5) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(b))
