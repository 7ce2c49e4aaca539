"""What an adapter knows about a model family: it describes the model and holds no cache logic (that is the hook
engine's, runtime/). An adapter names the attention modules to cache (regular expressions over module names, one
list per kind), the layout of the model output, the call argument holding the timestep, the fitted presets, the
family's quirks (AdaCache's capture point, TeaCache's modulated input, the token grid of packed outputs) and extra
entry points a pipeline calls instead of `__call__`. The block stacks, how each block's outputs pair with its
inputs, and the arguments batched over the CFG halves are observed from the first call (runtime/structure.py);
`blocks`, `temporal_blocks`, `block_io` and `batched_args` remain as optional overrides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch


BRANCH_ORDERS = (("uncond", "cond"), ("cond", "uncond"))
_FORMAT = re.compile(r"^B[A-Z]*HW$")
PACKED = "BNC"  # a packed token sequence [B, N, C]; the adapter's `token_grid` gives the (F, H, W) of its N


@dataclass(frozen=True)
class OutputLayout:
    """The model output: a tensor, a tuple whose first item is the sample, or an object with `.sample`.

    `tensor_format` names the sample's dims (batch first, the spatial H, W last: the frequency split works over the
    last two dims), e.g. "BCFHW" (Latte, Open-Sora), "BFCHW" (CogVideoX), "BCHW". `batch_order` is the order of
    the CFG halves along the batch.
    """

    tensor_format: str = "BCFHW"
    batch_order: tuple = ("uncond", "cond")

    def __post_init__(self):
        fmt = self.tensor_format
        if fmt != PACKED and (not isinstance(fmt, str) or not _FORMAT.match(fmt) or len(set(fmt)) != len(fmt)):
            raise ValueError(f"unsupported output layout {fmt!r}: the batch must come first and the spatial dims H, W "
                             "last, each named once (e.g. 'BCFHW', 'BFCHW', 'BCHW'), or 'BNC' for packed tokens "
                             "with the adapter's `token_grid`")
        if tuple(self.batch_order) not in BRANCH_ORDERS:
            raise ValueError(f"unsupported batch order {self.batch_order!r}: use ('uncond', 'cond') or "
                             "('cond', 'uncond')")


@dataclass(frozen=True)
class Adapter:
    """How to patch one model family. `spatial`/`temporal`: regular expressions (re.search) over the names of
    `model.named_modules()`; a module matching one is cached as that kind (its submodules are not searched)."""

    name: str
    spatial: tuple = ()
    temporal: tuple = ()
    layout: OutputLayout = field(default_factory=OutputLayout)
    timestep_arg: str = "timestep"
    # Optional overrides of what the first call shows (runtime/structure.py, docs/models.md "How fk observes a
    # model"): `batched_args`, the arguments sliced on a CFG-Cache skip call (None: every tensor argument whose
    # leading dim is the call's batch); `blocks`/`temporal_blocks`, regular expressions over module names of the
    # transformer blocks (empty: the children of the model's ModuleLists that carry the image stream); `block_io`,
    # the block inputs its outputs continue, in output order (empty: paired by tensor identity; set, it must agree
    # with the observed pairing, and is used where the data flow is ambiguous).
    batched_args: tuple | None = None
    skip_cross_attention: bool = True
    default_preset: str | None = None
    blocks: tuple = ()
    temporal_blocks: tuple = ()
    block_io: tuple = ()
    # What cannot be observed. `attn_capture`: submodules whose first inputs are x + p (p = gated self-attention
    # residual: AdaCache), the first one present is used; `teacache_indicator`: what TeaCache's indicator "auto"
    # means; `modulated_input(block, get)`: the first block's modulated norm output from its inputs (`get(name)`).
    attn_capture: tuple = ()
    teacache_indicator: str = "block_input"
    modulated_input: object = None
    # Methods a pipeline calls directly instead of `model(...)` (Vchitect's `my_forward`): bookkept like calls.
    entry_points: tuple = ()
    # Two calls at one timestep on the same sample are the CFG branches of a step, each with its own state (see
    # runtime/engine.py). False: the model family's reference keeps one state across its branch calls (Vchitect).
    branches_by_timestep: bool = True
    # `capture_io`: the block_io streams whose x + p the capture's positional inputs are, in order (default:
    # block_io; a stream it does not see keeps p = 0, e.g. the text stream of a block whose norm2 sees only video).
    capture_io: tuple = ()
    # `token_grid(model, kwargs) -> (F, H, W)`: the token grid of a packed [B, N, C] output (tensor_format "BNC"),
    # frames outermost, from the call's own arguments; the CFG frequency split runs over its H, W.
    token_grid: object = None
    # A guidance-distilled model (one call per step, guidance as an input): no CFG-Cache in its default preset.
    guidance_distilled: bool = False
    # The adaptive presets fitted to this family (`fk.TeaCacheConfig.for_model`, `fk.FirstBlockCacheConfig.for_model`).
    teacache_preset: str | None = None
    fbcache_preset: str | None = None

    def matches(self, model: torch.nn.Module) -> bool:
        return False

    def starts_video(self, t: float | None) -> bool:
        """Whether a call at timestep `t` starts a new video by the family's own rule (beyond the timestep jumping
        up, which every adapter detects); Open-Sora restarts at t = 1000."""
        return False

    def make_schedule(self, config, kinds):
        """The call-kind schedule of a fk.FasterCacheConfig (Vchitect counts pipeline steps instead of calls)."""
        from ..policies.fastercache.config import FasterCacheSchedule

        return FasterCacheSchedule(config, kinds=kinds)

    def latent_frames(self, model, hidden: torch.Tensor, kwargs: dict) -> int:
        """The latent frame count of a call (AdaCache's MoReg views its residual per frame)."""
        fmt = self.layout.tensor_format
        if fmt == PACKED and self.token_grid is not None:
            return int(self.token_grid(model, kwargs)[0])
        return hidden.shape[fmt.index("F")] if "F" in fmt and hidden.dim() == len(fmt) else 1

    def patterns(self) -> str:
        return f"spatial {list(self.spatial)}, temporal {list(self.temporal)}"

    def attention_modules(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, str]]:
        found, taken = [], []
        for name, mod in model.named_modules():
            if not name or any(name.startswith(t + ".") for t in taken):
                continue
            kind = ("spatial" if any(re.search(p, name) for p in self.spatial) else
                    "temporal" if any(re.search(p, name) for p in self.temporal) else None)
            if kind is None:
                continue
            taken.append(name)
            if self.skip_cross_attention and getattr(mod, "is_cross_attention", False):
                continue
            found.append((name, mod, kind))
        return found


def get_sample(out):
    sample = out[0] if isinstance(out, tuple) and out else getattr(out, "sample", out)
    if isinstance(sample, torch.Tensor):
        return sample
    if isinstance(sample, list):
        raise TypeError("fastercache: the model returns a list (one output per sample); fk's caches need one batched "
                        "tensor output (its first dim the batch)")
    raise TypeError(f"fastercache: cannot find the sample in a model output of type {type(out).__name__}")


def put_sample(out, sample):
    if isinstance(out, torch.Tensor):
        return sample
    if isinstance(out, tuple):
        return (sample, *out[1:])
    return type(out)(sample=sample)
