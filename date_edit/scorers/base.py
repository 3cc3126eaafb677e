"""The scorer contract: a differentiable (or not) image-text score, higher is better."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import torch

from ..errors import ScorerError  # noqa: F401  (re-exported: defined with the other library errors)


@runtime_checkable
class Scorer(Protocol):
    """An image-text score.

    Attributes:
        name: the registry name it was built from, e.g. ``"clip"`` or ``"clip:tiny"``.
        differentiable: whether gradients flow from the score back to ``images``.

    Call:
        images: ``[B, 3, H, W]`` float tensor with values in ``[0, 1]`` (any size; the scorer
            resizes, crops and normalises differentiably itself).
        prompts: ``B`` strings, one per image.
        returns: ``[B]`` float tensor, higher is better.
    """

    name: str
    differentiable: bool

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor: ...

    def to(self, device: torch.device | str) -> "Scorer": ...


@dataclass(frozen=True)
class ScorerInfo:
    """What ``date-edit scorers`` lists about a registered scorer."""

    name: str
    factory: Callable[..., Scorer]  # (variant: str | None, device, dtype) -> Scorer
    differentiable: bool
    backend: str
    default_weights: str
    cached: Callable[[], Optional[bool]] = lambda: None  # whether the default weights are already local
