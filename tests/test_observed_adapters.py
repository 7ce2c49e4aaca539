"""One observed call for every class (issue #20, item 3): the adaptive policies take the block stack, each block's
output/input pairing and the CFG-carrying arguments from the same first call that fills their buffers, adapter or
not. The truth is what the hand-written adapters declared before those fields became optional overrides (written
out below); an override still wins, and one that contradicts the data flow is refused, naming the field."""

from __future__ import annotations

import re

import pytest
import torch

import fastercache_kernels as fk
from fastercache_kernels.adapters import for_model

from dit_models import cog_inputs, latte_inputs, one_thread, sample_loop, tiny_cogvideox, tiny_latte  # noqa: F401
from model_zoo import SPECS, Case

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

_TB = (r"^transformer_blocks\.\d+$",)
_COG = (_TB, (), ("hidden_states", "encoder_hidden_states"),
        ("hidden_states", "encoder_hidden_states", "timestep", "timestep_cond"))
_HY = ((r"^transformer_blocks\.\d+$", r"^single_transformer_blocks\.\d+$"), (),
       ("hidden_states", "encoder_hidden_states"),
       ("hidden_states", "timestep", "encoder_hidden_states", "encoder_attention_mask", "pooled_projections",
        "guidance", "encoder_hidden_states_2", "encoder_attention_mask_2", "image_embeds"))
_WAN = ((r"^blocks\.\d+$",), (), ("hidden_states",),
        ("hidden_states", "timestep", "encoder_hidden_states", "encoder_hidden_states_image"))
_T2V = ((), (), (), ("hidden_states", "timestep", "encoder_hidden_states", "encoder_attention_mask",
                     "attention_mask"))
# adapter name -> (blocks, temporal_blocks, block_io, batched_args) as the adapters declared them by hand
DECLARED = {
    "wan": _WAN,
    "cogvideox": _COG, "cogvideox-5b": _COG, "cogvideox-1.5": _COG,
    "hunyuanvideo": _HY, "hunyuanvideo-1.5": _HY,
    "ltx-video": (_TB, (), ("hidden_states",),
                  ("hidden_states", "encoder_hidden_states", "timestep", "encoder_attention_mask")),
    "mochi": (_TB, (), ("hidden_states", "encoder_hidden_states"),
              ("hidden_states", "encoder_hidden_states", "timestep", "encoder_attention_mask")),
    "allegro": (_TB, (), ("hidden_states",),
                ("hidden_states", "encoder_hidden_states", "timestep", "attention_mask", "encoder_attention_mask")),
    "flux": ((r"^transformer_blocks\.\d+$", r"^single_transformer_blocks\.\d+$"), (),
             ("encoder_hidden_states", "hidden_states"),
             ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "guidance")),
    "qwen-image": (_TB, (), ("encoder_hidden_states", "hidden_states"),
                   ("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask", "timestep")),
    "sd3": (_TB, (), ("encoder_hidden_states", "hidden_states"),
            ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep")),
    "latte": (_TB, (r"^temporal_transformer_blocks\.\d+$",), ("hidden_states",),
              ("hidden_states", "timestep", "encoder_hidden_states", "encoder_attention_mask")),
    "opensora": ((r"^spatial_blocks\.\d+$",), (r"^temporal_blocks\.\d+$",), ("x",), ("x", "timestep", "y", "x_mask")),
    "latte-t2v": _T2V, "opensora-plan": _T2V,
    "sat-cogvideox": ((), (), (), ("x", "timesteps", "context", "y")),
}


def _zoo_call(key):
    case = Case(SPECS[key], 1)
    x = torch.cat([case.x0] * 2)
    return case.model, (), case.kwargs(x, torch.tensor(500.0), torch.cat([case.neg, case.pos]), 2)


def _seed_call(name):
    from test_adapter_seed_models import SEEDS

    seed = SEEDS[name]
    g = torch.Generator().manual_seed(0)
    args, kwargs, _ = seed.make_call(g)(torch.randn(*seed.latent_shape, generator=g), torch.tensor([500.0]))
    return seed.make_model().eval(), args, kwargs


def _tiny_call(make, inputs):
    x, kw = inputs()
    x = torch.cat([x, x])
    return make(), (), dict(kw, hidden_states=x, timestep=torch.tensor([500, 500]), return_dict=False)


CALLS = {**{f"zoo:{k}": (lambda k=k: _zoo_call(k)) for k in SPECS},
         **{f"seed:{n}": (lambda n=n: _seed_call(n)) for n in
            ("opensora", "latte", "opensora-plan", "sat-cogvideox", "diffusers-latte", "diffusers-cogvideox")},
         "tiny:cogvideox": lambda: _tiny_call(tiny_cogvideox, cog_inputs),
         "tiny:latte": lambda: _tiny_call(tiny_latte, latte_inputs)}


