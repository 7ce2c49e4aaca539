import torch
from torch import Tensor


def frames_view(residual: Tensor, num_frames: int, layout: str) -> Tensor:
    """The residual as [G, T, F]: BNC [B, T*S, C] -> [B, T, S*C]; BCTHW [B, C, T, H, W] -> [B*C, T, H*W]."""
    if layout == "BNC":
        b, n, c = residual.shape
        return residual.reshape(b, num_frames, n // num_frames * c)
    b, c, t, h, w = residual.shape
    return residual.reshape(b * c, t, h * w)


def motion_score(residual: Tensor, num_frames: int, strides=(1,), layout: str = "BNC", partials: bool = False,
                 acc_dtype: torch.dtype = torch.float32) -> Tensor:
    """MoReg's normalised frame difference per frame stride k: [len(strides)], or [len(strides), 2] (num, den).
    m_k = sum|p[t+k] - p[t]| / (sum|p[k..T-1]| + sum|p[0..T-1-k]|)."""
    p = frames_view(residual, num_frames, layout).to(acc_dtype)
    rows = []
    for k in strides:
        num = (p[:, k:] - p[:, :-k]).abs().sum()
        den = p[:, k:].abs().sum() + p[:, :-k].abs().sum()
        rows.append(torch.stack([num, den]))
    s = torch.stack(rows)
    return s if partials else s[:, 0] / s[:, 1]
