"""FlowEdit (Kulikov, Kleiner, Huberman-Spiegelglas, Michaeli, 2024): inversion-free editing on a flow path.

From step ``skip`` on (``n_max = steps - skip`` steps), with fresh noise ``n`` each step::

    z_src = (1 - s) x_src + s n              # the source image, noised to this step
    z_tar = z_edit + z_src - x_src           # the same noise, carried by the edit so far
    z_edit += (s' - s) (v(z_tar, c_tar) - v(z_src, c_src))

starting from ``z_edit = x_src``; each ``v`` is guided with its own scale (SD3: classifier-free; FLUX-dev: the
embedded guidance). With the same prompt and scale on both sides the two velocities are equal and the input
comes back unchanged. DATE runs on the target branch: its hook sees ``z_tar`` and updates ``c_tar``, scoring
the target's Tweedie estimate ``z_tar - s v_tar``.

Published settings (the paper's code): FLUX-dev 28 steps, ``n_max`` 24, guidance 1.5 -> 5.5; SD3 50 steps,
``n_max`` 33, CFG 3.5 -> 13.5 (:data:`FLOWEDIT_DEFAULTS`, as ``steps``/``skip``/``cfg_source``/``cfg_target``).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .conditioning import Condition
from .defaults import FLOWEDIT_DEFAULTS  # noqa: F401 - the published settings, per family (defined there)
from .sampling import CondHook, Denoiser, StepState, guided_eps



def _noise(shape: tuple, generators: Sequence[torch.Generator], device) -> torch.Tensor:
    """One standard normal draw per sample, each from its own CPU generator (batch-independent)."""
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=torch.float32) for g in generators]).to(device)


def flow_edit(
    denoiser: Denoiser,
    x_src: torch.Tensor,
    timesteps: Sequence[float],
    schedule,
    *,
    src_cond: Condition,
    src_uncond: Optional[Condition],
    src_scale: float,
    tar_cond: Condition,
    tar_uncond: Optional[Condition],
    tar_scale: float,
    generators: Sequence[torch.Generator],
    cond_hook: Optional[CondHook] = None,
    latent_mask: Optional[torch.Tensor] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> torch.Tensor:
    """Edit clean latents ``x_src`` ``(B, C, h, w)`` along ``timesteps`` (the steps to run, high to low, the last
    landing on sigma 0) and return the edited clean latents.

    Args:
        denoiser: ``v = denoiser(z, t, cond)``, the velocity of a flow model.
        schedule: a :class:`~date_edit.flow.FlowSchedule`.
        src_cond / src_uncond / src_scale: the source branch's condition and guidance.
        tar_cond / tar_uncond / tar_scale: the target branch's; ``cond_hook`` (DATE) may update ``tar_cond``.
        generators: one CPU generator per sample for the fresh noise of every step.
        latent_mask: ``(B, 1, h, w)`` in [0, 1]: each step's velocity difference is multiplied by it, so where it
            is 0 the edited latent stays the source's exactly.
    """
    z_edit = x_src.clone()
    ts = list(timesteps)
    for i, t in enumerate(ts):
        t_prev = schedule.next_timestep(ts, i)
        z_src = schedule.noisy(x_src, _noise(tuple(x_src.shape), generators, x_src.device), t)
        z_tar = z_edit + z_src - x_src
        state = StepState(index=i, t=t, x_t=z_tar, cond=tar_cond)
        if cond_hook is not None:
            tar_cond = cond_hook(state)
            state.cond = tar_cond
        with torch.no_grad():
            v_src = guided_eps(denoiser, z_src, t, src_cond, src_uncond, src_scale)
            if state.eps_uncond is not None and tar_uncond is not None and tar_scale != 1.0:
                v_tar = state.eps_uncond + tar_scale * (denoiser(z_tar, t, tar_cond) - state.eps_uncond)
            else:
                v_tar = guided_eps(denoiser, z_tar, t, tar_cond, tar_uncond, tar_scale)
            delta = v_tar - v_src
            if latent_mask is not None:
                delta = delta * latent_mask.to(delta.device, delta.dtype)
            z_edit = z_edit + (schedule.sigma(t_prev) - schedule.sigma(t)) * delta
        state.eps, state.x_prev = v_tar, z_edit
        if progress is not None:
            progress(i + 1, len(ts))
    return z_edit
