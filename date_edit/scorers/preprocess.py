"""Differentiable tensor versions of the models' own PIL preprocessing."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """Forward: clamp to [0, 1] and round to the 8-bit grid; backward: identity (a straight-through estimator)."""
    q = (images.clamp(0, 1) * 255).round() / 255
    return images + (q - images).detach()


def resize_shorter(images: torch.Tensor, size: int, mode: str = "bicubic", pil_rounding: bool = True) -> torch.Tensor:
    """Resize ``(B, 3, H, W)`` in [0, 1] so the shorter side is ``size``, keeping aspect, the way PIL does.

    PIL's antialiased bicubic on an 8-bit image (torchvision ``Resize`` on a PIL image, and the uint8 path
    transformers' CLIP processor takes) resizes the width, rounds and clips to 8 bits, then the height, and rounds
    again. With ``pil_rounding`` the same happens here, straight-through (the gradient ignores the rounding), and
    the input is put on the 8-bit grid first, so a float image scores exactly as its saved PNG would. Measured on
    the sample photos, 99.99% of the pixels then equal PIL's; one 2-D pass without rounding differs by up to
    14/255 at sharp edges (1/255 with the clipping alone).
    """
    out = quantize_8bit(images) if pil_rounding else images
    h, w = images.shape[-2:]
    if min(h, w) == size:
        return out
    # the longer side is truncated, as torchvision's Resize(int) and transformers' shortest_edge resize do
    # (round() would give e.g. 337 instead of 336 for 300x451 -> 224 and shift the centre crop by a pixel)
    new_h, new_w = (size, max(size, int(size * w / h))) if h <= w else (max(size, int(size * h / w)), size)
    for target in ((h, new_w), (new_h, new_w)):  # width first, then height, as PIL
        if target == tuple(out.shape[-2:]):
            continue
        out = F.interpolate(out, size=target, mode=mode, antialias=True, align_corners=False)
        out = quantize_8bit(out) if pil_rounding else out.clamp(0, 1)
    return out


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


_REFERENCE_GRAD_PASS = contextvars.ContextVar("date_edit_reference_grad_pass", default=False)


@contextlib.contextmanager
def reference_grad_preprocessing(enabled: bool = True) -> Iterator[None]:
    """Within this block :func:`clip_preprocess` does what DATE's reference implementation does in its gradient
    pass (aailab-kaist/DATE: ``transforms.Resize((224, 224))`` on the float tensor, then normalise): a bilinear,
    non-antialiased resize straight to ``size x size``, with no 8-bit rounding, no clamp and no crop.

    Scorers keep the PIL-faithful path everywhere else, so a score reported as a metric equals the score of
    the saved PNG; only the embedding update sees the reference's preprocessing.
    """
    token = _REFERENCE_GRAD_PASS.set(enabled)
    try:
        yield
    finally:
        _REFERENCE_GRAD_PASS.reset(token)


def clip_preprocess(
    images: torch.Tensor, size: int = 224, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> torch.Tensor:
    """CLIP's preprocessing on tensors in [0, 1]: shorter side to ``size`` (bicubic), centre crop, normalise.

    Inside :func:`reference_grad_preprocessing`: bilinear resize to ``size x size``, unclamped, then normalise.
    """
    if _REFERENCE_GRAD_PASS.get():
        x = images.float()
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=False, align_corners=False)
        return normalize(x, mean, std)
    return normalize(center_crop(resize_shorter(images.float(), size), size), mean, std)
