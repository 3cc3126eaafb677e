"""The one denoising loop (editing: DDPM eta=1 with stored noise maps; generation: DDIM eta=0).

In the style of k-diffusion, guidance lives in the denoiser and per-step changes of the condition
live in a hook; the loop itself is written out once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from .cfg import Denoiser, guided_eps, shared_guidance, step_eps  # noqa: F401 - guided_eps: API
from .conditioning import Condition
from .schedule import NoiseSchedule


@dataclass
class StepState:
    """What a hook or observer sees at step ``index`` (timestep ``t``) of a run."""

    index: int
    t: int
    x_t: torch.Tensor
    cond: Condition
    eps: Optional[torch.Tensor] = None
    x_prev: Optional[torch.Tensor] = None


CondHook = Callable[[StepState], Condition]
Observer = Callable[[StepState], None]
Blend = Callable[[StepState], torch.Tensor]


def sample(
    denoiser: Denoiser,
    x_start: torch.Tensor,
    timesteps: Sequence[int],
    schedule: NoiseSchedule,
    *,
    cond: Condition,
    uncond: Optional[Condition],
    guidance_scale: float,
    noise_maps: Optional[torch.Tensor] = None,
    cond_hook: Optional[CondHook] = None,
    observers: Sequence[Observer] = (),
    blend: Optional[Blend] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> torch.Tensor:
    """Denoise ``x_start`` through ``timesteps`` and return the final latents.

    Args:
        x_start: ``(B, C, h, w)`` latents at ``timesteps[0]``.
        timesteps: the timesteps to run, high to low; the step after the last lands on the one
            that follows it in the full schedule (pass the full list's tail for edits).
        cond / uncond: conditional / unconditional conditions (a Conditioning or ``(B, L, D)`` tokens).
        noise_maps: ``(len(timesteps), B, C, h, w)``: DDPM eta=1 with these z_t (editing);
            ``None``: deterministic DDIM eta=0 (generation).
        cond_hook: called before each step's eps with the state; returns the condition to use
            for this step and every later one (DATE is such a hook). A hook that evaluates the guided eps itself
            exposes its :class:`~date_edit.cfg.ClassifierFreeGuidance` as ``cond_hook.guidance``: with this
            loop's ``uncond`` and ``guidance_scale``, the step takes the unconditional eps it kept at this ``x_t``.
        observers: read-only callbacks after each step (``eps``, ``x_prev`` filled in).
        blend: after each step, returns the latent the loop goes on from (a mask's blend with the source's
            trajectory, :class:`~date_edit.masks.LatentBlend`); observers see the blended ``x_prev``.
    """
    x = x_start
    ts = list(timesteps)
    shared = shared_guidance(cond_hook, uncond, guidance_scale)
    if noise_maps is not None and len(noise_maps) != len(ts):
        raise ValueError(f"{len(noise_maps)} noise maps for {len(ts)} steps")
    for i, t in enumerate(ts):
        state = StepState(index=i, t=t, x_t=x, cond=cond)
        if cond_hook is not None:
            cond = cond_hook(state)
            state.cond = cond
        with torch.no_grad():
            eps = step_eps(denoiser, x, t, cond, uncond, guidance_scale, shared)
            t_prev = schedule.next_timestep(ts, i)
            if noise_maps is not None:
                x_prev = schedule.ddpm(x, eps, t, t_prev, noise_maps[i])
            else:
                x_prev = schedule.ddim(x, eps, t, t_prev)
        state.eps, state.x_prev = eps, x_prev
        if blend is not None:
            with torch.no_grad():
                state.x_prev = x_prev = blend(state)
        for observer in observers:
            observer(state)
        if progress is not None:
            progress(i + 1, len(ts))
        x = x_prev
    return x
