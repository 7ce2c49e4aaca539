"""Any model: name the spatial and temporal attention modules by regular expressions and describe the output."""

from __future__ import annotations

from .base import Adapter, OutputLayout

# Tried when a model has no adapter of its own: the block names of common video DiTs.
DEFAULT_SPATIAL = (
    r"(^|\.)(transformer_blocks|blocks|spatial_blocks|single_transformer_blocks)\.\d+\.(attn1?|attention)$",
)
DEFAULT_TEMPORAL = (r"(^|\.)(temporal_transformer_blocks|temporal_blocks)\.\d+\.(attn1?|attention)$",)
# Where x + p can be read (AdaCache). The blocks of the adaptive policies are observed from the first call.
DEFAULT_ATTN_CAPTURE = ("attn2", "norm2")


def generic_adapter(spatial=DEFAULT_SPATIAL, temporal=DEFAULT_TEMPORAL, *, tensor_format: str = "BCFHW",
                    batch_order=("uncond", "cond"), timestep_arg: str = "timestep", batched_args=None,
                    skip_cross_attention: bool = True, blocks=(), temporal_blocks=(), block_io=(),
                    attn_capture=DEFAULT_ATTN_CAPTURE,
                    modulated_input=None) -> Adapter:
    """An adapter from module-name patterns and the output layout.

    Args:
        spatial, temporal: regular expressions (re.search) over `model.named_modules()` names; a string or a tuple.
        tensor_format: the dims of the model output's sample, batch first and H, W last ("BCFHW", "BFCHW", ...).
        batch_order: the order of the CFG halves along the batch.
        timestep_arg: the forward argument holding the timestep (a new video starts when it jumps up).
        batched_args: forward arguments batched over the CFG halves (sliced on skip calls); default: every tensor
            argument whose leading dim is the call's batch, as the call shows it.
        skip_cross_attention: leave modules with `is_cross_attention = True` alone.
        blocks, temporal_blocks: regular expressions naming the transformer blocks (adaptive policies reuse them);
            default: observed from the first call (the children of the model's ModuleLists that carry the image
            stream, docs/models.md "How fk observes a model").
        block_io: the block inputs its outputs continue, in output order (a block returns them plus its residuals);
            default: observed (paired by tensor identity). When set, it must agree with the observed pairing (a
            ValueError names the disagreement) and is used where the data flow is ambiguous.
        attn_capture: block submodules whose first inputs are x + p (AdaCache's attention residual p); the first
            one a block has is used.
        modulated_input: optional `fn(block, get)` forming TeaCache's modulated-input indicator (`get(name)`
            returns a block input); TeaCache's "auto" indicator is the first block's input otherwise.
    """
    spatial = (spatial,) if isinstance(spatial, str) else tuple(spatial)
    temporal = (temporal,) if isinstance(temporal, str) else tuple(temporal)
    kw = {"batched_args": None if batched_args is None else tuple(batched_args)}
    as_tuple = lambda v: (v,) if isinstance(v, str) else tuple(v)  # noqa: E731
    return Adapter(name="generic", spatial=spatial, temporal=temporal,
                   layout=OutputLayout(tensor_format, tuple(batch_order)), timestep_arg=timestep_arg,
                   skip_cross_attention=skip_cross_attention, blocks=as_tuple(blocks),
                   temporal_blocks=as_tuple(temporal_blocks), block_io=as_tuple(block_io),
                   attn_capture=as_tuple(attn_capture), modulated_input=modulated_input,
                   teacache_indicator="block_input" if modulated_input is None else "modulated_input", **kw)
