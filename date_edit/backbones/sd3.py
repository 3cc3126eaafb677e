"""Stable Diffusion 3: an MMDiT on the rectified-flow path, conditioned on CLIP-L, CLIP-G and T5 tokens.

As diffusers' ``StableDiffusion3Pipeline`` builds it (clip_skip None, ``max_sequence_length`` 256): ``tokens``
``(B, 77 + 256, 4096)`` is the penultimate hidden states of CLIP-L (768) and CLIP-G (1280) joined on the feature
axis, zero-padded to T5's width, then T5's last hidden state appended on the token axis; ``pooled`` ``(B, 2048)``
is both CLIP encoders' projected outputs joined. The unconditional branch is the empty prompt encoded (true
classifier-free guidance). The pad block ``[:, :77, 2048:]`` is zero by construction and DATE holds it at zero
(its mask). The transformer takes ``timestep = sigma * 1000``; the VAE has 16 channels and a shift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import torch

from ..conditioning import Conditioning
from .base import Backbone
from .family import FlowMatchingTraits
from .sd import clip_states

T5_LENGTH = 256  # SD3's max_sequence_length


@dataclass
class StableDiffusion3(FlowMatchingTraits, Backbone):
    """SD3 (medium and later): see the module docstring.

    Attributes:
        text_encoder_2 / tokenizer_2: CLIP-G (with projection) and its tokenizer.
        text_encoder_3 / tokenizer_3: T5 and its tokenizer (the encoder may be None: its tokens are then zeros,
            as diffusers does when T5 is dropped).
    """

    text_encoder_2: Optional[torch.nn.Module] = None
    tokenizer_2: object = None
    text_encoder_3: Optional[torch.nn.Module] = None
    tokenizer_3: object = None

    family: ClassVar[str] = "sd3"
    component_names: ClassVar[tuple[str, ...]] = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2",
                                                  "tokenizer_2", "text_encoder_3", "tokenizer_3", "scheduler")
    optional_components: ClassVar[tuple[str, ...]] = ("text_encoder_3", "tokenizer_3")  # T5's tokens: zeros
    marks: ClassVar[tuple[str, ...]] = ("text_encoder_3", "tokenizer_3")
    checkpoint_marks: ClassVar[tuple[str, ...]] = ("joint_blocks.",)  # the MMDiT's
    mark_rank: ClassVar[int] = 3  # its components hold FLUX's mark and SDXL's
    pipeline_classes: ClassVar[tuple[str, ...]] = ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline")

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        """CLIP-L, CLIP-G and (when present) T5."""
        return [m for m in (self.text_encoder, self.text_encoder_2, self.text_encoder_3) if m is not None]

    @property
    def size_multiple(self) -> int:
        """VAE factor times the transformer's patch size."""
        return self.vae_scale_factor * int(self.unet.config.patch_size)

    @property
    def min_side(self) -> int:
        """One patch."""
        return self.size_multiple

    def model_timestep(self, t, batch: int) -> torch.Tensor:
        """``sigma * 1000``, as diffusers passes it."""
        return torch.full((batch,), float(t), device=self.device, dtype=torch.float32)

    def _t5(self, prompts: Sequence[str]) -> torch.Tensor:
        width = int(self.unet.config.joint_attention_dim)
        if self.text_encoder_3 is None:
            return torch.zeros(len(prompts), T5_LENGTH, width, device=self.device)
        ids = self.tokenizer_3(list(prompts), padding="max_length", max_length=T5_LENGTH, truncation=True,
                               add_special_tokens=True, return_tensors="pt").input_ids
        return self.text_encoder_3(ids.to(self.device))[0].float()

    @torch.no_grad()
    def encode_condition(self, prompts: Sequence[str], *, size: Optional[tuple[int, int]] = None) -> Conditioning:
        """``tokens`` ``(B, 77 + 256, D_T5)`` and ``pooled`` ``(B, P1 + P2)``, float32; ``size`` plays no part."""
        pairs = ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2))
        hidden, pooled = clip_states(pairs, prompts, self.device)
        clip = torch.cat(hidden, dim=-1)
        t5 = self._t5(prompts)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        tokens = torch.cat([clip, t5], dim=-2)
        mask = torch.ones((1,) + tuple(tokens.shape[1:]), device=self.device)
        mask[:, : clip.shape[1], sum(h.shape[-1] for h in hidden):] = 0.0
        return Conditioning({"tokens": tokens, "pooled": torch.cat(pooled, dim=-1)}, masks={"tokens": mask})

    def unconditional(self, batch: int, *, size: Optional[tuple[int, int]] = None) -> Conditioning:
        """The empty prompt encoded (SD3's negative prompt default)."""
        return self.encode_condition([""] * batch, size=size)

    def unet_inputs(self, cond: Conditioning, latent_shape: Optional[tuple] = None) -> dict:
        """``encoder_hidden_states`` and ``pooled_projections``."""
        return {"encoder_hidden_states": cond["tokens"].to(self.device, self.dtype),
                "pooled_projections": cond["pooled"].to(self.device, self.dtype)}

    def timesteps(self, steps: int, size: Optional[tuple[int, int]] = None) -> list:
        """diffusers' sigmas * 1000 (static shift; a dynamic one from the patch count when configured)."""
        h, w = size or (self.native_size, self.native_size)
        patches = (h // self.size_multiple) * (w // self.size_multiple)
        return self.schedule.timesteps(steps, image_seq_len=patches)
