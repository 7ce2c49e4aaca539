"""A plain implementation of the official FasterCache schedules, written from SPEC sections 1-2 the way the reference
code does it: a call counter, attention caches as Python lists of whole tensors sliced `cache[:B]` (the reference's
batch puts the branch computed on skip calls first), and the CFG residual kept as FFT-domain deltas multiplied in
place on every skip call. It is the oracle the presets are checked against; it shares no code with the package.
"""

from __future__ import annotations

import torch

# SPEC section 1 and 2 tables, one entry per preset, in the SPEC's own terms.
SPEC = {
    "cogvideox-2b": dict(
        fill={"spatial": 15, "temporal": 15}, reuse=lambda c: c >= 18 and c % 3 != 0, weight=lambda c: 0.3,
        check_batch=True, computed="uncond",
        skip=lambda c: c >= 18 and c % 5 != 0, refresh=lambda c: c >= 16,
        mults=lambda c: (1.1 if c <= 40 else 1.0, 1.1 if c >= 30 else 1.0)),
    "latte": dict(
        fill={"spatial": 13, "temporal": 13}, reuse=lambda c: c >= 16 and c % 2 == 0, weight=lambda c: 0.5,
        check_batch=True, computed="cond",
        skip=lambda c: c >= 18 and c % 5 != 0, refresh=lambda c: c >= 16,
        mults=lambda c: (1.1, 1.0) if c < 45 else ((1.0, 1.1) if c > 35 else (1.0, 1.0))),
    "opensora-1.2": dict(
        fill={"spatial": 5, "temporal": 5}, reuse=lambda c: c > 7 and c % 2 == 0, weight=lambda c: (c - 7) / 20 * 0.9,
        check_batch=False, computed="cond",
        skip=lambda c: c > 11 and c % 5 != 0, refresh=lambda c: c >= 10,
        mults=lambda c: (1.15 if c <= 25 else 1.0, 1.15 if c >= 20 else 1.0)),
    "opensora-plan-1.1": dict(
        fill={"temporal": 40, "spatial": 42}, reuse=lambda c: c >= 45 and c % 3 != 0, weight=lambda c: 0.3,
        check_batch=True, computed="cond",
        skip=lambda c: c >= 40 and c % 6 != 0, refresh=lambda c: c > 38,
        mults=lambda c: (1.1, 1.0) if c <= 130 else ((1.0, 1.2) if c >= 100 else (1.0, 1.0))),
}


def fft_split(x: torch.Tensor):
    """SPEC section 2: S = fftshift(fft2(y)) (shift over all dims), mask radius min(H, W) // 5 (meshgrid 'ij')."""
    s = torch.fft.fftshift(torch.fft.fft2(x))
    h, w = x.shape[-2:]
    r = min(h, w) // 5
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mask = (xx - w // 2) ** 2 + (yy - h // 2) ** 2 <= r**2
    return s * mask, s * ~mask


class ReferenceFasterCache:
    """Wraps `model` (modified in place) so that `ref(**inputs)` runs one call of the official schedule."""

    def __init__(self, model, preset: str, attention: list[tuple[str, str]], batch_order=("uncond", "cond"),
                 batched=("hidden_states", "timestep", "encoder_hidden_states")):
        self.model = model
        self.batched = batched
        self.spec = SPEC[preset]
        self.first = batch_order.index(self.spec["computed"])  # index of the computed branch in the model's batch
        self.counter = 0
        self.delta_lf = self.delta_hf = None
        mods = dict(model.named_modules())
        for name, kind in attention:
            self._patch(mods[name], kind)

    def _to_ref(self, t):  # model batch order -> reference order (computed branch first)
        full_call = not self.spec["skip"](self.counter)
        return torch.cat(t.chunk(2)[::-1]) if self.first == 1 and full_call else t

    _from_ref = _to_ref  # swapping two halves is its own inverse

    def _patch(self, mod, kind):
        orig = mod.forward
        spec = self.spec
        mod.ref_cache = None

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
            else:
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
        self.counter += 1
        c, spec = self.counter, self.spec
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
