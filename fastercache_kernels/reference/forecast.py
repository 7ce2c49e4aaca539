import torch
from torch import Tensor


def forecast(history: Tensor, weights: Tensor, x: Tensor | None = None) -> Tensor:
    """x + sum_k weights[k] * history[k] (0 for x when None), accumulated in fp32 in slot order, a slot of weight
    exactly 0 left out of the sum, returned in history's dtype."""
    w = weights.to(device=history.device, dtype=torch.float32)
    acc = torch.zeros(history.shape[1:], dtype=torch.float32, device=history.device) if x is None else x.float()
    for k in range(history.shape[0]):
        acc = torch.where(w[k] != 0, acc + w[k] * history[k].float(), acc)
    return acc.to(history.dtype)
