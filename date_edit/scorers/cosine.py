"""The base of CLIP-like scorers (transformers and open_clip backends alike): the cosine of L2-normalised image
and text embeddings, text features cached per prompt tuple."""

from __future__ import annotations

from typing import Sequence

import torch

from .preprocess import clip_preprocess


class CosineScorer:
    """Base of CLIP-like scorers: cosine of L2-normalised image and (cached) text embeddings.

    Subclasses set ``model``, ``tokenizer``, ``name``, ``image_size``, ``mean``, ``std`` and implement
    ``_encode_text(prompts) -> (B, P)`` and ``_encode_image(pixels) -> (B, P)`` (pixels already preprocessed).
    """

    differentiable = True
    model: torch.nn.Module
    image_size: int
    mean: tuple
    std: tuple

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return next(self.model.parameters()).device

    def to(self, device) -> "CosineScorer":
        """Move the model (and drop cached text features)."""
        self.model.to(device)
        self._text_cache.clear()
        return self

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``(B, P)``; cached per prompt tuple."""
        key = tuple(prompts)
        if key not in self._text_cache:
            feats = self._encode_text(list(prompts)).float()
            self._text_cache[key] = feats / feats.norm(dim=-1, keepdim=True)
        return self._text_cache[key]

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings ``(B, P)`` of ``(B, 3, H, W)`` images in [0, 1]; differentiable."""
        pixels = clip_preprocess(images.to(self.device), self.image_size, self.mean, self.std)
        dtype = next(self.model.parameters()).dtype
        feats = self._encode_image(pixels.to(dtype)).float()
        return feats / feats.norm(dim=-1, keepdim=True)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity per image, ``(B,)`` in [-1, 1]."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
        return (self.image_features(images) * self.text_features(prompts)).sum(dim=-1)

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def _encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
