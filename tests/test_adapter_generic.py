"""The generic adapter on a model no adapter knows: a small pure-PyTorch video DiT with its own module names, a
`BFCHW` output, batch order [cond, uncond] and its own argument names. Plus the errors of bad set-ups."""

import pytest
import torch
import torch.nn.functional as F
from dit_models import assert_parity, clone, one_thread, rel_err  # noqa: F401
from fastercache_reference import ReferenceFasterCache
from torch import nn

import fastercache_kernels as fk
from fastercache_kernels.adapters import generic_adapter

pytestmark = pytest.mark.usefixtures("one_thread")

FR, CH, H, W, DIM = 3, 4, 10, 10, 16


class ToyAttention(nn.Module):
    def __init__(self, dim, cross=False):
        super().__init__()
        self.qkv, self.out, self.heads = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), 2
        self.is_cross_attention = cross

    def forward(self, x, context=None):
        b, n, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if context is not None:
            k, v = self.qkv(context).chunk(3, dim=-1)[1:]
        q, k, v = (t.reshape(b, -1, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class ToyBlock(nn.Module):
    def __init__(self, dim, cross=False):
        super().__init__()
        self.norm, self.attn, self.ada = nn.LayerNorm(dim), ToyAttention(dim), nn.Linear(dim, 2 * dim)
        self.cross = ToyAttention(dim, cross=True) if cross else None
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x, temb, context=None):
        scale, shift = self.ada(temb).unsqueeze(1).chunk(2, dim=-1)
        x = x + self.attn(self.norm(x) * (1 + scale) + shift)
        if self.cross is not None:
            x = x + self.cross(x, context)
        return x + self.mlp(x)


class ToyVideoDiT(nn.Module):
    """x [B, F, C, H, W], t [B], context [B, L, D] -> [B, F, C, H, W]; spatial.i over frames, temporal.i over
    pixels."""

    def __init__(self, layers=2, names=("spatial", "temporal")):
        super().__init__()
        self.inp, self.outp, self.temb = nn.Linear(CH, DIM), nn.Linear(DIM, CH), nn.Linear(1, DIM)
        self.names = names
        setattr(self, names[0], nn.ModuleList(ToyBlock(DIM, cross=True) for _ in range(layers)))
        setattr(self, names[1], nn.ModuleList(ToyBlock(DIM) for _ in range(layers)))

    def forward(self, x, t, context):
        b, f, c, h, w = x.shape
        temb = self.temb(t.float().reshape(-1, 1) / 1000)
        z = self.inp(x.permute(0, 1, 3, 4, 2).reshape(b * f, h * w, c))
        for sb, tb in zip(getattr(self, self.names[0]), getattr(self, self.names[1])):
            z = sb(z, temb.repeat_interleave(f, 0), context.repeat_interleave(f, 0))
            z = z.reshape(b, f, h * w, DIM).transpose(1, 2).reshape(b * h * w, f, DIM)
            z = tb(z, temb.repeat_interleave(h * w, 0))
            z = z.reshape(b, h * w, f, DIM).transpose(1, 2).reshape(b * f, h * w, DIM)
        return self.outp(z).reshape(b, f, h, w, c).permute(0, 1, 4, 2, 3)


ADAPTER = generic_adapter(spatial=r"^spatial\.\d+\.attn$", temporal=r"^temporal\.\d+\.attn$", tensor_format="BFCHW",
                          batch_order=("cond", "uncond"), timestep_arg="t", batched_args=("x", "t", "context"))


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    return ToyVideoDiT().eval()


def loop(models, calls=50, first=None, positional=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, FR, CH, H, W, generator=g)
    ctx = torch.randn(2, 5, DIM, generator=g)
    outs = []
    for t in torch.linspace(999, 0, calls).round().long()[:first]:
        inp, tt = torch.cat([x, x]), t.expand(2)
        with torch.no_grad():
            row = [m(inp, tt, ctx) if positional else m(x=inp, t=tt, context=ctx) for m in models]
        row = [r[0] if isinstance(r, tuple) else r for r in row]
        outs.append(row)
        cond, uncond = row[0].chunk(2)
        x = x - 0.02 * (uncond + 5.0 * (cond - uncond))
    return outs


@pytest.mark.parametrize("preset", ["latte", "cogvideox-2b"])
def test_generic_adapter_matches_reference(toy, preset):
    ours, ref_model = clone(toy), clone(toy)
    handle = fk.apply(ours, preset, adapter=ADAPTER)
    assert handle.modules == [("spatial.0.attn", "spatial"), ("spatial.1.attn", "spatial"),
                              ("temporal.0.attn", "temporal"), ("temporal.1.attn", "temporal")]
    ref = ReferenceFasterCache(ref_model, preset, handle.modules, batch_order=("cond", "uncond"),
                               batched=("x", "t", "context"))
    outs = loop([lambda **kw: ref(**kw), ours])
    assert_parity(outs, 1e-5, preset)
    assert handle.stats()["attention"]["temporal"]["reused"] > 0
    kw, pos = clone(toy), clone(toy)
    fk.apply(kw, preset, adapter=ADAPTER)
    fk.apply(pos, preset, adapter=ADAPTER)
    for a, b in zip(loop([kw]), loop([pos], positional=True)):  # positional inputs give the same outputs
        assert torch.equal(a[0], b[0])


def test_default_patterns_find_common_block_names():
    torch.manual_seed(0)
    model = ToyVideoDiT(names=("transformer_blocks", "temporal_transformer_blocks")).eval()
    handle = fk.apply(model, fk.FasterCacheConfig.preset("latte"),
                      adapter=generic_adapter(tensor_format="BFCHW", timestep_arg="t", batched_args=("x", "t",
                                                                                                    "context")))
    kinds = [k for _, k in handle.modules]
    assert kinds == ["spatial", "spatial", "temporal", "temporal"]
    assert all(not n.endswith("cross") for n, _ in handle.modules)  # cross-attention is left alone
    handle.remove()
    with fk.apply(model) as handle:  # no adapter for this class: First-Block-Cache, its blocks observed
        assert handle.stats()["policies"] == ["fbcache"] and not handle.modules  # nothing named in advance


def test_no_matching_module_names_the_patterns(toy):
    with pytest.raises(ValueError, match=r"blocks.*\\d"):
        fk.apply(clone(toy), "latte")  # the default patterns do not match spatial.i / temporal.i
    with pytest.raises(ValueError, match="nothing_here"):
        fk.apply(clone(toy), "latte", adapter=generic_adapter(spatial="nothing_here", temporal=()))


def test_unsupported_layouts_raise(toy):
    with pytest.raises(ValueError, match="unsupported output layout 'BSC'"):
        generic_adapter(tensor_format="BSC")
    with pytest.raises(ValueError, match="batch order"):
        generic_adapter(batch_order=("cond", "cond"))
    m = clone(toy)
    bad = generic_adapter(spatial=r"^spatial\.\d+\.attn$", tensor_format="BCHW", timestep_arg="t",
                          batched_args=("x", "t", "context"))
    fk.apply(m, "latte", adapter=bad)
    with pytest.raises(ValueError, match="layout 'BCHW' has 4 dims"):
        loop([m], first=1)


def test_odd_batch_raises(toy):
    m = clone(toy)
    fk.apply(m, "latte", adapter=ADAPTER)
    with pytest.raises(ValueError, match="batch 1"):
        m(x=torch.randn(1, FR, CH, H, W), t=torch.tensor([999]), context=torch.randn(1, 5, DIM))


def test_cfg_off_caches_the_whole_batch(toy):
    """cfg=False: every call is full, attention reuse runs on the whole batch (guidance-distilled models)."""
    m, plain = clone(toy), clone(toy)
    handle = fk.apply(m, fk.FasterCacheConfig.preset("latte", cfg=False), adapter=ADAPTER)
    outs = loop([plain, m])
    st = handle.stats()
    assert st["cfg"]["skip"] == 0 and st["attention"]["spatial"]["reused"] > 0 and st["cfg_residual_bytes"] == 0
    assert all(torch.equal(a, b) for a, b in outs[:15])  # before the first reuse (c = 16) nothing changes
    assert 0 < max(rel_err(b, a) for a, b in outs) < 0.5
