"""diffusers' conventions around a patched model: `fk.remove(x)` / `fk.is_applied(x)` without the handle,
`is_cache_enabled` True while patched (and `enable_cache` refused, `disable_cache` removing fk's patch), and the
refusal of models fk does not handle (UNets, autoencoders, text encoders) at `fk.apply`."""

from __future__ import annotations

import torch

# direct children of a diffusion transformer holding its blocks (diffusers hooks/_common.py names the same lists)
BLOCK_LISTS = ("transformer_blocks", "blocks", "single_transformer_blocks", "temporal_transformer_blocks",
               "spatial_blocks", "temporal_blocks", "layers")
LOOKED_FOR = ("fastercache_kernels targets diffusion transformers (DiT): it looks for their blocks in a ModuleList "
              "such as `transformer_blocks` or `blocks`, and for a pipeline's `transformer` (`transformer_2`, ...)")


def _children(model: torch.nn.Module) -> set:
    return {name for name, _ in model.named_children()}


def not_a_dit(model: torch.nn.Module) -> str | None:
    """One sentence refusing a UNet, an autoencoder or a text encoder, or None for anything else (any class under
    diffusers.models.transformers is left alone)."""
    cls = type(model)
    mod = cls.__module__
    if mod.startswith("diffusers.models.transformers."):
        return None
    kids = _children(model)
    has_blocks = any(isinstance(getattr(model, n, None), torch.nn.ModuleList) for n in BLOCK_LISTS)
    if mod.startswith("diffusers.models.unets.") or ({"down_blocks", "up_blocks"} <= kids and not has_blocks) or \
            {"input_blocks", "output_blocks"} <= kids:
        what = "a UNet"
    elif mod.startswith("diffusers.models.autoencoders.") or ({"encoder", "decoder"} <= kids and not has_blocks):
        what = "an autoencoder"
    elif mod.split(".")[0] == "transformers":
        what = "a text or image encoder (a transformers-library model)"
    else:
        return None
    return f"fk.apply: {cls.__name__} is {what}, not a diffusion transformer; {LOOKED_FOR}."


def no_transformer(pipe) -> str:
    """The refusal of a pipeline holding no transformer (a UNet pipeline, say)."""
    has_unet = isinstance(getattr(pipe, "unet", None), torch.nn.Module)
    held = " holds a `unet` and no `transformer`" if has_unet else " holds no `transformer` module"
    return f"fk.apply: the pipeline {type(pipe).__name__}{held}; {LOOKED_FOR}."


# -- diffusers' CacheMixin while patched --------------------------------------------------------------------------
def mark(model: torch.nn.Module, engine, handle, shown_config) -> None:
    """On a diffusers model (CacheMixin): `is_cache_enabled` reads True and `_cache_config` is the config fk.apply
    got; `enable_cache` raises naming fk; `disable_cache` removes fk's patch. `engine.remove()` undoes all three."""
    if not isinstance(getattr(type(model), "is_cache_enabled", None), property):
        return
    name = type(model).__name__

    def enable_cache(config, *args, **kwargs):
        # ValueError, as diffusers' own enable_cache raises when a cache is already enabled
        raise ValueError(f"{name}.enable_cache: fastercache_kernels is applied to this model ({handle!r}); diffusers' "
                         f"{type(config).__name__} would stack a second cache on it: call fk.remove(model) (or "
                         "handle.remove()) first, or give the config to fk.apply")

    def disable_cache(*args, **kwargs):
        handle.remove()

    # the config fk.apply was given (not None: diffusers reads `_cache_config is not None` as "a cache is on")
    engine.replace(model, "_cache_config", shown_config if shown_config is not None else handle.config)
    engine.replace(model, "enable_cache", enable_cache)
    engine.replace(model, "disable_cache", disable_cache)


# -- fk.remove / fk.is_applied --------------------------------------------------------------------------------------
def _modules(x) -> list[torch.nn.Module]:
    """The modules `x` stands for: itself (unwrapped from torch.compile), or a pipeline's transformers."""
    from .api import _transformers

    if isinstance(x, torch.nn.Module):
        mods = [x]
    elif x is not None and (hasattr(x, "components") or hasattr(x, "transformer")):
        mods = list(_transformers(x).values())
    else:
        raise TypeError(f"fk: expected a model (torch.nn.Module) or a pipeline holding a `transformer`, got "
                        f"{type(x).__name__}")
    return [getattr(m, "_orig_mod", m) for m in mods]  # a torch.compile wrapper: the model it wraps


def handle_of(model: torch.nn.Module):
    h = model.__dict__.get("_fk_handle")
    return h if h is not None and h.active else None


def is_applied(model_or_pipeline) -> bool:
    """Whether fastercache_kernels is applied to the model (or to any transformer of the pipeline)."""
    return any(handle_of(m) is not None for m in _modules(model_or_pipeline))


def remove(model_or_pipeline) -> bool:
    """Removes fastercache_kernels from the model (or from every transformer of the pipeline) without the handle
    `fk.apply` returned; True when something was removed, False when nothing was applied (no error: removing is
    idempotent, as `handle.remove()` is)."""
    removed = False
    for m in _modules(model_or_pipeline):
        h = handle_of(m)
        if h is not None:
            h.remove()
            removed = True
    return removed
