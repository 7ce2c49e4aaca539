"""`fk.apply(model_or_pipeline, config)`: patch a model in place with one policy, or several composed; the returned
handle removes everything. The machinery is the hook engine (runtime/engine.py); this module builds the policies
from their configs and checks that they can run together."""

from __future__ import annotations

import copy

import weakref

import torch

from . import conventions, summary
from .adapters import for_model, unknown_model_message
from .adapters.base import Adapter, OutputLayout
from .adapters.generic import generic_adapter
from .policies import diffusers_compat
from .policies.fastercache.config import BRANCHES, FasterCacheConfig
from .runtime import parallel
from .runtime.engine import Engine

DECIDE_MODES = ("auto", "host", "device")


class Handle:
    """What `fk.apply` returns. `remove()` restores the original forwards (outputs bit-identical to the unpatched
    model) and drops the buffers (a second `remove()` does nothing); `reset()` starts a new video; `stats()` counts
    calls and reuse and reports the cache memory (after `remove()`: the figures at removal, with "active" False);
    `summary()` prints what each call of the video ran and reused, `plot(path)` draws the adaptive indicator;
    usable as a context manager that removes the patch on exit.

    `state`: the FasterCache policy (None without one), `runtime`: the adaptive policy (None without one),
    `schedule`: FasterCache's call-kind table, `modules`: (name, kind) of every patched module, `history`: per-call
    decision tensors of an adaptive policy applied with `record=True`."""

    def __init__(self, model, engine: Engine, config, adapter: Adapter):
        self.model, self.engine, self.config, self.adapter = model, engine, config, adapter
        self._active = True
        self._final: dict | None = None  # stats() at removal
        self.fastercache = next((p for p in engine.policies if p.name == "fastercache"), None)
        self.adaptive = next((p for p in engine.policies if p.name != "fastercache"), None)

    @property
    def policies(self) -> list:
        return self.engine.policies

    @property
    def schedule(self):
        return None if self.fastercache is None else self.fastercache.schedule

    @property
    def modules(self) -> list[tuple[str, str]]:
        """(name, kind) of every cached attention module, then every patched block (in execution order once the
        model has run)."""
        out = []
        if self.fastercache is not None:
            out += [(c.name, c.kind) for c in self.fastercache.caches]
        if self.adaptive is not None:
            out += [(b.name, b.kind) for b in (self.adaptive.order or self.adaptive.blocks)]
        return out

    @property
    def history(self) -> list[dict]:
        return [] if self.adaptive is None else self.adaptive.history

    def reset(self) -> None:
        self.engine.reset()

    def stats(self) -> dict:
        if not self._active and self._final is not None:
            return {**copy.deepcopy(self._final), "active": False}
        out = {"active": self._active, **self.engine.clock_stats()}
        for p in self.engine.policies:
            out.update(p.stats())
        out["cache_bytes"] = self.engine.cache_bytes()
        out["cache_bytes_per_key"] = self.engine.cache_bytes(per_key=True)
        out["policies"] = [p.name for p in self.engine.policies]
        group = parallel.cp_group(self.model)
        if group is not None:  # per rank: caches of the sequence hold this rank's shard, CFG-Cache's the whole output
            gathered = sum(p.cache_bytes() - sum(c.nbytes() for c in p.caches)
                           for p in self.engine.policies if p.name == "fastercache")
            out["context_parallel"] = {"ranks": torch.distributed.get_world_size(group),
                                       "rank": torch.distributed.get_rank(group),
                                       "sharded_bytes": out["cache_bytes"] - gathered, "gathered_bytes": gathered}
        return out

    def remove(self) -> None:
        if not self._active:
            return
        self._final = self.stats()
        self.engine.remove()
        self._active = False
        if getattr(self.model, "_fk_handle", None) is self:
            del self.model._fk_handle

    @property
    def active(self) -> bool:
        return self._active

    def summary(self, file=None) -> None:
        """Prints, per state key (the batched call, or each CFG branch), a strip of the current video's calls (C
        computed, r blocks reused, FasterCache's call kinds), the reuse rate, the cache memory and the adaptive
        indicator per call with its threshold (see fastercache_kernels/summary.py)."""
        summary.print_summary({None: self}, file)

    def decisions(self) -> dict:
        """What `summary()` prints, as data (summary.report)."""
        return summary.report(self)

    def plot(self, path) -> str:
        """Draws the adaptive indicator and the threshold over the calls (matplotlib, the [plot] extra) to `path`."""
        return summary.plot({None: self}, path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __deepcopy__(self, memo):
        # copy.deepcopy(patched_model) reaches the handle through model._fk_handle: the copy's forwards would be
        # the original's closures (the original's weights and state), so refuse instead of copying silently
        raise RuntimeError("fastercache_kernels: a patched model cannot be copied (its patched forwards belong to "
                           "the original): call handle.remove(), copy the model, then fk.apply each copy")

    def __reduce_ex__(self, protocol):
        raise RuntimeError("fastercache_kernels: a patched model cannot be pickled or saved with torch.save (its "
                           "patched forwards are closures): call handle.remove() first, or save model.state_dict()")

    def __repr__(self) -> str:
        names = "+".join(getattr(c, "name", type(c).__name__) for c in _as_list(self.config))
        return (f"Handle({type(self.model).__name__}, {names}, {len(self.modules)} modules, "
                f"{'active' if self.active else 'removed'})")


class PipelineHandle:
    """`fk.apply(pipe, ...)`: one Handle per transformer the pipeline holds (`transformer`, `transformer_2`, ...),
    each with its own state. `remove()` removes them all; `stats()` is the first one's plus `patched` (the names)
    and `per_transformer`; `summary()`, `decisions()` and `plot(path)` cover every transformer; other attributes
    are the first handle's."""

    def __init__(self, pipe, handles: dict[str, Handle]):
        self.pipe, self.handles = pipe, handles

    def __getattr__(self, name):
        handles = self.__dict__.get("handles")
        if not handles:
            raise AttributeError(name)
        return getattr(next(iter(handles.values())), name)

    def stats(self) -> dict:
        first = next(iter(self.handles.values())).stats()
        return {**first, "active": self.active, "patched": list(self.handles),
                "per_transformer": {n: h.stats() for n, h in self.handles.items()}}

    def reset(self) -> None:
        for h in self.handles.values():
            h.reset()

    def remove(self) -> None:
        for h in self.handles.values():
            h.remove()

    def summary(self, file=None) -> None:
        summary.print_summary(self.handles, file)

    def decisions(self) -> dict:
        return {n: h.decisions() for n, h in self.handles.items()}

    def plot(self, path) -> str:
        return summary.plot(self.handles, path)

    @property
    def active(self) -> bool:
        return any(h.active for h in self.handles.values())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _as_list(config) -> list:
    return list(config) if isinstance(config, (list, tuple)) else [config]


def _transformers(pipe) -> dict[str, torch.nn.Module]:
    """The transformers a pipeline object holds, by attribute name: `transformer`, then `transformer_2`, ..."""
    names = list(getattr(pipe, "components", {}) or {}) or [n for n in dir(type(pipe)) + list(vars(pipe))]
    found = {}
    for name in sorted(set(names), key=lambda n: (n != "transformer", n)):
        if name == "transformer" or (name.startswith("transformer_") and name[12:].isdigit()):
            mod = getattr(pipe, name, None)
            if isinstance(mod, torch.nn.Module):
                found[name] = mod
    return found


def apply(model, config=None, *, adapter: Adapter | None = None, storage_dtype: torch.dtype | None = None,
          decide: str = "auto", process_group=None, record: bool = False):
    """Patches `model` in place and returns a handle (`handle.remove()` undoes it).

    Args:
        model: a transformer, or a pipeline object holding one or more (`transformer`, `transformer_2`, ...: each
            is patched with its own state; the handle removes them all). Called either with the CFG batch in one
            call (e.g. [uncond, cond]) or once per branch inside diffusers' `cache_context("cond" | "uncond")`,
            where every policy keeps its state per branch. Supported out of the box: diffusers
            CogVideoXTransformer3DModel and LatteTransformer3DModel, the classes of docs/models.md (Wan,
            SkyReels-V2, HunyuanVideo, LTX-Video, Mochi, Allegro, Flux, Qwen-Image, SD3), the seed models' own
            classes STDiT3 (Open-Sora 1.2), LatteT2V (Latte; with RoPE, Open-Sora-Plan 1.1),
            VchitectXLTransformerModel and SAT's DiffusionTransformer (CogVideoX); any other model through
            `adapter=fk.adapters.generic_adapter(...)`.
        config: one policy or a list of them run together (one FasterCache config and one adaptive config at
            most): a `fk.FasterCacheConfig`, a FasterCache preset name ("cogvideox-2b", "latte", "opensora-1.2",
            "opensora-plan-1.1", "vchitect-2.0", "attention-only"), diffusers' own `FasterCacheConfig` (its
            semantics reproduced with the fused ops), a `fk.AdaCacheConfig`, `fk.TeaCacheConfig` or
            `fk.FirstBlockCacheConfig`, diffusers' own `FirstBlockCacheConfig` (its semantics: see
            policies/diffusers_compat.py), or None for the adapter's default FasterCache preset. UNets, autoencoders
            and text encoders are refused (fk targets diffusion transformers) unless `adapter` is given.
        adapter: overrides the adapter chosen from the model's class.
        storage_dtype: cache dtype for a diffusers config (a fk.FasterCacheConfig carries its own).
        decide: adaptive policies only: "auto" (the default: "host" in eager calls, "device" in calls under
            `torch.compile`, chosen by the first call of each kind), "host" (one host read per call) or "device"
            (torch.cond, no host read: for `torch.compile(model, fullgraph=True)` and CUDA graphs; an eager call
            reads the decision once, as "host" does, and runs the chosen branch). Composed with FasterCache: "host".
        process_group: adaptive policies: all-reduce group of the metric sums (default the world).
        record: adaptive policies: keep per-call decision tensors in `handle.history`.

    Compile the patched model with `torch.compile(model)` (not `model.compile()`): the bookkeeping hooks then run
    outside the graphs and each call kind gets one graph.
    """
    if model is None or not (isinstance(model, torch.nn.Module) or hasattr(model, "transformer")
                             or hasattr(model, "components")):
        raise TypeError(f"fk.apply: `model` must be a torch.nn.Module or a pipeline holding a `transformer`, got "
                        f"{type(model).__name__}")
    if not isinstance(model, torch.nn.Module):  # a pipeline object
        found = _transformers(model)
        if not found:
            raise TypeError(conventions.no_transformer(model))
        handles = {}
        try:
            for name, mod in found.items():
                handles[name] = apply(mod, config, adapter=adapter, storage_dtype=storage_dtype, decide=decide,
                                      process_group=process_group, record=record)
        except Exception:
            for h in handles.values():
                h.remove()
            raise
        ref = weakref.ref(model)
        for h in handles.values():  # the pipeline says whether a batched call holds CFG halves, and its steps
            h.engine.pipeline = ref
        return PipelineHandle(model, handles)
    if type(model).__name__ == "OptimizedModule":
        raise TypeError("fk.apply needs the model itself, not its torch.compile wrapper: apply first, then compile")
    if getattr(model, "_fk_handle", None) is not None:
        raise RuntimeError("fastercache_kernels is already applied to this model; call fk.remove(model) (or "
                           "handle.remove()) first, or apply the policies together: fk.apply(model, "
                           "[fastercache_config, adaptive_config])")
    if getattr(model, "_cache_config", None) is not None:
        raise RuntimeError(f"the model already has a diffusers cache enabled ({type(model._cache_config).__name__}); "
                           "fk.apply does not stack on it: call model.disable_cache() first")
    if adapter is None:
        refused = conventions.not_a_dit(model)
        if refused:
            raise TypeError(refused)
    if decide not in DECIDE_MODES:
        raise ValueError(f"fk.apply: `decide` must be 'auto', 'host' or 'device', got {decide!r}")

    if config is None and adapter is None and for_model(model) is None:
        config = default_config()
    configs = [diffusers_compat.translate(c) for c in _as_list(config)]  # diffusers' FirstBlockCacheConfig
    adaptive = [c for c in configs if _is_adaptive(c)]
    faster = [c for c in configs if not _is_adaptive(c)]
    if len(adaptive) > 1 or len(faster) > 1 or not configs:
        raise ValueError(f"fk.apply: compose at most one FasterCache config and one adaptive config (AdaCache, "
                         f"TeaCache or First-Block-Cache), got {[type(c).__name__ for c in configs]}")
    if not adaptive and (decide == "device" or process_group is not None or record):
        raise TypeError("fk.apply: `decide`, `process_group` and `record` apply to the adaptive policies only")
    if adaptive and faster and decide == "device":
        raise ValueError("fk.apply: FasterCache composed with an adaptive policy needs decide='host' (its attention "
                         "caches must know on the host which blocks ran); decide='device' runs an adaptive policy "
                         "alone")
    base = adapter or for_model(model)
    unknown = base is None  # the generic default patterns are the last try
    base = base or generic_adapter()

    policies = []
    if faster:
        fc_policy, base, config_used = _fastercache(model, faster[0], base, unknown, storage_dtype, bool(adaptive))
        policies.append(fc_policy)
        configs = [config_used if c is faster[0] else c for c in configs]
    if adaptive:
        decide = "host" if faster and decide == "auto" else decide  # FasterCache composed: host decisions
        policies.append(_adaptive(model, adaptive[0], base, decide, process_group, record))
    engine = Engine(model, base, policies)
    if faster and diffusers_compat.is_diffusers_config(faster[0]) and faster[0].current_timestep_callback:
        engine.timestep_fn = faster[0].current_timestep_callback
    handle = Handle(model, engine, configs[0] if len(configs) == 1 else configs, base)
    engine.log = summary.CallLog()
    conventions.mark(model, engine, handle, config)
    # first in the model's __dict__, so that copy.deepcopy and pickle meet the handle (and its clear error) before
    # any patched forward or hook
    rest = list(model.__dict__.items())
    model.__dict__.clear()
    model.__dict__.update([("_fk_handle", handle), *rest])
    return handle


def _fastercache(model, config, adapter: Adapter, unknown: bool, storage_dtype, composed: bool):
    from .policies.fastercache.hooks import AttentionCache, FasterCacheHooks

    if diffusers_compat.is_diffusers_config(config):
        tensor_format = diffusers_compat.check_format(config)
        adapter = Adapter(name=f"diffusers:{adapter.name}", layout=OutputLayout(tensor_format, ("uncond", "cond")),
                          timestep_arg=adapter.timestep_arg,
                          batched_args=tuple(config._unconditional_conditional_input_kwargs_identifiers),
                          blocks=adapter.blocks, temporal_blocks=adapter.temporal_blocks, block_io=adapter.block_io,
                          attn_capture=adapter.attn_capture, teacache_indicator=adapter.teacache_indicator,
                          modulated_input=adapter.modulated_input, entry_points=adapter.entry_points,
                          capture_io=adapter.capture_io, token_grid=adapter.token_grid,
                          guidance_distilled=adapter.guidance_distilled,
                          branches_by_timestep=adapter.branches_by_timestep)
        found = diffusers_compat.select_modules(model, config)
        schedule = diffusers_compat.DiffusersSchedule(config, storage_dtype,
                                                      kinds=sorted({k for _, _, k in found}) or ("spatial",))
        schedule._model = model
        tried = diffusers_compat.patterns(config)
        shared_weight = None
        wants_attention = (config.spatial_attention_block_skip_range is not None
                           or config.temporal_attention_block_skip_range is not None)
    else:
        if config is None:
            if adapter.default_preset is None:
                raise ValueError(f"fk.apply: no default preset for {type(model).__name__}; pass a "
                                 "fk.FasterCacheConfig or a preset name")
            config = adapter.default_preset
        if isinstance(config, str):
            config = FasterCacheConfig.preset(config)
        if not isinstance(config, FasterCacheConfig):
            raise TypeError(f"fk.apply: `config` must be a fk.FasterCacheConfig, a preset name, diffusers' "
                            f"FasterCacheConfig or FirstBlockCacheConfig, a fk.AdaCacheConfig, fk.TeaCacheConfig or "
                            f"fk.FirstBlockCacheConfig, got {type(config).__module__}.{type(config).__name__}")
        if storage_dtype is not None:
            config = config.replace(storage_dtype=storage_dtype)
        found = adapter.attention_modules(model) if config.attention else []
        tried = adapter.patterns()
        schedule = adapter.make_schedule(config, kinds=sorted({k for _, _, k in found}) or ("spatial",))
        shared_weight = torch.zeros(())
        wants_attention = config.attention
    if not found and wants_attention:
        if unknown and isinstance(config, FasterCacheConfig):  # (a diffusers config names its own modules)
            raise ValueError(unknown_model_message(model, tried))
        raise ValueError(f"fk.apply: no attention module of {type(model).__name__} matches the patterns tried: "
                         f"{tried}")
    computed_index = tuple(adapter.layout.batch_order).index(schedule.computed_branch)
    assert schedule.computed_branch in BRANCHES
    caches = [AttentionCache(name, mod, kind, shared_weight if shared_weight is not None else torch.zeros(()))
              for name, mod, kind in found]
    return FasterCacheHooks(schedule, caches, adapter, computed_index), adapter, config


def _hooks_class(config):
    """The adaptive runtime of an fk config (a config class may name its own: diffusers_compat), else None."""
    if not type(config).__module__.startswith("fastercache_kernels."):
        return None
    own = getattr(config, "hooks_class", None)
    return own() if own is not None else None


def default_config():
    """`fk.apply(model)`'s policy for a class without an adapter: First-Block-Cache with cache-dit's DBCache
    defaults (threshold 0.08 on the relative L1 change of the first block's residual, 8 computed warm-up calls):
    its rule is relative to the model's own residual, so it needs no number fitted per model, and its warm-up keeps
    the first calls (where the video takes shape) exact. The blocks it reuses are observed from the first call."""
    from .policies.fbcache.config import FirstBlockCacheConfig

    return FirstBlockCacheConfig.preset("cache-dit")


def _is_adaptive(config) -> bool:
    return _hooks_class(config) is not None


def _adaptive(model, config, adapter: Adapter, decide: str, process_group, record: bool):
    """The adaptive runtime. Its blocks are observed from the first call (runtime/structure.py), chosen among the
    children of the model's torch.nn.ModuleLists, or among the modules the adapter's `blocks` / `temporal_blocks`
    name where it sets them."""
    from .runtime.blocks import candidate_blocks, find_blocks

    if adapter.blocks or adapter.temporal_blocks:
        blocks = find_blocks(model, adapter)
        if not blocks:
            raise ValueError(f"fk.apply: no transformer block of {type(model).__name__} matches the patterns tried: "
                             f"blocks {list(adapter.blocks)}, temporal_blocks {list(adapter.temporal_blocks)} (set "
                             "the adapter's `blocks` / `temporal_blocks`)")
    else:
        blocks = candidate_blocks(model)
        if not blocks:
            raise ValueError(f"fk.apply: {type(model).__name__} has no torch.nn.ModuleList of blocks; name its "
                             "transformer blocks with adapter=fk.adapters.generic_adapter(blocks=...)")
    return _hooks_class(config)(config, adapter, blocks, decide=decide, process_group=process_group,
                                  record=record)
