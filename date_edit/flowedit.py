"""FlowEdit (Kulikov, Kleiner, Huberman-Spiegelglas, Michaeli, 2024): inversion-free editing on a flow path.

From step ``skip`` on (``n_max = steps - skip`` steps), with fresh noise ``n`` each step::

    z_src = (1 - s) x_src + s n              # the source image, noised to this step
    z_tar = z_edit + z_src - x_src           # the same noise, carried by the edit so far
    z_edit += (s' - s) (v(z_tar, c_tar) - v(z_src, c_src))

starting from ``z_edit = x_src``; each ``v`` is guided with its own scale (SD3: classifier-free; FLUX-dev: the
embedded guidance). With the same prompt and scale on both sides the two velocities are equal and the input
comes back unchanged. DATE runs on the target branch: its hook sees ``z_tar`` and updates ``c_tar``, scoring
the target's Tweedie estimate ``z_tar - s v_tar``.

As the official code (fallenshock/FlowEdit): ``n_avg`` fresh noises per step, the velocity difference being their
average; and the last ``n_min`` steps plain sampling of the target, ``x = z_edit + z_src - x_src`` noised afresh at
the first of them, then ``x += (s' - s) v(x, c_tar)``; the result is then that ``x``.

Published settings (the paper's code): FLUX-dev 28 steps, ``n_max`` 24, guidance 1.5 -> 5.5; SD3 50 steps,
``n_max`` 33, CFG 3.5 -> 13.5; both ``n_min`` 0, ``n_avg`` 1 (:data:`FLOWEDIT_DEFAULTS`, in EditConfig's terms).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .cfg import shared_guidance, step_eps
from .conditioning import Condition
from .defaults import FLOWEDIT_DEFAULTS  # noqa: F401 - the published settings, per family (defined there)
from .errors import ConfigError
from .limits import check_n_avg
from .sampling import CondHook, Denoiser, StepState, guided_eps


def _noise(shape: tuple, generators: Sequence[torch.Generator], device) -> torch.Tensor:
    """One standard normal draw per sample, each from its own CPU generator (batch-independent)."""
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=torch.float32) for g in generators]).to(device)


def packed_noise(backbone, x_src: torch.Tensor, seeds: Sequence[int]) -> Callable[[], torch.Tensor]:
    """FlowEdit's fresh noise as the official FLUX code draws it: in the transformer's packed layout
    ``(seq, 4C)`` (``randn_like`` of the packed latents), one draw per sample from its own CPU generator seeded with
    ``seeds``, unpacked into the image layout ``(B, C, h, w)`` by ``backbone.unpack``."""
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    packed_shape = tuple(backbone.pack(x_src[:1]).shape[1:])

    def draw() -> torch.Tensor:
        packed = torch.stack([torch.randn(packed_shape, generator=g, dtype=torch.float32) for g in generators])
        return backbone.unpack(packed, tuple(x_src.shape)).to(x_src.device)

    return draw


def _check_counts(n_min: int, n_avg: int, n: int) -> None:
    """One-line ConfigErrors for an ``n_avg`` below 1 and an ``n_min`` that leaves no FlowEdit step of ``n``."""
    check_n_avg(n_avg)
    if not isinstance(n_min, int) or not 0 <= n_min < n:
        raise ConfigError("n_min", f"must be between 0 and {n - 1} for a run of {n} steps, got {n_min!r}")


def _hooked_state(i: int, t, x_t: torch.Tensor, cond: Condition, cond_hook: Optional[CondHook]) -> StepState:
    """The step's state, its condition updated by ``cond_hook`` when there is one."""
    state = StepState(index=i, t=t, x_t=x_t, cond=cond)
    if cond_hook is not None:
        state.cond = cond_hook(state)
    return state


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
    n_min: int = 0,
    n_avg: int = 1,
    noise: Optional[Callable[[], torch.Tensor]] = None,
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
            is 0 the edited latent stays the source's exactly (in the last ``n_min`` steps, the source's own noisy
            path is kept there).
        n_min: the last ``n_min`` steps are plain sampling (Euler, target velocity) of ``z_edit + z_src - x_src``
            noised afresh at the first of them; 0 (published): FlowEdit to the end. Must leave one FlowEdit step.
        n_avg: fresh noise draws per FlowEdit step; their velocity differences are averaged (published: 1).
        noise: a draw of ``(B, C, h, w)`` fresh noise (default: standard normal from ``generators`` in this layout).
    """
    ts = list(timesteps)
    _check_counts(n_min, n_avg, len(ts))
    draw = noise or (lambda: _noise(tuple(x_src.shape), generators, x_src.device))
    mask = None if latent_mask is None else latent_mask.to(x_src.device, x_src.dtype)
    z_edit, x_tar, sde_noise = x_src.clone(), None, None
    shared = shared_guidance(cond_hook, tar_uncond, tar_scale)
    for i, t in enumerate(ts):
        t_prev = schedule.next_timestep(ts, i)
        if i < len(ts) - n_min:
            state = None
            with torch.no_grad():
                delta = torch.zeros_like(x_src)
                for k in range(n_avg):
                    z_src = schedule.noisy(x_src, draw(), t)
                    z_tar = z_edit + z_src - x_src
                    if k == 0:  # DATE sees (and updates the condition at) the first draw
                        with torch.enable_grad():
                            state = _hooked_state(i, t, z_tar, tar_cond, cond_hook)
                        tar_cond = state.cond  # the target velocity takes the eps_u DATE's guidance kept here
                        first = v_tar = step_eps(denoiser, z_tar, t, tar_cond, tar_uncond, tar_scale, shared)
                    else:
                        v_tar = guided_eps(denoiser, z_tar, t, tar_cond, tar_uncond, tar_scale)
                    v_src = guided_eps(denoiser, z_src, t, src_cond, src_uncond, src_scale)
                    delta += (1.0 / n_avg) * (v_tar - v_src)
                if mask is not None:
                    delta = delta * mask
                z_edit = z_edit + (schedule.sigma(t_prev) - schedule.sigma(t)) * delta
            state.eps, state.x_prev = first, z_edit
        else:  # plain sampling of the target for the last n_min steps (SDEdit-style from the edit so far)
            if x_tar is None:
                sde_noise = draw()
                x_tar = z_edit + schedule.noisy(x_src, sde_noise, t) - x_src
            state = _hooked_state(i, t, x_tar, tar_cond, cond_hook)
            tar_cond = state.cond
            with torch.no_grad():
                v_tar = step_eps(denoiser, x_tar, t, tar_cond, tar_uncond, tar_scale, shared)
                x_tar = schedule.ddim(x_tar, v_tar, t, t_prev)
                if mask is not None:  # outside the mask, the source on its own noisy path (x_src at sigma 0)
                    x_tar = mask * x_tar + (1.0 - mask) * schedule.noisy(x_src, sde_noise, t_prev)
            state.eps, state.x_prev = v_tar, x_tar
        if progress is not None:
            progress(i + 1, len(ts))
    return z_edit if n_min == 0 else x_tar
