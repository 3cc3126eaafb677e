"""The pipeline's structure controls: the user's mask checked, the automatic mask computed, the latent blend,
Prompt-to-Prompt's paired denoiser and processors, and the final composite (see :mod:`date_edit.masks` and
:mod:`date_edit.p2p`). Kept apart from :mod:`date_edit.pipeline` so the edit reads as one short function."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch

from .errors import ConfigError
from .masks import MaskConfig

if TYPE_CHECKING:
    from .backbones import Backbone


def with_defaults(backbone: Backbone, config, sources: Sequence[str], user_mask: bool = False,
                  prompts: Optional[Sequence[str]] = None, uncaptioned: bool = False):
    """``config`` with its ``"default"`` structure controls made concrete for this model and these prompts (the
    rules of :mod:`date_edit.defaults`): Prompt-to-Prompt (``P2PConfig()``) where the model has cross-attention, the
    edit is DDPM editing and the call edits one source/target prompt pair (``prompts``: the targets); a user mask
    when ``user_mask`` (a mask tensor is passed), else an automatic mask (``MaskConfig("auto")``) when every image
    has a source prompt, else :data:`DEFAULT_MASK_WITHOUT_SOURCE`; with
    ``uncaptioned`` (a source prompt was asked of a captioner, which gave none) the automatic mask from the target
    alone, which did better than no mask on the toy validation split (benchmarks/results/toy_bare_command_val.md)."""
    from dataclasses import replace

    from .defaults import DEFAULT_MASK_WITHOUT_SOURCE, MODEL_DEFAULT

    if config.p2p == MODEL_DEFAULT:
        from .p2p import P2PConfig, check_supported

        one_pair = prompts is None or len(set(zip(sources, prompts))) == 1
        try:
            check_supported(backbone)
            p2p = P2PConfig() if config.resolved_method(backbone) == "ddpm" and one_pair else None
        except ConfigError:
            p2p = None
        config = replace(config, p2p=p2p)
    if config.mask == MODEL_DEFAULT:
        if user_mask:
            mask = MaskConfig("user")
        elif all(sources) or uncaptioned or DEFAULT_MASK_WITHOUT_SOURCE == "auto":
            mask = MaskConfig("auto")
        else:
            mask = None
        config = replace(config, mask=mask)
    return config


def check(backbone: Backbone, config, sources: Sequence[str]):
    """The config the run honours: P2P without cross-attention or under FlowEdit is refused, or with
    ``config.optional_controls`` left out. An automatic mask without a source prompt is the mask from the target
    alone (where its prediction differs from the unconditional one)."""
    from dataclasses import replace

    if config.p2p is not None:
        from .p2p import check_supported

        try:
            check_supported(backbone)
            if config.resolved_method(backbone) == "flowedit":
                raise ConfigError("p2p", "runs with DDPM editing only (FlowEdit has no source trajectory to pair "
                                         "with); use a mask with FlowEdit")
        except ConfigError:
            if not config.optional_controls:
                raise
            config = replace(config, p2p=None)
    return config


def user_mask(config, mask: Optional[torch.Tensor], batch: int,
               size: tuple[int, int]) -> Optional[torch.Tensor]:
    """The user's mask checked against the images, or None; refuses a mask without a user-mask config and back."""
    from .masks import check_mask

    wants = config.mask is not None and config.mask.source == "user"
    if mask is None:
        if wants:
            raise ConfigError("mask", "is missing: MaskConfig(source='user') needs the mask tensor (white = may "
                                      "change); pass mask=..., or use source='auto'")
        return None
    if not wants:
        raise ConfigError("mask", "was given but config.mask is not MaskConfig(source='user'); set it, or leave "
                                  "the mask out")
    return check_mask(mask, batch, size)


