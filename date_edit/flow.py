"""The rectified-flow path of SD3 and FLUX: ``x_t = (1 - s) x0 + s eps`` with ``s = sigma(t)``, and a model that
predicts the velocity ``v = eps - x0``.

:class:`FlowSchedule` has the step protocol of :class:`~date_edit.schedule.NoiseSchedule` (``x0``, ``noisy``,
``ddim``, ``ddpm``, ``noise_map``, ``next_timestep``), so the one sampling loop, the edit-friendly inversion and
DATE run on it unchanged. Timesteps are diffusers' (``sigma * 1000``, floats), taken from
``FlowMatchEulerDiscreteScheduler.set_timesteps`` by the backbone; the step after the last lands on sigma 0.

The math (any Gaussian path ``x_t = a_t x0 + s_t eps``, here ``a = 1 - s``):

* Tweedie: ``x0_hat = x - s v``; the noise estimate ``eps_hat = x + (1 - s) v``.
* Deterministic step (``ddim``): ``x' = a' x0_hat + s' eps_hat = x + (s' - s) v``, diffusers' Euler step.
* DDPM posterior of the path, ``t -> t'``: variance ``var = s'^2 (1 - (a s')^2 / (a' s)^2)``, mean
  ``mu = a' x0_hat + sqrt(s'^2 - var) eps_hat``; with ``a = sqrt(abar)`` it is the DDPM step of SD.
* The last step lands on sigma 0, where ``var = 0``: no noise map can be solved there, so the map of that step is
  the residual ``x0 - mu`` applied with unit scale, and the inversion's reconstruction is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class FlowSchedule:
    """The flow path's numbers and step math.

    Attributes:
        config: the diffusers ``FlowMatchEulerDiscreteScheduler`` config (shift, dynamic shifting, ...).
        num_train_timesteps: ``t = sigma * num_train_timesteps`` (1000).
        prediction_type: ``"flow"`` (the model predicts the velocity).
    """

    config: dict = field(default_factory=dict)
    num_train_timesteps: int = 1000
    prediction_type: str = "flow"

    @classmethod
    def from_config(cls, config) -> "FlowSchedule":
        """Build from a diffusers flow-matching scheduler config (a dict or FrozenDict)."""
        cfg = dict(config)
        return cls(config=cfg, num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)))

    def timesteps(self, num_steps: int, *, image_seq_len: Optional[int] = None,
                  sigmas: Optional[Sequence[float]] = None) -> list[float]:
        """The ``num_steps`` timesteps (``sigma * 1000``, high to low) of diffusers' scheduler.

        Args:
            image_seq_len: the number of latent patches, for the dynamic shift (FLUX); ignored otherwise.
            sigmas: explicit sigmas before shifting (FLUX's pipeline passes ``linspace(1, 1/n, n)``).
        """
        import numpy as np
        from diffusers import FlowMatchEulerDiscreteScheduler

        if not 1 <= num_steps <= self.num_train_timesteps:
            raise ConfigError("steps", f"must be between 1 and {self.num_train_timesteps}, got {num_steps}")
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.config)
        kwargs = {}
        if scheduler.config.use_dynamic_shifting:
            kwargs["mu"] = dynamic_shift(image_seq_len or 256, self.config)
        if sigmas is not None:
            scheduler.set_timesteps(sigmas=np.asarray(sigmas, dtype=np.float32), **kwargs)
        else:
            scheduler.set_timesteps(num_steps, **kwargs)
        return [float(t) for t in scheduler.timesteps]

    def sigma(self, t: float) -> float:
        """``s = t / num_train_timesteps`` (0 for the step after the last)."""
        return float(t) / self.num_train_timesteps

    def next_timestep(self, timesteps: Sequence[float], i: int) -> float:
        """The timestep step ``i`` lands on: the next one, or 0 (sigma 0, the clean latent) after the last."""
        return float(timesteps[i + 1]) if i + 1 < len(timesteps) else 0.0

    # -- the step protocol (``pred`` is the velocity) -------------------------------------------------------------

    def x0(self, x_t: torch.Tensor, pred: torch.Tensor, t: float) -> torch.Tensor:
        """``x0_hat = x - s v``."""
        return x_t - self.sigma(t) * pred

    def eps(self, x_t: torch.Tensor, pred: torch.Tensor, t: float) -> torch.Tensor:
        """``eps_hat = x + (1 - s) v``."""
        return x_t + (1.0 - self.sigma(t)) * pred

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        """A point of the path, ``(1 - s) x0 + s noise``."""
        s = self.sigma(t)
        return (1.0 - s) * x0 + s * noise

    def ddim(self, x_t: torch.Tensor, pred: torch.Tensor, t: float, t_prev: float) -> torch.Tensor:
        """The Euler step ``x + (s' - s) v`` (the deterministic step of the path)."""
        return x_t + (self.sigma(t_prev) - self.sigma(t)) * pred

    def variance(self, t: float, t_prev: float) -> float:
        """The DDPM posterior variance of the step, ``s'^2 (1 - (a s')^2 / (a' s)^2)`` (0 onto sigma 0)."""
        s, s_prev = self.sigma(t), self.sigma(t_prev)
        if s_prev <= 0.0:
            return 0.0
        ratio = ((1.0 - s) * s_prev) / ((1.0 - s_prev) * s)
        return max(s_prev**2 * (1.0 - ratio**2), 0.0)

    def posterior_mean(self, x_t: torch.Tensor, pred: torch.Tensor, t: float, t_prev: float) -> torch.Tensor:
        """``mu = a' x0_hat + sqrt(s'^2 - var) eps_hat``."""
        s_prev = self.sigma(t_prev)
        direction = max(s_prev**2 - self.variance(t, t_prev), 0.0) ** 0.5
        return (1.0 - s_prev) * self.x0(x_t, pred, t) + direction * self.eps(x_t, pred, t)

    def ddpm(self, x_t: torch.Tensor, pred: torch.Tensor, t: float, t_prev: float, z: torch.Tensor) -> torch.Tensor:
        """``mu + sqrt(var) z``; onto sigma 0 (``var = 0``) the map is a residual, added with unit scale."""
        var = self.variance(t, t_prev)
        return self.posterior_mean(x_t, pred, t, t_prev) + (var**0.5 if var > 0.0 else 1.0) * z

    def noise_map(self, x_t: torch.Tensor, x_prev: torch.Tensor, pred: torch.Tensor, t: float,
                  t_prev: float) -> torch.Tensor:
        """The map that :meth:`ddpm` turns into ``x_prev``: ``(x_prev - mu) / sqrt(var)``, or ``x_prev - mu``
        onto sigma 0."""
        var = self.variance(t, t_prev)
        residual = x_prev - self.posterior_mean(x_t, pred, t, t_prev)
        return residual / var**0.5 if var > 0.0 else residual


def dynamic_shift(image_seq_len: int, config: dict) -> float:
    """FLUX's ``mu``: linear in the number of latent patches between (base_image_seq_len, base_shift) and
    (max_image_seq_len, max_shift), as diffusers' ``calculate_shift``."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + base_shift - slope * base_len
