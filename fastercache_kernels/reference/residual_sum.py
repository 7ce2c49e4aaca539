from torch import Tensor


def residual_sum(x: Tensor, residuals) -> Tensor:
    """x + residuals[0] + residuals[1] + ..., accumulated in fp32 in list order, returned in x's dtype."""
    acc = x.float()
    for r in residuals:
        acc = acc + r.float()
    return acc.to(x.dtype)
