"""Rectified-flow sampling with classifier-free guidance: 50 model calls, each on the batch [uncond, cond]."""

from __future__ import annotations

import contextlib

import torch

from .models import call


_current = {"t": 1000.0}


def current_timestep() -> float:
    """The model timestep (0..1000) of the call in progress: for diffusers' current_timestep_callback."""
    return _current["t"]


def timesteps(steps: int) -> torch.Tensor:
    """t from 1 (noise) to 0 (data), steps + 1 points."""
    return torch.linspace(1.0, 0.0, steps + 1)


@torch.no_grad()
def sample(model, cond: torch.Tensor, null: torch.Tensor, noise: torch.Tensor, steps: int = 50,
           guidance: float = 4.0, progress=None, call_context=None) -> torch.Tensor:
    """Euler steps of x_t = (1 - t) x0 + t eps, velocity v = eps - x0; one call per step on [uncond, cond].

    cond, null: [B, 3, D]; noise: [B, C, T, H, W]. Returns x0 [B, C, T, H, W]. `call_context(i, t)`, when given,
    returns a context manager entered around call i at noise level t (e.g. diffusers' `model.cache_context`, which
    its cache hooks read; with this schedule the noise level t is the flow-matching sigma).
    """
    x = noise.clone()
    ts = timesteps(steps)
    ctx = torch.cat([null, cond])
    for i in range(steps):
        t, t_next = float(ts[i]), float(ts[i + 1])
        _current["t"] = 1000.0 * t
        tt = torch.full((2 * x.shape[0],), 1000.0 * t)
        with call_context(i, t) if call_context is not None else contextlib.nullcontext():
            v_uncond, v_cond = call(model, torch.cat([x, x]), tt, ctx).chunk(2)
        v = v_uncond + guidance * (v_cond - v_uncond)
        x = x + (t_next - t) * v
        if progress is not None:
            progress()
    return x
