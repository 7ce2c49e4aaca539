"""`python -m fastercache_kernels calibrate`: TeaCache's polynomial fitted to a tiny random WanPipeline (one
series per CFG branch), and the fit plugs into TeaCacheConfig."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from dit_models import one_thread  # noqa: F401
from pipelines import tiny_wan

import fastercache_kernels as fk
from fastercache_kernels.calibrate import fit_teacache

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_matches_the_points_and_plugs_in():
    pipe, kw = tiny_wan()
    kw.pop("guidance_scale")

    def run():
        pipe("a red square", negative_prompt="blue", num_inference_steps=10, output_type="latent",
             generator=torch.Generator().manual_seed(0), **kw)

    coefficients, points = fit_teacache(pipe.transformer, run, indicator="timestep_embedding")
    assert len(coefficients) == 5 and len(points) == 2 * 9  # cond and uncond, every call after the first
    xs, ys = np.array(points).T
    fitted = np.polyval(coefficients, xs)
    assert np.abs(fitted - ys).mean() < np.abs(ys - ys.mean()).mean()  # better than a constant
    assert not any(getattr(m, "_fk_handle", None) for m in [pipe.transformer])  # removed afterwards
    fk.TeaCacheConfig(coefficients=coefficients, indicator="timestep_embedding")


def test_cli(tmp_path):
    out = tmp_path / "fit.json"
    res = subprocess.run([sys.executable, "-m", "fastercache_kernels", "calibrate", "--family", "wan", "--steps", "8",
                          "--json", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fk.TeaCacheConfig(coefficients=" in res.stdout
    assert len(json.loads(out.read_text())["coefficients"]) == 5


def test_fit_on_the_trained_demo_model_beats_the_published_polynomial():
    """On the trained demo CogVideoX (its own sampler, batched CFG calls), the fitted polynomial reproduces the
    recorded output changes better than TeaCache's published CogVideoX-2B one, on the same points."""
    from fastercache_kernels.demo import run as demo_run
    from fastercache_kernels.demo import sampling
    from fastercache_kernels.policies.teacache.config import COGVIDEOX_2B_COEFFICIENTS

    model, _ = demo_run.load("cogvideox")
    cond, null, noise, _ = demo_run.inputs(2, 0)
    coefficients, points = fit_teacache(model, lambda: sampling.sample(model, cond, null, noise, steps=30),
                                        indicator="timestep_embedding")
    xs, ys = np.array(points).T
    fitted = np.abs(np.polyval(coefficients, xs) - ys).mean()
    published = np.abs(np.polyval(COGVIDEOX_2B_COEFFICIENTS, xs) - ys).mean()
    print(f"\ndemo CogVideoX, {len(points)} points: mean |fit - y| {fitted:.4g}, published {published:.4g}")
    assert len(points) == 29 and fitted < published
