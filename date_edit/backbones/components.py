"""Sets of components (UNet, VAE, text encoders, tokenizers, scheduler) built without weights to download: the
tiny random SD and SDXL models of the tests, the real-size SD 1.5 and SDXL architectures with random weights for
cost runs, and saving a set as a diffusers folder. :meth:`~.base.Backbone.from_components` wraps a set."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..hub import seeded

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
    from transformers import CLIPTextModel

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
        text_encoder = CLIPTextModel(clip_config(32, 2, 4, 64))
    return _component_set(unet, vae, text_encoder)


def save_components(components: dict, out_dir: str | os.PathLike) -> Path:
    """Write components as a diffusers folder (``model_index.json`` + subfolders) of their family's pipeline
    class (StableDiffusion, StableDiffusionXL, StableDiffusion3 or Flux), with the entries the family's pipeline
    adds (:attr:`~.family.FamilyTraits.index_extras`)."""
    import json

    from .family import FAMILIES, family_of_components

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind = FAMILIES[family_of_components(components)]
    index: dict = {"_class_name": kind.pipeline_classes[0], "_diffusers_version": "0.30.0"}
    for name in kind.component_names:
        comp = components.get(name)
        if comp is None:
            index[name] = [None, None]
            continue
        comp.save_pretrained(out / name)
        lib = "diffusers" if type(comp).__module__.startswith("diffusers") else "transformers"
        index[name] = [lib, type(comp).__name__]
    index |= kind.index_extras
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


def sd15_components(seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    """The real-size SD 1.5 architecture with random weights (FLOPs and memory do not depend on the values).

    Built directly on ``device`` (no CPU round trip) for benchmarks where the weights cannot be had.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    with seeded(seed, device):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = sd_vae((128, 256, 512, 512), layers_per_block=2, sample_size=512, norm_num_groups=32)
        text_encoder = CLIPTextModel(clip_config(768, 12, 12, 3072))
    return _component_set(unet, vae, text_encoder, dtype)


def sd_vae(block_out_channels: tuple[int, ...], *, layers_per_block: int, sample_size: int, norm_num_groups: int,
           scaling_factor: float = 0.18215, **flow):
    """An SD-style ``AutoencoderKL`` (4 latent channels, one downsampling per level but the last; SD 1.x's
    scaling factor unless given: SDXL's is 0.13025) of the given widths, with random weights. ``flow``: the
    SD3/FLUX changes (``latent_channels=16``, ``shift_factor``, ``use_quant_conv=False``, ...)."""
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    options = {"latent_channels": 4} | flow
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=block_out_channels,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         layers_per_block=layers_per_block, norm_num_groups=norm_num_groups,
                         sample_size=sample_size, scaling_factor=scaling_factor, **options)


def _component_set(unet, vae, text_encoder, dtype: torch.dtype = torch.float32, text_encoder_2=None) -> dict:
    """The dict of components a pipeline folder holds: the models (cast to ``dtype``), the CLIP tokenizer(s)
    and the SD 1.x DDIM scheduler (SDXL trains on the same betas). With ``text_encoder_2``, an SDXL set: its
    tokenizer pads with ``!`` as SDXL's second tokenizer does."""
    from diffusers import DDIMScheduler

    from ..tokenizer import load_clip_tokenizer

    models = [m for m in (unet, vae, text_encoder, text_encoder_2) if m is not None]
    if dtype != torch.float32:
        for module in models:
            module.to(dtype)
    out = {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": load_clip_tokenizer(),
        "scheduler": DDIMScheduler(**{k: v for k, v in SD_SCHEDULER_CONFIG.items() if not k.startswith("_")}),
    }
    if text_encoder_2 is not None:
        tokenizer_2 = load_clip_tokenizer()
        tokenizer_2.pad_token = "!"
        out |= {"text_encoder_2": text_encoder_2, "tokenizer_2": tokenizer_2}
    return out


def clip_config(hidden: int, layers: int, heads: int, intermediate: int, act: str = "quick_gelu", **extra):
    """A CLIP text config with the real vocabulary and 77 positions (``extra``: e.g. ``projection_dim``)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=intermediate,
                          num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                          hidden_act=act, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, **extra)


def tiny_sdxl_components(seed: int = 0) -> dict:
    """Random-weight tiny SDXL components: the real classes (a ``text_time`` UNet, ``CLIPTextModel`` and
    ``CLIPTextModelWithProjection``) at widths that build and run in well under a second on a CPU."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    h1, h2, proj2, time_dim = 32, 32, 32, 8
    with seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=h1 + h2, attention_head_dim=(2, 4), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=6 * time_dim + proj2, norm_num_groups=32,
        )
        vae = sd_vae((16, 16, 32, 32), layers_per_block=1, sample_size=64, norm_num_groups=8, scaling_factor=0.13025)
        text_encoder = CLIPTextModel(clip_config(h1, 2, 4, 64))
        text_encoder_2 = CLIPTextModelWithProjection(clip_config(h2, 2, 4, 64, act="gelu", projection_dim=proj2))
    return _component_set(unet, vae, text_encoder, text_encoder_2=text_encoder_2)


def sdxl_components(seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    """The real-size SDXL base architecture (UNet 2.57 B parameters, CLIP-L and OpenCLIP-bigG text encoders,
    the SD VAE at SDXL's scaling) with random weights, built directly on ``device``, for GPU cost runs."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    with seeded(seed, device):
        unet = UNet2DConditionModel(
            sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        vae = sd_vae((128, 256, 512, 512), layers_per_block=2, sample_size=1024, norm_num_groups=32,
                     scaling_factor=0.13025)
        text_encoder = CLIPTextModel(clip_config(768, 12, 12, 3072))
        text_encoder_2 = CLIPTextModelWithProjection(clip_config(1280, 32, 20, 5120, act="gelu",
                                                                  projection_dim=1280))
    return _component_set(unet, vae, text_encoder, dtype, text_encoder_2=text_encoder_2)
