"""Train a tiny video DiT on the synthetic moving-shapes set: python -m fastercache_kernels.train --model latte

Rectified flow (x_t = (1 - t) x0 + t eps, target eps - x0, timestep = 1000 t), AdamW with warmup and cosine
decay, gradient clipping, EMA weights; condition dropout 0.1 for classifier-free guidance. Writes the EMA weights
(safetensors), the config, the condition tokens, a loss curve (PNG) and TRAINED.md with this command into
fastercache_kernels/demo/weights/<model>/ (or --out).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch

from . import _extras
from .demo import data, models


def _lr(step: int, progress: float, peak: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay over `progress` (0..1) of the run."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(family: str, minutes: float, max_steps: int, batch_size: int, lr: float, seed: int, out: Path,
          threads: int | None = None) -> dict:
    from safetensors.torch import save_file
    from tqdm import tqdm

    if threads:
        torch.set_num_threads(threads)
    model = models.build(family, seed=seed).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    tokens = data.ConditionTokens()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = time.monotonic()
    budget = minutes * 60
    # The schedule follows the time budget (or max_steps, whichever ends first): on a shared machine the speed
    # varies, and a step-count estimate would leave the decay unfinished.
    bar = tqdm(total=max_steps if max_steps < 100_000 else None, desc=f"train {family}", unit="step",
               dynamic_ncols=True)
    step = 0
    while step < max_steps:
        clips, cond, _ = data.batch(batch_size, seed=seed * 1_000_003 + step, tokens=tokens)
        t = torch.rand(batch_size, generator=g)
        eps = torch.randn(clips.shape, generator=g)
        tb = t.view(-1, 1, 1, 1, 1)
        x_t = (1 - tb) * clips + tb * eps
        progress = max((time.monotonic() - start) / budget, step / max_steps)
        for group in opt.param_groups:
            group["lr"] = _lr(step, progress, lr, warmup=100)
        pred = models.call(model, x_t, 1000.0 * t, cond)
        loss = torch.nn.functional.mse_loss(pred, eps - clips)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(0.995, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        step += 1
        elapsed = time.monotonic() - start
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        bar.update(1)
        if elapsed > budget:
            break
    bar.close()
    elapsed = time.monotonic() - start
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(models.config(family), indent=2, sort_keys=True))
    _plot(losses, out / "loss.png", family)
    summary = dict(model=family, steps=step, minutes=round(elapsed / 60, 2), batch_size=batch_size, lr=lr,
                   seed=seed, final_loss=round(sum(losses[-100:]) / len(losses[-100:]), 5),
                   torch=torch.__version__, threads=torch.get_num_threads(),
                   date=datetime.date.today().isoformat())
    cmd = "python -m fastercache_kernels.train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    (out / "TRAINED.md").write_text(
        f"# {family}: how these weights were made\n\n```\n{cmd}\n```\n\n"
        + "\n".join(f"- {k}: {v}" for k, v in summary.items()) + "\n"
    )
    return summary


def _plot(losses: list[float], path: Path, family: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(losses, lw=0.5, alpha=0.4, label="loss")
    k = 50
    if len(losses) > k:
        smooth = torch.tensor(losses).unfold(0, k, 1).mean(1)
        ax.plot(range(k - 1, len(losses)), smooth, lw=1.5, label=f"mean of {k}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("rectified-flow MSE")
    ax.set_title(f"tiny {family} on moving shapes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m fastercache_kernels.train", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=models.FAMILIES, required=True)
    p.add_argument("--minutes", type=float, default=25.0, help="time budget (default 25)")
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="default: the package's demo/weights/<model>")
    a = p.parse_args(argv)
    try:
        _extras.require("train", "python -m fastercache_kernels.train")
    except _extras.MissingExtraError as e:
        raise SystemExit(f"error: {e}") from e
    out = a.out or (models.WEIGHTS / a.model)
    summary = train(a.model, a.minutes, a.max_steps, a.batch_size, a.lr, a.seed, out, a.threads)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
