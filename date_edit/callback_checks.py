"""The argument checks of :class:`date_edit.callback.DateCallback`: every misuse is one
:class:`~date_edit.errors.ConfigError` naming the argument, raised before any model runs.

The constructor checks the pipeline, prompts, scorer, config, size and chained callback; :meth:`prepare` the step
count, guidance scale and initial latents; each diffusers callback invocation the pipeline it came from, the step
index and the tensors it was handed (a pipeline not given ``callback_on_step_end_tensor_inputs=date.tensor_inputs``
hands ``latents`` alone).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping
from typing import Optional, Sequence

import torch

from .date import DateConfig
from .errors import ConfigError, check_text
from .limits import check_dimensions

PIPELINES = "a StableDiffusionPipeline, StableDiffusionXLPipeline, StableDiffusion3Pipeline or FluxPipeline"
_EXCERPT = 40  # characters of a user's value quoted in a message at most


def _plain(value: object) -> bool:
    return isinstance(value, (str, bytes, numbers.Number, list, tuple, dict, type(None)))


def excerpt(value: object) -> str:
    """A short ``repr`` of ``value`` for a message, one line of at most :data:`_EXCERPT` characters (cut with an
    ellipsis); an object that is not a plain value (str, bytes, number, None, list, tuple, dict) shows its type
    alone, ``<DDIMScheduler>``."""
    if not _plain(value):
        return f"<{type(value).__name__}>"
    text = repr(value)
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def describe(value: object) -> str:
    """``value``'s type and :func:`excerpt` for a message: ``str '4'``, ``NoneType None``, ``<DDIMScheduler>``."""
    return f"{type(value).__name__} {excerpt(value)}" if _plain(value) else excerpt(value)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def denoiser_of(pipe) -> Optional[torch.nn.Module]:
    """The pipeline's UNet or transformer (None when it has neither)."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


def check_pipe(pipe) -> None:
    """``pipe`` is a loaded diffusers pipeline that takes ``callback_on_step_end`` and has a UNet or transformer."""
    if pipe is None or isinstance(pipe, (str, bytes)) or not callable(pipe):
        hint = " (pass the pipeline itself, not its scheduler)" if hasattr(pipe, "set_timesteps") else ""
        raise ConfigError("pipe", f"must be a loaded diffusers pipeline ({PIPELINES}), got "
                                  f"{describe(pipe)}{hint}")
    try:
        params = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        params = {}
    if "callback_on_step_end" not in params:
        raise ConfigError("pipe", f"{type(pipe).__name__} has no callback_on_step_end: DATE cannot run inside "
                                  "it; use Backbone.from_pipeline(pipe) with date_edit.generate instead")
    if denoiser_of(pipe) is None:
        raise ConfigError("pipe", f"{type(pipe).__name__} has no unet or transformer module: DateCallback takes "
                                  f"{PIPELINES}")


def check_prompts(prompt) -> list[str]:
    """The prompts as a list: one string, or a non-empty list or tuple of strings (valid UTF-8 text)."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)):
        raise ConfigError("prompt", f"must be a string or a list of strings, got "
                                    f"{describe(prompt)}")
    if not prompts:
        raise ConfigError("prompt", "is an empty list: give at least one prompt (one image per prompt)")
    for item in prompts:
        if not isinstance(item, str):
            raise ConfigError("prompt", f"must hold strings only, got {describe(item)}")
        check_text(item, "prompt")
    return list(prompts)


def check_scorer(scorer) -> None:
    """``scorer`` is a built, differentiable scorer (DATE's objective)."""
    if scorer is None:
        raise ConfigError("scorer", "is missing: DATE needs one; pass scorer=build_scorer('clip') "
                                    "(date_edit.scorers)")
    if isinstance(scorer, str):
        raise ConfigError("scorer", f"{excerpt(scorer)} is a scorer spec, not a scorer: pass "
                                    f"build_scorer({excerpt(scorer)}) (date_edit.scorers)")
    if not callable(scorer) or not getattr(scorer, "differentiable", False):
        raise ConfigError("scorer", f"must be a differentiable scorer (DATE's objective): pass one from "
                                    f"date_edit.scorers.build_scorer, got {describe(scorer)}")


def check_config(config) -> None:
    """``config`` is a :class:`~date_edit.date.DateConfig`."""
    if not isinstance(config, DateConfig):
        raise ConfigError("config", f"must be a DateConfig (date_edit.DateConfig(update_steps=...)), got "
                                    f"{describe(config)}")


def check_then(then, then_inputs) -> list[str]:
    """``then`` is None or callable; ``then_inputs`` a list or tuple of tensor names. Returns the names."""
    if then is not None and not callable(then):
        raise ConfigError("then", f"must be a callback_on_step_end function (pipe, i, t, tensors) or None, got "
                                  f"{describe(then)}")
    if isinstance(then_inputs, str) or not isinstance(then_inputs, (list, tuple)):
        raise ConfigError("then_inputs", f"must be a list of tensor names such as ['latents'], got "
                                         f"{describe(then_inputs)}")
    for name in then_inputs:
        if not isinstance(name, str):
            raise ConfigError("then_inputs", f"must hold tensor names (strings), got {excerpt(name)}")
    return list(then_inputs)


def check_then_offered(then_inputs: Sequence[str], offered: Sequence[str], pipe_name: str) -> None:
    """Each of ``then_inputs`` is a tensor the pipeline hands to callbacks."""
    unknown = [n for n in then_inputs if n not in offered]
    if unknown:
        raise ConfigError("then_inputs", f"{excerpt(unknown[0])} is not a tensor {pipe_name} hands to callbacks: "
                                         f"use some of {', '.join(offered)}")


