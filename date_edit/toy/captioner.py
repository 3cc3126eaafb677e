"""The toy world's captioner (``--captioner toy``, the toy model's default): it reads a toy photo with the toy model's
own CLIP (``clip:toy``, the DATE objective's; never the held-out CLIP that evaluates, never the judge) by retrieval
over the world's caption grammar: every scene of one to three objects, repeats included, each caption in canonical
order (15 + 120 + 680 captions).

Plain retrieval (the one caption nearest the photo) got 92% of the val split's two-object photos exactly right; its
errors were mostly an extra copy of an object ("a red square, a red square and a green triangle") and shape slips.
The search here, chosen on the val split (``python -m benchmarks.studies.toy_captioner``,
benchmarks/results/toy_captioner.md), scores every caption against ten views of the photo (as it is, shifted
:data:`SHIFT` px left, right, up and down, and each mirrored left-right: the toy CLIP reads a scene a pixel or two
off differently, the world's shapes are left-right symmetric) and takes the best mean score after a small prior for
fewer objects (:data:`EXTRA_OBJECT_PENALTY` per object past the first, :data:`REPEAT_PENALTY` for a caption that
names one object twice), since the CLIP barely tells "a red square" from "a red square and a red square".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from . import world

SHIFT = 2  # px at the CLIP's input size (64): the views' offset
EXTRA_OBJECT_PENALTY = 0.01  # cosine subtracted per object past the first
REPEAT_PENALTY = 0.02  # cosine subtracted when a caption names one (colour, shape) twice
MAX_OBJECTS = 3


@dataclass(frozen=True)
class Candidate:
    """One caption of the grammar: its text, how many objects it names, and whether one of them repeats."""

    caption: str
    objects: int
    repeats: bool


def candidates(max_objects: int = MAX_OBJECTS) -> list[Candidate]:
    """Every canonical caption of a scene of 1..``max_objects`` objects, repeats allowed (15 + 120 + 680), as
    :class:`Candidate` s: two objects of one colour or one shape, and two identical objects, are scenes
    ``world.random_scene`` makes."""
    objects = [(c, s) for c in world.COLOURS for s in world.SHAPES]
    out = []
    for n in range(1, max_objects + 1):
        out += [Candidate(world.prompt_for(list(combo)), n, len(set(combo)) < n)
                for combo in itertools.combinations_with_replacement(objects, n)]
    return out


def candidate_captions(max_objects: int = MAX_OBJECTS) -> list[str]:
    """The captions of :func:`candidates`."""
    return [c.caption for c in candidates(max_objects)]


def views(images: torch.Tensor, shift: int = SHIFT) -> torch.Tensor:
    """``(B, 3, S, S)`` -> ``(10, B, 3, S, S)``: the images as they are and shifted ``shift`` px right, left, down
    and up (edge pixels repeated into the gap), then the same five mirrored left-right."""
    s = int(shift)
    padded = F.pad(images, (s, s, s, s), mode="replicate")
    size_h, size_w = images.shape[-2:]
    crops = [padded[..., s + dy:s + dy + size_h, s + dx:s + dx + size_w]
             for dx, dy in ((0, 0), (-s, 0), (s, 0), (0, -s), (0, s))]
    out = torch.stack(crops)
    return torch.cat([out, out.flip(-1)])


class ToyCaptioner:
    """Caption toy photos with the toy CLIP: the caption of the grammar with the best mean cosine over ten shifted
    and mirrored views of the photo, less a small prior for more objects and for repeated ones (module docstring).

    Args:
        device: where the CLIP runs.
        variant: unused (the toy world has one captioner); accepted so ``toy:`` specs parse alike.
        clip: a built CLIP scorer to use instead of ``clip:toy`` (tests).
    """

    name = "toy"

    def __init__(self, device="cpu", variant: str = "", clip=None) -> None:
        if clip is None:
            from ..captioning import AVOID
            from ..errors import CaptionerError, ScorerError
            from ..scorers.clip import load_clip

            try:
                clip = load_clip("toy", device=torch.device(device))
            except ScorerError as exc:
                raise CaptionerError(f"captioner toy: {exc}; {AVOID}") from None
        self.clip = clip
        found = candidates()
        self.captions = [c.caption for c in found]
        self.prior = torch.tensor([-EXTRA_OBJECT_PENALTY * (c.objects - 1) - REPEAT_PENALTY * c.repeats
                                   for c in found])
        self._text: Optional[torch.Tensor] = None

    def text_features(self) -> torch.Tensor:
        """The candidates' normalised text embeddings ``(N, P)`` (computed once, about 3 s on a CPU)."""
        if self._text is None:
            self._text = torch.cat([self.clip.text_features(self.captions[i:i + 256])
                                    for i in range(0, len(self.captions), 256)])
        return self._text

    @torch.no_grad()
    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, N)``: each candidate caption's mean cosine over the views of each image, plus the prior."""
        from ..scorers.preprocess import center_crop, resize_shorter

        size = int(self.clip.image_size)
        x = center_crop(resize_shorter(images.float().clamp(0, 1), size), size)  # as the scorer resizes
        shift = max(1, round(SHIFT * size / world.IMAGE_SIZE))
        stack = views(x, shift)  # (V, B, 3, S, S)
        n_views, batch = stack.shape[:2]
        feats = self.clip.image_features(stack.reshape(n_views * batch, *stack.shape[2:]))
        text = self.text_features().to(feats.device)
        sims = (feats @ text.T).reshape(n_views, batch, -1).mean(dim=0)
        return sims + self.prior.to(sims.device)

    def __call__(self, images: torch.Tensor) -> list[str]:
        """One caption per image of ``(B, 3, H, W)`` in [0, 1] (any size: resized to the CLIP's input as the
        scorer does)."""
        best = self.scores(images).argmax(dim=-1)
        return [self.captions[int(i)] for i in best]
