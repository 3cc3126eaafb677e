"""Stable Diffusion 1.x/2.x: one CLIP text encoder, its last hidden state as the only condition."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import torch

from ..conditioning import Conditioning
from .base import Backbone, PromptTruncatedWarning


def tokenize(tokenizer, prompts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
    """Token ids ``(B, 77)`` padded to the tokenizer's length, and per prompt whether it was truncated."""
    limit = tokenizer.model_max_length
    full = tokenizer(list(prompts), padding=False, truncation=False).input_ids
    truncated = [len(ids) > limit for ids in full]
    ids = tokenizer(list(prompts), padding="max_length", max_length=limit, truncation=True, return_tensors="pt")
    return ids.input_ids, truncated


def warn_truncated(prompts: Sequence[str], truncated: Sequence[bool], limit: int) -> None:
    """One :class:`PromptTruncatedWarning` per prompt the tokenizer cut."""
    for prompt, cut in zip(prompts, truncated):
        if cut:
            warnings.warn(f"prompt truncated to {limit} tokens: {prompt[:60]!r}...", PromptTruncatedWarning,
                          stacklevel=3)


def clip_states(pairs: Sequence[tuple], prompts: Sequence[str], device) -> tuple[list, list]:
    """For each ``(tokenizer, CLIP text encoder)``: the penultimate hidden state ``(B, 77, D)`` and the first output
    (``text_embeds`` of a projected encoder, else the last hidden state), float32, as SDXL's and SD3's pipelines
    take them (clip_skip None). A prompt the first tokenizer cuts is warned about once."""
    hidden, first = [], []
    for k, (tokenizer, encoder) in enumerate(pairs):
        ids, truncated = tokenize(tokenizer, prompts)
        if k == 0:
            warn_truncated(prompts, truncated, tokenizer.model_max_length)
        out = encoder(ids.to(device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2].float())
        first.append(out[0].float())
    return hidden, first


@dataclass
class StableDiffusion(Backbone):
    """SD 1.x/2.x: the condition is the text encoder's last hidden state ``(B, 77, D)`` (``tokens``)."""

    family: ClassVar[str] = "sd"
    component_names: ClassVar[tuple[str, ...]] = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
    pipeline_classes: ClassVar[tuple[str, ...]] = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
    folder_classes: ClassVar[dict] = {
        "unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
        "text_encoder": ("transformers", "CLIPTextModel"), "tokenizer": ("transformers", "CLIPTokenizer"),
        "scheduler": ("diffusers", "DDIMScheduler"),
    }
    single_file_options: ClassVar[dict] = {"safety_checker": None}
    index_extras: ClassVar[dict] = {"requires_safety_checker": False, "safety_checker": (None, None),
                                    "feature_extractor": (None, None)}

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
        """Token ids ``(B, 77)`` padded to the tokenizer's length, and per prompt whether it was truncated."""
        return tokenize(self.tokenizer, prompts)

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``(B, 77, D)`` in float32 (the last hidden state, as SD conditions on)."""
        ids, truncated = self.tokenize(prompts)
        warn_truncated(prompts, truncated, self.tokenizer.model_max_length)
        return self.text_encoder(ids.to(self.device))[0].float()

    def encode_condition(self, prompts: Sequence[str], *, size: Optional[tuple[int, int]] = None) -> Conditioning:
        """``Conditioning({"tokens": encode_prompt(prompts)})``; ``size`` plays no part in SD's condition."""
        return Conditioning({"tokens": self.encode_prompt(prompts)})

    def unconditional(self, batch: int, *, size: Optional[tuple[int, int]] = None) -> Conditioning:
        """The empty prompt encoded, as SD's pipelines do."""
        return self.encode_condition([""] * batch)

    def unet_inputs(self, cond: Conditioning, latent_shape: Optional[tuple] = None) -> dict:
        """``encoder_hidden_states``: the ``tokens`` tensor."""
        return {"encoder_hidden_states": cond["tokens"].to(self.device, self.dtype)}
