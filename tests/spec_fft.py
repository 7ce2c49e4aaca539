"""The reference CFG-Cache path of docs/algorithms.md section 2, written out as the FasterCache reference code does
it: the tests' independent oracle for cfg_residual_split and cfg_recombine(_guided)."""

import torch


def spec_radius(h: int, w: int, divisor: int = 5) -> int:
    return min(h, w) // divisor


def spec_mask(h: int, w: int, r: int) -> torch.Tensor:
    # meshgrid 'ij' over (H, W): Y runs over H, X over W; centre (W // 2, H // 2)
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((x - w // 2) ** 2 + (y - h // 2) ** 2 <= r**2).float()


def spec_split(y: torch.Tensor, divisor: int = 5):
    """(LF, HF) of one branch output: S = fftshift(fft2(y)) shifted over all dims, LF = S*M, HF = S*(1-M)."""
    h, w = y.shape[-2:]
    s = torch.fft.fftshift(torch.fft.fft2(y.float()))
    m = spec_mask(h, w, spec_radius(h, w, divisor))
    return s * m, s * (1 - m)


def spec_deltas(other: torch.Tensor, computed: torch.Tensor, divisor: int = 5):
    """Full call: dLF = LF(other) - LF(computed), dHF = HF(other) - HF(computed) (complex)."""
    lo, ho = spec_split(other, divisor)
    lc, hc = spec_split(computed, divisor)
    return lo - lc, ho - hc


def spec_to_space(s: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifft2(torch.fft.ifftshift(s)).real


def spec_reconstruct(computed: torch.Tensor, d_lf, d_hf, a: float, b: float, divisor: int = 5) -> torch.Tensor:
    """Skip call: other = real(ifft2(ifftshift(LF(c) + a*dLF + HF(c) + b*dHF)))."""
    lc, hc = spec_split(computed, divisor)
    return spec_to_space(lc + a * d_lf + hc + b * d_hf)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref|."""
    return ((out.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
