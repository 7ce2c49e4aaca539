"""The call pattern, observed from the calls (docs/algorithms.md section 10): a batched call is split into CFG
halves only when the pipeline guides (or, for a bare transformer, when the config asks for CFG-Cache), the step
count comes from the pipeline's scheduler, and a `num_calls` that does not fit the calls is reported once."""

from __future__ import annotations

import warnings

import pytest
import torch
from dit_models import cog_inputs, one_thread, sample_loop, tiny_cogvideox  # noqa: F401

import fastercache_kernels as fk
from fastercache_kernels import tiny

STEPS = 8
# CFG-Cache from call 3 on, every other call a skip call
FC = dict(attention=False, cfg_refresh_start=1, cfg_skip_start=3, cfg_period=2, cfg_compute_phase=0)


@pytest.fixture(scope="module")
def cog(one_thread):  # noqa: F811
    pipe, size = tiny.cogvideox_pipeline()
    pipe.set_progress_bar_config(disable=True)

    def run(prompts, scale):
        with torch.no_grad():
            return pipe(prompts, num_inference_steps=STEPS, guidance_scale=scale, output_type="latent",
                        generator=torch.Generator().manual_seed(0), **size).frames

    return pipe, run


def test_prompts_without_guidance_are_never_split(cog):
    """Two prompts with guidance_scale 1 make a batch of 2 that holds no CFG halves: applied to the pipeline, no
    call is split (before: prompt B was rebuilt from prompt A on the skip calls)."""
    pipe, run = cog
    plain = run(["a red ball", "a blue cube"], 1.0)
    with fk.apply(pipe, fk.FasterCacheConfig(**FC)) as handle:
        out = run(["a red ball", "a blue cube"], 1.0)
        st = handle.stats()
    assert st["cfg"]["skip"] == 0 and torch.equal(out, plain), st["cfg"]
    with fk.apply(pipe, fk.FasterCacheConfig(**FC)) as handle:  # the same pipeline with guidance: split
        run(["a red ball"], 6.0)
        assert handle.stats()["cfg"]["skip"] > 0


def test_pipeline_guidance_switches_between_videos(cog):
    """One handle, videos with and without guidance in turn (the same input shapes): each is split or not."""
    pipe, run = cog
    plain = run(["a red ball", "a blue cube"], 1.0)
    with fk.apply(pipe, fk.FasterCacheConfig(**FC)) as handle:
        run(["a red ball"], 6.0)
        skips = handle.stats()["cfg"]["skip"]
        out = run(["a red ball", "a blue cube"], 1.0)
        assert handle.stats()["cfg"]["skip"] == skips and torch.equal(out, plain)


def test_pipeline_scheduler_gives_the_step_count(cog):
    """Applied to the pipeline, the adaptive policies take the step index and count from its scheduler: no
    `num_calls` is needed (AdaCache's default of 30 on an 8-step run warns nothing), and the last step computes."""
    pipe, run = cog
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with fk.apply(pipe, fk.AdaCacheConfig(codebook={1.0: 3}), record=True) as handle:
            run(["a red ball"], 6.0)
            run(["a red ball"], 6.0)
            hist = handle.history
    assert len(hist) == 2 * STEPS
    assert bool(hist[STEPS - 1]["pred"]) and bool(hist[-1]["pred"])  # the last step of each video computed


def test_num_calls_that_does_not_fit_warns_once():
    """A bare transformer, a 20-call loop: TeaCache(num_calls=50) is told when the video ends (at the next video);
    AdaCache(num_calls=10) when the timestep still falls at call 11. Once each."""
    model = tiny_cogvideox(layers=1)
    lat, extra = cog_inputs()
    for config, n_videos in ((fk.TeaCacheConfig(threshold=0.1, num_calls=50), 2), (fk.AdaCacheConfig(num_calls=10), 1)):
        with fk.apply(model, config), pytest.warns(UserWarning, match="num_calls") as got:
            for _ in range(n_videos):
                sample_loop([model], lat, extra, calls=20)
        assert len([w for w in got if "num_calls" in str(w.message)]) == 1
