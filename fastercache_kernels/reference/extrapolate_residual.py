import torch
from torch import Tensor


def gate_rows(gate: Tensor, channels: int) -> Tensor:
    """A gate of shape [B, C], [B, 1, C], [1, C] or [C] as fp32 [B or 1, C] (one row per sample, or one shared)."""
    rows = 1 if gate.dim() == 1 else gate.shape[0]  # not reshape(-1, C): C = 0 would leave -1 undetermined
    return gate.reshape(rows, channels).to(torch.float32)


def extrapolate_residual(x: Tensor, gate: Tensor | None, newer: Tensor, older: Tensor, weight) -> Tensor:
    """x + gate * (newer + weight * (newer - older)) in fp32 with x viewed as [B, N, C] and the gate per sample
    and channel; returns a new tensor in x's dtype (the op writes it into x)."""
    view = (x.shape[0], x.shape[1:-1].numel(), x.shape[-1])  # [B, N, C]
    c = view[2]
    xf = x.float().reshape(view)
    n, o = newer.float().reshape(view), older.float().reshape(view)
    w = weight.to(device=xf.device, dtype=torch.float32) if isinstance(weight, Tensor) else float(weight)
    f = n + w * (n - o)
    if gate is None:
        y = xf + f
    else:
        y = xf + gate_rows(gate, c).to(xf.device)[:, None, :] * f
    return y.reshape(x.shape).to(x.dtype)
