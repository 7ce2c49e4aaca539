"""diffusers' context parallelism (`model.enable_parallelism(config=ContextParallelConfig(...))`) under the engine.

diffusers splits the token sequence at the points its `_cp_plan` names (a split hook on a module's input, e.g.
Wan's `blocks.0`, or on the model's own input, LTX-Video) and gathers it at the output (`proj_out`). Its hooks
replace module forwards; the engine patches a block or attention forward *inside* that hook chain
(`forward_slot`), so every policy sees this rank's shard, and the model-level forward outside it (CFG-Cache works
on the gathered output). The metric sums are all-reduced over the context-parallel group found on the model
(`cp_group`); MoReg's frame differences across a shard boundary take a halo of `stride` frames from the next
ranks (`motion_partials`): an L1 of differences between tokens on two ranks cannot be formed from sums alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


def cp_group(model):
    """The process group diffusers' context parallelism shards `model`'s sequence over (None: not sharded)."""
    cp = getattr(getattr(model, "_parallel_config", None), "context_parallel_config", None)
    mesh = getattr(cp, "_flattened_mesh", None)
    if mesh is None or not (dist.is_available() and dist.is_initialized()):
        return None
    group = mesh.get_group()
    return group if dist.get_world_size(group) > 1 else None


def forward_slot(module) -> tuple[object, str]:
    """(object, attribute) holding the forward to patch: the innermost forward of the hook chain another library put
    on the module (diffusers' hooks: context parallelism's split, group offloading; accelerate's offload hooks, which
    keep the wrapped forward in `_old_forward`), so their hooks run first and stay the outermost: the patched forward
    gets this rank's shard and onloaded weights, and a library that removes and re-adds its hooks (diffusers'
    `maybe_free_model_hooks` after every video) puts them back around the patched forward."""
    registry = module.__dict__.get("_diffusers_hook")
    if registry is not None and registry._fn_refs and "forward" in module.__dict__:
        ref = registry._fn_refs[0]
        return (ref, "original_forward") if ref.original_forward is not None else (ref, "forward")
    return model_slot(module)


def model_slot(module) -> tuple[object, str]:
    """The model-level forward's slot: inside accelerate's hook (model CPU offloading wraps the transformer), outside
    diffusers' own hooks (CFG-Cache works on the gathered output under context parallelism)."""
    if "_hf_hook" in module.__dict__ and "_old_forward" in module.__dict__:
        return module, "_old_forward"
    return module, "forward"


def unwrap_slot(obj, attr: str, value):
    """Where `value`, set as `obj.attr`, sits now: a hook chain put on `obj` after it wraps it (diffusers'
    `enable_parallelism` or group offloading, accelerate's offload hooks, applied after `fk.apply`, or removed and
    re-added since); (None, None) when it is not found."""
    registry = getattr(obj, "__dict__", {}).get("_diffusers_hook")
    for ref in getattr(registry, "_fn_refs", ()):
        for name in ("forward", "original_forward"):
            if getattr(ref, name, None) is value:
                return ref, name
    for name in ("_old_forward", "forward"):
        if getattr(obj, "__dict__", {}).get(name) is value:
            return obj, name
    return None, None


@dataclass
class Shard:
    """This rank's slice of a sequence split along dim 1: tokens [start, stop) of `total`, rank `rank` of
    `starts` (every rank's first token, then total)."""

    group: object
    rank: int
    starts: list

    @property
    def start(self) -> int:
        return self.starts[self.rank]

    @property
    def stop(self) -> int:
        return self.starts[self.rank + 1]

    @property
    def total(self) -> int:
        return self.starts[-1]


def sequence_shard(group, n_local: int, device) -> Shard:
    """Every rank's token count, by one all-reduce of a one-hot vector (once per input shape)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    counts = torch.zeros(world, dtype=torch.int64, device=device)
    counts[rank] = n_local
    dist.all_reduce(counts, group=group)
    starts = [0]
    for c in counts.tolist():
        starts.append(starts[-1] + c)
    return Shard(group, rank, starts)


def _halo(p: torch.Tensor, shard: Shard, h: int) -> torch.Tensor:
    """Global tokens [stop, stop + h) from the ranks holding them; sends this rank's tokens the earlier ranks need."""
    reqs, recv = [], []
    lo, hi = shard.stop, min(shard.total, shard.stop + h)
    ranks = dist.get_process_group_ranks(shard.group)
    for q in range(len(shard.starts) - 1):
        a, b = shard.starts[q], shard.starts[q + 1]
        if q > shard.rank and max(lo, a) < min(hi, b):  # tokens of rank q this rank needs
            buf = torch.empty((p.shape[0], min(hi, b) - max(lo, a), *p.shape[2:]), dtype=p.dtype, device=p.device)
            recv.append(buf)
            reqs.append(dist.irecv(buf, ranks[q], group=shard.group))
        if q < shard.rank:  # tokens of this rank that rank q needs
            qa, qb = max(b, shard.start), min(b + h, shard.stop, shard.total)
            if qa < qb:
                reqs.append(dist.isend(p[:, qa - shard.start:qb - shard.start].contiguous(), ranks[q],
                                       group=shard.group))
    for req in reqs:
        req.wait()
    return torch.cat(recv, 1) if recv else p[:, :0]


def motion_partials(p: torch.Tensor, frames: int, stride: int, shard: Shard) -> torch.Tensor:
    """This rank's [num, den] of MoReg's frame difference (ops.motion_score's partials) for p [B, n, C], a shard
    of frame-major tokens [B, frames * S, C]; summed over the ranks they equal motion_score of the whole p."""
    S = shard.total // frames
    h = stride * S
    x = p.detach().float()
    ext = torch.cat([x, _halo(p.detach(), shard, h).float()], 1)  # every rank (the last one only sends), in p's dtype
    m = max(0, min(x.shape[1], ext.shape[1] - h))  # local tokens i whose partner i + h exists
    num = (ext[:, h:h + m] - ext[:, :m]).abs().sum()
    frame = torch.arange(shard.start, shard.stop, device=p.device) // S
    weight = (frame >= stride).float() + (frame <= frames - 1 - stride).float()
    den = (x.abs().sum(dim=(0, *range(2, x.dim()))) * weight).sum()
    return torch.stack([num, den])
