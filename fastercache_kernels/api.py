"""`fk.apply(model, config)`: patch a model in place with FasterCache; the returned handle removes it."""

from __future__ import annotations

import torch

from .adapters import for_model, unknown_model_message
from .adapters.base import Adapter, OutputLayout, Patch
from .adapters.generic import generic_adapter
from .policies import diffusers_compat
from .policies.fastercache import BRANCHES, AttentionCache, FasterCacheConfig, FasterCacheState


class _Handle:
    """What both handles share: `remove()` restores the original forwards (and drops the buffers), `reset()`
    starts a new video, `stats()`; usable as a context manager that removes the patch on exit."""

    def __init__(self, model, state, patch, config, adapter: Adapter):
        self.model, self._state, self.config, self.adapter = model, state, config, adapter
        self._patch = patch

    def reset(self) -> None:
        self._state.reset()

    def stats(self) -> dict:
        return self._state.stats()

    def _drop_buffers(self) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        if self._patch is None:
            return
        self._patch.remove()
        self._patch = None
        self._drop_buffers()
        if getattr(self.model, "_fk_handle", None) is self:
            del self.model._fk_handle

    @property
    def active(self) -> bool:
        return self._patch is not None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class FasterCacheHandle(_Handle):
    """What `fk.apply` returns. `remove()` restores the original forwards; `reset()` starts a new video;
    `stats()` counts calls per kind and reports the cache memory held; `schedule` is the call-kind table."""

    def __init__(self, model, state: FasterCacheState, patch: Patch, config, adapter: Adapter):
        super().__init__(model, state, patch, config, adapter)
        self.state = state

    @property
    def schedule(self):
        return self.state.schedule

    @property
    def modules(self) -> list[tuple[str, str]]:
        """(name, kind) of every cached attention module."""
        return [(c.name, c.kind) for c in self.state.caches]

    def _drop_buffers(self) -> None:
        for cache in self.state.caches:
            cache.comp, cache.other = [[], []], None
        self.state.low = self.state.high = None

    def __repr__(self) -> str:
        kinds = sorted({k for _, k in self.modules})
        name = getattr(self.config, "name", type(self.config).__name__)
        return (f"FasterCacheHandle({type(self.model).__name__}, {name}, {len(self.modules)} modules {kinds}, "
                f"{'active' if self.active else 'removed'})")


def apply(model: torch.nn.Module, config=None, *, adapter: Adapter | None = None,
          storage_dtype: torch.dtype | None = None, **adaptive):
    """Patches `model` in place with FasterCache (or an adaptive policy) and returns a handle (`handle.remove()`
    undoes it).

    Adaptive policies: `config` a `fk.AdaCacheConfig`, `fk.TeaCacheConfig` or `fk.FirstBlockCacheConfig`; the
    keyword arguments `decide="host"` (one host read per call) or `"device"` (torch.cond, no host read: for
    `torch.compile(model, fullgraph=True)`), `process_group` (all-reduce group of the metric sums, default the
    world) and `record=True` (keep per-call decision tensors in `handle.history`). Returns an AdaptiveHandle.

    Args:
        model: a transformer called once per sampler step with the CFG batch (e.g. [uncond, cond]) in one call.
            Supported out of the box: diffusers CogVideoXTransformer3DModel and LatteTransformer3DModel, and the
            seed models' own classes STDiT3 (Open-Sora 1.2), LatteT2V (Latte; with RoPE, Open-Sora-Plan 1.1),
            VchitectXLTransformerModel (attention only: its CFG-Cache is `fk.pipeline.CFGCache`) and SAT's
            DiffusionTransformer (CogVideoX); any other model through `adapter=fk.adapters.generic_adapter(...)`.
            A pipeline object with a `transformer` attribute is patched through that transformer.
        config: a `fk.FasterCacheConfig`, a preset name ("cogvideox-2b", "latte", "opensora-1.2",
            "opensora-plan-1.1", "vchitect-2.0"), diffusers' own `FasterCacheConfig` (its semantics are reproduced
            with the fused ops), or None for the adapter's default preset.
        adapter: overrides the adapter chosen from the model's class.
        storage_dtype: cache dtype for a diffusers config (a fk.FasterCacheConfig carries its own).

    Positional and keyword inputs both work. Compile the patched model with `torch.compile(model)` (not
    `model.compile()`): the bookkeeping hooks then run outside the graphs and each call kind gets one graph.
    """
    if getattr(model, "_fk_handle", None) is not None:
        raise RuntimeError("fastercache_kernels is already applied to this model; call handle.remove() first")
    if getattr(model, "_cache_config", None) is not None:
        raise RuntimeError(f"the model already has a diffusers cache enabled ({type(model._cache_config).__name__}); "
                           "call model.disable_cache() first")
    if not isinstance(model, torch.nn.Module) and isinstance(getattr(model, "transformer", None), torch.nn.Module):
        return apply(model.transformer, config, adapter=adapter, storage_dtype=storage_dtype)  # a pipeline object
    if type(model).__name__ == "OptimizedModule":
        raise TypeError("fk.apply needs the model itself, not its torch.compile wrapper: apply first, then compile")
    if _is_adaptive(config):
        return apply_adaptive(model, config, adapter=adapter, **adaptive)
    if adaptive:
        raise TypeError(f"fk.apply: {sorted(adaptive)} apply to the adaptive policies only")

    unknown = adapter is None and for_model(model) is None  # the generic default patterns are the last try
    if diffusers_compat.is_diffusers_config(config):
        tensor_format = diffusers_compat.check_format(config)
        base = adapter or for_model(model) or generic_adapter()
        adapter = Adapter(name=f"diffusers:{base.name}", layout=OutputLayout(tensor_format, ("uncond", "cond")),
                          timestep_arg=base.timestep_arg,
                          batched_args=tuple(config._unconditional_conditional_input_kwargs_identifiers))
        found = diffusers_compat.select_modules(model, config)
        schedule = diffusers_compat.DiffusersSchedule(config, storage_dtype,
                                                      kinds=sorted({k for _, _, k in found}) or ("spatial",))
        schedule._model = model
        tried = diffusers_compat.patterns(config)
        timestep_fn = config.current_timestep_callback
        shared_weight = None
    else:
        adapter = adapter or for_model(model) or generic_adapter()
        if config is None:
            if adapter.default_preset is None:
                raise ValueError(f"fk.apply: no default preset for {type(model).__name__}; pass a "
                                 "fk.FasterCacheConfig or a preset name")
            config = adapter.default_preset
        if isinstance(config, str):
            config = FasterCacheConfig.preset(config)
        if not isinstance(config, FasterCacheConfig):
            raise TypeError(f"fk.apply: `config` must be a fk.FasterCacheConfig, a preset name or diffusers' "
                            f"FasterCacheConfig, got {type(config).__name__}")
        if storage_dtype is not None:
            config = config.replace(storage_dtype=storage_dtype)
        found = adapter.attention_modules(model) if config.attention else []
        tried = adapter.patterns()
        schedule = adapter.make_schedule(config, kinds=sorted({k for _, _, k in found}) or ("spatial",))
        timestep_fn = None
        shared_weight = torch.zeros(())

    wants_attention = (config.attention if isinstance(config, FasterCacheConfig) else
                       config.spatial_attention_block_skip_range is not None
                       or config.temporal_attention_block_skip_range is not None)
    if not found and wants_attention:
        if unknown and isinstance(config, FasterCacheConfig):  # (a diffusers config names its own modules)
            raise ValueError(unknown_model_message(model, tried))
        raise ValueError(f"fk.apply: no attention module of {type(model).__name__} matches the patterns tried: "
                         f"{tried}")
    computed_index = tuple(adapter.layout.batch_order).index(schedule.computed_branch)
    assert schedule.computed_branch in BRANCHES
    caches = [AttentionCache(name, mod, kind, shared_weight if shared_weight is not None else torch.zeros(()))
              for name, mod, kind in found]
    state = FasterCacheState(schedule, caches, computed_index)
    patch = Patch(model, state, adapter, timestep_fn=timestep_fn)
    handle = FasterCacheHandle(model, state, patch, config, adapter)
    model._fk_handle = handle
    return handle


