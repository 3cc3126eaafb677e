"""The PIE-Bench editing metrics, computed as the reference evaluation of PnPInversion (Ju et al., "Direct
Inversion", ICLR 2024; cure-lab/PnPInversion ``evaluation/``) computes them, per item.

Inputs: the source image (the dataset's photo), the edited image (a method's output), both RGB uint8 ``HxWx3`` of one
size (numpy arrays or PIL images), and ``mask``, an ``HxW`` array of 0/1 where 1 marks the edited region (already
decoded by the caller). The eight metrics of the reference's default list, in raw reference units (multiply by
:data:`UNITS` for the published scale):

* ``structure_distance``: DINO ViT-B/8 self-similarity distance of the whole images (no mask).
* ``psnr_unedit_part``, ``lpips_unedit_part``, ``mse_unedit_part``, ``ssim_unedit_part``: both images multiplied by
  ``1 - mask`` (pixels of the edited region become 0 in both) and measured whole; None when nothing is unedited.
* ``clip_similarity_source_image``, ``clip_similarity_target_image``: CLIP score (torchmetrics' ``CLIPScore``) of
  the source image with the source prompt and of the edited image with the target prompt.
* ``clip_similarity_target_image_edit_part``: CLIP score of ``uint8(edited * mask)`` with the target prompt; None
  when the mask is empty.

Variants: ``reference`` (the real networks: DINO ViT-B/8, LPIPS SqueezeNet, CLIP ViT-L/14; the weights must be
cached or downloadable), ``random`` (the same computations with random weights, offline; the numbers mean
nothing) and ``toy`` (the project's 64-px toy world: its held-out toy CLIP gives both the structure keys and the
CLIP score).
"""

from __future__ import annotations

import math
import socket
from typing import Any, Optional

import numpy as np

UNITS = {
    "structure_distance": 1e3,
    "psnr_unedit_part": 1,
    "lpips_unedit_part": 1e3,
    "mse_unedit_part": 1e4,
    "ssim_unedit_part": 1e2,
    "clip_similarity_target_image": 1,
    "clip_similarity_target_image_edit_part": 1,
    "clip_similarity_source_image": 1,
}
"""The scale factors of the published PIE-Bench tables (a raw value times its factor is the number printed)."""

METRICS = tuple(UNITS)
VARIANTS = ("reference", "random", "toy")
DINO_ID = "facebook/dino-vitb8"
CLIP_ID = "openai/clip-vit-large-patch14"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SQUEEZE_URL = "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"
_UNEDIT = ("psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part")