@pytest.mark.parametrize("which", list(CALLS))
def test_observed_structure_is_what_the_adapter_declared(which):
    model, args, kwargs = CALLS[which]()
    adapter = for_model(model)
    assert adapter is not None and adapter.name in DECLARED, which
    assert not (adapter.blocks or adapter.temporal_blocks or adapter.block_io or adapter.batched_args), \
        "the hand-written adapter still declares what the call shows"
    blocks, temporal, io, batched = DECLARED[adapter.name]
    handle = fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.05))
    with torch.no_grad():
        model(*args, **kwargs)
        model(*args, **kwargs)
    st = handle.stats()
    assert st["observed_calls"] == 1 and st["calls"] == 2
    rt = handle.adaptive
    names = [n for n, _ in model.named_modules()]
    if blocks or temporal:
        want = [n for n in names if any(re.search(p, n) for p in blocks + temporal)]
        assert [b.name for b in rt.blocks] == want
        assert [b.kind for b in rt.blocks] == ["temporal" if any(re.search(p, b.name) for p in temporal) else
                                               "spatial" for b in rt.blocks]
        for b in rt.blocks:
            assert b.io_names == tuple(io[i] for i in b.slots), b.name
    else:  # no blocks were declared: the observed stack is every block the output derives from
        assert rt.blocks and all(b.order >= 0 for b in rt.blocks)
    cfg = set(handle.engine.structure.cfg_args)
    bound = dict(zip(handle.engine._params, args), **kwargs)
    batch = handle.engine.structure.batch
    # the arguments a skip call slices by the observed rule are the declared ones the call passes batched
    assert cfg == {n for n in batched if isinstance(bound.get(n), torch.Tensor) and bound[n].dim()
                   and bound[n].shape[0] == batch}
    handle.remove()


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x, emb):
        return x + self.lin(x * emb)


class _NoAdapterDiT(torch.nn.Module):
    """A class no adapter knows: a ModuleList of residual blocks."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.ModuleList([torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)])
        self.blocks = torch.nn.ModuleList([_Block() for _ in range(3)])

    def forward(self, hidden_states, timestep):
        emb = torch.sigmoid(self.proj[1](self.proj[0](timestep[:, None].float().expand(-1, 8))))[:, None]
        for blk in self.blocks:
            hidden_states = blk(hidden_states, emb)
        return hidden_states


def test_adapterless_class_one_observed_call_and_same_video():
    torch.manual_seed(0)
    model = _NoAdapterDiT().eval()
    ref = _NoAdapterDiT().eval()
    ref.load_state_dict(model.state_dict())
    h = fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.0))  # threshold 0: every call computes
    x = torch.randn(2, 5, 8)
    outs = []
    with torch.no_grad():
        for t in (900.0, 600.0, 300.0):
            tt = torch.full((2,), t)
            outs.append((model(x, tt), ref(x, tt)))
    st = h.stats()
    assert st["observed_calls"] == 1 and st["calls"] == 3 and st["computed"] == 3
    assert [b.name for b in h.adaptive.blocks] == ["blocks.0", "blocks.1", "blocks.2"]  # not the `proj` list
    assert all(torch.equal(a, b) for a, b in outs)


class _Twice(torch.nn.Module):
    def forward(self, a, b):
        return a + 0.5 * b, a - 0.5 * b


class _Shared(torch.nn.Module):
    """Passes one output on as both inputs of the next block: which input each output continues is ambiguous."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([_Twice() for _ in range(3)])

    def forward(self, x, y):
        for blk in self.blocks:
            p, _ = blk(x, y)
            x, y = p, p
        return x


def test_overrides_win_settle_ambiguity_and_contradiction_names_the_field():
    torch.manual_seed(0)
    x, t = torch.randn(2, 5, 8), torch.full((2,), 900.0)
    # `blocks`: only those are the policy's blocks
    model = _NoAdapterDiT().eval()
    with torch.no_grad():
        ref = model(x, t)
    h = fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.0), adapter=fk.adapters.generic_adapter(
        blocks=r"^blocks\.[12]$"))
    with torch.no_grad():
        assert torch.equal(model(x, t), ref)
    assert [b.name for b in h.adaptive.blocks] == ["blocks.1", "blocks.2"] and h.stats()["observed_calls"] == 1
    h.remove()
    # `block_io` settles a pairing the data flow leaves ambiguous; without it the first call names the field
    y = torch.randn(2, 5, 8)
    for io in ((), ("a", "b")):
        model = _Shared()
        h = fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.0), adapter=fk.adapters.generic_adapter(block_io=io))
        if not io:
            with pytest.raises(ValueError, match="block_io"):
                model(x, y)
            continue
        with torch.no_grad():
            assert torch.equal(model(x, y), _Shared()(x, y))
        assert {b.io_names for b in h.adaptive.blocks} == {("a", "b")}
    # `block_io` that contradicts the data flow (swapped streams): refused, naming the field
    lat, kw = cog_inputs()
    model = tiny_cogvideox()
    fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.05), adapter=fk.adapters.generic_adapter(
        block_io=("encoder_hidden_states", "hidden_states"), tensor_format="BFCHW"))
    with pytest.raises(ValueError, match="block_io"):
        sample_loop([model], lat, kw, calls=1)
    model = tiny_cogvideox()  # the agreeing one is taken
    h = fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.05), adapter=fk.adapters.generic_adapter(
        block_io=("hidden_states", "encoder_hidden_states"), tensor_format="BFCHW"))
    sample_loop([model], lat, kw, calls=2)
    assert {b.io_names for b in h.adaptive.blocks} == {("hidden_states", "encoder_hidden_states")}
