import math

import torch
from torch import Tensor

__all__ = ["feature_diff", "feature_diff_partials"]


def _rows(t: Tensor, per_sample: bool, acc_dtype: torch.dtype) -> Tensor:
    t = t.to(acc_dtype)
    return t.reshape(t.shape[0], math.prod(t.shape[1:])) if per_sample else t.reshape(1, -1)


def diff_sums(a: Tensor, b: Tensor, metric: str) -> Tensor:
    """[rows, 3] raw sums of the metric over each row of a and b ([rows, cols], already in the accumulation dtype)."""
    zero = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
    if metric == "l1":
        return torch.stack([(a - b).abs().sum(1), torch.full_like(zero, a.shape[1]), zero], -1)
    if metric == "rel_l1":
        return torch.stack([(a - b).abs().sum(1), b.abs().sum(1), zero], -1)
    if metric == "rel_l2":
        return torch.stack([(a - b).square().sum(1), b.square().sum(1), zero], -1)
    if metric == "cosine":
        return torch.stack([(a * b).sum(1), (a * a).sum(1), (b * b).sum(1)], -1)
    raise ValueError(f"unknown metric {metric!r}")


def metric_from_sums(s: Tensor, metric: str) -> Tensor:
    if metric in ("l1", "rel_l1"):
        return s[..., 0] / s[..., 1]
    if metric == "rel_l2":
        return s[..., 0].sqrt() / s[..., 1].sqrt()
    return 1 - s[..., 0] / (s[..., 1].sqrt() * s[..., 2].sqrt())


def feature_diff_partials(a: Tensor, b: Tensor, metric: str = "rel_l1", per_sample: bool = False,
                          acc_dtype: torch.dtype = torch.float32) -> Tensor:
    """The raw sums ([3], or [B, 3] per sample) in acc_dtype (fp32 by default; tests pass float64 for a truth)."""
    s = diff_sums(_rows(a, per_sample, acc_dtype), _rows(b, per_sample, acc_dtype), metric)
    return s if per_sample else s[0]


def feature_diff(a: Tensor, b: Tensor, metric: str = "rel_l1", per_sample: bool = False,
                 acc_dtype: torch.dtype = torch.float32) -> Tensor:
    """l1 = mean|a-b|, rel_l1 = sum|a-b| / sum|b|, rel_l2 = ||a-b|| / ||b||, cosine = 1 - <a,b> / (||a|| ||b||),
    over all elements (0-d) or per sample (over every dim but the first, [B])."""
    return metric_from_sums(feature_diff_partials(a, b, metric, per_sample, acc_dtype), metric)
