"""Adaptive decisions in a batch of several prompts are shared: each prompt's error against its own uncached run,
in a batch of three prompts and alone (docs/models.md, "Several prompts in one batch").

Run: OMP_NUM_THREADS=1 python benchmarks/several_prompts.py
"""

import warnings

import torch

import fastercache_kernels as fk
from fastercache_kernels import tiny

PROMPTS = ["a red ball", "a blue cube", "a green cone"]
STEPS = 20
CONFIGS = {
    "First-Block-Cache 0.35": lambda: fk.FirstBlockCacheConfig(threshold=0.35),
    "TeaCache 0.2": lambda: fk.TeaCacheConfig(threshold=0.2, indicator="block_input"),
    "AdaCache": lambda: fk.AdaCacheConfig(codebook={0.03: 4, 0.06: 3, 1.0: 2}),
}


def main():
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    pipe, size = tiny.cogvideox_pipeline()
    pipe.set_progress_bar_config(disable=True)

    def run(prompts, seeds, config=None):
        handle = fk.apply(pipe, config()) if config else None
        with torch.no_grad():
            out = pipe(prompts, num_inference_steps=STEPS, guidance_scale=6.0, output_type="latent",
                       generator=[torch.Generator().manual_seed(s) for s in seeds], **size).frames
        reused = handle.stats()["reused"] if handle else None
        if handle:
            handle.remove()
        return out, reused

    def rel(a, b):
        return float((a - b).abs().max() / b.abs().max())

    plain, _ = run(PROMPTS, range(len(PROMPTS)))
    alone_plain = [run([p], [i])[0][0] for i, p in enumerate(PROMPTS)]
    for name, config in CONFIGS.items():
        batch, reused = run(PROMPTS, range(len(PROMPTS)), config)
        cells = []
        for i, p in enumerate(PROMPTS):
            alone, r = run([p], [i], config)
            cells.append(f"prompt {i}: batch {rel(batch[i], plain[i]):.1e} / alone {rel(alone[0], alone_plain[i]):.1e}"
                         f" ({r}/{STEPS} reused alone)")
        print(f"{name} ({reused}/{STEPS} reused in the batch): " + "; ".join(cells))


if __name__ == "__main__":
    main()
