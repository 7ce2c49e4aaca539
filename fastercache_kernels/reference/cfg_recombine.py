import torch
from torch import Tensor

__all__ = ["cfg_recombine", "cfg_recombine_guided"]


def _f32(value, device) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(device=device, dtype=torch.float32)
    return torch.tensor(float(value), dtype=torch.float32, device=device)


def cfg_recombine(computed: Tensor, low: Tensor, high: Tensor, low_weight, high_weight) -> Tensor:
    """computed + low_weight * low + high_weight * high, computed in fp32 and returned in computed's dtype."""
    c, lo, hi = computed.float(), low.float(), high.float()
    a, b = _f32(low_weight, c.device), _f32(high_weight, c.device)
    return (c + a * lo + b * hi).to(computed.dtype)


def cfg_recombine_guided(computed: Tensor, low: Tensor, high: Tensor, low_weight, high_weight,
                         guidance_scale) -> Tensor:
    """computed + (1 - guidance_scale) * (low_weight * low + high_weight * high), in fp32, in computed's dtype."""
    c, lo, hi = computed.float(), low.float(), high.float()
    a, b, s = (_f32(v, c.device) for v in (low_weight, high_weight, guidance_scale))
    return (c + (1 - s) * (a * lo + b * hi)).to(computed.dtype)
