"""Fidelity of cached samples against uncached ones from the same noise: PSNR and SSIM (scikit-image) and a
temporal consistency score. Videos are [B, C, T, H, W] in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch


def _frames(video: torch.Tensor) -> np.ndarray:
    """[B, C, T, H, W] -> [B*T, H, W, C] float64 numpy, clipped to [-1, 1]."""
    v = video.detach().float().clamp(-1, 1).permute(0, 2, 3, 4, 1)
    return v.reshape(-1, *v.shape[2:]).cpu().double().numpy()


def psnr(test: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean per-frame PSNR in dB (data range 2); identical frames count as 100 dB."""
    from skimage.metrics import peak_signal_noise_ratio

    vals = []
    for a, b in zip(_frames(test), _frames(ref)):
        vals.append(100.0 if np.array_equal(a, b) else peak_signal_noise_ratio(b, a, data_range=2.0))
    return float(np.mean(vals))


def ssim(test: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean per-frame SSIM (7x7 windows, or smaller for tiny frames)."""
    from skimage.metrics import structural_similarity

    a_all, b_all = _frames(test), _frames(ref)
    win = min(7, a_all.shape[1], a_all.shape[2])
    win -= 1 - win % 2  # odd
    return float(np.mean([structural_similarity(b, a, data_range=2.0, channel_axis=-1, win_size=win)
                          for a, b in zip(a_all, b_all)]))


def temporal_consistency(test: torch.Tensor, ref: torch.Tensor) -> float:
    """1 - |D(test) - D(ref)|_1 / |D(ref)|_1 with D the frame-to-frame differences: 1 when the cached video moves
    exactly as the uncached one, lower when caching adds flicker or loses motion."""
    d_test = test.float().diff(dim=2)
    d_ref = ref.float().diff(dim=2)
    den = d_ref.abs().sum().item()
    num = (d_test - d_ref).abs().sum().item()
    if den == 0:
        return 1.0 if num == 0 else 0.0
    return 1.0 - num / den
