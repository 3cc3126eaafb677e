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
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .tokenizer import load_clip_tokenizer

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
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 16, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=64,
            scaling_factor=0.18215,
        )
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
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": load_clip_tokenizer(),
        "scheduler": DDIMScheduler(**{k: v for k, v in SD_SCHEDULER_CONFIG.items() if not k.startswith("_")}),
    }


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
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .tokenizer import load_clip_tokenizer

    with seeded(seed, device):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
            scaling_factor=0.18215,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                           bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
        )
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
