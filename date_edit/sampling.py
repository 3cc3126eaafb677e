"""The one denoising loop (editing: DDPM eta=1 with stored noise maps; generation: DDIM eta=0).

In the style of k-diffusion, guidance lives in the denoiser and per-step changes of the condition
live in a hook; the loop itself is written out once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import torch

from .conditioning import Condition, cat_conditions
from .schedule import NoiseSchedule


class Denoiser(Protocol):
    """``eps = denoiser(x_t, t, cond)``: the noise prediction (v-models converted to eps).

    Args:
        x_t: ``(B, C, h, w)`` latents.
        t: integer timestep.
        cond: a :class:`~date_edit.conditioning.Conditioning` of batch B, or a ``(B, L, D)`` token embedding.
    """

    def __call__(self, x_t: torch.Tensor, t: int, cond: Condition) -> torch.Tensor: ...


def guided_eps(
    denoiser: Denoiser,
    x_t: torch.Tensor,
    t: int,
    cond: Condition,
    uncond: Optional[Condition],
    guidance_scale: float,
) -> torch.Tensor:
    """Classifier-free guidance ``eps = eps_u + w (eps_c - eps_u)`` in one batched call (Ho & Salimans 2022).

    With ``guidance_scale == 1`` or no unconditional embedding, only the conditional branch runs. A denoiser that
    builds its own guided batch (Prompt-to-Prompt runs the source branch in the same call) has a ``guided_eps``
    method with this signature, and it is used instead.
    """
    custom = getattr(denoiser, "guided_eps", None)
    if custom is not None:
        return custom(x_t, t, cond, uncond, guidance_scale)
    if uncond is None or guidance_scale == 1.0:
        return denoiser(x_t, t, cond)
    eps_u, eps_c = denoiser(torch.cat([x_t, x_t]), t, cat_conditions(uncond, cond)).chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


@dataclass
class StepState:
    """What a hook or observer sees at step ``index`` (timestep ``t``) of a run."""

    index: int
    t: int
    x_t: torch.Tensor
    cond: Condition
    eps: Optional[torch.Tensor] = None
    x_prev: Optional[torch.Tensor] = None
    # A hook that already evaluated the unconditional eps at this ``x_t`` and ``t`` (with the loop's
    # denoiser and ``uncond``) may leave it here; the step then runs only the conditional branch.
    eps_uncond: Optional[torch.Tensor] = None


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
            for this step and every later one (DATE is such a hook).
        observers: read-only callbacks after each step (``eps``, ``x_prev`` filled in).
        blend: after each step, returns the latent the loop goes on from (a mask's blend with the source's
            trajectory, :class:`~date_edit.masks.LatentBlend`); observers see the blended ``x_prev``.
    """
    x = x_start
    ts = list(timesteps)
    if noise_maps is not None and len(noise_maps) != len(ts):
        raise ValueError(f"{len(noise_maps)} noise maps for {len(ts)} steps")
    for i, t in enumerate(ts):
        state = StepState(index=i, t=t, x_t=x, cond=cond)
        if cond_hook is not None:
            cond = cond_hook(state)
            state.cond = cond
        with torch.no_grad():
            if state.eps_uncond is not None and uncond is not None and guidance_scale != 1.0:
                eps_u = state.eps_uncond
                eps = eps_u + guidance_scale * (denoiser(x, t, cond) - eps_u)
            else:
                eps = guided_eps(denoiser, x, t, cond, uncond, guidance_scale)
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
