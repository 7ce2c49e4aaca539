"""runtime/structure.py: the block stacks, stream pairing, image stream and CFG arguments observed from one call,
against the known truth: what the adapters of tests/model_zoo.py's classes declared by hand
(test_observed_adapters.DECLARED), and the truth fields of the diffusers zoo
(tests/zoo_a.py, tests/zoo_b.py). The observer must leave the model exactly as it was and make no call itself."""

from __future__ import annotations

import inspect
import re

import pytest
import torch

from fastercache_kernels.adapters import for_model
from fastercache_kernels.runtime.structure import Observer

from dit_models import one_thread  # noqa: F401
from model_zoo import SPECS, Case
from test_observed_adapters import DECLARED

try:
    from zoo_a import ENTRIES as _A
except ImportError:  # the zoo files land from their own branches
    _A = []
try:
    from zoo_b import ENTRIES as _B
except ImportError:
    _B = []

ZOO = [e for e in _A + _B if not e.excluded]

# Where a zoo entry's truth names the model-level variable instead of the block's forward parameter that the stream
# is passed as (BlockSpec.io names parameters; test_param_corrections checks each), read from diffusers 0.42.1:
PARAM_NAMES = {
    # Lumina2Transformer2DModel.forward: `layer(encoder_hidden_states, ...)` into Lumina2TransformerBlock(hidden_states)
    ("Lumina2Transformer2DModel", "context_refiner"): ("hidden_states",),
    # MiniMaxH3TokenRefinerBlock.forward(self, hidden_states), called on the text tokens
    ("MiniMaxH3Transformer3DModel", "token_refiner.refiner_blocks"): ("hidden_states",),
    # BriaFibo2TransformerBlock.forward(self, x, attn_mask, freqs_cis): both stacks pass the stream as `x`
    ("BriaFibo2Transformer2DModel", "noise_refiner"): ("x",),
    ("BriaFibo2Transformer2DModel", "layers"): ("x",),
    # MiniMaxMusic3RVQDepthDecoder.forward(inputs_embeds): `hidden_states = layer(hidden_states)`
    ("MiniMaxMusic3RVQDepthDecoder", "layers"): ("hidden_states",),
    # RFD4ProteinaTrunkLayer.forward(self, values, pairs, condition, mask)
    ("RFD4ProteinaTransformer", "transformer_layers"): ("values",),
    # SanaWM's blocks: `x = block(*block_args)`, forward(self, x, ...)
    ("SanaWMTransformer3DModel", "blocks"): ("x",),
    # T5FilmDecoder: DecoderLayer.forward(self, hidden_states, ...)
    ("T5FilmDecoder", "decoders"): ("hidden_states",),
    # ZImage's context_refiner blocks are the same ZImageTransformerBlock(x, ...) as the others
    ("ZImageTransformer2DModel", "context_refiner"): ("x",),
}
# Kandinsky 6's fused blocks return (vis, aud) and aud is None without audio input (the entry passes none): in this
# call the second output continues nothing.
NONE_IN_CALL = {("Kandinsky6Transformer3DModel", "visual_transformer_blocks"): ("vis", None)}


def _sample(out):
    return out[0] if isinstance(out, tuple) else getattr(out, "sample", out)


def _flat(x) -> list:
    """The tensors of a model output (tuples, lists, output objects), in order."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _flat(v)]
    if hasattr(x, "to_tuple"):
        return _flat(x.to_tuple())
    return []


def _hooks(model):
    return [(name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._forward_hooks_with_kwargs))
            for name, m in model.named_modules()]


def _observe(model, kwargs):
    """(structure, observed output, reference output before, output after): one call each, counted."""
    calls, hooks = [], _hooks(model)
    counter = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            ref = model(**kwargs)
            with Observer(model) as ob:
                out = model(**kwargs)
            after = model(**kwargs)
    finally:
        counter.remove()
    assert len(calls) == 3, "the observer made model calls of its own"
    assert _hooks(model) == hooks, "hooks left on the model"
    assert torch._C._len_torch_function_stack() == 0, "a torch function mode left active"
    flat = [_flat(x) for x in (ref, out, after)]
    assert flat[0] and len(flat[0]) == len(flat[1]) == len(flat[2])
    for a, b, c in zip(*flat):
        assert torch.equal(a, b) and torch.equal(a, c), "the observed call changed a result"
    return ob.structure((), kwargs, out)


def _streams(st):
    """stack -> the input names its blocks' outputs continue, from the first block of each stack."""
    out = {}
    for b in st.blocks:
        out.setdefault(b.stack, tuple(b.io))
    return out


