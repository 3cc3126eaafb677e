"""CLIP image-text cosine similarity (Radford et al. 2021), transformers backend.

Variants: ``clip`` (``openai/clip-vit-large-patch14``, the DATE default), ``clip:tiny`` (random
weights, offline), ``clip:toy`` (the shipped toy world's CLIP), ``clip:<hub id or folder>``, and the open_clip
backend (:mod:`.openclip`): ``clip:openclip/<model>/<pretrained tag>`` and ``clip:openclip-tiny``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..hub import cached_then_hub, seeded
from .base import ScorerError
from .cosine import CosineScorer  # noqa: F401  (the base; re-exported)
from .preprocess import CLIP_MEAN, CLIP_STD
from .base import ScorerInfo

DEFAULT_CLIP = "openai/clip-vit-large-patch14"


class ClipScorer(CosineScorer):
    """Cosine similarity between CLIP image and text embeddings (transformers ``CLIPModel``)."""

    def __init__(self, model, tokenizer, *, name: str, image_size: int, mean=CLIP_MEAN, std=CLIP_STD) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        max_len = min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings)
        tok = self.tokenizer(prompts, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
        return features(self.model.get_text_features(input_ids=tok.input_ids.to(self.device),
                                                       attention_mask=tok.attention_mask.to(self.device)))

    def _encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return features(self.model.get_image_features(pixel_values=pixels))


def features(out) -> torch.Tensor:
    """The embedding tensor of a CLIP ``get_text_features`` / ``get_image_features`` call: transformers 5 may return
    a model output (its ``pooler_output``) where 4.x returned the tensor."""
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("pooler_output", "text_embeds", "image_embeds"):
        value = getattr(out, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    return out[0]


def tiny_clip_model(seed: int = 0):
    """A random-weight tiny ``CLIPModel`` (32-px images) with the real CLIP vocabulary size."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    with seeded(seed):
        return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))


def load_clip(variant: Optional[str] = None, *, device=torch.device("cpu"), dtype=torch.float32) -> ClipScorer:
    """Build the CLIP scorer for ``variant`` (None -> ViT-L/14, tiny, toy, a hub id, a folder, openclip/...)."""
    from ..tokenizer import load_clip_tokenizer

    if variant is not None and (variant == "openclip-tiny" or variant.startswith("openclip/")):
        from .openclip import load_openclip

        return load_openclip(variant, device=device, dtype=dtype)
    if variant == "tiny":
        return ClipScorer(tiny_clip_model().to(device, dtype), load_clip_tokenizer(), name="clip:tiny",
                          image_size=32)
    if variant in ("toy", "toy-heldout"):
        # toy-heldout: a second toy CLIP (other seed, data order and widths) that is never a DATE objective in
        # the project's benchmarks: the evaluator beside the judge, as the paper scores with another CLIP
        from ..backbones import TOY_DIR

        path = TOY_DIR / ("clip" if variant == "toy" else "clip_heldout")
        if not (path / "config.json").is_file():
            raise ScorerError(f"the toy CLIP is not in {path}: rebuild it with `make toy-model`")
        return _from_pretrained(str(path), f"clip:{variant}", device, dtype, tokenizer_path=str(TOY_DIR / "tokenizer"))
    source = variant or DEFAULT_CLIP
    return _from_pretrained(source, "clip" if variant is None else f"clip:{variant}", device, dtype)


def _from_pretrained(source: str, name: str, device, dtype, tokenizer_path: Optional[str] = None) -> ClipScorer:
    from transformers import CLIPModel, CLIPTokenizer

    from ..tokenizer import check_tokenizer

    local = Path(source).expanduser().is_dir()
    try:
        model, tokenizer = cached_then_hub(
            lambda cached: (CLIPModel.from_pretrained(source, local_files_only=cached),
                            CLIPTokenizer.from_pretrained(tokenizer_path or source, local_files_only=cached)),
            local=local)
    except (OSError, ValueError) as exc:
        if local:
            raise ScorerError(f"could not load CLIP from {source}: {str(exc).splitlines()[0][:200]}") from None
        raise ScorerError(
            f"CLIP weights {source!r} are not cached and the hub cannot be reached: run "
            f"`hf download {source}` where there is network, or use clip:tiny offline"
        ) from None
    check_tokenizer(tokenizer)
    image_size = int(model.config.vision_config.image_size)
    mean, std = CLIP_MEAN, CLIP_STD
    pre = Path(source) / "preprocessor_config.json"
    if pre.is_file():
        import json

        cfg = json.loads(pre.read_text())
        mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
    return ClipScorer(model.to(device, dtype), tokenizer, name=name, image_size=image_size, mean=mean, std=std)


def _cached() -> Optional[bool]:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(DEFAULT_CLIP, "config.json"), str)
    except Exception:
        return None


# what `date-edit scorers` lists; the registry registers it (this module imports nothing from the registry)
INFO = ScorerInfo(name="clip", factory=load_clip, differentiable=True, backend="transformers CLIPModel",
                  default_weights=DEFAULT_CLIP, cached=_cached)


def clip_vit_l14_random(seed: int = 0, device: str | torch.device = "cpu") -> ClipScorer:
    """The CLIP ViT-L/14 architecture with random weights (for cost benchmarks without the weights)."""
    from transformers import CLIPConfig, CLIPModel

    from ..tokenizer import load_clip_tokenizer

    text = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=224, patch_size=14, hidden_act="quick_gelu")
    with seeded(seed, device):
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768))
    return ClipScorer(model, load_clip_tokenizer(), name="clip:vit-l-14-random", image_size=224)
