"""Sets of Stable Diffusion components (UNet, VAE, text encoder, tokenizer, scheduler) built without weights to
download: the tiny random model of the tests, the real-size SD 1.5 architecture with random weights for cost
runs, and saving a set as a diffusers folder. :mod:`.backbones` wraps a set as a :class:`~.backbones.Backbone`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .hub import seeded

SD_SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


def tiny_components(seed: int = 0) -> dict:
    """Random-weight tiny SD components (same diffusers/transformers classes), for tests and smoke runs."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        vae = sd_vae((16, 16, 32, 32), layers_per_block=1, sample_size=64, norm_num_groups=8)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=49407,
            )
        )
    return _component_set(unet, vae, text_encoder)


def save_components(components: dict, out_dir: str | os.PathLike) -> Path:
    """Write components as a diffusers StableDiffusionPipeline folder (``model_index.json`` + subfolders)."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
             "requires_safety_checker": False}
    libs = {"unet": "diffusers", "vae": "diffusers", "scheduler": "diffusers", "text_encoder": "transformers",
            "tokenizer": "transformers"}
    for name, lib in libs.items():
        comp = components[name]
        comp.save_pretrained(out / name)
        index[name] = [lib, type(comp).__name__]
    index["safety_checker"] = [None, None]
    index["feature_extractor"] = [None, None]
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


def sd15_components(seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    """The real-size SD 1.5 architecture with random weights (FLOPs and memory do not depend on the values).

    Built directly on ``device`` (no CPU round trip) for benchmarks where the weights cannot be had.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with seeded(seed, device):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = sd_vae((128, 256, 512, 512), layers_per_block=2, sample_size=512, norm_num_groups=32)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                           bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
        )
    return _component_set(unet, vae, text_encoder, dtype)


def sd_vae(block_out_channels: tuple[int, ...], *, layers_per_block: int, sample_size: int, norm_num_groups: int):
    """An SD-style ``AutoencoderKL`` (4 latent channels, one downsampling per level but the last, SD's scaling
    factor) of the given widths, with random weights."""
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=block_out_channels,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         layers_per_block=layers_per_block, latent_channels=4, norm_num_groups=norm_num_groups,
                         sample_size=sample_size, scaling_factor=0.18215)


def _component_set(unet, vae, text_encoder, dtype: torch.dtype = torch.float32) -> dict:
    """The dict of components an SD pipeline folder holds: the three models (cast to ``dtype``), the CLIP
    tokenizer and the SD 1.x DDIM scheduler."""
    from diffusers import DDIMScheduler

    from .tokenizer import load_clip_tokenizer

    if dtype != torch.float32:
        for module in (unet, vae, text_encoder):
            module.to(dtype)
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": load_clip_tokenizer(),
        "scheduler": DDIMScheduler(**{k: v for k, v in SD_SCHEDULER_CONFIG.items() if not k.startswith("_")}),
    }