@pytest.mark.parametrize("key", list(SPECS))
def test_model_zoo_against_adapters(key):
    case = Case(SPECS[key], 1)
    model = case.model
    x = torch.cat([case.x0] * 2)
    kwargs = case.kwargs(x, torch.tensor(500.0), torch.cat([case.neg, case.pos]), 2)
    st = _observe(model, kwargs)
    blocks, temporal, block_io, _ = DECLARED[for_model(model).name]  # what the adapter declared by hand
    names = [n for n, _ in model.named_modules()]
    truth = [n.rpartition(".")[0] for n in names if any(re.search(p, n) for p in blocks + temporal)]
    assert st.stacks == list(dict.fromkeys(truth))
    assert [b.name for b in st.blocks] == [n for n in names if any(re.search(p, n) for p in blocks)]
    for b in st.blocks:
        assert b.io == tuple(block_io[j] if n is not None else None for j, n in enumerate(b.io)), b.name
        assert b.io[b.image] == "hidden_states"
    assert st.image_stream == "hidden_states"
    assert st.batch == 2
    assert set(case.spec.per_sample) | {"hidden_states", "encoder_hidden_states", "timestep"} <= set(st.cfg_args)
    assert not set(case.spec.fixed) & set(st.cfg_args)


@pytest.mark.parametrize("entry", ZOO, ids=[e.cls for e in ZOO])
def test_zoo_against_truth(entry):
    torch.manual_seed(0)
    model = entry.make()
    kwargs = entry.inputs(2, torch.Generator().manual_seed(0))
    st = _observe(model, kwargs)
    assert tuple(st.stacks) == tuple(entry.stacks)
    fixes = {**PARAM_NAMES, **NONE_IN_CALL}
    truth = {s: fixes.get((entry.cls, s), tuple(v)) for s, v in entry.stream_order.items()}
    assert _streams(st) == truth
    image = PARAM_NAMES.get((entry.cls, st.blocks[-1].stack), (entry.image_stream,))[0]
    assert st.image_stream == image
    # per-sample Python lists (JoyImageEditPlus' shape_list, Z-Image's x and cap_feats) are not tensors
    assert {n for n in entry.per_sample if isinstance(kwargs.get(n), torch.Tensor)} <= set(st.cfg_args)
    for b in st.blocks:
        if b.image >= 0:
            assert b.io[b.image] is not None
    d = st.describe()
    assert d["stacks"] == st.stacks and d["blocks"] == len(st.blocks)


def test_param_corrections():
    """Each correction above: the truth's name is not a parameter of the stack's block forward, the correction is."""
    by_cls = {e.cls: e for e in ZOO}
    for (cls, stack), names in PARAM_NAMES.items():
        if cls not in by_cls or tuple(by_cls[cls].stream_order[stack]) == names:  # absent, or fixed at the source
            continue
        torch.manual_seed(0)
        model = by_cls[cls].make()
        block = model.get_submodule(stack)[0]
        params = set(inspect.signature(block.forward).parameters)
        assert set(by_cls[cls].stream_order[stack]) - params, (cls, stack)
        assert set(names) <= params, (cls, stack)


# -- errors and overrides on tiny hand-made models -----------------------------------------------------------------
class _Twice(torch.nn.Module):
    """Returns its input twice: the next block receives one output as two inputs, the pairing is ambiguous."""

    def forward(self, a, b):
        return a + b, a - b


