"""``min-concept``: the smallest per-concept CLIP similarity of a multi-concept prompt (a DATE objective).

Variants are the CLIP variants: ``min-concept`` (ViT-L/14), ``min-concept:tiny``, ``min-concept:toy``.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import torch

from .base import ScorerInfo


def split_concepts(prompt: str) -> list[str]:
    """``"a cat and a red ball"`` -> ``["a cat", "a red ball"]`` (split on " and " / " with ")."""
    parts = [p.strip() for p in re.split(r"\s+(?:and|with)\s+", prompt.strip()) if p.strip()]
    return parts or [prompt.strip()]


class MinConceptScorer:
    """DATE objective for multi-concept prompts: the smallest per-concept CLIP similarity (differentiable)."""

    differentiable = True

    def __init__(self, clip_scorer, name: str = "min-concept") -> None:
        self.clip = clip_scorer
        self.name = name

    def to(self, device) -> "MinConceptScorer":
        """Move the underlying CLIP."""
        self.clip.to(device)
        return self

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``min_k cos(image, concept_k)`` per image, ``(B,)``."""
        feats = self.clip.image_features(images)
        scores = []
        for i, prompt in enumerate(prompts):
            text = self.clip.text_features(split_concepts(prompt))  # (K, P)
            scores.append((text @ feats[i]).min())
        return torch.stack(scores)


def load_min_concept(variant: Optional[str] = None, *, device=torch.device("cpu"), dtype=torch.float32):
    """Build the min-concept objective on the CLIP that ``variant`` names."""
    from .clip import load_clip

    clip = load_clip(variant, device=device, dtype=dtype)
    return MinConceptScorer(clip, name="min-concept" + (f":{variant}" if variant else ""))


# what `date-edit scorers` lists; the registry registers it (this module imports nothing from the registry)
INFO = ScorerInfo(name="min-concept", factory=load_min_concept, differentiable=True,
                  backend="transformers CLIPModel (min over ' and '/' with ' concepts)",
                  default_weights="openai/clip-vit-large-patch14")
