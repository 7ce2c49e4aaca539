"""Model adapters: which modules to cache, the output layout, where the timestep and the CFG batch are."""

from .base import Adapter, OutputLayout
from .generic import generic_adapter

__all__ = ["SUPPORTED", "Adapter", "OutputLayout", "for_model", "generic_adapter", "registered",
           "unknown_model_message"]


def for_model(model) -> Adapter | None:
    """The adapter registered for the model's class, or None."""
    for adapter in registered():
        if adapter.matches(model):
            return adapter
    return None


def registered() -> list[Adapter]:
    """Every adapter `for_model` tries: diffusers' classes, then the seed models' own classes."""
    from . import (allegro, cogvideox, flux, hunyuan_video, latte, latte_t2v, ltx, mochi, opensora, qwenimage,
                   sat_cogvideox, sd3, vchitect, wan)

    return [cogvideox.ADAPTER, cogvideox.ADAPTER_5B, cogvideox.ADAPTER_15, latte.ADAPTER, wan.ADAPTER,
            hunyuan_video.ADAPTER, hunyuan_video.ADAPTER_15,
            ltx.ADAPTER, mochi.ADAPTER, allegro.ADAPTER, flux.ADAPTER, qwenimage.ADAPTER, sd3.ADAPTER,
            opensora.ADAPTER, *latte_t2v.ADAPTERS, vchitect.ADAPTER, sat_cogvideox.ADAPTER]


# class (where it comes from) -> default preset; the error for an unknown class lists these.
SUPPORTED = {
    "CogVideoXTransformer3DModel (diffusers)": "cogvideox-2b",
    "LatteTransformer3DModel (diffusers)": "latte",
    "WanTransformer3DModel, SkyReelsV2Transformer3DModel (diffusers)": "latte",
    "HunyuanVideoTransformer3DModel (diffusers; guidance-distilled)": "attention-only",
    "HunyuanVideo15Transformer3DModel (diffusers)": "latte",
    "LTXVideoTransformer3DModel (diffusers)": "latte",
    "MochiTransformer3DModel (diffusers)": "latte",
    "AllegroTransformer3DModel (diffusers)": "latte",
    "FluxTransformer2DModel (diffusers; guidance-distilled)": "attention-only",
    "QwenImageTransformer2DModel (diffusers)": "latte",
    "SD3Transformer2DModel (diffusers)": "latte",
    "STDiT3 (Open-Sora 1.2)": "opensora-1.2",
    "LatteT2V (Latte)": "latte",
    "LatteT2V with RoPE (Open-Sora-Plan 1.1)": "opensora-plan-1.1",
    "VchitectXLTransformerModel (Vchitect-2.0)": "vchitect-2.0",
    "DiffusionTransformer (CogVideoX SAT)": "cogvideox-2b",
}


def unknown_model_message(model, tried: str) -> str:
    """The error for a model no adapter recognises and whose module names the generic patterns do not match."""
    attn = [n for n, m in model.named_modules() if n and "attention" in type(m).__name__.lower()][:6]
    seen = f" Its attention-like modules include: {attn}." if attn else ""
    classes = "; ".join(f"{c} -> {p!r}" for c, p in SUPPORTED.items())
    return (
        f"fk.apply: {type(model).__name__} is not a supported class and the generic default patterns found no "
        f"attention module in it (tried {tried}).{seen}\n"
        f"Supported classes (default preset): {classes}.\n"
        "To use another model, describe it to the generic adapter: fk.apply(model, config, "
        "adapter=fk.adapters.generic_adapter(spatial=r'...', temporal=r'...', tensor_format='BCFHW', "
        "batch_order=('uncond', 'cond'), timestep_arg='timestep', batched_args=(...))), where spatial/temporal are "
        "regular expressions over model.named_modules() names of the self-attention modules to cache (their output "
        "before gate and residual), tensor_format names the dims of the output sample (batch first, H and W last), "
        "batch_order is the order of the CFG halves along the batch, timestep_arg the forward argument holding the "
        "timestep and batched_args the forward arguments that carry the CFG batch. The branch computed on skip "
        "calls is the config's: fk.FasterCacheConfig.preset(name, computed_branch='cond' or 'uncond')."
    )
