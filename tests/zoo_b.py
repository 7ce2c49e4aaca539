"""The diffusers zoo, classes L..Z: one tiny random instance per transformer class of diffusers 0.42.1 and the inputs
of one call (format: tests/zoo_entry.py). The truth fields (stacks, stream_order, image_stream) were read from each
class's forward and its blocks' return statements."""

from __future__ import annotations

import torch

import model_zoo as mz
from zoo_entry import Entry

F, H, W, L = mz.F, mz.H, mz.W, mz.L  # latent frames, height, width; text tokens


def _seeded(build):
    """make(): the model built under seed 0, fp32, eval()."""
    def make():
        torch.manual_seed(0)
        return build().float().eval()
    return make


def _diffusers(cls_name, **config):
    def build():
        import diffusers

        return getattr(diffusers, cls_name)(**config)
    return _seeded(build)


def _t(b, scale=1000.0):
    return torch.full((b,), 0.5 * scale)


def _rand(g, *shape):
    return torch.randn(*shape, generator=g)


ENTRIES: list[Entry] = []


def _add(**kw):
    ENTRIES.append(Entry(**kw))


# ---- classes with a tiny config in tests/model_zoo.py ----
_add(cls="LTXVideoTransformer3DModel", make=_seeded(mz._ltx),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, F * H * W, 4), "encoder_hidden_states": _rand(g, b, L, 16),
                          "timestep": _t(b), "encoder_attention_mask": torch.ones(b, L), "num_frames": F,
                          "height": H, "width": W},
     per_sample=("hidden_states", "encoder_hidden_states", "timestep", "encoder_attention_mask"),
     stacks=("transformer_blocks",), stream_order={"transformer_blocks": ("hidden_states",)})
_add(cls="MochiTransformer3DModel", make=_seeded(mz._mochi),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, F, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "timestep": _t(b), "encoder_attention_mask": torch.ones(b, L, dtype=torch.bool)},
     per_sample=("hidden_states", "encoder_hidden_states", "timestep", "encoder_attention_mask"),
     stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": ("hidden_states", "encoder_hidden_states")})
_add(cls="QwenImageTransformer2DModel", make=_seeded(mz._qwen),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 16, 16), "encoder_hidden_states": _rand(g, b, L, 16),
                          "encoder_hidden_states_mask": torch.ones(b, L), "timestep": _t(b, 1.0),
                          "img_shapes": [(1, 4, 4)] * b},
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask", "timestep"), t_scale=1.0,
     stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": ("encoder_hidden_states", "hidden_states")})
_add(cls="SD3Transformer2DModel", make=_seeded(mz._sd3),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "pooled_projections": _rand(g, b, 8), "timestep": _t(b)},
     per_sample=("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep"),
     stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": ("encoder_hidden_states", "hidden_states")}, cache_context=False,
     note="the last block is context_pre_only: it returns (None, hidden_states)")


def _wan_inputs(b, g):
    return {"hidden_states": _rand(g, b, 4, F, H, W), "encoder_hidden_states": _rand(g, b, L, 16), "timestep": _t(b)}


_WAN_PS = ("hidden_states", "encoder_hidden_states", "timestep")
_add(cls="SkyReelsV2Transformer3DModel", make=_seeded(mz._wan("SkyReelsV2Transformer3DModel")), inputs=_wan_inputs,
     per_sample=_WAN_PS, stacks=("blocks",), stream_order={"blocks": ("hidden_states",)})
_add(cls="WanTransformer3DModel", make=_seeded(mz._wan("WanTransformer3DModel")), inputs=_wan_inputs,
     per_sample=_WAN_PS, stacks=("blocks",), stream_order={"blocks": ("hidden_states",)})
