"""``min-concept``: the smallest per-concept CLIP similarity of a multi-concept prompt (a DATE objective).

Variants are the CLIP variants: ``min-concept`` (ViT-L/14), ``min-concept:tiny``, ``min-concept:toy``.
"""

from __future__ import annotations

from typing import Optional

import torch

from .base import ScorerInfo


def load_min_concept(variant: Optional[str] = None, *, device=torch.device("cpu"), dtype=torch.float32):
    """Build the min-concept objective on the CLIP that ``variant`` names."""
    from ..multiconcept import MinConceptScorer
    from .clip import load_clip

    clip = load_clip(variant, device=device, dtype=dtype)
    return MinConceptScorer(clip, name="min-concept" + (f":{variant}" if variant else ""))


# what `date-edit scorers` lists; the registry registers it (this module imports nothing from the registry)
INFO = ScorerInfo(name="min-concept", factory=load_min_concept, differentiable=True,
                  backend="transformers CLIPModel (min over ' and '/' with ' concepts)",
                  default_weights="openai/clip-vit-large-patch14")
