import torch
from torch import Tensor

from .feature_diff import diff_sums, metric_from_sums


def residual_diff_update(output: Tensor, input: Tensor, cache: Tensor, metric: str = "rel_l1", partials: bool = False,
                         acc_dtype: torch.dtype = torch.float32) -> Tensor:
    """r = output - input (in acc_dtype); returns the metric of r against cache (or its raw sums [3]) and
    writes r, rounded to cache's dtype, into cache."""
    r = output.to(acc_dtype) - input.to(acc_dtype)
    s = diff_sums(r.reshape(1, -1), cache.to(acc_dtype).reshape(1, -1), metric)[0]
    cache.copy_(r)
    return s if partials else metric_from_sums(s, metric)
