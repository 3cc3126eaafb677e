"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov, Michaeli, CVPR 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from .conditioning import Condition
from .errors import ConfigError
from .sampling import Denoiser, guided_eps
from .schedule import NoiseSchedule


@dataclass(frozen=True)
class Inversion:
    """The result of inverting a clean latent.

    Attributes:
        x0: ``(B, C, h, w)`` the clean latent that was inverted.
        x_ts: ``(N + 1, B, C, h, w)``: ``x_ts[i]`` is the latent at ``timesteps[i]`` and ``x_ts[N]``
            is the latent the last step lands on (``x0`` up to float rounding).
        noise_maps: ``(N, B, C, h, w)``: ``z`` of step ``i`` (including the last step's; zero with
            ``reference_compat``, as the official code has it).
        timesteps: the N timesteps, high to low.
    """

    x0: torch.Tensor
    x_ts: torch.Tensor
    noise_maps: torch.Tensor
    timesteps: tuple[int, ...]

    def start(self, skip: int) -> tuple[torch.Tensor, tuple[int, ...], torch.Tensor]:
        """``(x_start, timesteps, noise_maps)`` to edit from step ``skip`` (0 = from pure noise level)."""
        n = len(self.timesteps)
        if not 0 <= skip < n:
            raise ConfigError("skip", f"must be between 0 and {n - 1} for {n} steps, got {skip}")
        return self.x_ts[skip], self.timesteps[skip:], self.noise_maps[skip:]


def invert(
    denoiser: Denoiser,
    x0: torch.Tensor,
    timesteps: Sequence[int],
    schedule: NoiseSchedule,
    *,
    cond: Condition,
    uncond: Optional[Condition],
    guidance_scale: float,
    generator: torch.Generator | Sequence[torch.Generator],
    progress: Optional[Callable[[int, int], None]] = None,
    reference_compat: bool = False,
) -> Inversion:
    """Invert ``x0`` into edit-friendly noise maps (CVPR 2024, eqs. 3-5).

    Every ``x_t`` is drawn independently, ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) n_t``, with
    ``n_t`` from ``generator`` on the CPU (so a seed gives the same maps on any device; pass one
    generator per sample to make each sample's maps independent of its batch); then for
    each step the noise map ``z_t`` that carries ``x_t`` to ``x_{t-1}`` under the source condition
    is solved for, and ``x_{t-1}`` is re-set to ``mu_t + sigma_t z_t`` so that the sampler, which
    computes exactly that expression, lands on it bit for bit.

    Args:
        x0: ``(B, C, h, w)`` clean latents (already scaled by the VAE scaling factor).
        cond / uncond: source conditions (a Conditioning or ``(B, L, D)`` tokens); ``uncond`` None for no guidance.
        guidance_scale: CFG scale of the source prompt (paper default 3.5).
        reference_compat: as the official code (inbarhub/DDPM_inversion, ``sample_xts_from_x0`` and
            ``inversion_forward_process``): the per-step noises are drawn one at a time from the least noisy
            timestep up (so a seed gives its noise), and the last step's noise map is zeroed, so that step lands on
            its posterior mean and reconstruction is off by its residual. Default: drawn from the noisiest step
            down, every map kept (exact reconstruction).
    """
    ts = list(timesteps)
    n = len(ts)
    if isinstance(generator, torch.Generator):
        draws = _draws(n, tuple(x0.shape), generator, reference_compat)
    else:
        if len(generator) != x0.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {x0.shape[0]}")
        draws = torch.stack([_draws(n, tuple(x0.shape[1:]), g, reference_compat) for g in generator], dim=1)
    draws = draws.to(device=x0.device, dtype=x0.dtype)
    x_ts = torch.empty((n + 1,) + tuple(x0.shape), device=x0.device, dtype=x0.dtype)
    for i, t in enumerate(ts):
        x_ts[i] = schedule.noisy(x0, draws[i], t)
    x_ts[n] = x0
    noise_maps = torch.empty((n,) + tuple(x0.shape), device=x0.device, dtype=x0.dtype)
    with torch.no_grad():
        for i, t in enumerate(ts):
            t_prev = schedule.next_timestep(ts, i)
            eps = guided_eps(denoiser, x_ts[i], t, cond, uncond, guidance_scale)
            z = schedule.noise_map(x_ts[i], x_ts[i + 1], eps, t, t_prev)
            noise_maps[i] = z
            x_ts[i + 1] = schedule.ddpm(x_ts[i], eps, t, t_prev, z)
            if progress is not None:
                progress(i + 1, n)
    if reference_compat:
        noise_maps[n - 1].zero_()
    return Inversion(x0=x0, x_ts=x_ts, noise_maps=noise_maps, timesteps=tuple(ts))


def _draws(n: int, shape: tuple, generator: torch.Generator, official_order: bool) -> torch.Tensor:
    """``(n,) + shape`` standard normal draws from ``generator``, row ``i`` the noise of ``timesteps[i]``: drawn at
    once, noisiest step first; or (``official_order``) one per step, the least noisy step's first."""
    if not official_order:
        return torch.randn((n,) + shape, generator=generator, dtype=torch.float32)
    drawn = [torch.randn(shape, generator=generator, dtype=torch.float32) for _ in range(n)]
    return torch.stack(drawn[::-1])
