"""The embedded demo models: the synthetic set is what it claims, and the shipped weights really learned it."""

import pytest
import torch

from fastercache_kernels.demo import data, metrics, models, sampling


def test_data_is_deterministic_and_labelled():
    tokens = data.ConditionTokens()
    a = data.batch(12, seed=5, tokens=tokens)
    b = data.batch(12, seed=5, tokens=tokens)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    clips, cond, labels = a
    assert clips.shape == (12, data.CHANNELS, data.FRAMES, data.SIZE, data.SIZE)
    assert clips.min() >= -1 and clips.max() <= 1
    assert not torch.equal(data.batch(12, seed=6, tokens=tokens)[0], clips)
    # the judge recovers colour and direction of ground-truth clips exactly
    assert torch.equal(data.judge(clips), labels[:, 1:])


def test_judge_fails_on_noise():
    g = torch.Generator().manual_seed(0)
    labels = data.random_labels(64, g)
    noise = torch.randn(64, data.CHANNELS, data.FRAMES, data.SIZE, data.SIZE, generator=g)
    acc = (data.judge(noise)[:, 0] == labels[:, 1]).float().mean().item()
    assert acc < 0.5


def test_metrics():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 3, 8, 16, 16, generator=g) * 2 - 1
    assert metrics.psnr(ref, ref) == 100.0
    assert metrics.ssim(ref, ref) == pytest.approx(1.0)
    assert metrics.temporal_consistency(ref, ref) == 1.0
    noisy = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    very = (ref + 0.5 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    assert 15 < metrics.psnr(noisy, ref) < 40
    assert metrics.psnr(very, ref) < metrics.psnr(noisy, ref)
    assert metrics.ssim(very, ref) < metrics.ssim(noisy, ref) < 1
    assert metrics.temporal_consistency(very, ref) < metrics.temporal_consistency(noisy, ref) < 1
    frozen = ref[:, :, :1].expand_as(ref)  # no motion at all
    assert metrics.temporal_consistency(frozen, ref) == pytest.approx(0.0, abs=1e-6)


def _colour_accuracy(model, n=8, seed=0, steps=25):
    # 25 Euler calls instead of the demo's 50 keep this test cheap; colour is settled long before the end.
    tokens = data.ConditionTokens()
    g = torch.Generator().manual_seed(seed)
    labels = data.random_labels(n, g)
    noise = torch.randn(n, data.CHANNELS, data.FRAMES, data.SIZE, data.SIZE, generator=g)
    clips = sampling.sample(model, tokens(labels), tokens.null_like(n), noise, steps=steps, guidance=4.0)
    return (data.judge(clips)[:, 0] == labels[:, 1]).float().mean().item()


@pytest.mark.parametrize("family", models.FAMILIES)
def test_trained_weights_learned_the_colours(family):
    if not models.has_trained(family):
        pytest.skip(f"no trained {family} weights shipped yet")
    trained = _colour_accuracy(models.load_trained(family))
    untrained = _colour_accuracy(models.build(family, seed=0).eval())
    assert trained >= 0.75, f"trained {family}: colour accuracy {trained:.2f} (chance 0.25)"
    assert untrained <= 0.5, f"random {family}: colour accuracy {untrained:.2f}"


def test_demo_timing_is_the_median_of_interleaved_rounds(monkeypatch):
    """Each round runs every setting once, in turn; the times are medians and the speedups the medians of the
    rounds' own ratios, so one slow round (another job's burst) moves neither; the speedup is by CPU time."""
    from fastercache_kernels.demo import run

    calls = []
    # (wall, CPU) per round: round 2 slow for no cache, round 3 for cached; the wall times say the opposite
    fake = {"no cache": [(1.0, 1.0), (1.0, 9.0), (1.0, 1.0)], "cached": [(4.0, 0.5), (4.0, 0.5), (4.0, 4.0)]}
    real = run._sample_once

    def timed(model, s, *args):
        video, _, stats = real(model, s, *args)
        calls.append(s.name)
        return video, fake[s.name][sum(n == s.name for n in calls) - 1], stats

    monkeypatch.setattr(run, "_sample_once", timed)
    settings = [run.Setting("no cache"), run.Setting("cached", lambda m: _NoopHandle())]
    results, _ = run.run("latte", settings, n=1, steps=2, rounds=3)
    assert calls == ["no cache", "cached"] * 3
    assert [r.cpu_seconds for r in results] == [1.0, 0.5]
    assert [r.wall_seconds for r in results] == [1.0, 4.0]
    assert results[1].speedup == 2.0  # the rounds' CPU ratios are 2, 18 and 0.25
    assert results[1].wall_speedup == 0.25
    assert results[1].psnr >= 100 and results[1].identical  # the no-op setting gives the uncached samples


def test_demo_ends_with_one_summary_line_per_model(monkeypatch, tmp_path, capsys):
    """The default demo's closing lines: per model, the recommended setting's CPU-time speedup and PSNR against no
    cache and the side-by-side PNG it wrote (1 clip, 4 calls, 1 round: the format, not the figures)."""
    import re

    from PIL import Image

    from fastercache_kernels.__main__ import main
    from fastercache_kernels.demo import run, settings

    real = run._sample_once

    def timed(model, s, *args):  # CPU time says 3x faster, wall time 2x slower: the line must give the CPU figure
        video, _, stats = real(model, s, *args)
        return video, ((1.0, 3.0) if s.apply is None else (2.0, 1.0)), stats

    monkeypatch.setattr(run, "_sample_once", timed)
    main(["demo", "--clips", "1", "--steps", "4", "--rounds", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out.strip().splitlines()
    assert "of CPU time" in out[-4] and "load average" in out[-4]
    shown = [i for i, line in enumerate(out) if "handle.summary()" in line]
    assert len(shown) == 1 and "video 1, 4 calls" in "\n".join(out[shown[0]:])  # the summary, once
    for line, family in zip(out[-2:], ("cogvideox", "latte")):
        png = tmp_path / f"{family}.png"
        pattern = (rf"{family}: {re.escape(settings.RECOMMENDED[family])} 3\.00x faster \(CPU time, median of 1 "
                   rf"interleaved rounds\) (at \d+\.\d dB PSNR vs|identical to) no cache; "
                   rf"frames: {re.escape(str(png))}")
        assert re.fullmatch(pattern, line), line
        with Image.open(png) as im:  # one row of 8 frames a side at 4x, a 12 px gap, a 16 px label row
            assert im.size == (2 * 8 * 16 * 4 + 12, 16 + 16 * 4)
        assert png.with_suffix(".gif").exists()


def test_library_warnings_wait_until_the_block_ends(capsys):
    import warnings

    from diffusers.utils import logging as diffusers_logging

    from fastercache_kernels.demo import run

    root = diffusers_logging.get_logger("diffusers")
    handlers = root.handlers[:]
    with run.library_notes() as notes:
        for _ in range(3):
            warnings.warn("a library's warning", UserWarning)
            diffusers_logging.get_logger("diffusers.hooks.faster_cache").warning("experimental")
        assert capsys.readouterr().err == ""
    assert len(notes) == 2 and "a library's warning" in notes[1] and notes[0].endswith("experimental")
    assert root.handlers == handlers and handlers  # diffusers logs as before once the block ends


class _NoopHandle:
    def stats(self) -> dict:
        return {}

    def remove(self) -> None:
        pass
