import torch
from torch import Tensor


def radius(height: int, width: int, radius_divisor: int = 5) -> int:
    """FasterCache's low-frequency radius: min(H, W) // radius_divisor (64x64 -> 12, 60x90 -> 12, 60x106 -> 12)."""
    return min(height, width) // radius_divisor


def shifted_mask(height: int, width: int, r: int, device=None) -> Tensor:
    """The reference's low-pass mask on the fftshift-ed spectrum, [H, W] bool.

    `Y, X = meshgrid(arange(H), arange(W), indexing="ij")`: Y runs over H (dim -2), X over W (dim -1), and the
    centre (H // 2, W // 2) is where fftshift puts frequency 0; M = (X - W // 2)^2 + (Y - H // 2)^2 <= r^2.
    """
    y, x = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return (x - width // 2) ** 2 + (y - height // 2) ** 2 <= r * r


def lowpass(residual: Tensor, r: int) -> Tensor:
    """real(ifft2(ifftshift(M * fftshift(fft2(R))))) over the last two dims, fp32."""
    h, w = residual.shape[-2:]
    dims = (-2, -1)
    spec = torch.fft.fftshift(torch.fft.fft2(residual.float()), dim=dims)
    spec = spec * shifted_mask(h, w, r, residual.device)
    return torch.fft.ifft2(torch.fft.ifftshift(spec, dim=dims)).real


def cfg_residual_split(other: Tensor, computed: Tensor, radius_divisor: int = 5, storage_dtype=None):
    """(low, high): R = other - computed in fp32, low = the reference low-pass of R, high = R - low; both in
    storage_dtype (default other's dtype)."""
    dtype = other.dtype if storage_dtype is None else storage_dtype
    res = other.float() - computed.float()
    if res.numel() == 0:
        return res.to(dtype), res.to(dtype)
    low = lowpass(res, radius(*res.shape[-2:], radius_divisor))
    return low.to(dtype), (res - low).to(dtype)
