"""A plain implementation of the official FasterCache schedules, written from docs/algorithms.md §1-2 the way the
reference
code does it: a call counter, attention caches as Python lists of whole tensors in the reference model's batch order,
sliced `cache[:B]` with B the call's batch, and the CFG residual kept as FFT-domain deltas multiplied in place on
every skip call. The reference batch order (`ref_computed`: the computed branch's half) is the preset's own model's:
Open-Sora [cond, uncond] and CogVideoX [uncond, cond] put the computed branch first; Latte and Open-Sora-Plan
[uncond, cond] put it second, so a skip call reusing an entry of a full call reads the uncond rows (`cache[:1]`),
as measured on their code. It is the oracle the presets are checked against; it shares no code with the package.
"""

from __future__ import annotations

import torch

# docs/algorithms.md §1 and 2 tables, one entry per preset, in the terms of docs/algorithms.md.
SPEC = {
    "cogvideox-2b": dict(
        ref_computed=0,
        fill={"spatial": 15, "temporal": 15}, reuse=lambda c: c >= 18 and c % 3 != 0, weight=lambda c: 0.3,
        check_batch=True, computed="uncond",
        skip=lambda c: c >= 18 and c % 5 != 0, refresh=lambda c: c >= 16,
        mults=lambda c: (1.1 if c <= 40 else 1.0, 1.1 if c >= 30 else 1.0)),
    "latte": dict(
        ref_computed=1,
        fill={"spatial": 13, "temporal": 13}, reuse=lambda c: c >= 16 and c % 2 == 0, weight=lambda c: 0.5,
        check_batch=True, computed="cond",
        skip=lambda c: c >= 18 and c % 5 != 0, refresh=lambda c: c >= 16,
        mults=lambda c: (1.1, 1.0) if c < 45 else ((1.0, 1.1) if c > 35 else (1.0, 1.0))),
    "opensora-1.2": dict(
        ref_computed=0,
        fill={"spatial": 5, "temporal": 5}, reuse=lambda c: c > 7 and c % 2 == 0, weight=lambda c: (c - 7) / 20 * 0.9,
        check_batch=False, computed="cond",
        skip=lambda c: c > 11 and c % 5 != 0, refresh=lambda c: c >= 10,
        mults=lambda c: (1.15 if c <= 25 else 1.0, 1.15 if c >= 20 else 1.0)),
    "opensora-plan-1.1": dict(
        ref_computed=1,
        fill={"temporal": 40, "spatial": 42}, reuse=lambda c: c >= 45 and c % 3 != 0, weight=lambda c: 0.3,
        check_batch=True, computed="cond",
        skip=lambda c: c >= 40 and c % 6 != 0, refresh=lambda c: c > 38,
        mults=lambda c: (1.1, 1.0) if c <= 130 else ((1.0, 1.2) if c >= 100 else (1.0, 1.0))),
}

# Vchitect-2.0, apart: counted in pipeline steps (the pipeline calls the model once per branch, so no call holds both
# branches); attention cached on every computed call and reused as a plain copy; radius min(H, W) // 200.
VCHITECT = dict(
    fill={"spatial": 1, "temporal": 1}, reuse=lambda c: c > 30 and c % 2 == 0, weight=lambda c: 0.0,
    computed="cond", skip=lambda c: c > 30 and c % 5 != 0, refresh=lambda c: True,
    mults=lambda c: (1.05 if c < 80 else 1.0, 1.1 if c > 60 else 1.0), radius_divisor=200)