def mask_levels(n_run: int, draws: int) -> list[int]:
    """The step indices whose noise levels an automatic mask averages over: ``draws`` of them, evenly spaced over
    the first half of a run of ``n_run`` steps (where the layout is decided), without repeats."""
    half = max(1, (n_run + 1) // 2)
    return sorted({round(i * (half - 1) / max(1, draws - 1)) for i in range(draws)})


def edit_mask(backbone: Backbone, mask_config: Optional[MaskConfig], user_mask: Optional[torch.Tensor],
               size: tuple[int, int], latent_hw: tuple[int, int], *, noisy: Callable[[list[int]], list],
               n_run: int, source, target) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(pixel_mask (B, 1, H, W), latent_mask (B, 1, h, w))`` for the edit, or ``(None, None)`` without a mask.

    An automatic mask (DiffEdit) averages the prediction difference over ``mask_config.draws`` of the run's noise
    levels, evenly spaced over its first half (where the layout is decided); ``noisy(ks)`` gives those latents. It
    is thresholded at the pixels (:func:`~date_edit.masks.auto_mask`), grown, and each latent cell any of its pixels
    covers may change.
    """
    from .masks import auto_mask, difference_map, dilate, to_latent

    if mask_config is None:
        return None, None
    grow = mask_config.resolved_dilate(backbone.vae_scale_factor)
    if user_mask is not None:
        user_mask = dilate(user_mask, grow)
        return user_mask, to_latent(user_mask, latent_hw).to(backbone.device)
    levels = noisy(mask_levels(n_run, mask_config.draws))
    difference = difference_map(backbone, levels, source=source, target=target).cpu()
    pixel_mask = dilate(auto_mask(difference, size, threshold=mask_config.threshold, peak=mask_config.peak), grow)
    return pixel_mask, to_latent(pixel_mask, latent_hw).to(backbone.device)


def ran_controls(config: dict) -> list[str]:
    """The controls a result's resolved ``config`` ran, by name: ``mask-user``/``mask-auto``, ``p2p``,
    ``local-blend`` (a default control the model could not run is not among them)."""
    names = [f"mask-{config['mask']['source']}"] if config.get("mask") else []
    if config.get("p2p"):
        names += ["p2p"] + (["local-blend"] if config["p2p"].get("local_blend") else [])
    return names


def prompt_to_prompt(backbone: Backbone, p2p, sources: list[str], prompts: list[str], trajectory: torch.Tensor,
                      timesteps: Sequence[int], source_cond, latent_mask: Optional[torch.Tensor], blend):
    """``(denoiser, context, blend)`` of a Prompt-to-Prompt run: the paired denoiser, the installed processors
    (removed when the context exits, also on an error), and the latent blend (local blend within any mask)."""
    from .masks import LatentBlend
    from .p2p import AttentionController, P2PDenoiser, attention_control

    if len(set(zip(sources, prompts))) != 1:
        raise ConfigError("p2p", "needs one source/target prompt pair per call: edit images with different prompts "
                                 "in separate calls")
    tokenizer = backbone.tokenizer
    length = int(getattr(tokenizer, "model_max_length", 77) or 77)
    controller = AttentionController.from_prompts(p2p, tokenizer, sources[0], prompts[0], run_steps=len(timesteps),
                                                  batch=len(prompts), length=length)
    denoiser = P2PDenoiser(backbone, controller, source_x_ts=trajectory, timesteps=timesteps,
                           source_cond=source_cond)
    if p2p.local_blend:
        hw = tuple(trajectory.shape[-2:])

        def mask_fn(state):
            m = controller.blend_mask(hw)
            if m is None:
                return latent_mask
            m = m.to(trajectory.device)
            return m if latent_mask is None else m * latent_mask

        blend = LatentBlend(mask_fn, trajectory)
    return denoiser, attention_control(backbone.unet, controller), blend


def composited(result, pixels: torch.Tensor, pixel_mask: Optional[torch.Tensor],
                mask_config: Optional[MaskConfig]):
    """Paste the edit into the input under the feathered mask (pixels outside it become the input's exactly)."""
    from .masks import composite

    if pixel_mask is None or mask_config is None:
        return result
    result.mask = pixel_mask.cpu()
    if mask_config.composite:
        result.images = composite(result.images, pixels.cpu(), result.mask, mask_config.feather)
    return result
