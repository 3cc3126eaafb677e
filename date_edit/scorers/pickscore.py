"""PickScore (Kirstain et al., NeurIPS 2023): a CLIP ViT-H/14 fine-tuned on Pick-a-Pic human preferences.

Score = ``logit_scale.exp() * cosine(image, text)``, as the PickScore reference defines it (about 20-23 for
typical pairs). Variants: ``pickscore`` (``yuvalkirstain/PickScore_v1`` with the
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` processor), ``pickscore:tiny`` (random weights, offline),
``pickscore:<hub id or folder>`` (another CLIPModel; the LAION processor unless the folder has its own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from ..hub import cached_then_hub
from .base import ScorerError
from .clip import ClipScorer, tiny_clip_model
from .base import ScorerInfo

DEFAULT_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


class PickScoreScorer(ClipScorer):
    """``logit_scale.exp() * cosine`` of CLIP embeddings, differentiable in the image."""

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """PickScore per image, ``(B,)``."""
        return self.model.logit_scale.exp().float() * super().__call__(images, prompts)


def tiny_image_processor(size: int = 32):
    """A ``CLIPImageProcessor`` with the LAION/OpenAI CLIP settings at ``size`` px (the real one uses 224)."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def _field(value, key: str) -> Optional[int]:
    """``value[key]`` of a size dict (4.x) or ``SizeDict`` (5.x); a bare int is the size itself."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return value.get(key)
    return getattr(value, key, None)


def _image_settings(image_processor, name: str) -> tuple[int, list[float], list[float]]:
    """``(size, mean, std)`` of a CLIP image processor, checked to be what the tensor path implements."""
    size, crop = image_processor.size, image_processor.crop_size
    short, side, width = _field(size, "shortest_edge"), _field(crop, "height"), _field(crop, "width")
    if short is None or side is None or short != side or width != side:
        raise ScorerError(f"{name}: processor resizes to {size} and crops to {crop}; only a shortest edge equal to "
                          "a square crop is implemented")
    if int(getattr(image_processor, "resample", 3)) != 3:
        raise ScorerError(f"{name}: processor resample {image_processor.resample} is not bicubic (3)")
    return int(short), list(image_processor.image_mean), list(image_processor.image_std)


def load_pickscore(
    variant: Optional[str] = None,
    *,
    device: torch.device | str = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
) -> PickScoreScorer:
    """Build PickScore: None (PickScore_v1), ``tiny`` or a CLIPModel hub id / folder."""
    from ..tokenizer import check_tokenizer, load_clip_tokenizer

    if variant == "tiny":
        size, mean, std = _image_settings(tiny_image_processor(), "pickscore:tiny")
        model = tiny_clip_model(seed=1)
        return PickScoreScorer(model.to(device, dtype), load_clip_tokenizer(), name="pickscore:tiny", image_size=size,
                               mean=mean, std=std)
    source = variant or DEFAULT_MODEL
    name = "pickscore" if variant is None else f"pickscore:{variant}"
    local = Path(source).expanduser().is_dir()
    processor_source = source if local and (Path(source) / "preprocessor_config.json").is_file() else DEFAULT_PROCESSOR
    model, processor = _load(source, processor_source, local)
    check_tokenizer(processor.tokenizer)
    size, mean, std = _image_settings(processor.image_processor, name)
    return PickScoreScorer(model.to(device, dtype), processor.tokenizer, name=name, image_size=size, mean=mean,
                           std=std)


def _load(source: str, processor_source: str, local: bool):
    from transformers import AutoProcessor, CLIPModel

    try:
        model, processor = cached_then_hub(
            lambda cached: (CLIPModel.from_pretrained(source, local_files_only=cached),
                            AutoProcessor.from_pretrained(processor_source, local_files_only=cached)),
            local=local)
    except (OSError, ValueError) as exc:
        if local:
            raise ScorerError(f"could not load PickScore from {source}: {str(exc).splitlines()[0][:200]}") from None
        raise ScorerError(
            f"PickScore weights ({source}) or its processor ({processor_source}) are not cached and the hub cannot be "
            f"reached: where there is network run `hf download {source}` and `hf download "
            f"{processor_source} preprocessor_config.json tokenizer.json tokenizer_config.json vocab.json merges.txt "
            "special_tokens_map.json`, or use pickscore:tiny offline"
        ) from None
    return model, processor


def _cached() -> Optional[bool]:
    try:
        from huggingface_hub import try_to_load_from_cache

        return all(isinstance(try_to_load_from_cache(repo, "config.json" if repo == DEFAULT_MODEL else
                                                     "preprocessor_config.json"), str)
                   for repo in (DEFAULT_MODEL, DEFAULT_PROCESSOR))
    except Exception:
        return None


# what `date-edit scorers` lists; the registry registers it (this module imports nothing from the registry)
INFO = ScorerInfo(name="pickscore", factory=load_pickscore, differentiable=True,
                  backend="transformers CLIPModel (PickScore)",
                  default_weights=f"{DEFAULT_MODEL} + {DEFAULT_PROCESSOR} processor", cached=_cached)
