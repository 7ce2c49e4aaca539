"""A patched model across its life: copies and saving are refused with the fix, a video under inference mode
leaves the next one working, an interrupted call starts a new video with a warning (every policy)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from dit_models import clone, cog_inputs, one_thread, rel_err, sample_loop, tiny_cogvideox  # noqa: F401

import fastercache_kernels as fk

pytestmark = pytest.mark.usefixtures("one_thread")


def configs():
    return {"fastercache": "cogvideox-2b", "adacache": fk.AdaCacheConfig(num_calls=20),
            "teacache": fk.TeaCacheConfig(threshold=0.3), "fbcache": fk.FirstBlockCacheConfig(threshold=0.3)}


@pytest.fixture(scope="module")
def model():
    return tiny_cogvideox(layers=1)


@pytest.mark.parametrize("policy", list(configs()))
def test_copy_and_save_refused_with_the_fix(model, policy):
    m = clone(model)
    handle = fk.apply(m, configs()[policy])
    with pytest.raises(RuntimeError, match=r"handle.remove\(\), copy the model"):
        copy.deepcopy(m)
    with pytest.raises(RuntimeError, match=r"handle.remove\(\) first"):
        torch.save(m, io.BytesIO())
    handle.remove()
    copy.deepcopy(m)  # fine once removed
    torch.save(m, io.BytesIO())


def _grad_loop(m, lat, extra, calls):
    """sample_loop's CFG loop in grad mode (the model's parameters require grad)."""
    outs, x = [], lat.clone()
    for t in torch.linspace(999, 0, calls).round().long():
        y = m(hidden_states=torch.cat([x, x]), timestep=t.expand(2), return_dict=False, **extra)[0].detach()
        outs.append([y])
        uncond, cond = y.chunk(2)
        x = x - 0.02 * (uncond + 6.0 * (cond - uncond))
    return outs


@pytest.mark.parametrize("policy", list(configs()))
def test_inference_mode_video_then_no_grad_and_grad_videos(model, policy):
    """The first video (which allocates every buffer) under inference_mode, then one under no_grad and one in grad
    mode: the same outputs as the same three videos starting under no_grad."""
    lat, extra = cog_inputs()
    outs = []
    for first_mode in (torch.inference_mode, torch.no_grad):
        m = clone(model)
        fk.apply(m, configs()[policy])
        with first_mode():
            a = sample_loop([m], lat, extra, calls=20)
        b = sample_loop([m], lat, extra, calls=20)  # sample_loop runs under no_grad
        with torch.enable_grad():
            c = _grad_loop(m, lat, extra, 20)
        outs.append(a + b + c)
    assert len(outs[0]) == 60 and all(torch.equal(x[0], y[0]) for x, y in zip(*outs))


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("policy", list(configs()))
def test_interrupted_call_starts_a_new_video(model, policy, error):
    """A call that raises leaves the video unfinished: the next call warns and starts a new video, so a retried
    video equals a fresh one (no residual of the interrupted video is reused)."""
    lat, extra = cog_inputs()
    fresh = clone(model)
    fk.apply(fresh, configs()[policy])
    want = sample_loop([fresh], lat, extra, calls=20)
    m = clone(model)
    fk.apply(m, configs()[policy])
    sample_loop([m], lat, extra, calls=20, first=12)  # part of a video
    block = m.transformer_blocks[0]
    hook = block.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(error()))
    with pytest.raises(error):
        sample_loop([m], lat, extra, calls=20, first=14)  # a new video whose call 1 raises
    hook.remove()
    with pytest.warns(UserWarning, match="did not finish"):
        got = sample_loop([m], lat, extra, calls=20)
    assert max(rel_err(g[0], w[0]) for g, w in zip(got, want)) == 0.0


@pytest.mark.parametrize("policy", list(configs()))
def test_float64_model_named_at_its_first_call(model, policy):
    m = clone(model).double()
    fk.apply(m, configs()[policy])
    lat, extra = cog_inputs()
    with pytest.raises(TypeError, match=r"returns torch.float64 samples.*model.float\(\)"):
        sample_loop([m], lat.double(), {k: v.double() for k, v in extra.items()}, calls=20, first=1)


def test_not_a_model_named():
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        fk.apply(None, "latte")


def test_demo_sampler_takes_a_compiled_model():
    from fastercache_kernels.demo import models

    m = tiny_cogvideox(layers=1)
    compiled = torch.compile(m, backend="eager")
    lat, extra = cog_inputs()
    x = lat.transpose(1, 2)  # the demo's [B, C, T, H, W]
    with torch.no_grad():
        a = models.call(compiled, torch.cat([x, x]), torch.tensor([500.0, 500.0]), extra["encoder_hidden_states"])
        b = models.call(m, torch.cat([x, x]), torch.tensor([500.0, 500.0]), extra["encoder_hidden_states"])
    assert torch.allclose(a, b, atol=1e-6)
    torch._dynamo.reset()
