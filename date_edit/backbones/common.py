"""Helpers every backbone module shares: device and dtype names, and freezing."""

from __future__ import annotations

import torch

from ..choices import DTYPE_NAMES
from ..errors import BackboneError, ConfigError
from ..limits import check_device

DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.float16, torch.bfloat16)))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU, or a name that is no device, is a clear
    error (:class:`BackboneError`) before any weights load."""
    if isinstance(device, torch.device):
        return device
    try:
        device = check_device(device)
    except ValueError as e:
        raise BackboneError(str(e)) from None
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackboneError("device cuda was asked for but no CUDA GPU is visible; use cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``fp32|fp16|bf16`` -> torch dtype; fp16 on CPU is refused (many CPU kernels lack it)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError("dtype", f"{dtype!r} is unknown: use one of {', '.join(DTYPES)}")
    if dtype == "fp16" and device.type == "cpu":
        raise ConfigError("dtype", "fp16 needs a GPU; on the CPU use fp32 or bf16")
    return DTYPES[dtype]


def freeze(*modules: torch.nn.Module) -> None:
    """Eval mode and no gradients for the weights (DATE differentiates with respect to the condition only)."""
    for m in modules:
        m.eval().requires_grad_(False)
