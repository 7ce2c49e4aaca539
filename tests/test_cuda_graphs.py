"""Patched models under CUDA graphs (GPU only), and the preconditions a CPU machine can prove.

On a GPU: a tiny CogVideoX and a tiny Wan patched with AdaCache (decide="device") are captured once with
torch.cuda.graph and replayed for two whole videos; patched with FasterCache every call of a video is captured and
replayed (its plan is decided on the host per call); with AdaCache and with FasterCache they also run under
torch.compile(mode="reduce-overhead"); every call matches the eager patched model within the dtype's tolerance.
Everywhere: a video of decide="device" calls makes no host read, and every cache buffer keeps its data pointer from
the first call of a video to the last (a captured graph reads and writes fixed addresses).

Written against the public API (fk.apply, handle.stats(), handle.remove()); `cache_buffers` is the one place that
knows where a handle keeps its buffers.
"""

import copy

import pytest
import torch

import fastercache_kernels as fk
from dit_models import COG_FRAMES, COG_H, COG_W, one_thread, tiny_cogvideox  # noqa: F401
from conftest import HAS_GPU, NO_GPU

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason=NO_GPU)

CALLS = 12


def cache_buffers(handle) -> list[torch.Tensor]:
    """Every cache buffer of a patched model. The only use of internals in this file: adaptive handles keep
    theirs in handle.adaptive.blocks[i].bufs, FasterCache handles in handle.fastercache.caches (slots, both
    branches)."""
    adaptive = handle.adaptive
    if adaptive is not None:
        return [t for b in adaptive.blocks for ts in b.bufs.values() for t in ts]
    slots = [s for c in handle.fastercache.caches for s in (*c.comp, *(c.other or []))]
    return [t for s in slots for t in s]


def tiny_wan(seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                 out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
                                 rope_max_seq_len=32).eval()


# name: (model, latent shape [B=1, ...], text shape [2, tokens, 16])
MODELS = {
    "cogvideox": (tiny_cogvideox, (1, COG_FRAMES, 4, COG_H, COG_W), (2, 4, 16)),
    "wan": (tiny_wan, (1, 4, 3, 8, 8), (2, 4, 16)),
}


def adacache():
    # generous thresholds: the tiny random models move a lot between calls, and both branches must run
    return fk.AdaCacheConfig(codebook={0.5: 3, 1e9: 2}, num_calls=CALLS, moreg_window=(2, CALLS - 2))


def fastercache():
    return fk.FasterCacheConfig(attention_reuse_start=3, cfg_skip_start=4, cfg_refresh_start=3)


def _inputs(name: str, device, dtype):
    _, lat, text = MODELS[name]
    g = torch.Generator().manual_seed(1)
    return (torch.randn(lat, generator=g).to(device, dtype), torch.randn(text, generator=g).to(device, dtype))


def _timesteps(device):
    return torch.linspace(999, 0, CALLS).round().long().to(device)


def _call(model, inp, t, text):
    with torch.no_grad():
        return model(hidden_states=inp, timestep=t.expand(inp.shape[0]), encoder_hidden_states=text,
                     return_dict=False)[0]


def _video_inputs(model, latents, text, device, on_call=None):
    """The CFG batches [x, x] and timesteps of one video, following `model` (eager, patched) along a simple
    sampler; returns [(inp, t, out)] per call. Replaying these inputs into a second model isolates each call's
    error (nothing compounds). `on_call(t)` runs before each call (a host clock)."""
    x, calls = latents.clone(), []
    for t in _timesteps(device):
        if on_call is not None:
            on_call(t)
        inp = torch.cat([x, x])
        y = _call(model, inp, t, text)
        calls.append((inp, t, y.clone()))
        uncond, cond = y.float().chunk(2)
        x = (x.float() - 0.02 * (uncond + 6.0 * (cond - uncond))).to(x.dtype)
    return calls


def _rel(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2}  # graph replay / compiled vs eager, relative to the call's max


