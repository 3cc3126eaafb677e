"""The toy world's captioner (``--captioner toy``, the toy model's default): it reads a toy photo with the toy model's
own CLIP (``clip:toy``, the DATE objective's; never the held-out CLIP that evaluates, never the judge) by retrieval
over the world's caption grammar: every scene of one to three objects, each caption in canonical order."""

from __future__ import annotations

import itertools
from typing import Optional

import torch

from . import world


def candidate_captions(max_objects: int = 3) -> list[str]:
    """Every canonical caption of a scene of 1..``max_objects`` objects (repeats allowed): 15 + 120 + 680."""
    objects = [(c, s) for c in world.COLOURS for s in world.SHAPES]
    out = []
    for n in range(1, max_objects + 1):
        out += [world.prompt_for(list(combo)) for combo in itertools.combinations_with_replacement(objects, n)]
    return list(dict.fromkeys(out))


class ToyCaptioner:
    """Caption toy photos with the toy CLIP: the candidate caption whose text embedding is nearest the image's.

    Args:
        device: where the CLIP runs.
        variant: unused (the toy world has one captioner); accepted so ``toy:`` specs parse alike.
        clip: a built CLIP scorer to use instead of ``clip:toy`` (tests).
    """

    name = "toy"

    def __init__(self, device="cpu", variant: str = "", clip=None) -> None:
        if clip is None:
            from ..errors import CaptionerError, ScorerError
            from ..scorers.clip import load_clip

            try:
                clip = load_clip("toy", device=torch.device(device))
            except ScorerError as exc:
                raise CaptionerError(f"captioner toy: {exc}; --source-prompt TEXT or none avoids captioning") \
                    from None
        self.clip = clip
        self.captions = candidate_captions()
        self._text: Optional[torch.Tensor] = None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[str]:
        """One caption per image of ``(B, 3, H, W)`` in [0, 1]."""
        if self._text is None:
            self._text = torch.cat([self.clip.text_features(self.captions[i:i + 256])
                                    for i in range(0, len(self.captions), 256)])
        feats = self.clip.image_features(images.float().clamp(0, 1))
        best = (feats @ self._text.to(feats.device).T).argmax(dim=-1)
        return [self.captions[int(i)] for i in best]
