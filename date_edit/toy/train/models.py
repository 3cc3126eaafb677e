"""The toy model's parts, built from a :class:`~.config.ToyTrainConfig`: the autoencoder, the CLIP, the UNet and
SD's noise schedule."""

from __future__ import annotations

import torch

from .. import world
from .config import ToyTrainConfig


def build_vae(cfg: ToyTrainConfig):
    """The tiny ``AutoencoderKL``: factor 8 like SD by default (``2 ** (len(cfg.vae_channels) - 1)``)."""
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=world.IMAGE_SIZE,
    )


def build_clip(cfg: ToyTrainConfig):
    """The tiny ``CLIPModel`` (real CLIP vocabulary and 77 positions; 64-px images)."""
    from transformers import CLIPConfig, CLIPModel

    text = {
        "vocab_size": 49408,
        "hidden_size": cfg.text_hidden,
        "intermediate_size": 4 * cfg.text_hidden,
        "num_hidden_layers": cfg.text_layers,
        "num_attention_heads": cfg.text_heads,
        "max_position_embeddings": 77,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
        "projection_dim": cfg.projection_dim,
    }
    vision = {
        "hidden_size": cfg.vision_hidden,
        "intermediate_size": 2 * cfg.vision_hidden,
        "num_hidden_layers": cfg.vision_layers,
        "num_attention_heads": 4,
        "image_size": world.IMAGE_SIZE,
        "patch_size": cfg.patch_size,
        "projection_dim": cfg.projection_dim,
    }
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim))


def latent_side(cfg: ToyTrainConfig) -> int:
    """The latent grid's side for ``cfg``'s autoencoder (64 px images: 8 by default, 16 with three VAE blocks)."""
    return world.IMAGE_SIZE // 2 ** (len(cfg.vae_channels) - 1)


def build_unet(cfg: ToyTrainConfig):
    """The tiny ``UNet2DConditionModel`` on the autoencoder's latents (8x8x4 by default); cross-attention at every
    level but the coarsest."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.unet_channels)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    return UNet2DConditionModel(
        sample_size=latent_side(cfg),
        in_channels=4,
        out_channels=4,
        block_out_channels=cfg.unet_channels,
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        mid_block_type=None,  # the coarsest level (2x2 with the default channels) already sees the whole latent
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def scheduler_config() -> dict:
    """SD 1.x's DDIM scheduler settings."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "steps_offset": 1,
        "set_alpha_to_one": False,
        "clip_sample": False,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
    }


def sd_alphas_cumprod() -> torch.Tensor:
    """``abar[t]`` of SD's scaled-linear schedule (betas 0.00085..0.012, 1000 steps), float32."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()
