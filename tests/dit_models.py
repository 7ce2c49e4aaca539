"""Tiny random instances of the real diffusers classes and the CFG sampling loop the adapter tests share."""

from __future__ import annotations

import copy

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run ~300x slower with 2 intra-op threads than with 1 on this shared 2-core machine (50 calls of
    the tiny CogVideoX: 25 s vs 0.07 s, measured with other jobs running): run these modules single-threaded."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


COG_FRAMES, COG_H, COG_W = 2, 10, 12  # latent frames, height, width (radius min(H, W) // 5 = 2)
LATTE_FRAMES, LATTE_HW = 3, 10


def tiny_cogvideox(seed: int = 0, layers: int = 2):
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=16,
        text_embed_dim=16, num_layers=layers, sample_width=COG_W, sample_height=COG_H,
        sample_frames=(COG_FRAMES - 1) * 4 + 1, patch_size=2, max_text_seq_length=4).eval()


def tiny_latte(seed: int = 0, layers: int = 2):
    from diffusers import LatteTransformer3DModel

    torch.manual_seed(seed)
    return LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=layers,
        sample_size=LATTE_HW, patch_size=2, cross_attention_dim=16, caption_channels=16, video_length=LATTE_FRAMES,
        norm_type="ada_norm_single").eval()


def cog_inputs(seed: int = 0, batch: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, COG_FRAMES, 4, COG_H, COG_W, generator=g)
    text = torch.randn(2 * batch, 4, 16, generator=g)
    return latents, {"encoder_hidden_states": text}


def latte_inputs(seed: int = 0, batch: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, LATTE_FRAMES, LATTE_HW, LATTE_HW, generator=g)
    text = torch.randn(2 * batch, 5, 16, generator=g)
    return latents, {"encoder_hidden_states": text}


def timesteps(n: int = 50):
    return torch.linspace(999, 0, n).round().long()


def sample_loop(models, latents, extra, *, calls: int = 50, first: int | None = None, on_call=None,
                positional: bool = False, return_dict: bool = False):
    """A CFG sampling loop: batch [uncond, cond], decreasing timesteps (only the `first` calls of a `calls`-call
    schedule when given). Every model in `models` gets the same inputs each call; the latents follow models[0].
    Returns, per call, the list of outputs (one per model)."""
    outs = []
    x = latents.clone()
    for i, t in enumerate(timesteps(calls)[:first]):
        inp = torch.cat([x, x])
        tt = t.expand(inp.shape[0])
        if on_call is not None:
            on_call(i, t)
        row = []
        for m in models:
            with torch.no_grad():
                if positional:
                    y = m(inp, extra["encoder_hidden_states"], tt, return_dict=return_dict)
                else:
                    y = m(hidden_states=inp, timestep=tt, return_dict=return_dict, **extra)
            row.append(y[0] if isinstance(y, tuple) else (y.sample if hasattr(y, "sample") else y))
        outs.append(row)
        y = row[0]
        uncond, cond = y.chunk(2)
        guided = uncond + 6.0 * (cond - uncond)
        x = x - 0.02 * guided[:, : x.shape[1]] if y.shape[1] != x.shape[1] else x - 0.02 * guided
    return outs


def clone(model):
    return copy.deepcopy(model)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref|."""
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max())


def assert_parity(outs, tol: float, what: str = "") -> list[float]:
    """Every call's output of models[1] within `tol` (relative to the call's largest value) of models[0]'s."""
    errs = [rel_err(row[1], row[0]) for row in outs]
    bad = [(i + 1, e) for i, e in enumerate(errs) if not e <= tol]
    assert not bad, f"{what}: calls (number, relative error) above {tol:g}: {bad[:5]}"
    return errs


class PolyDiT(torch.nn.Module):
    """A DiT whose block residuals are polynomials in the step index (the forecasting tests' model): temb = a + b s +
    c s^2 with s = t / 1000 (c = 0 for degree 1), t linear in the call index, and blocks (`block(dim)`) whose
    residuals depend only on temb; x [B, C, F, H, W]."""

    def __init__(self, block, blocks: int, degree: int = 2, ch: int = 4, dim: int = 8):
        super().__init__()
        self.inp, self.outp = torch.nn.Linear(ch, dim), torch.nn.Linear(dim, ch)
        self.coef = torch.nn.Parameter(torch.randn(3, dim) * torch.tensor([1.0, 1.0, float(degree == 2)]).unsqueeze(1))
        self.transformer_blocks = torch.nn.ModuleList(block(dim) for _ in range(blocks))

    def forward(self, x, timestep):
        b, c, f, h, w = x.shape
        s = timestep.float().reshape(-1, 1) / 1000
        temb = self.coef[0] + self.coef[1] * s + self.coef[2] * s * s
        z = self.inp(x.permute(0, 2, 3, 4, 1).reshape(b, f * h * w, c))
        for blk in self.transformer_blocks:
            z = blk(z, temb)
        return self.outp(z).reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3)