def check_size(height, width, backbone) -> tuple[int, int]:
    """The image size ``(height, width)``: each None (the model's native size) or an integer side that the
    model takes (a multiple of its ``size_multiple``, within the pixel budget)."""
    check_dimensions(height, width)
    m = backbone.size_multiple
    for name, side in (("height", height), ("width", width)):
        if side is not None and side % m:
            raise ConfigError(name, f"{side} is not a multiple of {m}, which this model needs: use "
                                    f"{max(m, side // m * m)} or {(side // m + 1) * m}")
    return int(height or backbone.native_size), int(width or backbone.native_size)


def check_run(num_inference_steps, guidance_scale, backbone) -> None:
    """A step count from 1 to the model's training timesteps and a finite guidance scale."""
    most = int(getattr(backbone.schedule, "num_train_timesteps", 1000))
    if not _is_int(num_inference_steps):
        raise ConfigError("num_inference_steps", f"must be an integer from 1 to {most}, got "
                                                 f"{describe(num_inference_steps)}")
    if not 1 <= num_inference_steps <= most:
        raise ConfigError("num_inference_steps", f"must be from 1 to {most} (the model's training timesteps), got "
                                                 f"{num_inference_steps}")
    check_guidance(guidance_scale)


def check_guidance(guidance_scale) -> float:
    """``guidance_scale`` as a float: a finite real number."""
    if not isinstance(guidance_scale, numbers.Real) or isinstance(guidance_scale, bool):
        raise ConfigError("guidance_scale", f"must be a number such as 7.5, got "
                                            f"{describe(guidance_scale)}")
    if not math.isfinite(float(guidance_scale)):
        raise ConfigError("guidance_scale", f"must be a finite number such as 7.5, got {guidance_scale}")
    return float(guidance_scale)


def latent_shapes(backbone, size: tuple[int, int], batch: int) -> list[tuple[int, ...]]:
    """The initial latents' shapes a run at ``size`` takes: image layout, and FLUX's packed layout too."""
    f, c = backbone.vae_scale_factor, backbone.latent_channels
    h, w = size[0] // f, size[1] // f
    shapes = [(batch, c, h, w)]
    if backbone.family == "flux":
        shapes.append((batch, (h // 2) * (w // 2), 4 * c))
    return shapes


def check_latents(latents, backbone, size: tuple[int, int], batch: int) -> None:
    """``latents`` is a finite floating-point tensor of one of :func:`latent_shapes`, one latent per prompt."""
    shapes = latent_shapes(backbone, size, batch)
    f = backbone.vae_scale_factor
    wanted = f"{shapes[0]} (batch, channels, height/{f}, width/{f})" + "".join(f" or, packed, {s}" for s in shapes[1:])
    if not isinstance(latents, torch.Tensor):
        raise ConfigError("latents", f"must be a torch.Tensor of initial noise, shape {wanted}, got "
                                     f"{type(latents).__name__}")
    shape = tuple(latents.shape)
    if shape not in shapes:
        if latents.dim() in {len(s) for s in shapes} and latents.dim() > 0 and shape[0] != batch:
            raise ConfigError("latents", f"has a batch of {shape[0]} for {batch} prompt(s): give one latent per "
                                         f"prompt, shape {wanted}")
        raise ConfigError("latents", f"has shape {shape}; {size[0]}x{size[1]} images on this pipeline take "
                                     f"{wanted}")
    if not latents.is_floating_point():
        raise ConfigError("latents", f"must be a floating-point tensor, got {latents.dtype}")
    if not bool(torch.isfinite(latents).all()):
        raise ConfigError("latents", "holds NaN or infinite values: pass finite initial noise (torch.randn)")


def check_step(pipe, i, tensors, *, denoiser, needed: Sequence[str]) -> None:
    """One diffusers callback invocation: from the pipeline this callback was made for, with a step index in its
    run and a dict holding every tensor DATE reads (``needed``)."""
    if denoiser_of(pipe) is not denoiser or not hasattr(getattr(pipe, "scheduler", None), "timesteps"):
        raise ConfigError("pipe", f"is not the pipeline this DateCallback was made for (got {describe(pipe)}): "
                                  "make one DateCallback per pipeline, passed as its callback_on_step_end")
    n = len(pipe.scheduler.timesteps)
    if not _is_int(i) or not 0 <= i < n:
        raise ConfigError("i", f"must be a step index from 0 to {n - 1} of the pipeline's run, got {excerpt(i)}")
    if not isinstance(tensors, Mapping):
        raise ConfigError("callback_kwargs", f"must be the dict of tensors diffusers hands a callback, got "
                                             f"{type(tensors).__name__}")
    missing = [name for name in needed if not isinstance(tensors.get(name), torch.Tensor)]
    if missing:
        raise ConfigError("callback_on_step_end_tensor_inputs",
                          f"lacks {', '.join(missing)}, which DATE reads: call the pipeline with "
                          "callback_on_step_end_tensor_inputs=date.tensor_inputs, or as pipe(**date.prepare(...))")


def check_batch(tensors: Mapping, names: dict, batch: int, cfg: bool) -> None:
    """The pipeline runs the callback's prompts: ``batch`` latents, and token embeddings of ``batch`` per
    guidance branch."""
    latents, tokens = tensors[names["latents"]], tensors[names["tokens"]]
    per_branch = tokens.shape[0] // 2 if cfg else tokens.shape[0]
    if latents.shape[0] != batch or per_branch != batch:
        raise ConfigError("prompt", f"does not match the pipeline's run: it makes {latents.shape[0]} image(s), this "
                                    f"DateCallback was made for {batch} prompt(s); call the pipeline with the "
                                    "callback's prompts, one image per prompt (num_images_per_prompt=1)")
