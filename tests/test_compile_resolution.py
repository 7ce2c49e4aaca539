"""decide="device" under torch.compile(fullgraph=True): a second video at another resolution compiles a graph of
its own (before: a raw TorchRuntimeError from torch.cond on the dynamic-shape recompile), and every call equals the
eager patched model."""

from __future__ import annotations

import copy

import torch
from dit_models import one_thread  # noqa: F401

import fastercache_kernels as fk


def test_device_decisions_compile_a_second_resolution(one_thread):  # noqa: F811
    from diffusers import WanTransformer3DModel

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                  out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
                                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32).eval()
    eager = copy.deepcopy(model)
    handle = fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.2), decide="device")
    fk.apply(eager, fk.FirstBlockCacheConfig(threshold=0.2), decide="device")
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    for hw in (8, 12):
        g = torch.Generator().manual_seed(hw)
        x = torch.randn(2, 4, 2, hw, hw, generator=g)
        text = torch.randn(2, 6, 16, generator=g)
        for t in torch.linspace(999, 10, 5):
            kw = dict(hidden_states=x, timestep=t.expand(2), encoder_hidden_states=text, return_dict=False)
            with torch.no_grad():
                a, b = compiled(**kw)[0], eager(**kw)[0]
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (hw, float(t))
            x = x - 0.05 * b
    st = handle.stats()
    assert st["videos"] == 2 and st["reused"] > 0 and st["host_reads"] == 0
    torch._dynamo.reset()
