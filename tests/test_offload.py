"""fk composed with diffusers' offloading (the set-ups consumer-GPU users run video models with): model CPU
offloading and sequential CPU offloading (accelerate's hooks, which diffusers removes and re-adds after every
video), and group offloading at block and leaf level (diffusers' hooks), each applied before or after `fk.apply`,
over two videos in a row. The execution device is "cpu" here; a fake-tensor run would have met `cpu` against
`cpu:0` as it meets `cuda:0` against `cpu` on a GPU (the failure this guards against: fake tensors written into
the real weights by the offload hooks). Every policy's videos equal the same config without offloading, and
`remove()` leaves the offload hooks working and every parameter as it was."""

from __future__ import annotations

import pytest
import torch

from dit_models import one_thread  # noqa: F401

import fastercache_kernels as fk
from fastercache_kernels import tiny

STEPS = 6
POLICIES = {
    "fastercache": lambda: fk.FasterCacheConfig.preset(
        "latte", attention_fill=1, attention_reuse_start=3, cfg_refresh_start=1, cfg_skip_start=3, cfg_period=2),
    "fbcache": lambda: fk.FirstBlockCacheConfig(threshold=0.3),
    "teacache": lambda: fk.TeaCacheConfig(threshold=0.3, indicator="block_input"),
    "adacache": lambda: fk.AdaCacheConfig(num_calls=STEPS, codebook={0.05: 3, 1.0: 2}),
}


def _offload(pipe, kind: str) -> None:
    if kind == "model":
        pipe.enable_model_cpu_offload(device="cpu")
    elif kind == "sequential":
        # what pipe.enable_sequential_cpu_offload() puts on each component (weights on "meta" between module calls);
        # on the transformer alone: the tiny T5 text encoder fails under it with execution device "cpu" without fk
        # (accelerate 1.15, torch 2.13: "new() received an invalid combination of arguments" in post_forward)
        from accelerate import cpu_offload

        cpu_offload(pipe.transformer, execution_device=torch.device("cpu"))
    else:
        pipe.transformer.enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                                              offload_type=f"{kind}_level", num_blocks_per_group=1)


def _undo(pipe, kind: str) -> None:
    if kind == "model":
        pipe.remove_all_hooks()
    elif kind == "sequential":
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(pipe.transformer, recurse=True)
    else:
        for m in pipe.transformer.modules():
            reg = m.__dict__.get("_diffusers_hook")
            if reg is not None:
                for name in list(reg.hooks):
                    reg.remove_hook(name, recurse=False)


@pytest.fixture(scope="module")
def wan(one_thread):  # noqa: F811
    pipe, size = tiny.wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    kw = dict(prompt="a red ball", negative_prompt="", num_inference_steps=STEPS, guidance_scale=5.0,
              output_type="latent", **size)

    def run():
        with torch.no_grad():
            return pipe(**kw, generator=torch.Generator().manual_seed(0)).frames

    plain = run()
    want = {}
    for name, config in POLICIES.items():
        with fk.apply(pipe, config()):
            want[name] = [run(), run()]
    return pipe, run, plain, want


def _params(model):
    return {n: (p.device, p.dtype, type(p).__name__, p.detach().clone()) for n, p in model.named_parameters()}


@pytest.mark.parametrize("kind", ["model", "sequential", "block", "leaf"])
@pytest.mark.parametrize("order", ["offload_first", "fk_first"])
def test_every_policy_under_offloading(wan, kind, order):
    pipe, run, plain, want = wan
    before = _params(pipe.transformer)
    try:
        if order == "offload_first":
            _offload(pipe, kind)
        for name, config in POLICIES.items():
            handle = fk.apply(pipe, config())
            if order == "fk_first" and name == "fastercache":
                _offload(pipe, kind)
            got = [run(), run()]
            st = handle.stats()
            for g, w in zip(got, want[name]):
                assert (g - w).abs().max() <= 1e-5 * w.abs().max(), (name, kind, order)
            assert st["videos"] == 2 and st["observed_calls"] == 1, (name, st)
            installed = [v for h in handle.handles.values() for *_, v in h.engine._saved]
            handle.remove()
            assert installed and not fk_wrappers(pipe.transformer, installed), name
            assert torch.equal(run(), plain), (name, "the offloaded pipeline after remove()")
    finally:
        _undo(pipe, kind)
    after = _params(pipe.transformer)
    assert torch.equal(run(), plain)
    for n, (dev, dt, cls, val) in before.items():
        d2, t2, c2, v2 = after[n]
        assert (d2, t2, c2) == (dev, dt, cls) and torch.equal(v2, val), n


def fk_wrappers(model, installed: list) -> list:
    """Where one of the forwards fk installed still sits, anywhere in a hook chain of the model's modules."""
    found = []
    for name, m in model.named_modules():
        slots = [(m, a) for a in ("forward", "_old_forward")]
        reg = m.__dict__.get("_diffusers_hook")
        slots += [(ref, a) for ref in getattr(reg, "_fn_refs", ()) for a in ("forward", "original_forward")]
        for obj, attr in slots:
            f = obj.__dict__.get(attr) if obj is m else getattr(obj, attr, None)
            if any(f is v for v in installed):
                found.append((name, attr))
    return found
