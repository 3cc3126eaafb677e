"""The decoder of DATE's gradient pass: the model's own VAE (exact, the default) or an opt-in approximate one
(TAESD, an ``AutoencoderTiny``: faster, less memory), which only steers the embedding; the output image is always
decoded by the VAE. Which TAESD fits a model is family knowledge (:attr:`Backbone.taesd_id`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..errors import BackboneError, ConfigError
from ..hub import hub_reachable, seeded
from .common import freeze


def build_grad_decoder(spec: Optional[str], *, family: str, latent_channels: int, taesd_id: str,
                       device: torch.device, dtype: torch.dtype) -> Optional[torch.nn.Module]:
    """The approximate decoder ``spec`` names, frozen on ``device`` in ``dtype``; None for ``vae``/None/``""``.

    ``taesd`` is ``taesd_id`` (the family's TAESD), ``tiny`` a small random one (tests), ``random-full`` the TAESD
    architecture with random weights (cost benchmarks), anything else a folder or hub id of an AutoencoderTiny.

    Raises:
        ConfigError: an approximate decoder for a model whose latents are not 4-channel (SD3, FLUX).
        BackboneError: the weights are not available offline and cannot be downloaded.
    """
    if spec in (None, "", "vae"):
        return None
    if latent_channels != 4:
        raise ConfigError("grad_decoder", f"{spec}: TAESD decodes 4-channel SD/SDXL latents; this {family} "
                                          f"model has {latent_channels}: use --grad-decoder vae")
    from diffusers import AutoencoderTiny

    if spec == "tiny":
        with seeded(0):
            module = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                                     num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))
    elif spec == "random-full":
        with seeded(0, device):
            module = AutoencoderTiny()
    else:
        source = taesd_id if spec == "taesd" else spec
        try:
            module = AutoencoderTiny.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError):
            if Path(source).exists() or not hub_reachable():
                raise BackboneError(f"approximate decoder {source!r} is not available: run `hf download {source}` "
                                    "where there is network, or use --grad-decoder vae") from None
            module = AutoencoderTiny.from_pretrained(source)
    freeze(module)
    module.to(device)
    if dtype != torch.float32:
        module.to(dtype)
    return module


def approximate_decode(decoder: torch.nn.Module, latents: torch.Tensor, dtype: torch.dtype,
                       clamp: bool = False) -> torch.Tensor:
    """Images ``(B, 3, H, W)`` from latents through the approximate ``decoder`` (TAESD takes the scaled latents
    as they are), ``/ 2 + 0.5``; unclamped unless ``clamp`` (the ablation)."""
    out = decoder.decode(latents.to(dtype)).sample.float() / 2.0 + 0.5
    return out.clamp(0.0, 1.0) if clamp else out