def fft_split(x: torch.Tensor, divisor: int = 5):
    """docs/algorithms.md §2: S = fftshift(fft2(y)) (shift over all dims), mask radius min(H, W) // divisor (meshgrid
    'ij')."""
    s = torch.fft.fftshift(torch.fft.fft2(x))
    h, w = x.shape[-2:]
    r = min(h, w) // divisor
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mask = (xx - w // 2) ** 2 + (yy - h // 2) ** 2 <= r**2
    return s * mask, s * ~mask


class ReferenceFasterCache:
    """Wraps `model` (modified in place) so that `ref(**inputs)` runs one call of the official schedule."""

    def __init__(self, model, preset: str, attention: list[tuple[str, str]], batch_order=("uncond", "cond"),
                 batched=("hidden_states", "timestep", "encoder_hidden_states"), restart=None):
        self.model = model
        self.batched = batched
        self.spec = SPEC[preset]
        self.first = batch_order.index(self.spec["computed"])  # index of the computed branch in the model's batch
        self.swap = self.first != self.spec["ref_computed"]  # the model's order differs from the reference model's
        self.restart = restart  # restart(inputs) -> True: the counter restarts (Open-Sora: timestep[0] == 1000)
        self.counter = 0
        self.delta_lf = self.delta_hf = None
        self.log: list[dict] = []  # per call: {"full": bool, module name: "compute" | "reuse"}
        mods = dict(model.named_modules())
        for name, kind in attention:
            self._patch(mods[name], kind, name)

    def _to_ref(self, t):  # model batch order -> reference order (computed branch first)
        full_call = not self.spec["skip"](self.counter)
        return torch.cat(t.chunk(2)[::-1]) if self.swap and full_call else t

    _from_ref = _to_ref  # swapping two halves is its own inverse

    def _patch(self, mod, kind, name=""):
        orig = mod.forward
        spec = self.spec
        mod.ref_cache = None
        log = self.log

        def forward(*args, **kwargs):
            c = self.counter
            hs = args[0] if args else kwargs["hidden_states"]
            batch = hs.shape[0]
            cache = mod.ref_cache
            if (spec["reuse"](c) and cache is not None
                    and (not spec["check_batch"] or cache[1][0].shape[0] >= batch)):
                w = spec["weight"](c)

                def rows(t):  # Open-Sora: an entry holding one branch is broadcast to both halves of a full call
                    t = t[:batch]
                    return t if t.shape[0] == batch else torch.cat([t, t])

                outs = [self._from_ref(rows(new) + (rows(new) - rows(old)) * w) for old, new in zip(*cache)]
                log[-1][name] = "reuse"
            else:
                log[-1][name] = "compute"
                out = orig(*args, **kwargs)
                outs = list(out) if isinstance(out, tuple) else [out]
                stored = [self._to_ref(o) for o in outs]
                if c == spec["fill"][kind]:
                    mod.ref_cache = [stored, stored]
                elif c > spec["fill"][kind] and cache is not None:
                    mod.ref_cache = [cache[1], stored]
                return out
            return tuple(outs) if len(outs) > 1 else outs[0]

        mod.forward = forward

    def __call__(self, **inputs):
        """One model call; `inputs` are keyword arguments, the names in `batched` hold the CFG batch."""
        if self.restart is not None and self.restart(inputs):
            self.counter = 0
        self.counter += 1
        c, spec = self.counter, self.spec
        self.log.append({"full": not spec["skip"](c)})
        if spec["skip"](c):
            i = self.first
            sliced = {k: (v.chunk(2)[i] if k in self.batched and torch.is_tensor(v) else v) for k, v in inputs.items()}
            out = _sample(self.model(**sliced))
            lf_c, hf_c = fft_split(out.float())
            k_lf, k_hf = spec["mults"](c)
            self.delta_lf = self.delta_lf * k_lf
            self.delta_hf = self.delta_hf * k_hf
            other = torch.fft.ifft2(torch.fft.ifftshift(lf_c + self.delta_lf + hf_c + self.delta_hf)).real
            other = other.to(out.dtype)
            y = torch.cat([out, other] if i == 0 else [other, out])
        else:
            y = _sample(self.model(**inputs))
            if spec["refresh"](c):
                halves = y.float().chunk(2)
                lf_c, hf_c = fft_split(halves[self.first])
                lf_o, hf_o = fft_split(halves[1 - self.first])
                self.delta_lf, self.delta_hf = lf_o - lf_c, hf_o - hf_c
        return (y,)


def _sample(out):
    return out if torch.is_tensor(out) else (out[0] if isinstance(out, tuple) else out.sample)


class ReferenceVchitect:
    """The Vchitect-2.0 reference loop: the pipeline counts steps, calls the model once per branch (uncond, then
    cond) on full steps and only cond on skip steps, rebuilding uncond from FFT-domain deltas (radius
    min(H, W) // 200); every cached attention module keeps [older, newer] of its computed outputs (whatever branch
    computed them) and returns `newer + (newer - older) * 0` on reuse steps."""

    def __init__(self, model, attention: list[str]):
        self.model = model
        self.spec = VCHITECT
        self.counter = 0
        self.delta_lf = self.delta_hf = None
        self.log: list[dict] = []  # per model call: {"step": c, "branch": ..., module name: "compute" | "reuse"}
        mods = dict(model.named_modules())
        for name in attention:
            self._patch(mods[name], name)

    def _patch(self, mod, name):
        orig = mod.forward
        spec = self.spec
        mod.ref_cache = None

        def forward(*args, **kwargs):
            c, cache = self.counter, mod.ref_cache
            if spec["reuse"](c) and cache is not None:
                w = spec["weight"](c)
                self.log[-1][name] = "reuse"
                return tuple(new + (new - old) * w for old, new in zip(*cache))
            out = orig(*args, **kwargs)
            self.log[-1][name] = "compute"
            mod.ref_cache = [list(out), list(out)] if cache is None else [cache[1], list(out)]
            return out

        mod.forward = forward

    def _call(self, branch, inputs):
        self.log.append({"step": self.counter, "branch": branch})
        return self.model(**inputs, return_dict=False)[0]

    def step(self, uncond_inputs: dict, cond_inputs: dict):
        """One sampler step; returns (uncond, cond)."""
        self.counter += 1
        c, spec = self.counter, self.spec
        div = spec["radius_divisor"]
        if spec["skip"](c):
            cond = self._call("cond", cond_inputs)
            lf_c, hf_c = fft_split(cond.float(), div)
            k_lf, k_hf = spec["mults"](c)
            self.delta_lf = self.delta_lf * k_lf
            self.delta_hf = self.delta_hf * k_hf
            uncond = torch.fft.ifft2(torch.fft.ifftshift(lf_c + self.delta_lf + hf_c + self.delta_hf)).real
            return uncond.to(cond.dtype), cond
        uncond = self._call("uncond", uncond_inputs)
        cond = self._call("cond", cond_inputs)
        lf_u, hf_u = fft_split(uncond.float(), div)
        lf_c, hf_c = fft_split(cond.float(), div)
        self.delta_lf, self.delta_hf = lf_u - lf_c, hf_u - hf_c
        return uncond, cond
