"""Differentiable tensor versions of the models' own PIL preprocessing."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_shorter(images: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Resize ``(B, 3, H, W)`` so the shorter side is ``size`` (antialiased, like PIL), keeping aspect."""
    h, w = images.shape[-2:]
    if min(h, w) == size:
        return images
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    return F.interpolate(images, size=(new_h, new_w), mode=mode, antialias=True, align_corners=False)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop ``(B, 3, H, W)`` to ``size x size`` (the offset rounding of torchvision/transformers)."""
    h, w = images.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel."""
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - m) / s


def clip_preprocess(
    images: torch.Tensor, size: int = 224, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> torch.Tensor:
    """CLIP's preprocessing on tensors in [0, 1]: shorter side to ``size`` (bicubic), centre crop, normalise."""
    return normalize(center_crop(resize_shorter(images.float(), size), size), mean, std)