# -- adaptive policies (AdaCache + MoReg, TeaCache, First-Block-Cache): block-level reuse ------------------------


class AdaptiveHandle(_Handle):
    """What `fk.apply` returns for an adaptive config. `remove()` restores the original forwards; `reset()` starts a
    new video; `stats()` reads the device counters (calls, computed, host reads, cache memory); `history` holds
    per-call clones of the decision state when applied with `record=True`."""

    def __init__(self, model, runtime, patch, config, adapter):
        super().__init__(model, runtime, patch, config, adapter)
        self.runtime = runtime

    @property
    def modules(self) -> list[tuple[str, str]]:
        """(name, kind) of every patched block, in execution order once the model has run."""
        blocks = self.runtime.order or self.runtime.blocks
        return [(b.name, b.kind) for b in blocks]

    @property
    def history(self) -> list[dict]:
        return self.runtime.history

    def _drop_buffers(self) -> None:
        for b in self.runtime.blocks:
            b.bufs = {}

    def __repr__(self) -> str:
        rt = self.runtime
        return (f"AdaptiveHandle({type(self.model).__name__}, {rt.policy}, {len(rt.blocks)} blocks, "
                f"decide={'device' if rt.device_mode else 'host'}, "
                f"{'active' if self.active else 'removed'})")


def _is_adaptive(config) -> bool:
    from .policies._adaptive import RUNTIMES

    return type(config).__name__ in RUNTIMES and type(config).__module__.startswith("fastercache_kernels.")


def apply_adaptive(model: torch.nn.Module, config, *, adapter: Adapter | None = None, decide: str = "host",
                   process_group=None, record: bool = False) -> AdaptiveHandle:
    """Patches the transformer blocks of `model` with an adaptive policy (see `fk.apply`)."""
    from .adapters.blocks import BlockPatch, find_blocks
    from .policies._adaptive import RUNTIMES

    adapter = adapter or for_model(model) or generic_adapter()
    blocks = find_blocks(model, adapter)
    if not blocks:
        raise ValueError(f"fk.apply: no transformer block of {type(model).__name__} matches the patterns tried: "
                         f"blocks {list(adapter.blocks)}, temporal_blocks {list(adapter.temporal_blocks)}")
    runtime = RUNTIMES[type(config).__name__](config, adapter, blocks, decide=decide, process_group=process_group,
                                              record=record)
    patch = BlockPatch(model, runtime, adapter, blocks)
    handle = AdaptiveHandle(model, runtime, patch, config, adapter)
    model._fk_handle = handle
    return handle
