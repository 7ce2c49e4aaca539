import torch
from torch import Tensor


def extrapolate(newer: Tensor, older: Tensor, weight) -> Tensor:
    """newer + weight * (newer - older), computed in fp32 and returned in newer's dtype."""
    n, o = newer.float(), older.float()
    w = weight.to(device=n.device, dtype=torch.float32) if isinstance(weight, Tensor) else float(weight)
    return (n + w * (n - o)).to(newer.dtype)