class _Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([_Twice() for _ in range(3)])

    def forward(self, x, y, swap: bool = False):
        for blk in self.blocks:
            p, q = blk(x, y)
            x, y = (p, p) if swap else (q, p)
        return x


def test_ambiguous_pairing_names_block_io():
    model = _Pair()
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    with torch.no_grad(), Observer(model) as ob:
        out = model(x, y, swap=True)
    with pytest.raises(ValueError, match="block_io"):
        ob.structure((x, y), {"swap": True}, out)


def test_pairing_by_identity_and_override():
    model = _Pair()
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    with torch.no_grad(), Observer(model) as ob:
        out = model(x, y)
    st = ob.structure((x, y), {}, out)
    # output 0 (a + b) is passed on as y, output 1 as x; the model output is x: output 1 is the image stream
    assert [b.io for b in st.blocks] == [("b", "a")] * 3
    assert st.image_stream == "a" and all(b.image == 1 for b in st.blocks)
    assert st.cfg_args == ("x", "y") and st.batch == 2
    with torch.no_grad(), Observer(model, block_io=("a", "b")) as ob:
        out = model(x, y)
    st = ob.structure((x, y), {}, out)
    # the override is taken as stated: the image stream then alternates between the slots
    assert [b.io for b in st.blocks] == [("a", "b")] * 3 and [b.image for b in st.blocks] == [1, 0, 1]


def test_blocks_override_and_no_blocks():
    model = _Pair()
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    with torch.no_grad(), Observer(model, blocks=r"blocks\.\d+$") as ob:
        out = model(x, y)
    assert [b.name for b in ob.structure((x, y), {}, out).blocks] == ["blocks.0", "blocks.1", "blocks.2"]
    lin = torch.nn.Linear(4, 4)
    with torch.no_grad(), Observer(lin) as ob:
        out = lin(x)
    with pytest.raises(ValueError, match="blocks"):
        ob.structure((x,), {}, out)


# The seed models' own classes (stand-ins, tests/seed_models.py): their blocks as docs/algorithms.md §7 lists them.
SEED_STACKS = {"opensora": ["spatial_blocks", "temporal_blocks"],
               "latte": ["transformer_blocks", "temporal_transformer_blocks"],
               "opensora-plan": ["transformer_blocks", "temporal_transformer_blocks"],
               "sat-cogvideox": ["transformer.layers"],
               "diffusers-latte": ["transformer_blocks", "temporal_transformer_blocks"],
               "diffusers-cogvideox": ["transformer_blocks"]}


@pytest.mark.parametrize("name", list(SEED_STACKS))
def test_seed_models(name):
    from test_adapter_seed_models import SEEDS

    seed = SEEDS[name]
    model = seed.make_model().eval()
    g = torch.Generator().manual_seed(0)
    args, kwargs, _ = seed.make_call(g)(torch.randn(*seed.latent_shape, generator=g), torch.tensor([500.0]))
    with torch.no_grad():
        ref = _flat(model(*args, **kwargs))
        with Observer(model) as ob:
            out = model(*args, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(ref, _flat(out)))
    st = ob.structure(args, kwargs, out)
    assert st.stacks == SEED_STACKS[name]
    # interleaved spatial / temporal lists (reshapes between them) carry the image stream in every block
    assert all(b.image >= 0 and b.io[b.image] == st.image_stream for b in st.blocks)
    assert [b.kind for b in st.blocks].count("temporal") == sum("temporal" in s for s in st.stacks) * 2


class _Boom(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(2)])

    def forward(self, x):
        x = self.blocks[0](x)
        raise RuntimeError("boom")


def test_model_left_as_it_was_after_an_error():
    model = _Boom()
    hooks = _hooks(model)
    with pytest.raises(RuntimeError, match="boom"), Observer(model):
        model(torch.randn(2, 4))
    assert _hooks(model) == hooks and torch._C._len_torch_function_stack() == 0
