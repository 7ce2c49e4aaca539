"""Forecasting a reused value from its history (docs/algorithms.md section 9).

`History` keeps the last K computed values of one reused quantity (a block residual, an attention output) in a
ring buffer of static tensors, each stamped with its position (step index or timestep), and computes on the
device the weights under which `fk.ops.forecast(history.buf, weights)` is the polynomial extrapolation of those
values to a new position: order 0 is plain reuse, order 1 TaylorSeer's first-order forecast (Liu et al.,
2025, "From Reusing to Forecasting: Accelerating Diffusion Models with TaylorSeers", arXiv 2503.06923), order 2
the parabola through the last three values (rule="taylorseer" gives TaylorSeer's own second order, which
differs). Nothing here reads a tensor on the host, and the buffers are allocated once (the weights arithmetic
makes a few [K] and [K, K] tensors per call), so a step runs under torch.compile(fullgraph=True)
(tests/test_forecast_history.py); with tensor positions it is also capturable in a CUDA graph (not tested here:
no GPU on the development machine).

Positions: step indices by default. TaylorSeer forecasts over step distances (its code: `current step - last
computed step`, with a timestep variant left commented out), and so does diffusers' TaylorSeer hook (0.42: the
count of calls since the last update). Both rules' weights are unchanged by an affine map of the positions
(x -> a*x + b), so on a uniform timestep grid (DDIM/DDPM "linspace" or "trailing" spacing) step indices and
timesteps give the same forecast; they differ on non-uniform grids (shifted flow-matching sigmas, Karras
schedules), where timesteps (or sigmas) extrapolate in the sampler's own time. Which forecasts better there is
not measured here; pass whichever the policy's rule is written in.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import ops
from ..ops.forecast import MAX_SLOTS

__all__ = ["History"]


class History:
    """A ring buffer of the last `slots` computed values of one quantity, with the position of each.

    Static tensors, allocated once: `buf` [K, *shape] (the values), `positions` [K] fp32 (the stamp of each slot),
    `index` (0-d int64: the slot the next push writes) and `filled` (0-d int64: how many slots hold a pushed
    value, at most K). `push` writes in place; `weights` computes extrapolation weights on the device. E.g.:

    history = History(3, x.shape, dtype=x.dtype, device=x.device)
    history.push(residual, step)                          # on a computed call (step: a 0-d tensor)
    y = history.forecast(step, order=2, x=x)              # on a reused call: x + the forecast residual
    """

    def __init__(self, slots: int, shape, *, dtype: torch.dtype = torch.float32, device=None):
        if not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"History: `slots` must be an int in [1, {MAX_SLOTS}] (the forecast op reads at most "
                             f"{MAX_SLOTS} values; order n needs n + 1), got {slots!r}")
        self.buf = torch.zeros((slots, *shape), dtype=dtype, device=device)
        device = self.buf.device
        self.positions = torch.zeros(slots, dtype=torch.float32, device=device)
        self.index = torch.zeros((), dtype=torch.int64, device=device)
        self.filled = torch.zeros((), dtype=torch.int64, device=device)
        self._slot = torch.arange(slots, device=device)  # recency ranks 0..K-1 (static)
        self._off_diagonal = ~torch.eye(slots, dtype=torch.bool, device=device)

    @property
    def slots(self) -> int:
        return self.buf.shape[0]

    def reset(self) -> None:
        """Forgets every value (a new video). The slots keep their bits, but get weight 0 until pushed again, and
        the forecast op leaves a weight-0 slot out of the sum."""
        self.index.zero_()
        self.filled.zero_()

    def reset_where(self, cond: Tensor) -> None:
        """`reset` where the 0-d bool `cond` holds (no host read: a new video found on the device)."""
        self.filled.copy_(torch.where(cond, torch.zeros_like(self.filled), self.filled))
        self.index.copy_(torch.where(cond, torch.zeros_like(self.index), self.index))

    def advance_where(self, cond: Tensor, position) -> None:
        """Where the 0-d bool `cond` holds, records `position` for the slot at the write index and advances the
        index: the clock of rings kept beside it, whose slot at `index` the caller wrote during the call."""
        at = self.index.reshape(1)
        pos = self._position(position)
        self.positions.index_copy_(0, at, torch.where(cond, pos, self.positions.index_select(0, at)))
        self.index.copy_(torch.where(cond, torch.remainder(self.index + 1, self.slots), self.index))
        self.filled.copy_(torch.where(cond, torch.clamp(self.filled + 1, max=self.slots), self.filled))

    def _position(self, position) -> Tensor:
        """`position` as a [1] fp32 tensor on the buffer's device (a Python number becomes a constant: compiled
        code then specialises on it, so pass a tensor there)."""
        if isinstance(position, Tensor):
            if position.numel() != 1:
                raise ValueError(f"History: a position must be one value (a 0-d or [1] tensor), got shape "
                                 f"{tuple(position.shape)}")
            return position.to(device=self.buf.device, dtype=torch.float32).reshape(1)
        return torch.tensor([float(position)], dtype=torch.float32, device=self.buf.device)

    def push(self, value: Tensor, position) -> None:
        """Stores `value` (shape `buf.shape[1:]`, cast to buf's dtype) at `position` in the oldest slot, in place:
        index_copy_ at the device-side write index, so no host read and no new buffer."""
        if tuple(value.shape) != tuple(self.buf.shape[1:]):
            raise ValueError(f"History.push: `value` has shape {tuple(value.shape)} but the history holds values "
                             f"of shape {tuple(self.buf.shape[1:])}")
        at = self.index.reshape(1)
        self.buf.index_copy_(0, at, value.detach().to(self.buf.dtype).unsqueeze(0))
        self.positions.index_copy_(0, at, self._position(position))
        self.index.copy_(torch.remainder(self.index + 1, self.slots))
        self.filled.copy_(torch.clamp(self.filled + 1, max=self.slots))

    def weights(self, position, order: int, rule: str = "lagrange") -> Tensor:
        """[K] fp32 weights, on the device, under which sum_k w[k] * buf[k] forecasts the value at `position`
        from the last order + 1 pushed values (docs/algorithms.md section 9).

        rule "lagrange": the degree-`order` polynomial through those values, evaluated at `position` (Lagrange
        form; unequal spacing allowed; exact for polynomials of degree <= order). rule "taylorseer": TaylorSeer's
        truncated Taylor series with derivatives from recursive backward differences (Liu et al., 2025), as its
        code and diffusers' hook compute it; the same as "lagrange" for order 0 and 1, and not exact for a
        quadratic at order 2.

        With fewer than order + 1 values pushed, the highest order they allow is used (branch-free, by
        torch.where); slots outside the used points get weight exactly 0; before the first push every weight is 0.
        Two used values at the same position make the weights non-finite: push one value per position.
        Computed in fp64 (close timesteps or sigmas would otherwise lose digits in the differences).
        """
        k = self.slots
        if not isinstance(order, int) or not 0 <= order < k:
            raise ValueError(f"History.weights: `order` must be an int in [0, {k - 1}] for a history of {k} slots "
                             f"(order n reads n + 1 values), got {order!r}")
        if rule not in ("lagrange", "taylorseer"):
            raise ValueError(f"History.weights: `rule` must be 'lagrange' or 'taylorseer', got {rule!r}")
        p = self._position(position).to(torch.float64)
        newest_first = torch.remainder(self.index - 1 - self._slot, k)  # slot of the j-th most recent value
        xs = self.positions.to(torch.float64).index_select(0, newest_first)
        used = torch.clamp(self.filled - 1, min=0, max=order)  # the order the pushes allow (0-d)
        use = self._slot <= used  # [K] points in the forecast, newest first
        if rule == "lagrange":
            # L_j(p) = prod over used i != j of (p - x_i) / (x_j - x_i)
            pair = use.unsqueeze(0) & self._off_diagonal  # [j, i]
            den = torch.where(pair, xs.unsqueeze(1) - xs.unsqueeze(0), 1.0)
            w = torch.where(pair, (p - xs).unsqueeze(0) / den, 1.0).prod(dim=1)
        else:
            w = self._taylorseer(p, xs, used, order)
        w = torch.where(use & (self.filled > 0), w, 0.0)
        return torch.zeros(k, dtype=torch.float32, device=self.buf.device).scatter(
            0, newest_first, w.to(torch.float32))

    def _taylorseer(self, p: Tensor, xs: Tensor, used: Tensor, order: int) -> Tensor:
        """TaylorSeer's forecast as weights over the values newest first: D_0 of value j is the value itself,
        D_{i+1}(j) = (D_i(j) - D_i(j + 1)) / (x_j - x_{j+1}) (each difference divided by the distance of the
        update that formed it), and F(p) = sum_{i <= used} D_i(0) * (p - x_0)^i / i!. Orders above `used` (not
        enough pushes) get coefficient 0; the loops run over the static slot count."""
        k = self.slots
        eye = torch.eye(k, dtype=torch.float64, device=xs.device)
        d = [eye[j] for j in range(k)]  # D_0 of value j, as weights over the values
        gap = torch.where(self._slot[1:] <= used, xs[:-1] - xs[1:], 1.0)  # x_j - x_{j+1} between used values
        s = p - xs[0]
        w = d[0].clone()
        term = torch.ones_like(s)
        for i in range(1, order + 1):
            d = [(d[j] - d[j + 1]) / gap[j] for j in range(len(d) - 1)]
            term = term * s / i
            w = w + torch.where(used >= i, term, 0.0) * d[0]
        return w

    def forecast(self, position, order: int, x: Tensor | None = None, *, rule: str = "lagrange",
                 out: Tensor | None = None) -> Tensor:
        """x + the order-`order` forecast at `position` (fk.ops.forecast over `buf` with `weights`), in buf's dtype."""
        return ops.forecast(self.buf, self.weights(position, order, rule), x, out=out)
