"""SDXL: two CLIP text encoders, a pooled vector and the size conditioning ``time_ids``.

As diffusers' ``StableDiffusionXLPipeline`` builds it (clip_skip None): ``tokens`` ``(B, 77, 2048)`` is the
penultimate hidden state of CLIP-L (768) and of OpenCLIP-bigG (1280) joined on the feature axis; ``pooled``
``(B, 1280)`` is the second encoder's projected output; ``time_ids`` ``(B, 6)`` is (original height, width,
crop top, left, target height, width), here (H, W, 0, 0, H, W) of the output. The unconditional branch is zeros
for both tensors when the model's ``force_zeros_for_empty_prompt`` is set (SDXL base's default), else the empty
prompt encoded. DATE may move ``tokens`` and ``pooled``; ``time_ids`` never moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import torch

from ..conditioning import Conditioning
from .base import Backbone
from .sd import StableDiffusion, clip_states


@dataclass
class StableDiffusionXL(Backbone):
    """SDXL (base): see the module docstring for the condition it builds.

    Attributes:
        text_encoder_2 / tokenizer_2: the second (OpenCLIP-bigG-style, with projection) text encoder and its
            tokenizer.
        force_zeros_for_empty_prompt: the unconditional branch is zeros (the pipeline's config flag).
    """

    text_encoder_2: Optional[torch.nn.Module] = None
    tokenizer_2: object = None
    force_zeros_for_empty_prompt: bool = True

    family: ClassVar[str] = "sdxl"
    taesd_id: ClassVar[str] = "madebyollin/taesdxl"
    upcast_fp16_vae: ClassVar[bool] = True  # as diffusers' SDXL pipeline decodes
    component_names: ClassVar[tuple[str, ...]] = ("unet", "vae", "text_encoder", "tokenizer", "text_encoder_2",
                                                  "tokenizer_2", "scheduler")
    marks: ClassVar[tuple[str, ...]] = ("text_encoder_2",)
    checkpoint_marks: ClassVar[tuple[str, ...]] = ("conditioner.embedders.1.",)  # the second text encoder
    mark_rank: ClassVar[int] = 1
    pipeline_classes: ClassVar[tuple[str, ...]] = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline")
    folder_classes: ClassVar[dict] = StableDiffusion.folder_classes | {
        "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
        "tokenizer_2": ("transformers", "CLIPTokenizer"),
    }
    index_extras: ClassVar[dict] = {"force_zeros_for_empty_prompt": True, "feature_extractor": (None, None)}

    @classmethod
    def family_settings(cls, **settings) -> dict:
        """SDXL's unconditional branch is zeros unless the model says otherwise."""
        return {"force_zeros_for_empty_prompt": settings.get("force_zeros_for_empty_prompt", True)}

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        """Both text encoders."""
        return [self.text_encoder, self.text_encoder_2]

    def _size(self, size: Optional[tuple[int, int]]) -> tuple[int, int]:
        return (int(size[0]), int(size[1])) if size else (self.native_size, self.native_size)

    def time_ids(self, batch: int, size: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """``(B, 6)`` float32: (H, W, 0, 0, H, W) for output images of ``size`` (None: the native size)."""
        h, w = self._size(size)
        row = torch.tensor([h, w, 0, 0, h, w], dtype=torch.float32, device=self.device)
        return row.expand(batch, 6).clone()

    @torch.no_grad()
    def encode_condition(self, prompts: Sequence[str], *, size: Optional[tuple[int, int]] = None) -> Conditioning:
        """``tokens`` ``(B, 77, D1 + D2)``, ``pooled`` ``(B, P)`` and the ``time_ids`` extra, float32."""
        pairs = ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2))
        hidden, outputs = clip_states(pairs, prompts, self.device)
        pooled = outputs[-1]  # the second encoder's projected pooled output (text_embeds)
        return Conditioning({"tokens": torch.cat(hidden, dim=-1), "pooled": pooled},
                            {"time_ids": self.time_ids(len(prompts), size)})

    def unconditional(self, batch: int, *, size: Optional[tuple[int, int]] = None) -> Conditioning:
        """Zeros for ``tokens`` and ``pooled`` (``force_zeros_for_empty_prompt``), else the empty prompt."""
        if not self.force_zeros_for_empty_prompt:
            return self.encode_condition([""] * batch, size=size)
        length = int(self.tokenizer.model_max_length)
        tokens = torch.zeros(batch, length, int(self.unet.config.cross_attention_dim), device=self.device)
        pooled = torch.zeros(batch, int(self.text_encoder_2.config.projection_dim), device=self.device)
        return Conditioning({"tokens": tokens, "pooled": pooled}, {"time_ids": self.time_ids(batch, size)})

    def unet_inputs(self, cond: Conditioning, latent_shape: Optional[tuple] = None) -> dict:
        """``encoder_hidden_states`` and ``added_cond_kwargs`` (``text_embeds``, ``time_ids``)."""
        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(self.device, self.dtype)

        return {"encoder_hidden_states": cast(cond["tokens"]),
                "added_cond_kwargs": {"text_embeds": cast(cond["pooled"]), "time_ids": cast(cond["time_ids"])}}
