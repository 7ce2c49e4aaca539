"""CFG-Cache at the pipeline level, for models the pipeline calls once per CFG branch (Vchitect-2.0).

Such a model never sees both branches in one call, so `fk.apply` can only reuse its attention; the branch skip of
docs/algorithms.md §2 has to happen in the denoising loop. `CFGCache.step` is what the loop calls once per step in place
of its two model calls:

    handle = fk.apply(pipe.transformer, "vchitect-2.0")   # attention reuse, counted per step
    cfg = fk.pipeline.CFGCache("vchitect-2.0")
    for t in timesteps:
        def branch(name):                                 # one model call for "uncond" or "cond"
            emb, pooled = (neg, neg_pooled) if name == "uncond" else (pos, pos_pooled)
            return pipe.transformer(hidden_states=latents, encoder_hidden_states=emb, pooled_projections=pooled,
                                    timestep=t.expand(1), return_dict=False)[0]
        uncond, cond = cfg.step(branch, timestep=t)
        noise = uncond + scale * (cond - uncond)          # or: noise = cfg.guided(branch, scale, timestep=t)

On a full step it calls both branches (uncond first, as the Vchitect pipeline does) and keeps the split residual
`R = other - computed` (`fk.ops.cfg_residual_split`); on a skip step it calls only the computed branch and
rebuilds the other with `fk.ops.cfg_recombine` (linear form of the reference's FFT path, docs/algorithms.md §2), the
low/high weights compounding over consecutive skip steps. It is the same CFG residual (`runtime.cfg.CFGResidual`)
that `fk.apply` uses for batched and per-branch calls; with a diffusers pipeline that wraps its calls in
`cache_context("cond" | "uncond")`, `fk.apply(pipe, config)` does this on its own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import ops
from .policies.fastercache.config import FasterCacheConfig, FasterCacheSchedule
from .policies.fastercache.cfg import CFGResidual


class CFGCache:
    """The CFG-Cache schedule of a FasterCacheConfig (or preset name) run by a denoising loop, one `step` per
    sampler step. The step counter restarts on `reset()` or when `timestep` jumps up (a new video)."""

    def __init__(self, config: FasterCacheConfig | str = "vchitect-2.0", order=("uncond", "cond")):
        if isinstance(config, str):
            config = FasterCacheConfig.preset(config)
        if not isinstance(config, FasterCacheConfig):
            raise TypeError(f"CFGCache: `config` must be a fk.FasterCacheConfig or a preset name, got "
                            f"{type(config).__name__}")
        if not config.cfg:
            raise ValueError("CFGCache: the config has cfg=False; there is nothing to skip")
        if sorted(order) != ["cond", "uncond"]:
            raise ValueError(f"CFGCache: `order` must hold 'uncond' and 'cond' once each, got {order!r}")
        self.config = config
        self.schedule = FasterCacheSchedule(config.replace(attention=False), kinds=())
        self.order = tuple(order)
        self.computed = config.computed_branch
        self.other = "uncond" if self.computed == "cond" else "cond"
        self.residual = CFGResidual(config.radius_divisor, config.storage_dtype)
        self.c = 0
        self._t = None
        self.calls = {"full": 0, "skip": 0}

    def reset(self) -> None:
        self.c, self._t = 0, None
        self.residual.reset()

    def _begin(self, timestep) -> bool:
        t = float(timestep.reshape(-1)[0]) if isinstance(timestep, torch.Tensor) else timestep
        if t is not None and self._t is not None and t > self._t:
            self.reset()
        self._t = t
        self.c += 1
        plan = self.schedule.plan(self.c)
        if plan.full:
            self.residual.full()
        else:
            if not self.residual.refreshed:
                raise RuntimeError(f"CFGCache: step {self.c} skips a branch but no full step has run yet")
            self.residual.skip(plan.low_mult, plan.high_mult)
        self.calls["full" if plan.full else "skip"] += 1
        return plan.full

    def step(self, call: Callable[[str], torch.Tensor], timestep=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs one sampler step. `call(branch)` makes the model call for branch "uncond" or "cond" and returns
        its sample ([*, H, W]: the frequency split works over the last two dims). Returns (uncond, cond)."""
        if self._begin(timestep):
            out = self._full(call)
        else:
            out = {self.computed: call(self.computed)}
            out[self.other] = self.residual.reconstruct(out[self.computed])
        return out["uncond"], out["cond"]

    def guided(self, call: Callable[[str], torch.Tensor], guidance_scale: float, timestep=None) -> torch.Tensor:
        """`uncond + guidance_scale * (cond - uncond)` for one step; on a skip step that computes cond, one fused
        pass (`fk.ops.cfg_recombine_guided`)."""
        if self._begin(timestep):
            out = self._full(call)
        elif self.computed == "cond":
            r = self.residual
            return ops.cfg_recombine_guided(call("cond"), r.low, r.high, r.a, r.b, guidance_scale)
        else:
            out = {"uncond": call("uncond")}
            out["cond"] = self.residual.reconstruct(out["uncond"])
        return out["uncond"] + guidance_scale * (out["cond"] - out["uncond"])

    def _full(self, call) -> dict:
        out = {name: call(name) for name in self.order}
        computed = out[self.computed]
        self.residual.allocate(computed.shape, computed.dtype, computed.device)
        self.residual.refresh(out[self.other], computed)
        self.residual.refreshed = True
        return out

    def stats(self) -> dict:
        return {"step_in_video": self.c, **self.calls}