class PieMetrics:
    """The PIE-Bench metrics of one item: ``PieMetrics(variant)(source, edited, mask, source_prompt,
    target_prompt) -> dict`` (raw reference units; see :data:`UNITS`). Each network is built once, here.

    Args:
        variant: ``reference`` (DINO ViT-B/8 ``facebook/dino-vitb8``, torchmetrics' LPIPS with SqueezeNet, CLIP
            ``openai/clip-vit-large-patch14``; when a weight is neither cached nor downloadable: RuntimeError),
            ``random`` (random-weight stand-ins, offline, for tests: a ViT with 8-px patches at 224 px, a random
            SqueezeNet LPIPS and a tiny CLIP; their numbers mean nothing) or ``toy`` (the toy world's held-out CLIP:
            structure keys from its vision tower at its 64-px image size, CLIP score with it; LPIPS random).
        device: where the networks run.
        antialias: the ``antialias`` of the structure distance's ``Resize``; False is what tensor ``Resize`` did
            in the torchvision of 2023, when the reference numbers were made.

    Attributes:
        labels: metric name -> what computed it.
        structure_model: the ViT run for the structure distance; ``structure_keys`` the key projection hooked in it.
        clip_model, clip_processor, tokenizer: the CLIP score's model, image processor and tokenizer.
        lpips_net: torchmetrics' ``_LPIPS`` network.
    """

    def __init__(self, variant: str = "reference", device: Any = "cpu", antialias: bool = False) -> None:
        import torch
        from torchvision.transforms import Normalize, Resize

        if variant not in VARIANTS:
            raise ValueError(f"PIE metrics variant {variant!r}: use one of {', '.join(VARIANTS)}")
        self.variant = variant
        self.device = torch.device(device)
        self.antialias = bool(antialias)
        if variant == "reference":
            built = _build_reference()
        elif variant == "random":
            built = _build_random()
        else:
            built = _build_toy()
        vit, clip, self.clip_processor, self.tokenizer, self.lpips_net, self.labels = built
        self.structure_model = vit.eval().requires_grad_(False).to(self.device)
        self.structure_keys = _last_key_projection(self.structure_model)
        self.clip_model = clip.eval().requires_grad_(False).to(self.device)
        self.lpips_net = self.lpips_net.eval().requires_grad_(False).to(self.device)
        # the reference: Resize(224, max_size=480) then ImageNet Normalize; the toy ViT works at its own size
        size = int(self.structure_model.config.image_size)
        self._vit_size = size
        self._resize = Resize(size, max_size=round(480 * size / 224), antialias=self.antialias)
        self._normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)

    # --- the metrics --------------------------------------------------------------------------------------------

    def structure_distance(self, source_u8, edited_u8) -> float:
        """DINO self-similarity distance of two whole images (lower: structure better kept; published x1e3).

        Each image, as float32 in **0..255** (the reference never divides by 255 before its ImageNet
        ``Normalize``; the published numbers include this quirk, so it is kept), shape (1, 3, H, W), is resized
        (``Resize(224, max_size=480)``, bilinear) and normalised; the ViT's last block's key projection gives
        keys (T, D) for all tokens (CLS and patches); their cosine self-similarity (T, T), ``k k^T /
        clamp(|k_i| |k_j|, 1e-8)``; the distance is the mean squared difference of the two matrices.
        """
        import torch.nn.functional as F

        a, b = _pair(source_u8, edited_u8)
        return float(F.mse_loss(_self_similarity(self._keys(a)), _self_similarity(self._keys(b))))

    def psnr(self, a_u8, b_u8, keep=None) -> float:
        """PSNR (dB, data range 1) of the two images /255, both multiplied by ``keep`` (HxW 0/1, the pixels
        measured; None: all), the MSE taken over all 3*H*W values; ``math.inf`` when they are equal there."""
        from torchmetrics.functional.image import peak_signal_noise_ratio

        x, y = self._masked01(a_u8, b_u8, keep)
        value = float(peak_signal_noise_ratio(x, y, data_range=1.0))
        return math.inf if math.isinf(value) and value > 0 else value

    def lpips(self, a_u8, b_u8, keep=None) -> float:
        """LPIPS (SqueezeNet, torchmetrics' network) of the images /255 times ``keep``, scaled to [-1, 1]
        (unmeasured pixels become -1 in both; published x1e3)."""
        import torch

        x, y = self._masked01(a_u8, b_u8, keep)
        with torch.no_grad():
            return float(self.lpips_net(x * 2 - 1, y * 2 - 1).reshape(-1)[0])

    def mse(self, a_u8, b_u8, keep=None) -> float:
        """Mean squared error of the images /255 times ``keep`` over all 3*H*W values (published x1e4)."""
        from torchmetrics.functional import mean_squared_error

        x, y = self._masked01(a_u8, b_u8, keep)
        return float(mean_squared_error(x[0].contiguous(), y[0].contiguous()))

    def ssim(self, a_u8, b_u8, keep=None) -> float:
        """SSIM (torchmetrics' defaults: Gaussian kernel 11, sigma 1.5, k1 0.01, k2 0.03, mean of the map; data
        range 1) of the images /255 times ``keep`` (published x100)."""
        from torchmetrics.functional.image import structural_similarity_index_measure

        x, y = self._masked01(a_u8, b_u8, keep)
        return float(structural_similarity_index_measure(x, y, data_range=1.0))

    def clip_score(self, image_u8, text: str, keep=None) -> float:
        """torchmetrics ``CLIPScore`` of one image and one prompt: ``max(100 * cos(image, text), 0)``.

        ``keep`` (HxW 0/1) blacks out the other pixels first (``uint8(image * keep)``, the edit-part score). The
        image goes through the model's own ``CLIPImageProcessor`` (PIL resize, as the processor of 2023); the
        prompt is tokenized with padding and cut to the text model's positions (77), as torchmetrics does.
        """
        import torch

        from date_edit.scorers.clip import features  # transformers 5 returns a model output, 4.x a tensor

        img = _rgb(image_u8)
        if keep is not None:
            img = np.uint8(img * _keep(keep, img.shape)[..., None].astype(np.float64))
        pixels = self.clip_processor(images=img, return_tensors="pt")["pixel_values"].to(self.device)
        tok = self.tokenizer([text], padding=True, return_tensors="pt")
        limit = int(self.clip_model.config.text_config.max_position_embeddings)
        ids, att = tok["input_ids"][..., :limit], tok["attention_mask"][..., :limit]
        with torch.no_grad():
            img_f = features(self.clip_model.get_image_features(pixel_values=pixels))
            txt_f = features(self.clip_model.get_text_features(input_ids=ids.to(self.device),
                                                                attention_mask=att.to(self.device)))
        img_f = img_f / img_f.norm(p=2, dim=-1, keepdim=True)
        txt_f = txt_f / txt_f.norm(p=2, dim=-1, keepdim=True)
        score = 100 * (img_f * txt_f).sum(dim=-1)
        return float(torch.clamp(score, min=0).reshape(-1)[0])

    def __call__(self, source_u8, edited_u8, mask, source_prompt: str,
                 target_prompt: str) -> dict[str, Optional[float]]:
        """All eight metrics of one item (keys of :data:`UNITS`, raw units). The unedit-part metrics are None when
        the mask covers the whole image, the edit-part CLIP score None when the mask is empty (the reference's
        "nan"); PSNR is ``math.inf`` when the unedited parts are equal (not capped: the caller decides)."""
        src, edt = _pair(source_u8, edited_u8)
        edit = _keep(mask, src.shape)
        unedit = 1.0 - edit
        out: dict[str, Optional[float]] = {"structure_distance": self.structure_distance(src, edt)}
        if unedit.sum() == 0:
            out.update(dict.fromkeys(_UNEDIT))
        else:
            out["psnr_unedit_part"] = self.psnr(src, edt, unedit)
            out["lpips_unedit_part"] = self.lpips(src, edt, unedit)
            out["mse_unedit_part"] = self.mse(src, edt, unedit)
            out["ssim_unedit_part"] = self.ssim(src, edt, unedit)
        out["clip_similarity_target_image"] = self.clip_score(edt, target_prompt)
        out["clip_similarity_target_image_edit_part"] = (
            None if edit.sum() == 0 else self.clip_score(edt, target_prompt, keep=edit))
        out["clip_similarity_source_image"] = self.clip_score(src, source_prompt)
        return out

    # --- internals ----------------------------------------------------------------------------------------------

    def _masked01(self, a_u8, b_u8, keep):
        """Both images as (1, 3, H, W) float32 /255, times ``keep`` (the reference's order: /255, then mask)."""
        import torch

        a, b = _pair(a_u8, b_u8)
        k = np.ones(a.shape[:2], np.float32) if keep is None else _keep(keep, a.shape)
        out = []
        for img in (a, b):
            x = (img.astype(np.float32) / 255) * k[..., None]
            out.append(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(self.device))
        return out

    def _keys(self, img: np.ndarray):
        """The last block's keys (T, D) of one uint8 image, fed in 0..255 (the reference's quirk)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(img.astype(np.float32).transpose(2, 0, 1)))[None].to(self.device)
        x = self._normalize(self._resize(x))
        captured = []
        handle = self.structure_keys.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            extra = {} if tuple(x.shape[-2:]) == (self._vit_size,) * 2 else {"interpolate_pos_encoding": True}
            with torch.no_grad():
                self.structure_model(pixel_values=x, **extra)
        finally:
            handle.remove()
        return captured[-1][0]


# --- building the networks --------------------------------------------------------------------------------------


def _build_random():
    import torch
    from torchmetrics.functional.image.lpips import _LPIPS
    from transformers import ViTConfig, ViTModel

    from date_edit.hub import seeded
    from date_edit.scorers.clip import tiny_clip_model
    from date_edit.tokenizer import load_clip_tokenizer

    config = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                       image_size=224, patch_size=8, layer_norm_eps=1e-6)
    with seeded(0):
        vit = ViTModel(config, add_pooling_layer=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lpips = _LPIPS(pretrained=False, net="squeeze", pnet_rand=True)
    processor = _clip_processor(size=32)
    labels = _labels(structure="random-weight ViT, 8-px patches at 224 px (numbers mean nothing)",
                     lpips="random-weight LPIPS SqueezeNet (numbers mean nothing)",
                     clip="random-weight tiny CLIP (numbers mean nothing)")
    return vit, tiny_clip_model(), processor, load_clip_tokenizer(), lpips, labels


def _build_toy():
    import torch
    from torchmetrics.functional.image.lpips import _LPIPS
    from transformers import CLIPImageProcessorPil, CLIPModel

    from date_edit.backbones import TOY_DIR
    from date_edit.tokenizer import load_clip_tokenizer

    path = TOY_DIR / "clip_heldout"
    if not (path / "config.json").is_file():
        raise RuntimeError(f"the toy held-out CLIP is not in {path}: rebuild it with `make toy-model`")
    clip = CLIPModel.from_pretrained(str(path), local_files_only=True)
    processor = CLIPImageProcessorPil.from_pretrained(str(path), local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lpips = _LPIPS(pretrained=False, net="squeeze", pnet_rand=True)
    labels = _labels(structure="toy held-out CLIP vision keys (date_edit/assets/toy/clip_heldout, 64 px)",
                     lpips="random-weight LPIPS SqueezeNet (numbers mean nothing)",
                     clip="toy held-out CLIP (date_edit/assets/toy/clip_heldout)")
    return clip.vision_model, clip, processor, load_clip_tokenizer(TOY_DIR / "tokenizer"), lpips, labels


def _build_reference():
    from date_edit.hub import hub_reachable

    missing = _uncached_reference_weights()
    unreachable = [name for name, host in missing if not (hub_reachable() and _reachable(host))]
    if unreachable:
        raise RuntimeError(
            f"PIE metrics 'reference' needs weights that are not cached and cannot be downloaded here: "
            f"{', '.join(unreachable)}; where there is network run `hf download {DINO_ID}` and `hf download "
            f"{CLIP_ID}` and build torchmetrics' squeeze LPIPS once (it fetches {SQUEEZE_URL} into the torch hub "
            "cache), or use variant='random'")
    uncached = {name for name, _ in missing}
    try:
        from torchmetrics.functional.image.lpips import _LPIPS
        from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer, ViTModel

        # DINO's own LayerNorm eps is 1e-6 (the hub configs say 1e-12, transformers' default)
        vit = ViTModel.from_pretrained(DINO_ID, add_pooling_layer=False, layer_norm_eps=1e-6,
                                       local_files_only=DINO_ID not in uncached)
        local = CLIP_ID not in uncached
        clip = CLIPModel.from_pretrained(CLIP_ID, local_files_only=local)
        processor = CLIPImageProcessorPil.from_pretrained(CLIP_ID, local_files_only=local)
        tokenizer = CLIPTokenizer.from_pretrained(CLIP_ID, local_files_only=local)
        lpips = _LPIPS(pretrained=True, net="squeeze", pnet_rand=False)
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise RuntimeError(f"PIE metrics 'reference': could not load the weights ({first}); `hf download "
                           f"{DINO_ID}` and `hf download {CLIP_ID}` where there is network") from None
    labels = _labels(structure=f"DINO ViT-B/8 ({DINO_ID}) last-block keys",
                     lpips="LPIPS SqueezeNet (torchmetrics, ImageNet weights)",
                     clip=f"CLIP ViT-L/14 ({CLIP_ID})")
    return vit, clip, processor, tokenizer, lpips, labels


def _uncached_reference_weights() -> list[tuple[str, str]]:
    """(name, host to fetch it from) of each reference weight not cached here."""
    import os

    import torch

    missing = []
    for repo in (DINO_ID, CLIP_ID):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = isinstance(try_to_load_from_cache(repo, "config.json"), str)
        except Exception:  # noqa: BLE001
            cached = False
        if not cached:
            missing.append((repo, "huggingface.co"))
    squeeze = os.path.join(torch.hub.get_dir(), "checkpoints", SQUEEZE_URL.rsplit("/", 1)[1])
    if not os.path.isfile(squeeze):
        missing.append(("torchvision squeezenet1_1 ImageNet weights", "download.pytorch.org"))
    return missing


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether ``host`` answers a TCP connect on 443 (False when HF_HUB_OFFLINE asks for no network)."""
    from date_edit.hub import offline

    if offline():
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _clip_processor(size: int):
    """A ``CLIPImageProcessor`` (PIL backend) at ``size`` px: shortest side, bicubic; center crop; CLIP mean/std."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                 do_center_crop=True, resample=3, image_mean=list(CLIP_MEAN),
                                 image_std=list(CLIP_STD))


def _labels(*, structure: str, lpips: str, clip: str) -> dict[str, str]:
    return {
        "structure_distance": structure,
        "psnr_unedit_part": "torchmetrics PSNR (data range 1) of the unedited part",
        "lpips_unedit_part": f"{lpips} of the unedited part",
        "mse_unedit_part": "torchmetrics MSE of the unedited part",
        "ssim_unedit_part": "torchmetrics SSIM (data range 1) of the unedited part",
        "clip_similarity_target_image": clip,
        "clip_similarity_target_image_edit_part": f"{clip}, edited region only",
        "clip_similarity_source_image": clip,
    }


# --- small helpers ----------------------------------------------------------------------------------------------


def _last_key_projection(model):
    """The key projection of ``model``'s last attention block (transformers 5 ``k_proj``, 4.x ``attention.key``)."""
    found = [m for name, m in model.named_modules() if name.endswith((".k_proj", ".attention.key"))]
    if not found:
        raise ValueError(f"no key projection found in {type(model).__name__}")
    return found[-1]


def _self_similarity(keys):
    """Cosine self-similarity (T, T) of the rows of ``keys`` (T, D), norms clamped at 1e-8 as the reference."""
    import torch

    norms = keys.norm(dim=-1, keepdim=True)
    return (keys @ keys.T) / torch.clamp(norms @ norms.T, min=1e-8)


def _rgb(image) -> np.ndarray:
    """A uint8 ``HxWx3`` array from a numpy array or a PIL image."""
    if hasattr(image, "convert") and hasattr(image, "size"):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"PIE metrics need RGB uint8 HxWx3 images, got {arr.dtype} of shape {arr.shape}")
    return arr


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _rgb(a), _rgb(b)
    if a.shape != b.shape:
        raise ValueError(f"PIE metrics need two images of one shape, got {a.shape} and {b.shape}")
    return a, b


def _keep(mask, shape) -> np.ndarray:
    """An ``HxW`` float32 0/1 array (an ``HxWxC`` mask gives its first channel)."""
    arr = np.asarray(mask)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.shape != tuple(shape[:2]):
        raise ValueError(f"the mask has shape {np.asarray(mask).shape}, the images {tuple(shape)}")
    return arr.astype(np.float32)
