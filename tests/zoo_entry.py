"""One tiny random instance of a diffusers transformer class and the inputs of one call (tests/zoo_a.py, zoo_b.py)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Entry:
    cls: str                       # the diffusers class name
    make: Callable | None = None   # () -> model: tiny (<= ~200k parameters), fp32, eval(), seeded inside
    inputs: Callable | None = None # (batch: int, g: torch.Generator) -> dict of keyword inputs for one call
    per_sample: tuple = ()         # input names whose leading dim is the batch (they carry the CFG batch)
    per_sample_lists: tuple = ()   # input names holding Python lists / tuples of tensors whose leading dim is
                                   # the batch (per-layer text states, a RoPE pair): split per branch item by item
    timestep_arg: str | None = "timestep"  # the input holding the timestep (None: none)
    t_scale: float = 1000.0        # timesteps the class expects run 0..t_scale (1.0 for flow models taking 0..1)
    stacks: tuple = ()             # truth, read from the code: the ModuleList attribute paths of the block stacks in
                                   # execution order, e.g. ("transformer_blocks", "single_transformer_blocks")
    stream_order: dict = field(default_factory=dict)  # truth: stack -> the input names its blocks' outputs continue,
                                   # in output order, e.g. {"transformer_blocks": ("encoder_hidden_states",
                                   # "hidden_states")};
                                   # a block returning one tensor: ("hidden_states",)
    image_stream: str = "hidden_states"  # truth: the block input name of the stream that reaches the model output
    cache_context: bool = True     # the class has diffusers' cache_context (CacheMixin)
    excluded: str | None = None    # why the class has no tiny instance here (then make/inputs are None)
    note: str = ""


def class_cfg(b: int, null: int = 10):
    """Class labels of a CFG batch of a class-conditional model: the null class (label `num_embeds_ada_norm`, the
    extra row of the label table that class dropout trains) for the uncond half, then the classes."""
    import torch

    labels = torch.arange(b) % null
    labels[: b // 2] = null
    return labels