# ---- on every machine: the preconditions of a captured graph ---------------------------------------------------

@pytest.mark.parametrize("config", ["adacache", "fastercache"])
@pytest.mark.parametrize("name", list(MODELS))
def test_device_decisions_make_no_host_read_and_buffers_keep_their_addresses(name, config):
    make, _, _ = MODELS[name]
    model = make()
    device_mode = config == "adacache"
    cfg = adacache() if device_mode else fastercache()
    handle = fk.apply(model, cfg, decide="device") if device_mode else fk.apply(model, cfg)
    if device_mode:  # torch.cond in eager calls too, as while a graph is captured (no host read)
        handle.adaptive.cond_in_eager = True
    latents, text = _inputs(name, "cpu", torch.float32)
    for _video in range(2):
        first = None
        x = latents.clone()
        for t in _timesteps("cpu"):
            _call(model, torch.cat([x, x]), t, text)
            ptrs = [b.data_ptr() for b in cache_buffers(handle)]
            first = first or ptrs
            assert ptrs == first, f"{name} {config}: a cache buffer moved during a video"
        assert first, f"{name} {config}: no cache buffer found"
    stats = handle.stats()
    assert stats["calls"] == 2 * CALLS and stats["videos"] == 2, stats
    if device_mode:
        assert stats["host_reads"] == 0, stats
        assert 0 < stats["computed"] < 2 * CALLS, stats  # the cache did reuse, and did compute
    handle.remove()


# ---- GPU only ---------------------------------------------------------------------------------------------------

def _capture(model, s_inp, s_t, s_text):
    """One CUDA graph of a whole patched call on static inputs, its torch.cond nodes as CUDA conditional nodes
    (both branches warmed up first by running one call under the warm-up mode, on a side stream)."""
    from torch._higher_order_ops.cudagraph_conditional_nodes import (
        ControlFlowOpWarmupDispatchMode,
        CUDAGraphCaptureControlFlowOpDispatchMode,
    )

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), ControlFlowOpWarmupDispatchMode():
        warm = _call(model, s_inp, s_t, s_text).clone()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), CUDAGraphCaptureControlFlowOpDispatchMode():
        s_out = _call(model, s_inp, s_t, s_text)
    return graph, s_out, warm


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", list(MODELS))
def test_adacache_device_decisions_replay_two_videos_from_one_graph(name, dtype):
    make, _, _ = MODELS[name]
    base = make().to("cuda", dtype)
    eager, graphed = copy.deepcopy(base), copy.deepcopy(base)
    fk.apply(eager, adacache(), decide="device")
    handle = fk.apply(graphed, adacache(), decide="device")
    latents, text = _inputs(name, "cuda", dtype)
    videos = [_video_inputs(eager, latents, text, "cuda") for _ in range(2)]
    s_inp, s_t, s_text = videos[0][0][0].clone(), videos[0][0][1].clone(), text.clone()
    first = _call(graphed, s_inp, s_t, s_text)  # call 1 eagerly: probes the block order, allocates buffers
    assert _rel(first, videos[0][0][2]) <= TOL[dtype]
    s_inp.copy_(videos[0][1][0])
    s_t.copy_(videos[0][1][1])
    graph, s_out, warm = _capture(graphed, s_inp, s_t, s_text)  # the warm-up runs call 2
    assert _rel(warm, videos[0][1][2]) <= TOL[dtype]
    for v, calls in enumerate(videos):
        for i, (inp, t, want) in enumerate(calls):
            if v == 0 and i < 2:
                continue
            s_inp.copy_(inp)
            s_t.copy_(t)
            graph.replay()
            err = _rel(s_out, want)
            assert err <= TOL[dtype], f"{name} {dtype}: video {v + 1} call {i + 1}: {err:.3g} > {TOL[dtype]:g}"
    torch.cuda.synchronize()
    assert handle.stats()["host_reads"] == 0
    handle.remove()


