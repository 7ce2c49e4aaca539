"""Tiny random diffusers transformers that carry a `_cp_plan` (Wan, LTX-Video), their inputs, the policies to run on
them, and a CFG loop calling them batched or once per branch; shared by tests/test_context_parallel.py and
benchmarks/bench_context_parallel.py. Everything runs on CPU in gloo processes (Ulysses degree 2)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist

import fastercache_kernels as fk

STEPS = 8
SCALE = 5.0


def wan():
    """3 blocks (AdaCache's metric block is blocks.1, past diffusers' split on blocks.0); 3 latent frames of 4x4
    patches: 48 tokens, 24 a rank, so frame 1 straddles the shard boundary (MoReg's halo)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                  out_channels=4, text_dim=32, freq_dim=32, ffn_dim=32, num_layers=3,
                                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 3, 8, 8, generator=g)
    pos, neg = torch.randn(1, 8, 32, generator=g), torch.randn(1, 8, 32, generator=g)
    return model, x, {"cond": {"encoder_hidden_states": pos}, "uncond": {"encoder_hidden_states": neg}}, None


def ltx():
    """LTX-Video: diffusers splits its model input (hidden_states, the text and its mask) at the model level."""
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(0)
    model = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8,
                                       cross_attention_dim=16, num_layers=3, caption_channels=16).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3 * 4 * 4, 8, generator=g)  # packed tokens of 3 frames of 4x4
    # no text mask: diffusers 0.42's LTX cross-attention views a mask per head, which fails under Ulysses (it holds
    # heads / degree heads a rank): "output with shape [2, 1, 48, 8] doesn't match the broadcast shape [2, 2, 48, 8]"
    text = {b: {"encoder_hidden_states": torch.randn(1, 8, 16, generator=g), "encoder_attention_mask": None}
            for b in ("cond", "uncond")}
    extra = {"num_frames": 3, "height": 4, "width": 4}
    for t in text.values():
        t.update(extra)
    # output [B, N, C]: the CFG split's two "spatial" dims are tokens and channels here
    adapter = fk.adapters.generic_adapter(spatial=r"^transformer_blocks\.\d+\.attn1$", tensor_format="BHW",
                                          blocks=r"^transformer_blocks\.\d+$", block_io=("hidden_states",),
                                          attn_capture=("attn2",),
                                          batched_args=("hidden_states", "encoder_hidden_states", "timestep",
                                                        "encoder_attention_mask"))
    return model, x, text, adapter


MODELS = {"wan": wan, "ltx": ltx}


def policies(family: str) -> dict:
    """name -> config list; thresholds inside the range these tiny runs' metrics take, so both decisions occur."""
    ada = fk.AdaCacheConfig(codebook={0.08: 3, 0.16: 2, 1.0: 1}, num_calls=STEPS, moreg=family == "wan",
                            moreg_window=(2, STEPS - 2) if family == "wan" else None)
    def fc():  # Latte's preset (it computes cond, which per-branch callers call first), shortened to 8 steps
        return fk.FasterCacheConfig.preset("latte", attention_fill=2, attention_reuse_start=3, cfg_refresh_start=3,
                                           cfg_skip_start=4, cfg_period=3)

    return {
        "fastercache": [fc()],
        "adacache": [ada],
        "teacache": [fk.TeaCacheConfig(coefficients=(1.0, 0.0), threshold=0.15, indicator="block_input")],
        "fbcache": [fk.FirstBlockCacheConfig(threshold=0.1)],
        "composed": [fc(), fk.FirstBlockCacheConfig(threshold=0.1)],
    }


def run(model, x0, text, per_branch: bool, steps: int = STEPS) -> torch.Tensor:
    """A CFG Euler loop: per branch (cond, then uncond, inside cache_context) or batched ([uncond, cond])."""
    x = x0.clone()
    ts = torch.linspace(999, 1, steps)
    with torch.no_grad():
        for i, t in enumerate(ts):
            if per_branch:
                out = {}
                for b in ("cond", "uncond"):
                    with model.cache_context(b, step_index=i, num_inference_steps=steps):
                        out[b] = model(hidden_states=x, timestep=t.expand(1), return_dict=False, **text[b])[0]
                cond, uncond = out["cond"], out["uncond"]
            else:
                kw = {k: (torch.cat([text["uncond"][k], v]) if isinstance(v, torch.Tensor) else v)
                      for k, v in text["cond"].items()}
                both = model(hidden_states=torch.cat([x, x]), timestep=t.expand(2), return_dict=False, **kw)[0]
                uncond, cond = both.chunk(2)
            x = x - (uncond + SCALE * (cond - uncond)) / steps
    return x


def init(rank: int, port: int) -> None:
    """One gloo rank on 127.0.0.1. diffusers' enable_parallelism computes `rank % torch.accelerator.device_count()`,
    a division by zero without an accelerator: count one device."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.accelerator.device_count = lambda: 1
    dist.init_process_group("gloo", rank=rank, world_size=2)


def shard(model) -> None:
    from diffusers import ContextParallelConfig

    model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
