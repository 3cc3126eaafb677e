"""LAION improved aesthetic predictor (Schuhmann 2022): an MLP on L2-normalised CLIP ViT-L/14 image embeddings.

The prompt is ignored; the score is roughly 1-10 (higher is more aesthetic) with the real weights. Variants:
``aesthetic`` (the MLP from the date-edit cache, ``<cache>/aesthetic/sac+logos+ava1-l14-linearMSE.pth``, on
``openai/clip-vit-large-patch14``), ``aesthetic:/path/to/sac+logos+ava1-l14-linearMSE.pth``, ``aesthetic:tiny``.

The DATE paper found that optimising the aesthetic score alone degrades the other metrics: callers building a
DATE objective should call :func:`warn_if_aesthetic_alone` with the spec.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from ..hub import hub_reachable, seeded
from .base import ScorerError
from .clip import DEFAULT_CLIP
from .preprocess import CLIP_MEAN, CLIP_STD, clip_preprocess
from .base import ScorerInfo
from .spec import parse_scorer_spec

WEIGHTS_NAME = "sac+logos+ava1-l14-linearMSE.pth"
WEIGHTS_URL = "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth"


class AestheticMLP(nn.Module):
    """768 -> 1024 -> 128 -> 64 -> 16 -> 1, linear (no activations), dropout in training only.

    The module layout (Linear at ``layers.0/2/4/6/7``) is the checkpoint's, so its state dict loads as is.
    """

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """``(B, input_size)`` L2-normalised image embeddings -> ``(B, 1)`` scores."""
        return self.layers(embeds)


class AestheticScorer:
    """The aesthetic MLP on CLIP image embeddings; differentiable in the image, prompts ignored."""

    differentiable = True

    def __init__(self, vision: nn.Module, mlp: AestheticMLP, *, name: str, image_size: int = 224,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> None:
        self.vision = vision.eval().requires_grad_(False)  # a CLIPVisionModelWithProjection
        self.mlp = mlp.eval().requires_grad_(False)
        self.name = name
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)

    @property
    def device(self) -> torch.device:
        """The models' device."""
        return next(self.vision.parameters()).device

    def to(self, device: torch.device | str) -> "AestheticScorer":
        """Move both models."""
        self.vision.to(device)
        self.mlp.to(device)
        return self

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised CLIP image embeddings ``(B, P)`` of ``(B, 3, H, W)`` images in [0, 1]; differentiable."""
        pixels = clip_preprocess(images.to(self.device), self.image_size, self.mean, self.std)
        dtype = next(self.vision.parameters()).dtype
        feats = self.vision(pixel_values=pixels.to(dtype)).image_embeds.float()
        return feats / feats.norm(dim=-1, keepdim=True)

    def __call__(self, images: torch.Tensor, prompts: Optional[Sequence[str]] = None) -> torch.Tensor:
        """Aesthetic score per image, ``(B,)``; ``prompts`` are accepted and ignored."""
        if prompts is not None and len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
        feats = self.image_features(images)
        mlp_dtype = next(self.mlp.parameters()).dtype
        return self.mlp(feats.to(mlp_dtype))[:, 0].float()


def warn_if_aesthetic_alone(spec: str) -> bool:
    """Warn (one line) when ``spec`` makes the aesthetic score the only DATE objective; returns whether it warned."""
    try:
        terms = parse_scorer_spec(spec)
    except ScorerError:
        return False
    active = {name for name, _variant, weight in terms if weight != 0}
    if active != {"aesthetic"}:
        return False
    warnings.warn("the aesthetic score alone as the DATE objective degrades the other metrics (DATE paper); "
                  "combine it, e.g. --scorer clip=1,aesthetic=0.1", UserWarning, stacklevel=2)
    return True


def default_weights_path() -> Path:
    """Where date-edit looks for the aesthetic MLP weights by default."""
    from ..tokenizer import cache_dir

    return cache_dir() / "aesthetic" / WEIGHTS_NAME


def load_mlp(path: str | Path, input_size: int = 768) -> AestheticMLP:
    """The aesthetic MLP with weights from ``path`` (strict: every layer must be in the file)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ScorerError(f"no aesthetic predictor weights at {path}: download {WEIGHTS_URL} there (or pass "
                          "aesthetic:/path/to/file.pth), or use aesthetic:tiny offline")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ScorerError(f"cannot read aesthetic weights {path}: {str(exc).splitlines()[0][:160]}") from None
    mlp = AestheticMLP(input_size)
    try:
        mlp.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ScorerError(f"{path} is not an aesthetic predictor MLP ({input_size} inputs): "
                          f"{str(exc).splitlines()[0][:160]}") from None
    return mlp


def tiny_aesthetic(seed: int = 2) -> AestheticScorer:
    """Random weights at toy size: a 32-px CLIP vision tower (projection 32) and the MLP with 32 inputs."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=32)
    with seeded(seed):
        vision = CLIPVisionModelWithProjection(config)
        mlp = AestheticMLP(32)
        for layer in mlp.layers:  # variance-preserving, so the score varies visibly with the image
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0.0, layer.in_features ** -0.5)
    return AestheticScorer(vision, mlp, name="aesthetic:tiny", image_size=32)


def _clip_vision(source: str = DEFAULT_CLIP) -> nn.Module:
    from transformers import CLIPVisionModelWithProjection

    try:
        try:
            return CLIPVisionModelWithProjection.from_pretrained(source, local_files_only=True)
        except OSError:
            if not hub_reachable():
                raise
            return CLIPVisionModelWithProjection.from_pretrained(source)
    except (OSError, ValueError):
        raise ScorerError(f"the aesthetic predictor needs CLIP ViT-L/14 ({source}), which is not cached and the hub "
                          f"cannot be reached: run `hf download {source}` where there is network, "
                          "or use aesthetic:tiny offline") from None


def load_aesthetic(
    variant: Optional[str] = None,
    *,
    device: torch.device | str = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
) -> AestheticScorer:
    """Build the aesthetic scorer: None (cached weights), ``tiny`` or a path to the MLP weights."""
    if variant == "tiny":
        scorer = tiny_aesthetic()
    else:
        path = default_weights_path() if variant is None else Path(variant).expanduser()
        mlp = load_mlp(path)  # first: a missing small file is the cheaper error
        vision = _clip_vision()
        if vision.config.projection_dim != mlp.input_size:
            raise ScorerError(f"CLIP projection {vision.config.projection_dim} != MLP input {mlp.input_size}")
        scorer = AestheticScorer(vision, mlp, name="aesthetic" if variant is None else f"aesthetic:{variant}",
                                 image_size=int(vision.config.image_size))
    scorer.vision.to(device, dtype)
    scorer.mlp.to(device)  # the MLP stays fp32: it is tiny and its output is the score
    return scorer


def _cached() -> Optional[bool]:
    if not default_weights_path().is_file():
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(DEFAULT_CLIP, "config.json"), str)
    except Exception:
        return None


# what `date-edit scorers` lists; the registry registers it (this module imports nothing from the registry)
INFO = ScorerInfo(name="aesthetic", factory=load_aesthetic, differentiable=True,
                  backend="LAION aesthetic MLP on transformers CLIP ViT-L/14",
                  default_weights=f"{WEIGHTS_NAME} + {DEFAULT_CLIP}", cached=_cached)
