"""Synthetic class-conditional videos: one bright shape moving 1 px per frame on a dark background.

A class is (shape, colour, direction). Clips are (C=3, T=8, H=16, W=16) in [-1, 1], deterministic by seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FRAMES, SIZE, CHANNELS = 8, 16, 3
SHAPES = ("square", "disc")
COLOURS = {  # RGB in [-1, 1]
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
}
DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}  # (dy, dx) per frame
SHAPE_SIZE = 6
TOKEN_DIM = 32


@dataclass(frozen=True)
class Label:
    shape: int
    colour: int
    direction: int


def num_classes() -> tuple[int, int, int]:
    return len(SHAPES), len(COLOURS), len(DIRECTIONS)


def random_labels(n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, 3] long: shape, colour, direction indices."""
    ns, nc, nd = num_classes()
    return torch.stack([torch.randint(0, k, (n,), generator=generator) for k in (ns, nc, nd)], dim=1)


def _sprite(shape: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(SHAPE_SIZE), torch.arange(SHAPE_SIZE), indexing="ij")
    if SHAPES[shape] == "square":
        return torch.ones(SHAPE_SIZE, SHAPE_SIZE)
    c = (SHAPE_SIZE - 1) / 2
    return (((yy - c) ** 2 + (xx - c) ** 2) <= (SHAPE_SIZE / 2) ** 2 - 0.5).float()


def render(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[n, 3, T, H, W] clips for [n, 3] labels; start positions jitter by the generator."""
    n = labels.shape[0]
    clips = torch.full((n, CHANNELS, FRAMES, SIZE, SIZE), -1.0)
    travel = FRAMES - 1
    centre = (SIZE - SHAPE_SIZE) // 2
    colours = torch.tensor(list(COLOURS.values()))
    dirs = list(DIRECTIONS.values())
    for i in range(n):
        s, c, d = (int(v) for v in labels[i])
        dy, dx = dirs[d]
        sprite = _sprite(s)
        jitter = torch.randint(-1, 2, (2,), generator=generator)
        # along the motion axis start so the whole path stays in frame; across it, near the centre
        along = lambda delta: 1 + int(torch.randint(0, 2, (1,), generator=generator)) if delta > 0 else (  # noqa: E731
            SIZE - SHAPE_SIZE - 1 - int(torch.randint(0, 2, (1,), generator=generator)))
        y0 = along(dy) if dy else centre + int(jitter[0])
        x0 = along(dx) if dx else centre + int(jitter[1])
        for t in range(FRAMES):
            y, x = y0 + dy * t, x0 + dx * t
            assert 0 <= y <= SIZE - SHAPE_SIZE and 0 <= x <= SIZE - SHAPE_SIZE, (y, x, travel)
            region = clips[i, :, t, y : y + SHAPE_SIZE, x : x + SHAPE_SIZE]
            mask = sprite.bool()
            for ch in range(CHANNELS):
                region[ch][mask] = colours[c, ch]
    return clips


class ConditionTokens:
    """Three fixed random tokens per label (shape, colour, direction) and a null token set for CFG."""

    def __init__(self, seed: int = 1234):
        g = torch.Generator().manual_seed(seed)
        ns, nc, nd = num_classes()
        self.tables = [torch.randn(k, TOKEN_DIM, generator=g) for k in (ns, nc, nd)]
        self.null = torch.randn(3, TOKEN_DIM, generator=g)

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        """[n, 3] labels -> [n, 3, TOKEN_DIM]."""
        return torch.stack([self.tables[k][labels[:, k]] for k in range(3)], dim=1)

    def null_like(self, n: int) -> torch.Tensor:
        return self.null.unsqueeze(0).expand(n, -1, -1).clone()


def batch(n: int, seed: int, tokens: ConditionTokens, drop_prob: float = 0.1):
    """(clips [n, 3, T, H, W], condition [n, 3, D], labels [n, 3]); with drop_prob the condition is null (CFG)."""
    g = torch.Generator().manual_seed(seed)
    labels = random_labels(n, g)
    clips = render(labels, g)
    cond = tokens(labels)
    drop = torch.rand(n, generator=g) < drop_prob
    cond[drop] = tokens.null
    return clips, cond, labels


def judge(clips: torch.Tensor) -> torch.Tensor:
    """Recovers (colour, direction) from clips [n, 3, T, H, W]: [n, 2] long, -1 where no shape is visible.

    Colour: the mean RGB of bright pixels (any channel > 0), nearest of COLOURS. Direction: the mean
    frame-to-frame motion of the bright pixels' centroid, dominant axis and sign.
    """
    n = clips.shape[0]
    out = torch.full((n, 2), -1, dtype=torch.long)
    palette = torch.tensor(list(COLOURS.values()))
    dirs = torch.tensor(list(DIRECTIONS.values()), dtype=torch.float32)
    ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                            indexing="ij")
    for i in range(n):
        v = clips[i].float().clamp(-1, 1)
        bright = v.amax(dim=0) > 0  # [T, H, W]
        if bright.sum() < 4:
            continue
        rgb = v.permute(1, 2, 3, 0)[bright].mean(0)
        out[i, 0] = (palette - rgb).pow(2).sum(1).argmin()
        counts = bright.sum(dim=(1, 2)).float()
        if (counts == 0).any():
            continue
        cy = (bright * ys).sum(dim=(1, 2)) / counts
        cx = (bright * xs).sum(dim=(1, 2)) / counts
        motion = torch.stack([cy.diff().mean(), cx.diff().mean()])
        out[i, 1] = (dirs @ motion).argmax()
    return out