def _diffusers_fastercache(name: str, clock: dict):
    """diffusers' own FasterCacheConfig (our backend runs it), its timestep read from a host clock: FasterCache
    decides each call on the host, and the clock keeps that decision free of a device read."""
    from diffusers import FasterCacheConfig

    return FasterCacheConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 901),
        low_frequency_weight_update_timestep_range=(99, 901), high_frequency_weight_update_timestep_range=(-1, 301),
        attention_weight_callback=lambda _: 0.3, tensor_format={"cogvideox": "BFCHW", "wan": "BCFHW"}[name],
        current_timestep_callback=lambda: clock["t"])


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", list(MODELS))
def test_fastercache_every_call_captured_and_replayed(name, dtype):
    # FasterCache's plan is decided on the host per call (a static schedule) and its slots rotate by reference, so
    # one graph cannot serve the next call: each call is captured (the host schedule runs once, at capture) and
    # replayed. Capture fails on any host read or sync in the patched forward; every replay must match eager.
    make, _, _ = MODELS[name]
    base = make().to("cuda", dtype)
    eager, graphed = copy.deepcopy(base), copy.deepcopy(base)
    clock_e, clock_g = {"t": None}, {"t": None}
    fk.apply(eager, _diffusers_fastercache(name, clock_e))
    handle = fk.apply(graphed, _diffusers_fastercache(name, clock_g))
    latents, text = _inputs(name, "cuda", dtype)
    calls = _video_inputs(eager, latents, text, "cuda", on_call=lambda t: clock_e.update(t=int(t)))
    s_inp, s_t, s_text = calls[0][0].clone(), calls[0][1].clone(), text.clone()
    graphs = []  # kept alive: tensors a captured call leaves in the cache live in its graph's memory pool
    for i, (inp, t, want) in enumerate(calls):
        clock_g["t"] = int(t)
        s_inp.copy_(inp)
        s_t.copy_(t)
        if i == 0:  # probes the model and allocates the cache eagerly
            out = _call(graphed, s_inp, s_t, s_text)
        else:
            graphs.append(torch.cuda.CUDAGraph())
            torch.cuda.synchronize()
            with torch.cuda.graph(graphs[-1]):
                out = _call(graphed, s_inp, s_t, s_text)
            graphs[-1].replay()
        err = _rel(out, want)
        assert err <= TOL[dtype], f"{name} {dtype}: call {i + 1}: {err:.3g} > {TOL[dtype]:g}"
    kinds = handle.stats()["calls_per_kind"]
    assert any("reuse" in k for k in kinds) and any(k.startswith("skip") for k in kinds), kinds
    handle.remove()


def _compiled_matches_eager(name, dtype, config, apply_kw):
    make, _, _ = MODELS[name]
    torch._dynamo.reset()
    base = make().to("cuda", dtype)
    eager, compiled = copy.deepcopy(base), copy.deepcopy(base)
    fk.apply(eager, config(), **apply_kw)
    handle = fk.apply(compiled, config(), **apply_kw)
    run = torch.compile(compiled, mode="reduce-overhead")
    latents, text = _inputs(name, "cuda", dtype)
    for v in range(2):
        for i, (inp, t, want) in enumerate(_video_inputs(eager, latents, text, "cuda")):
            got = _call(run, inp, t, text).clone()  # cudagraph trees reuse the output memory on the next replay
            err = _rel(got, want)
            assert err <= TOL[dtype], f"{name} {dtype}: video {v + 1} call {i + 1}: {err:.3g} > {TOL[dtype]:g}"
    handle.remove()
    torch._dynamo.reset()


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", list(MODELS))
def test_adacache_device_decisions_under_reduce_overhead(name):
    _compiled_matches_eager(name, torch.bfloat16, adacache, {"decide": "device"})


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", list(MODELS))
def test_fastercache_under_reduce_overhead(name):
    _compiled_matches_eager(name, torch.bfloat16, fastercache, {})

