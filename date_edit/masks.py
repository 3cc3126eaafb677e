"""Edit masks: where an edit may change the image. User masks from files, automatic masks from the prompts'
difference, the latent blend with the source's exact trajectory, and the final pixel composite.

A mask is a ``(B, 1, H, W)`` float tensor in [0, 1] at the processed image's size, 1 (white) where the image may
change. On the latent grid it becomes ``(B, 1, h, w)``: a cell may change when any pixel it covers may
(max-pooling), so an object under the mask is never cut by a cell boundary.

* DDPM editing: after each step ``x_{t-1} <- m x_{t-1} + (1 - m) x_{t-1}^src``, where ``x^src`` is the inversion's
  stored trajectory; the inversion is exact, so outside the mask the latent ends on the source's latent.
* FlowEdit: each step's velocity difference is multiplied by ``m``, so outside it ``z_edit`` stays the source's.
* The decoded image is composited with the input under the feathered mask, so every pixel outside the mask is the
  input's exactly (the VAE round trip alone would change them slightly).
* Automatic masks (DiffEdit, Couairon et al. 2022): the mean over several noise draws at the edit's noise levels
  of ``|eps(x_t, source) - eps(x_t, target)|``, averaged over channels. That latent map is brought to the image's
  pixels (bilinear), normalised by its maximum and thresholded; of the regions above the threshold only those
  whose own maximum reaches ``peak`` of the map's are kept (hysteresis, as in Canny's edge linking), so a weaker
  secondary response on an object the prompts did not change is dropped; the rest grows by one latent cell.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .errors import ConfigError, ImageError, excerpt

if TYPE_CHECKING:
    from .conditioning import Condition
    from .sampling import StepState

MASK_SOURCES = ("user", "auto")


@dataclass(frozen=True)
class MaskConfig:
    """Where an edit may change the image, and how the result is put back together."""

    source: str = "user"  # user: a mask passed to the edit; auto: from where the two prompts' predictions differ
    # pixels the mask grows by before use; None: 0 for a user's mask (it is used as drawn), one latent cell (8 px for
    # SD) for an automatic one (the thresholded map covers the changed object's core, not its rim; validated)
    dilate: Optional[int] = None
    feather: int = 2  # pixels of soft edge inside the mask in the final composite (0: hard edge)
    threshold: float = 0.5  # auto: share of the difference map's maximum above which a pixel may change (validated)
    # auto: a region above ``threshold`` is kept only when its own maximum reaches this share of the map's maximum
    # (1.0: only the region holding the maximum; equal to ``threshold``: every region; validated)
    peak: float = 0.9
    draws: int = 8  # auto: noise levels (independent noisings of the source) averaged into the difference map
    composite: bool = True  # paste the edit into the input under the mask, so pixels outside are the input's

    def __post_init__(self) -> None:
        if self.source not in MASK_SOURCES:
            raise ConfigError("mask", f"{excerpt(self.source)}: use a mask file or 'auto'")
        for name in ("dilate", "feather", "draws"):
            value = getattr(self, name)
            if value is None and name == "dilate":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 256:
                raise ConfigError(f"mask_{name}", f"must be an integer in 0..256, got {value!r}")
        if self.draws < 1:
            raise ConfigError("mask_draws", "must be >= 1")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold)
                and 0.0 < self.threshold < 1.0):
            raise ConfigError("mask_threshold", f"must be a number strictly between 0 and 1, got {self.threshold!r}")
        if not (isinstance(self.peak, (int, float)) and not isinstance(self.peak, bool) and math.isfinite(self.peak)
                and self.threshold <= self.peak <= 1.0):
            raise ConfigError("mask_peak", f"must be a number between the threshold ({self.threshold}) and 1, got "
                                           f"{self.peak!r}")

    def to_dict(self) -> dict:
        """JSON-ready settings."""
        return asdict(self)

    def resolved_dilate(self, cell: int) -> int:
        """Pixels of dilation for a model whose latent cell is ``cell`` pixels wide (see ``dilate``)."""
        if self.dilate is not None:
            return self.dilate
        return cell if self.source == "auto" else 0


def load_mask(path: str | os.PathLike, *, original_size: tuple[int, int], processed_size: tuple[int, int],
              resize: str = "fit", max_pixels: Optional[int] = None) -> torch.Tensor:
    """Read a mask file (white = may change) as a ``(1, 1, H, W)`` tensor in {0, 1} at the processed image's size.

    The mask is oriented (EXIF), turned to grey (a transparent pixel counts as black), brought to the input image's
    original size when it differs (stretched), then resized with the image's own ``resize`` policy, so it lies
    over the processed image exactly as it lay over the input. Grey levels are thresholded at 50% of white, whatever
    the file's bit depth and mode (a 16-bit grey of 1000/65535 is 1.5% grey: "keep", as in 8 bits).

    Args:
        original_size / processed_size: ``(width, height)`` of the input image before and after resizing.

    Raises:
        ImageError: one line: the file cannot be read or decoded, or it has no white pixel at all.
    """
    import numpy as np
    from PIL import Image, ImageOps

    from .imaging import _HIGH_BIT_MODES, MIN_SIDE, _high_bit_to_l, _resize, _resize_mode, open_input
    from .limits import DEFAULT_MAX_PIXELS, max_input_bytes

    source = os.fspath(path)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with open_input(source, max_bytes=max_input_bytes(limit)) as f, Image.open(f) as im:
            w, h = im.size
            if w * h > limit:
                raise ImageError(f"mask {source} is {w}x{h} pixels, over the limit of {limit:,}; downscale it")
            if w < MIN_SIDE or h < MIN_SIDE:
                raise ImageError(f"mask {source} is too small ({w}x{h} px); give a mask the size of the image")
            im.load()
            im = ImageOps.exif_transpose(im) or im
            if im.mode in _HIGH_BIT_MODES:  # 16-bit / 32-bit grey: scaled to 8 bits as the photo is, not clipped
                im, _ = _high_bit_to_l(im)
            elif "A" in im.getbands() or im.mode == "P" and "transparency" in im.info:
                rgba = im.convert("RGBA")
                grey = np.asarray(rgba.convert("L"), dtype=np.float32) * (np.asarray(rgba)[..., 3] / 255.0)
                im = Image.fromarray(grey.round().astype(np.uint8), "L")
            else:
                im = im.convert("L")
    except ImageError as e:
        raise ImageError(f"mask: {e}" if not str(e).startswith("mask") else str(e)) from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"mask {source} is not an image Pillow can decode; give a PNG or JPEG, white where the "
                         "image may change") from None
    except OSError as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise ImageError(f"mask {source} cannot be read as an image ({reason}); give a PNG or JPEG, white where "
                         f"the image may change") from None
    except (ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"mask {source} cannot be decoded ({(str(e).splitlines() or [''])[0]}); re-export it "
                         "as a PNG") from None
    if im.size != tuple(original_size):
        im = im.resize(tuple(original_size), Image.Resampling.BILINEAR)
    im, _ = _resize(im, tuple(processed_size), _resize_mode(resize))
    arr = np.asarray(im, dtype=np.float32) / 255.0
    mask = torch.from_numpy((arr >= 0.5).astype(np.float32))[None, None]
    if not bool(mask.any()):
        raise ImageError(f"mask {source} has no white pixel, so nothing may change; paint the region to edit white")
    return mask


def check_mask(mask: torch.Tensor, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """``mask`` as a float ``(batch, 1, H, W)`` tensor in [0, 1] for images of ``size`` ``(H, W)``.

    Raises:
        ConfigError: a mask of another shape, or values outside [0, 1] or not finite.
    """
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[1] != 1:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ConfigError("mask", f"must be a (B, 1, H, W) tensor, got {shape}")
    if tuple(mask.shape[-2:]) != tuple(size):
        raise ConfigError("mask", f"is {tuple(mask.shape[-2:])} but the images are {tuple(size)}; resize it")
    if mask.shape[0] not in (1, batch):
        raise ConfigError("mask", f"has {mask.shape[0]} masks for {batch} images; give one, or one per image")
    mask = mask.detach().float().cpu()
    if not bool(torch.isfinite(mask).all()) or float(mask.min()) < 0 or float(mask.max()) > 1:
        raise ConfigError("mask", "values must lie in [0, 1]")
    return mask.expand(batch, -1, -1, -1).contiguous()


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow a ``(B, 1, H, W)`` mask by ``pixels`` (a square max-pool)."""
    if pixels <= 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * pixels + 1, stride=1, padding=pixels)


