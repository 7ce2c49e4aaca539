"""Tiny video DiTs of the real diffusers classes, with a uniform call: velocity = run(model, x, t, cond).

x is always [B, C, T, H, W] here; each family's adapter of the layout lives in `call`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .data import CHANNELS, FRAMES, SIZE, TOKEN_DIM

WEIGHTS = Path(__file__).resolve().parent / "weights"
FAMILIES = ("latte", "cogvideox")


def config(family: str) -> dict:
    if family == "latte":
        # cross_attention_dim must equal heads * head_dim for Latte; caption_channels projects the tokens.
        return dict(num_attention_heads=4, attention_head_dim=16, in_channels=CHANNELS, out_channels=CHANNELS,
                    num_layers=4, cross_attention_dim=64, sample_size=SIZE, patch_size=2,
                    norm_type="ada_norm_single", caption_channels=TOKEN_DIM, video_length=FRAMES)
    if family == "cogvideox":
        # sample_frames counts frames before CogVideoX's 4x temporal compression: 8 latent frames -> 29.
        return dict(num_attention_heads=4, attention_head_dim=16, in_channels=CHANNELS, out_channels=CHANNELS,
                    time_embed_dim=64, text_embed_dim=TOKEN_DIM, num_layers=4, sample_width=SIZE, sample_height=SIZE,
                    sample_frames=(FRAMES - 1) * 4 + 1, patch_size=2, max_text_seq_length=3,
                    temporal_compression_ratio=4, use_rotary_positional_embeddings=False)
    raise ValueError(f"unknown model family {family!r}; choose from {', '.join(FAMILIES)}")


def build(family: str, seed: int | None = 0):
    """A freshly initialised model (random weights from `seed`)."""
    if seed is not None:
        torch.manual_seed(seed)
    if family == "latte":
        from diffusers import LatteTransformer3DModel

        return LatteTransformer3DModel(**config(family))
    from diffusers import CogVideoXTransformer3DModel

    return CogVideoXTransformer3DModel(**config(family))


def weights_path(family: str) -> Path:
    return WEIGHTS / family / "model.safetensors"


def has_trained(family: str) -> bool:
    return weights_path(family).exists()


def load_trained(family: str):
    """The trained model shipped in the package (eval mode, fp32)."""
    from safetensors.torch import load_file

    path = weights_path(family)
    if not path.exists():
        raise FileNotFoundError(f"no trained weights for {family} at {path}: run python -m fastercache_kernels.train "
                                f"--model {family}")
    saved = json.loads((path.parent / "config.json").read_text())
    if saved != config(family):
        raise ValueError(f"{path.parent / 'config.json'} does not match the model config in code")
    model = build(family, seed=None)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def call(model, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Velocity prediction for x [B, C, T, H, W] at timesteps t [B] (0..1000) with condition tokens [B, 3, D].
    `model` may be the torch.compile wrapper of one of the two classes."""
    name = type(getattr(model, "_orig_mod", model)).__name__
    if name == "LatteTransformer3DModel":
        return model(hidden_states=x, timestep=t, encoder_hidden_states=cond, return_dict=False)[0]
    if name == "CogVideoXTransformer3DModel":
        out = model(hidden_states=x.transpose(1, 2), encoder_hidden_states=cond, timestep=t, return_dict=False)[0]
        return out.transpose(1, 2)
    raise TypeError(f"unsupported model {name}")
