"""SD3 and FLUX component sets without weights to download: tiny random ones for the tests (the real diffusers and
transformers classes at tiny widths, the offline T5 tokenizer) and real-size random ones for GPU cost runs.

Size rules: SD3 ``pooled_projection_dim = proj1 + proj2`` and ``joint_attention_dim`` = T5's ``d_model`` >= the
two CLIP widths together (the CLIP part is zero-padded up to it); FLUX ``in_channels = 4 * latent_channels``,
``pooled_projection_dim`` = CLIP-L's width, ``joint_attention_dim`` = T5's ``d_model`` and
``sum(axes_dims_rope) = attention_head_dim``.
"""

from __future__ import annotations

import torch

from ..hub import seeded
from .components import clip_config, sd_vae

SD3_SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX_SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
                         "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}


def _t5(d_model: int, layers: int, heads: int, d_ff: int, d_kv: int, gated: bool = False):
    """A T5 encoder with T5's 32,128-row embedding (the tokenizer's 32,100 ids fit)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=32128, d_model=d_model, d_ff=d_ff, d_kv=d_kv, num_layers=layers,
                                   num_heads=heads, feed_forward_proj="gated-gelu" if gated else "relu",
                                   relative_attention_num_buckets=32, is_encoder_decoder=False))


def _flow_set(transformer, vae, text_encoders: dict, scheduler_config: dict, dtype: torch.dtype) -> dict:
    """The component dict of a flow pipeline: models cast to ``dtype``, offline tokenizers, the scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ..t5_tokenizer import load_t5_tokenizer
    from ..tokenizer import load_clip_tokenizer

    out = {"transformer": transformer, "vae": vae, **text_encoders,
           "scheduler": FlowMatchEulerDiscreteScheduler(**scheduler_config)}
    for name, encoder in text_encoders.items():
        if dtype != torch.float32:
            encoder.to(dtype)
        is_t5 = type(encoder).__name__.startswith("T5")
        tokenizer = load_t5_tokenizer() if is_t5 else load_clip_tokenizer()
        if name == "text_encoder_2" and not is_t5:
            tokenizer.pad_token = "!"  # SD3's CLIP-G tokenizer pads with "!"
        out[name.replace("text_encoder", "tokenizer")] = tokenizer
    if dtype != torch.float32:
        transformer.to(dtype)
        vae.to(dtype)
    return out


def tiny_sd3_components(seed: int = 0) -> dict:
    """Random-weight tiny SD3: an ``SD3Transformer2DModel`` (patch 2, 16 latent channels), two projected CLIPs
    (16 wide each) and a T5 encoder 48 wide, so the zero pad block of the CLIP part is 16 columns."""
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    with seeded(seed):
        transformer = SD3Transformer2DModel(
            sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
            num_attention_heads=4, joint_attention_dim=48, caption_projection_dim=32, pooled_projection_dim=32,
            pos_embed_max_size=16)
        vae = sd_vae((16, 16, 32, 32), layers_per_block=1, sample_size=64, norm_num_groups=8, scaling_factor=1.5305,
                     latent_channels=16, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
        encoders = {"text_encoder": CLIPTextModelWithProjection(clip_config(16, 2, 2, 32, projection_dim=16)),
                    "text_encoder_2": CLIPTextModelWithProjection(clip_config(16, 2, 2, 32, act="gelu",
                                                                              projection_dim=16)),
                    "text_encoder_3": _t5(48, 2, 4, 64, 12)}
    return _flow_set(transformer, vae, encoders, SD3_SCHEDULER_CONFIG, torch.float32)


def tiny_flux_components(seed: int = 0, guidance_embeds: bool = True) -> dict:
    """Random-weight tiny FLUX (dev-like with ``guidance_embeds``, schnell-like without): a
    ``FluxTransformer2DModel`` on 2x2-packed 16-channel latents, CLIP-L 32 wide, T5 32 wide."""
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextModel

    with seeded(seed):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=guidance_embeds,
            axes_dims_rope=(4, 6, 6))
        vae = sd_vae((16, 16, 32, 32), layers_per_block=1, sample_size=64, norm_num_groups=8, scaling_factor=0.3611,
                     latent_channels=16, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
        encoders = {"text_encoder": CLIPTextModel(clip_config(32, 2, 4, 64)), "text_encoder_2": _t5(32, 2, 4, 64, 8)}
    return _flow_set(transformer, vae, encoders, FLUX_SCHEDULER_CONFIG, torch.float32)


def sd3_components(seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16) -> dict:
    """The real-size SD3-medium architecture (MMDiT 2.03 B, CLIP-L, CLIP-G, T5-XXL 4.76 B) with random weights,
    built directly on ``device`` for GPU cost runs."""
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    with seeded(seed, device):
        transformer = SD3Transformer2DModel(
            sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
            num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
            pooled_projection_dim=2048, pos_embed_max_size=192)
        vae = sd_vae((128, 256, 512, 512), layers_per_block=2, sample_size=1024, norm_num_groups=32,
                     scaling_factor=1.5305, latent_channels=16, shift_factor=0.0609, use_quant_conv=False,
                     use_post_quant_conv=False)
        encoders = {"text_encoder": CLIPTextModelWithProjection(clip_config(768, 12, 12, 3072, projection_dim=768)),
                    "text_encoder_2": CLIPTextModelWithProjection(clip_config(1280, 32, 20, 5120, act="gelu",
                                                                              projection_dim=1280)),
                    "text_encoder_3": _t5(4096, 24, 64, 10240, 64, gated=True)}
    return _flow_set(transformer, vae, encoders, SD3_SCHEDULER_CONFIG, dtype)


def flux_components(seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16) -> dict:
    """The real-size FLUX.1-dev architecture (transformer 11.9 B, CLIP-L, T5-XXL) with random weights, built
    directly on ``device`` for GPU cost runs."""
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextModel

    with seeded(seed, device):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
            axes_dims_rope=(16, 56, 56))
        vae = sd_vae((128, 256, 512, 512), layers_per_block=2, sample_size=1024, norm_num_groups=32,
                     scaling_factor=0.3611, latent_channels=16, shift_factor=0.1159, use_quant_conv=False,
                     use_post_quant_conv=False)
        encoders = {"text_encoder": CLIPTextModel(clip_config(768, 12, 12, 3072)),
                    "text_encoder_2": _t5(4096, 24, 64, 10240, 64, gated=True)}
    return _flow_set(transformer, vae, encoders, FLUX_SCHEDULER_CONFIG, dtype)


def tiny_pipeline(family: str, seed: int = 0):
    """The stock diffusers pipeline (``StableDiffusionPipeline``, ``...XLPipeline``, ``StableDiffusion3Pipeline``,
    ``FluxPipeline``) over the tiny random components of ``family`` (sd, sdxl, sd3, flux), progress bar off: for
    tests and the callback parity benchmark, offline."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    from .components import tiny_components, tiny_sdxl_components

    if family == "sd":
        pipe = StableDiffusionPipeline(**tiny_components(seed), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    elif family == "sdxl":
        pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(seed))
    elif family == "sd3":
        pipe = StableDiffusion3Pipeline(**tiny_sd3_components(seed), image_encoder=None, feature_extractor=None)
    elif family == "flux":
        pipe = FluxPipeline(**tiny_flux_components(seed), image_encoder=None, feature_extractor=None)
    else:
        raise ValueError(f"no tiny pipeline for family {family!r}: use sd, sdxl, sd3 or flux")
    pipe.set_progress_bar_config(disable=True)
    return pipe
