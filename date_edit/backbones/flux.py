"""FLUX.1 (dev and schnell): a rectified-flow transformer on 2x2-packed latents, conditioned on T5 tokens and the
pooled CLIP-L output.

As diffusers' ``FluxPipeline`` builds it: ``tokens`` ``(B, 512, 4096)`` is T5's last hidden state (its default
``max_sequence_length`` 512), ``pooled`` ``(B, 768)`` is CLIP-L's ``pooler_output`` (not projected).
FLUX-dev is guidance-distilled: no unconditional branch; the guidance scale goes into the model as the extra
``guidance`` ``(B,)`` (one forward per step, so DATE's gradient pass is one forward and one backward). schnell has
no guidance input. The latents stay image-shaped ``(B, 16, h, w)`` outside; :meth:`Flux.pack` makes the
``(B, h/2 * w/2, 64)`` patch sequence the transformer takes, with its position ids. ``txt_ids``, ``img_ids`` and
``guidance`` are never moved by DATE. The transformer takes ``timestep = sigma``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import torch

from ..conditioning import Conditioning
from .base import Backbone
from .family import FlowMatchingTraits
from .sd import tokenize, warn_truncated


@dataclass
class Flux(FlowMatchingTraits, Backbone):
    """FLUX.1: see the module docstring. ``text_encoder``/``tokenizer`` are CLIP-L's, ``text_encoder_2``/
    ``tokenizer_2`` T5's (diffusers' names)."""

    text_encoder_2: Optional[torch.nn.Module] = None
    tokenizer_2: object = None
    t5_length: int = 512  # diffusers' max_sequence_length default (schnell was trained with 256)

    family: ClassVar[str] = "flux"
    component_names: ClassVar[tuple[str, ...]] = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2",
                                                  "tokenizer_2", "scheduler")
    marks: ClassVar[tuple[str, ...]] = ("transformer",)
    checkpoint_marks: ClassVar[tuple[str, ...]] = ("double_blocks.",)
    mark_rank: ClassVar[int] = 2  # its components hold SDXL's mark
    pipeline_classes: ClassVar[tuple[str, ...]] = ("FluxPipeline", "FluxImg2ImgPipeline")

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        """CLIP-L and T5."""
        return [self.text_encoder, self.text_encoder_2]

    @property
    def guidance_embeds(self) -> bool:
        """True for FLUX-dev (the guidance scale is a model input), False for schnell."""
        return bool(getattr(self.unet.config, "guidance_embeds", False))

    @property
    def size_multiple(self) -> int:
        """VAE factor times 2 (the 2x2 patches)."""
        return self.vae_scale_factor * 2

    @property
    def min_side(self) -> int:
        """One patch."""
        return self.size_multiple

    @property
    def latent_channels(self) -> int:
        """The VAE's latent channels (16); the transformer sees 4 times as many per packed patch."""
        return int(self.vae.config.latent_channels)

    def model_timestep(self, t, batch: int) -> torch.Tensor:
        """``sigma`` (diffusers passes ``t / 1000``) in the compute dtype."""
        return torch.full((batch,), float(t) / 1000.0, device=self.device, dtype=self.dtype)

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, h/2 * w/2, 4C)``: 2x2 patches, row-major, as diffusers packs them."""
        b, c, h, w = latents.shape
        x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // 2) * (w // 2), c * 4)

    def unpack(self, out: torch.Tensor, shape: tuple) -> torch.Tensor:
        """The inverse of :meth:`pack`."""
        b, c, h, w = shape
        x = out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, h, w)

    @torch.no_grad()
    def encode_condition(self, prompts: Sequence[str], *, size: Optional[tuple[int, int]] = None) -> Conditioning:
        """``tokens`` ``(B, L_T5, D_T5)`` and ``pooled`` ``(B, 768)``, float32; ``size`` plays no part."""
        ids, truncated = tokenize(self.tokenizer, prompts)
        warn_truncated(prompts, truncated, self.tokenizer.model_max_length)
        pooled = self.text_encoder(ids.to(self.device), output_hidden_states=False).pooler_output.float()
        t5_ids = self.tokenizer_2(list(prompts), padding="max_length", max_length=self.t5_length, truncation=True,
                                  add_special_tokens=True, return_tensors="pt").input_ids
        tokens = self.text_encoder_2(t5_ids.to(self.device), output_hidden_states=False)[0].float()
        return Conditioning({"tokens": tokens, "pooled": pooled})

    def unconditional(self, batch: int, *, size: Optional[tuple[int, int]] = None) -> Conditioning:
        """The empty prompt encoded (what an empty source prompt conditions on; FLUX guides without it)."""
        return self.encode_condition([""] * batch, size=size)

    def guidance(self, cond: Conditioning, uncond: Optional[Conditioning],
                 scale: float) -> tuple[Conditioning, Optional[Conditioning], float]:
        """No unconditional branch: dev takes ``scale`` as its ``guidance`` input, schnell ignores it."""
        if self.guidance_embeds:
            cond = cond.with_extras(guidance=torch.full((cond.batch_size,), float(scale), device=self.device))
        return cond, None, 1.0

    def unet_inputs(self, cond: Conditioning, latent_shape: Optional[tuple] = None) -> dict:
        """``encoder_hidden_states``, ``pooled_projections``, ``txt_ids``, ``img_ids`` and (dev) ``guidance``."""
        _, _, h, w = latent_shape
        img_ids = torch.zeros(h // 2, w // 2, 3, device=self.device)
        img_ids[..., 1] += torch.arange(h // 2, device=self.device)[:, None]
        img_ids[..., 2] += torch.arange(w // 2, device=self.device)[None, :]
        tokens = cond["tokens"].to(self.device, self.dtype)
        kwargs = {"encoder_hidden_states": tokens, "pooled_projections": cond["pooled"].to(self.device, self.dtype),
                  "txt_ids": torch.zeros(tokens.shape[1], 3, device=self.device, dtype=self.dtype),
                  "img_ids": img_ids.reshape(-1, 3).to(self.dtype)}
        if self.guidance_embeds:
            guidance = cond.extras.get("guidance")
            if guidance is None:
                guidance = torch.full((tokens.shape[0],), 3.5, device=self.device)
            kwargs["guidance"] = guidance.to(self.device, torch.float32)
        return kwargs

    def timesteps(self, steps: int, size: Optional[tuple[int, int]] = None) -> list:
        """diffusers' FLUX sigmas: ``linspace(1, 1/n, n)`` shifted by ``mu`` from the patch count, * 1000."""
        h, w = size or (self.native_size, self.native_size)
        patches = (h // self.size_multiple) * (w // self.size_multiple)
        sigmas = [1.0 - i * (1.0 - 1.0 / steps) / max(steps - 1, 1) for i in range(steps)]
        return self.schedule.timesteps(steps, image_seq_len=patches, sigmas=sigmas)
