"""ImageReward (Xu et al., NeurIPS 2023): a BLIP ViT-L image encoder, a BERT text encoder cross-attending to it,
and an MLP reward head; higher is better. Scored through the package's differentiable ``score_gard`` path.

Variants: ``imagereward`` (ImageReward-v1.0 weights from ``~/.cache/ImageReward``), ``imagereward:tiny``
(random weights, a small ViT and BERT, offline), ``imagereward:random-full`` (the real architecture with random
weights, for cost benchmarks), ``imagereward:/path/to/ImageReward.pt`` (``med_config.json`` beside it or in the
cache). The ``image-reward`` package is imported only inside the factory, through :mod:`.ir_compat`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..hub import hub_reachable
from .base import ScorerError
from .preprocess import CLIP_MEAN, CLIP_STD, clip_preprocess
from .base import ScorerInfo

DEFAULT_WEIGHTS = "ImageReward-v1.0"
HUB_REPO = "THUDM/ImageReward"
IMAGE_SIZE = 224  # ImageReward's own preprocessing: Resize(224, bicubic), CenterCrop(224), CLIP mean/std
MAX_PROMPT_TOKENS = 35  # ImageReward tokenises prompts to exactly 35 tokens (padding and truncation)
ASSETS = Path(__file__).resolve().parent / "assets" / "imagereward"
TINY_VIT = dict(patch_size=16, embed_dim=32, depth=2, num_heads=4)  # the BLIP VisionTransformer, small


def imagereward_cache_dir() -> Path:
    """Where the ``image-reward`` package keeps its downloads (its default ``download_root``)."""
    return Path(os.path.expanduser("~/.cache/ImageReward"))


class ImageRewardScorer:
    """ImageReward's reward of ``(image, prompt)`` pairs, differentiable in the image (``score_gard``)."""

    differentiable = True

    def __init__(self, model: torch.nn.Module, *, name: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = model.blip.tokenizer
        self.name = name
        self._token_cache: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> "ImageRewardScorer":
        """Move the model (``score_gard`` reads ``model.device`` for its image attention mask)."""
        self.model.to(device)
        self.model.device = torch.device(device)
        self._token_cache.clear()
        return self

    def tokens(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, each ``(B, 35)``, tokenised as ``ImageReward.score`` does; cached."""
        key = tuple(prompts)
        if key not in self._token_cache:
            tok = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_PROMPT_TOKENS,
                                 return_tensors="pt")
            self._token_cache[key] = (tok.input_ids.to(self.device), tok.attention_mask.to(self.device))
        return self._token_cache[key]

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, 3, 224, 224)`` normalised like ImageReward's PIL transform."""
        return clip_preprocess(images.to(self.device), IMAGE_SIZE, CLIP_MEAN, CLIP_STD)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Reward per image, ``(B,)`` (standardised: about N(0, 1) over the ImageReward training set)."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
        ids, mask = self.tokens(prompts)
        dtype = next(self.model.parameters()).dtype
        from .ir_compat import quiet_transformers

        with quiet_transformers():
            rewards = self.model.score_gard(ids, mask, self.pixels(images).to(dtype))  # (B, 1)
        return rewards[:, 0].float()


# ------------------------------------------------------------------------------------------------ building


def _compat():
    """The ``ImageReward`` package with the transformers-5 fixes applied, or a ScorerError saying what to install."""
    try:
        from . import ir_compat

        return ir_compat, ir_compat.install()
    except ImportError as exc:
        raise ScorerError(
            f"the image-reward package cannot be imported ({str(exc).splitlines()[0][:120]}): "
            "pip install image-reward==1.5 clip-anytorch==2.6.0 'setuptools<81'"
        ) from None


def _tiny_vit_factory() -> Callable[..., tuple[torch.nn.Module, int]]:
    from ImageReward.models.BLIP.vit import VisionTransformer

    def create_vit(vit, image_size, use_grad_checkpointing=False, ckpt_layer=0, drop_path_rate=0):
        return VisionTransformer(img_size=image_size, **TINY_VIT), TINY_VIT["embed_dim"]

    return create_vit


def build_imagereward_model(
    med_config: str | os.PathLike,
    vocab_file: Optional[str | os.PathLike] = None,
    *,
    tiny_vit: bool = False,
    seed: Optional[int] = 0,
) -> torch.nn.Module:
    """An ``ImageReward.ImageReward`` model with random weights (CPU, fp32).

    Args:
        med_config: the BLIP BERT config (JSON); ``encoder_width`` is set from the ViT by the BLIP code.
        vocab_file: a BERT ``vocab.txt`` for the tokenizer; None -> ``bert-base-uncased`` (from the HF cache).
        tiny_vit: the BLIP VisionTransformer with :data:`TINY_VIT` sizes instead of ViT-L/16.
        seed: seeds the random initialisation (None: the global RNG).
    """
    ir_compat, package = _compat()
    vit = _tiny_vit_factory() if tiny_vit else None
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        with ir_compat.build_overrides(create_vit=vit, vocab_file=None if vocab_file is None else str(vocab_file)):
            model = package.ImageReward(med_config=str(med_config), device="cpu")
    return model.eval()


def tiny_imagereward_model(seed: int = 0) -> torch.nn.Module:
    """The ImageReward class at toy size (ViT 32 wide x 2, BERT 1 layer, 282-token vocabulary), random weights.

    The reward head is re-drawn with a fan-in scaled normal: the package's init (std 1/769) makes the reward of
    a random-weight model the same to 1e-8 for every image, which would hide any preprocessing error in tests.
    """
    model = build_imagereward_model(ASSETS / "med_config_tiny.json", ASSETS / "vocab.txt", tiny_vit=True, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in model.mlp.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0.0, layer.in_features ** -0.5, generator=generator)
                layer.bias.normal_(0.0, 0.1, generator=generator)
    return model


_USED_PREFIXES = ("blip.visual_encoder.", "blip.text_encoder.", "mlp.")  # what score_gard reads


def load_imagereward_checkpoint(
    checkpoint: str | os.PathLike, med_config: str | os.PathLike, vocab_file: Optional[str | os.PathLike] = None,
    *, tiny_vit: bool = False,
) -> torch.nn.Module:
    """``ImageReward.load``'s steps (build, ``torch.load``, ``load_state_dict``), refusing a file that misses weights.

    The package loads with ``strict=False`` and discards the result, so a renamed key would silently leave random
    weights; here every weight ``score_gard`` uses must come from the file.
    """
    model = build_imagereward_model(med_config, vocab_file, tiny_vit=tiny_vit, seed=None)
    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, zip errors
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ScorerError(f"cannot read ImageReward checkpoint {checkpoint}: {reason}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ScorerError(f"{checkpoint} does not hold a state dict; expected ImageReward.pt")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k.startswith(_USED_PREFIXES) and not k.endswith("position_ids")]
    if missing:
        raise ScorerError(f"{checkpoint} is not an ImageReward checkpoint for this config: {len(missing)} weights "
                          f"missing (e.g. {missing[0]})")
    return model.eval()


def _bert_vocab(root: Path) -> Optional[str]:
    """``vocab.txt`` of bert-base-uncased: beside the checkpoint, else from the HF cache."""
    if (root / "vocab.txt").is_file():
        return str(root / "vocab.txt")
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache("bert-base-uncased", "vocab.txt")
    except Exception:
        return None
    return found if isinstance(found, str) else None


def _missing_weights_error(root: Path) -> ScorerError:
    return ScorerError(
        f"ImageReward-v1.0 weights are not in {root} and the hub cannot be reached: where there is network run "
        f"`hf download {HUB_REPO} ImageReward.pt med_config.json --local-dir {root}` and "
        "`hf download bert-base-uncased vocab.txt`, or use imagereward:tiny offline"
    )


def _download_default(root: Path) -> None:
    from huggingface_hub import hf_hub_download

    if not hub_reachable():
        raise _missing_weights_error(root)
    for filename in ("ImageReward.pt", "med_config.json"):
        if not (root / filename).is_file():
            hf_hub_download(repo_id=HUB_REPO, filename=filename, local_dir=str(root))
    if _bert_vocab(root) is None:
        hf_hub_download(repo_id="bert-base-uncased", filename="vocab.txt")


def _load_real(checkpoint: Optional[Path]) -> torch.nn.Module:
    if checkpoint is None:
        root = imagereward_cache_dir()
        checkpoint = root / "ImageReward.pt"
        if not checkpoint.is_file() or not (root / "med_config.json").is_file() or _bert_vocab(root) is None:
            _download_default(root)
        med_config = root / "med_config.json"
    else:
        if not checkpoint.is_file():
            raise ScorerError(f"no such ImageReward checkpoint: {checkpoint}")
        root = checkpoint.parent
        med_config = root / "med_config.json"
        if not med_config.is_file():
            med_config = imagereward_cache_dir() / "med_config.json"
        if not med_config.is_file():
            raise ScorerError(f"no med_config.json beside {checkpoint} nor in {imagereward_cache_dir()}")
    vocab = _bert_vocab(root)
    if vocab is None:
        raise ScorerError("the bert-base-uncased tokenizer is not cached: run `hf download "
                          "bert-base-uncased vocab.txt` where there is network, or put vocab.txt beside the "
                          "checkpoint")
    return load_imagereward_checkpoint(checkpoint, med_config, vocab)


def load_imagereward(
    variant: Optional[str] = None,
    *,
    device: torch.device | str = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
) -> ImageRewardScorer:
    """Build the ImageReward scorer: None (v1.0 weights), ``tiny``, ``random-full`` or a checkpoint path."""
    if variant == "tiny":
        model, name = tiny_imagereward_model(), "imagereward:tiny"
    elif variant == "random-full":
        model, name = build_imagereward_model(ASSETS / "med_config.json", ASSETS / "vocab.txt"), \
            "imagereward:random-full"
    elif variant in (None, DEFAULT_WEIGHTS):
        model, name = _load_real(None), "imagereward"
    else:
        path = Path(variant).expanduser()
        if not (path.suffix in (".pt", ".pth", ".bin") or path.exists()):
            raise ScorerError(f"unknown imagereward variant {variant!r}: use imagereward, imagereward:tiny, "
                              "imagereward:random-full or imagereward:/path/to/ImageReward.pt")
        model, name = _load_real(path), f"imagereward:{variant}"
    scorer = ImageRewardScorer(model.to(dtype=dtype), name=name)
    return scorer.to(device)


def _cached() -> Optional[bool]:
    root = imagereward_cache_dir()
    files = (root / "ImageReward.pt").is_file() and (root / "med_config.json").is_file()
    return files and _bert_vocab(root) is not None


# what `date-edit scorers` lists; the registry registers it (this module imports nothing from the registry)
INFO = ScorerInfo(name="imagereward", factory=load_imagereward, differentiable=True,
                  backend="image-reward 1.5 BLIP (score_gard)",
                  default_weights=f"{HUB_REPO} ImageReward.pt + med_config.json, bert-base-uncased vocab",
                  cached=_cached)
