"""SeaCache's runtime (docs/algorithms.md section 14): reuse (or, with forecast_order, forecast) of the whole
stack's residual, decided before the call from the SEA-filtered noisy latents, so the decision is known in the
pre-hook like MagCache's (one host read there with decide="host"; none with decide="device", where the blocks run
torch.cond on the decision). The filter runs in the pre-hook, outside compiled graphs, in plain torch.fft: it is an
FFT pair over the latents and one multiply (the FFT pair is about half of its time on the demo latents), so a fused
op could only merge the gain multiply into the FFT (docs/algorithms.md section 14, measured there)."""

from __future__ import annotations

import math

import torch

from ...runtime.adaptive import _F32, AdaptiveHooks
from ...runtime.engine import first_tensor
from ...runtime.forecasting import ForecastReuse


def sea_gain(sizes: tuple, sigma, power_exp: float, device, cache: dict | None = None) -> torch.Tensor:
    """The SEA gain over a grid of `sizes` (e.g. T, H, W), for a real FFT (the last axis halved), fp32: per axis,
    with s = 1 - sigma and P(f) = 1 / (|f|^power_exp + 1e-16), g(f) = s P(f) / (s^2 P(f) + sigma^2 + 1e-16), each
    axis divided by its mean over all its frequencies, the grid their product (its mean over the full grid is then 1:
    the paper's Eq. 7, as the mean of a separable product is the product of the axis means). `sigma` a float or a
    0-d tensor, clamped to [1e-6, 1 - 1e-6]. `cache` keeps P per grid, and the last gain per host sigma."""
    key = (tuple(sizes), str(device), float(power_exp))
    hit = None if cache is None else cache.get(key)
    if hit is None:
        f = torch.cat([torch.fft.fftfreq(n, device=device, dtype=torch.float32) for n in sizes])
        hit = {"p": 1.0 / (f.abs().pow(power_exp) + 1e-16), "last": None}
        if cache is not None:
            cache[key] = hit
    host = not isinstance(sigma, torch.Tensor)
    if host:
        noise = max(1e-6, min(1.0 - 1e-6, float(sigma)))
        if hit["last"] is not None and hit["last"][0] == noise:  # the other CFG branch of the step
            return hit["last"][1]
    else:
        noise = sigma.to(device=device, dtype=torch.float32).clamp(1e-6, 1.0 - 1e-6)
    signal = 1.0 - noise
    p = hit["p"]
    g = signal * p / (signal * signal * p + (noise * noise + 1e-16))  # every axis at once
    axes = g.split(list(sizes))
    grid = None
    for i, a in enumerate(axes):
        a = a / a.mean()
        if i == len(axes) - 1:
            a = a[: sizes[-1] // 2 + 1]  # rfft's half spectrum: |fftfreq| there is rfftfreq
        shape = [1] * len(sizes)
        shape[i] = a.shape[0]
        grid = a.reshape(shape) if grid is None else grid * a.reshape(shape)
    if host:
        hit["last"] = (noise, grid)
    return grid


def sea_filter(x: torch.Tensor, sigma, power_exp: float = 3.0, cache: dict | None = None) -> torch.Tensor:
    """The SEA indicator of `x` [B, C, ...]: its real spectrum over every dim after the channels (e.g. T, H, W)
    times `sea_gain`, back in x's dtype. The gain is real and even in f, so a real FFT gives the same filter as
    diffusers' complex one at half the work."""
    dims = tuple(range(2, x.dim()))
    sizes = tuple(x.shape[2:])
    xf = x.float().contiguous()
    spec = torch.fft.rfftn(xf, dim=dims)
    spec = spec * sea_gain(sizes, sigma, power_exp, xf.device, cache)
    return torch.fft.irfftn(spec, s=sizes, dim=dims).to(x.dtype)


def rel_l1_per_sample(cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """[B] fp32: mean |cur - prev| / (mean |prev| + 1e-16) per sample (dim 0)."""
    b = cur.shape[0]
    num = (cur.float() - prev.float()).abs().reshape(b, -1).mean(1)
    return num / (prev.float().abs().reshape(b, -1).mean(1) + 1e-16)


class SeaCacheHooks(ForecastReuse, AdaptiveHooks):
    policy = "seacache"
    reads_c = False  # the rule reads the call count on the host only (see AdaptiveHooks._keeps_c)
    reads_in_forward = False  # decided in the pre-hook (like AdaCache and MagCache)

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.forced_tail = self.config.cache_end_steps - 1  # the base forces steps >= N - 1 - forced_tail
        self.ind_prev: list | None = None
        self._gain_cache: dict = {}
        self._call = None

    def scalars(self) -> dict:
        return {**super().scalars(), "acc": (0.0, _F32, True), "acc_seen": (0.0, _F32, True)}

    def recorded(self) -> tuple:
        return (*super().recorded(), "acc_seen")

    def local_names(self) -> tuple:
        return (*super().local_names(), "ind_prev")

    def _fresh_policy(self) -> None:
        self.ind_prev = None

    def buffers(self) -> list:
        return super().buffers() + list(self.ind_prev or [])

    # -- the indicator -------------------------------------------------------------------------------------------
    def _sigma(self, call):
        """The call's flow-matching noise level: the cache_context's sigma, the pipeline scheduler's
        sigmas[step_index] (when in [0, 1]), else timestep / 1000 (a 0-d device tensor when the timestep is only
        on the device: no host read)."""
        engine = self.engine
        s = getattr(engine.context, "sigma", None)
        if s is not None:
            return s if isinstance(s, torch.Tensor) and s.device.type != "cpu" else float(s)
        pipe = engine.pipeline() if engine.pipeline is not None else None
        sched = getattr(pipe, "scheduler", None)
        sigmas = getattr(sched, "sigmas", None)
        if isinstance(sigmas, torch.Tensor) and sigmas.device.type == "cpu" and sigmas.dim() == 1:
            i = getattr(sched, "step_index", None)
            i = 0 if i is None else int(i)
            if 0 <= i < sigmas.shape[0] and 0.0 <= float(sigmas[i]) <= 1.0:
                return float(sigmas[i])
        if call.t is not None:
            return call.t / 1000.0
        t = call.t_tensor
        if isinstance(t, torch.Tensor) and t.numel():
            return t.reshape(-1)[0].to(torch.float32) / 1000.0
        raise ValueError("SeaCache: the call gives no noise level: enter the model's "
                         "`cache_context(name, step_index=..., sigma=..., num_inference_steps=...)` around each call, "
                         "apply fk to the pipeline (its scheduler's sigmas), or pass the timestep argument")

    def _indicator(self, call) -> list:
        """The SEA-filtered latents of this call: one [b, C, ...] tensor per latent (the sample input, batched; or
        the callback's [C, ...] latents, each as a batch of one)."""
        sigma = self._sigma(call)
        cfg = self.config
        cb = cfg.raw_vision_callback
        if cb is not None:
            got = cb(self.engine.model, call.args, call.kwargs)
            if not got or not all(isinstance(v, torch.Tensor) and v.dim() >= 2 for v in got):
                raise ValueError("SeaCache: `raw_vision_callback` must return a non-empty list of [C, ...] latent "
                                 f"tensors, got {type(got).__name__}")
            lats = [v.unsqueeze(0) for v in got]
        else:
            kw = call.kwargs
            x = kw.get("hidden_states")
            if not isinstance(x, torch.Tensor):
                x = first_tensor((*call.args, *(kw[n] for n in self.engine._params if n in kw), *kw.values()))
            if x is None or x.dim() < 3:
                raise ValueError("SeaCache: the model call has no batched latent tensor to filter; pass "
                                 "raw_vision_callback=(module, args, kwargs) -> [C, T, H, W] latents")
            fmt = self.adapter.layout.tensor_format if self.adapter is not None else ""
            c = fmt.index("C") if "C" in fmt and len(fmt) == x.dim() else x.dim() - 1
            lats = [x.movedim(c, 1)]
        return [sea_filter(v.detach(), sigma, cfg.power_exp, cache=self._gain_cache) for v in lats]

    def _distance(self, ind: list) -> torch.Tensor:
        """The mean over samples of the relative L1 change since the last call (inf where there is none to
        compare: a new shape, the first call); the previous indicator becomes this one's."""
        prev = self.ind_prev
        dev = ind[0].device
        if prev is None or len(prev) != len(ind):
            self.ind_prev = [v.clone() for v in ind]
            return torch.full((), math.inf, dtype=_F32, device=dev)
        ratios = []
        for i, (v, p) in enumerate(zip(ind, prev)):
            if p.shape[0] == 2 * v.shape[0] and p.shape[1:] == v.shape[1:] and self.half is not None:
                p = p.chunk(2)[self.half]  # a composed CFG-skip call sees its half of the batch
            if p.shape != v.shape or p.dtype != v.dtype or p.device != v.device:
                self.ind_prev = [u.clone() for u in ind]
                return torch.full((), math.inf, dtype=_F32, device=dev)
            ratios.append(rel_l1_per_sample(v, p))
            p.copy_(v)
        return torch.cat(ratios).mean()

    # -- per call ------------------------------------------------------------------------------------------------
    def begin(self, call) -> None:
        self._call = call
        try:
            super().begin(call)
        finally:
            self._call = None

    def begin_policy(self) -> None:
        super().begin_policy()  # forecasting: this call's weights
        d = self._distance(self._indicator(self._call))
        acc = self.acc + d
        pred = self.decide(~(acc < self.config.threshold))  # NaN and inf compute
        self.acc.copy_(torch.where(pred, torch.zeros_like(acc), acc))
        self.acc_seen.copy_(acc)
        self.metric.copy_(d)
        self.pred.copy_(pred)
        self._read()
