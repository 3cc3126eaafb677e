"""Image metrics the library reports in its records (light: imports no torch itself)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between images in [0, 1]; identical images give 200 dB (the MSE is floored at 1e-20), so a record
    holding it stays finite, strict JSON."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-20))
