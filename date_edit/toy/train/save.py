"""Writing the trained toy model as a diffusers Stable Diffusion folder, plus its two full CLIPs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .. import world
from .data import CLIP_MEAN, CLIP_STD
from .models import scheduler_config


def save_model(out: Path, unet, vae, clip_model, scaling_factor: float, heldout_clip=None) -> None:
    """Write the diffusers SD folder + ``clip/`` (+ ``clip_heldout/``); UNet/VAE in fp16, text towers in fp32."""
    import copy

    from diffusers import DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from ...tokenizer import write_clip_tokenizer_files

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    vae.register_to_config(scaling_factor=float(scaling_factor))
    copy.deepcopy(unet).half().save_pretrained(out / "unet", safe_serialization=True)
    copy.deepcopy(vae).half().save_pretrained(out / "vae", safe_serialization=True)
    text_cfg = CLIPTextConfig(**clip_model.config.text_config.to_dict())
    text_encoder = CLIPTextModel(text_cfg)
    # transformers 4.x nests the tower as ``text_model``; 5.x flattens it into CLIPTextModel.
    target = getattr(text_encoder, "text_model", text_encoder)
    result = target.load_state_dict(clip_model.text_model.state_dict(), strict=True)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"text tower copy failed: {result}")
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    write_clip_tokenizer_files(out / "tokenizer")
    DDIMScheduler(**scheduler_config()).save_pretrained(out / "scheduler")
    clip_model.save_pretrained(out / "clip", safe_serialization=True)
    if heldout_clip is not None:
        heldout_clip.save_pretrained(out / "clip_heldout", safe_serialization=True)
    for folder in ("clip", "clip_heldout"):
        if (out / folder).is_dir():
            (out / folder / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(), indent=2))
    (out / "model_index.json").write_text(json.dumps(_model_index(), indent=2))


def _preprocessor_config() -> dict:
    """The toy CLIPs' image processor: 64 px, no crop, CLIP's normalisation."""
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": world.IMAGE_SIZE},
        "resample": 3,
        "do_center_crop": False,
        "crop_size": {"height": world.IMAGE_SIZE, "width": world.IMAGE_SIZE},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
        "do_convert_rgb": True,
    }


def _model_index() -> dict:
    """``model_index.json`` of a ``StableDiffusionPipeline`` without safety checker or feature extractor."""
    import diffusers

    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def dir_size_bytes(path: Path) -> int:
    """Total bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