def to_latent(mask: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """A pixel mask ``(B, 1, H, W)`` as a binary latent mask ``(B, 1, h, w)``: a cell may change when any of its
    pixels may (max-pool over each cell)."""
    return (F.adaptive_max_pool2d(mask.float(), latent_hw) > 0.5).float()


def to_pixels(latent_mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A latent mask ``(B, 1, h, w)`` as the pixel mask ``(B, 1, H, W)`` it covers (nearest upsampling)."""
    return F.interpolate(latent_mask.float(), size=tuple(size), mode="nearest")


def feathered(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """A soft edge of ``pixels`` INSIDE a binary mask: 0 wherever the mask is 0, rising to 1 within the mask."""
    binary = (mask > 0.5).float()
    if pixels <= 0:
        return binary
    k = 2 * pixels + 1
    soft = F.avg_pool2d(F.pad(binary, (pixels,) * 4, mode="replicate"), kernel_size=k, stride=1)
    return binary * (2.0 * soft - 1.0).clamp(0.0, 1.0)


def composite(edited: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, feather: int) -> torch.Tensor:
    """``m edited + (1 - m) source`` with ``m`` the mask feathered inside; outside the mask exactly ``source``.

    Args:
        edited / source: ``(B, 3, H, W)`` images in [0, 1] (the decoded edit and the processed input).
        mask: ``(B, 1, H, W)`` binary pixel mask.
    """
    m = feathered(mask.to(edited.device), feather)
    out = m * edited + (1.0 - m) * source.to(edited.device, edited.dtype)
    return torch.where(m > 0, out, source.to(edited.device, edited.dtype))


class LatentBlend:
    """After each step, keep the latent outside the mask on the source's trajectory (the loop's ``blend`` seam).

    ``mask_fn(state)`` gives the ``(B, 1, h, w)`` latent mask for the step (a fixed mask, or one Prompt-to-Prompt's
    local blend computes from the step's attention), ``trajectory[i]`` the source's latent at step ``i``'s
    timestep, so ``trajectory[i + 1]`` is where step ``i`` lands.
    """

    def __init__(self, mask_fn: Callable[["StepState"], Optional[torch.Tensor]], trajectory: torch.Tensor) -> None:
        self.mask_fn = mask_fn
        self.trajectory = trajectory
        self.masks: list[torch.Tensor] = []  # the latent masks used, step by step (for the record)

    @classmethod
    def fixed(cls, latent_mask: torch.Tensor, trajectory: torch.Tensor) -> "LatentBlend":
        """The same mask at every step."""
        return cls(lambda state: latent_mask, trajectory)

    def __call__(self, state: "StepState") -> torch.Tensor:
        """The blended ``x_prev`` of ``state`` (its own ``x_prev`` where no mask is known yet)."""
        m = self.mask_fn(state)
        if m is None:
            return state.x_prev
        m = m.to(state.x_prev.device, state.x_prev.dtype)
        self.masks.append(m.detach().cpu())
        target = self.trajectory[state.index + 1].to(state.x_prev.device, state.x_prev.dtype)
        return m * state.x_prev + (1.0 - m) * target  # where m is 0 exactly the target, where 1 exactly x_prev


@torch.no_grad()
def difference_map(denoiser, noisy: Sequence[tuple[torch.Tensor, object]], *, source: "Condition",
                   target: "Condition") -> torch.Tensor:
    """DiffEdit's map (Couairon et al. 2022, sec. 3.1): where the source and target predictions differ.

    Args:
        denoiser: ``pred = denoiser(x_t, t, cond)`` (eps or velocity: any prediction linear in the noise).
        noisy: ``(x_t, t)`` pairs: independent noisings of the source latents ``(B, C, h, w)``.
        source / target: the two prompts' conditions (batch B).

    Returns:
        ``(B, 1, h, w)``: ``|pred(source) - pred(target)|`` averaged over channels and the pairs, divided by each
        image's maximum (so in [0, 1]).
    """
    from .conditioning import cat_conditions

    total = None
    for x_t, t in noisy:
        pred = denoiser(torch.cat([x_t, x_t]), t, cat_conditions(source, target))
        p_src, p_tar = pred.float().chunk(2)
        diff = (p_src - p_tar).abs().mean(dim=1, keepdim=True)  # (B, 1, h, w)
        total = diff if total is None else total + diff
    if total is None:
        raise ValueError("difference_map needs at least one noisy latent")
    return total / total.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)


def regions_reaching(binary: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """The 8-connected regions of a binary ``(B, 1, H, W)`` mask that contain a seed pixel (morphological
    reconstruction by dilation: the seeds grow by 3 x 3 max-pooling, held inside ``binary``, until they stop)."""
    binary = (binary > 0.5).float()
    kept = binary * (seeds > 0.5).float()
    while True:
        grown = F.max_pool2d(kept, 3, stride=1, padding=1) * binary
        if torch.equal(grown, kept):
            return kept
        kept = grown


def auto_mask(difference: torch.Tensor, size: tuple[int, int], *, threshold: float, peak: float) -> torch.Tensor:
    """The automatic mask ``(B, 1, H, W)`` in {0, 1} at the image's ``size`` from a latent difference map.

    The map is upsampled bilinearly to the pixels and renormalised by its maximum; pixels at or above ``threshold``
    may change, but only in the regions whose own maximum reaches ``peak`` (hysteresis): a weaker, separate response
    (on an object the prompts did not change, say) is dropped. Dilation is the caller's (``MaskConfig.dilate``).

    Args:
        difference: ``(B, 1, h, w)``, as :func:`difference_map` gives it.
        threshold / peak: shares of the map's maximum, ``0 < threshold <= peak <= 1``.
    """
    level = F.interpolate(difference.float(), size=tuple(size), mode="bilinear", align_corners=False)
    level = level / level.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    return regions_reaching(level >= threshold, level >= peak * (1.0 - 1e-6))


def to_image(mask: torch.Tensor):
    """The first mask of a ``(B, 1, H, W)`` batch as an 8-bit greyscale PIL image (white = may change)."""
    from PIL import Image

    return Image.fromarray(((mask[0, 0] > 0.5).to(torch.uint8) * 255).cpu().numpy(), "L")


def coverage(mask: Optional[torch.Tensor]) -> Optional[float]:
    """The share of pixels a ``(B, 1, H, W)`` mask lets change (mean over the batch), or None without a mask."""
    return None if mask is None else round(float((mask > 0.5).float().mean()), 4)


__all__ = ["MASK_SOURCES", "LatentBlend", "MaskConfig", "auto_mask", "check_mask", "composite", "coverage",
           "difference_map", "regions_reaching",
           "dilate", "feathered", "load_mask", "to_image", "to_latent", "to_pixels"]
