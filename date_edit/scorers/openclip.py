"""CLIP image-text cosine through open_clip (any architecture + pretrained tag), e.g. the paper's evaluation model.

Reached through the ``clip`` scorer: ``clip:openclip/ViT-g-14/laion2b_s12b_b42k`` (model / pretrained tag or a
local checkpoint file), ``clip:openclip-tiny`` (a small open_clip config with random weights, offline).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch

from ..hub import hub_reachable, seeded
from .base import ScorerError
from .cosine import CosineScorer

EVAL_MODEL = ("ViT-g-14", "laion2b_s12b_b42k")  # DATE's CLIP-score metric (raw cosine)
TINY_CONFIG = Path(__file__).resolve().parent / "assets" / "openclip" / "date-edit-openclip-tiny.json"


def import_open_clip():
    """``open_clip``, imported without its torch.jit deprecation noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        import open_clip
    return open_clip


class OpenClipScorer(CosineScorer):
    """Cosine similarity of open_clip image and text embeddings, differentiable in the image."""

    def __init__(self, model: torch.nn.Module, tokenizer, *, name: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", getattr(model.visual, "image_size", 224))
        size = size if isinstance(size, int) else tuple(size)
        if not isinstance(size, int) and size[0] != size[1]:
            raise ScorerError(f"{name}: non-square image size {size} is not supported")
        self.image_size = size if isinstance(size, int) else size[0]
        if cfg.get("interpolation", "bicubic") != "bicubic" or cfg.get("resize_mode", "shortest") != "shortest":
            raise ScorerError(f"{name}: only bicubic shortest-side preprocessing is implemented, the model asks for "
                              f"{cfg.get('interpolation')} / {cfg.get('resize_mode')}")
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(prompts).to(self.device))

    def _encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


def tiny_model_name() -> str:
    """Register the tiny config with open_clip (once) and return its model name."""
    open_clip = import_open_clip()
    name = TINY_CONFIG.stem
    if name not in open_clip.list_models():
        open_clip.add_model_config(TINY_CONFIG)
    return name


def _weights_cached(model_name: str, tag: str) -> Optional[bool]:
    """Whether open_clip's weights for ``model_name``/``tag`` are on disk (None: cannot tell)."""
    if Path(tag).expanduser().is_file():
        return True
    open_clip = import_open_clip()
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        return None
    if cfg.get("file"):
        return Path(cfg["file"]).is_file()
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, filename = hub.rstrip("/"), None
    if not hub.endswith("/"):
        repo, filename = hub.rsplit("/", 1)
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)


def load_openclip(
    variant: str, *, device: torch.device | str = torch.device("cpu"), dtype: torch.dtype = torch.float32
) -> OpenClipScorer:
    """Build ``clip:openclip/<model>/<tag or checkpoint>`` or ``clip:openclip-tiny``."""
    open_clip = import_open_clip()
    name = f"clip:{variant}"
    if variant == "openclip-tiny":
        model_name = tiny_model_name()
        with seeded(0):
            model = open_clip.create_model(model_name, pretrained=None)
        tokenizer = open_clip.get_tokenizer(model_name)
        return OpenClipScorer(model.to(device, dtype), tokenizer, name=name)
    parts = variant.split("/", 2)
    if len(parts) != 3 or parts[0] != "openclip" or not parts[1] or not parts[2]:
        raise ScorerError(f"cannot read {name!r}: use clip:openclip/<model>/<pretrained tag or checkpoint>, e.g. "
                          f"clip:openclip/{EVAL_MODEL[0]}/{EVAL_MODEL[1]}, or clip:openclip-tiny")
    model_name, tag = parts[1], parts[2]
    if model_name not in open_clip.list_models():
        raise ScorerError(f"open_clip has no model {model_name!r} (see open_clip.list_models())")
    if not Path(tag).expanduser().is_file() and not open_clip.get_pretrained_cfg(model_name, tag):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise ScorerError(f"open_clip has no pretrained tag {tag!r} for {model_name} (known: {tags})")
    if _weights_cached(model_name, tag) is False:
        if not hub_reachable():
            raise ScorerError(
                f"open_clip weights {model_name}/{tag} are not cached and the hub cannot be reached: where there is "
                f"network run `python -c \"import open_clip; open_clip.create_model('{model_name}', "
                f"pretrained='{tag}')\"`, or use clip:openclip-tiny offline"
            )
    try:
        model = open_clip.create_model(model_name, pretrained=str(Path(tag).expanduser()) if
                                       Path(tag).expanduser().is_file() else tag)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise ScorerError(f"could not load open_clip {model_name}/{tag}: {str(exc).splitlines()[0][:200]}") from None
    return OpenClipScorer(model.to(device, dtype), open_clip.get_tokenizer(model_name), name=name)

