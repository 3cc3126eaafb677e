"""Pure tensor math of the SD noise schedule: timesteps, Tweedie x0, DDPM/DDIM posterior steps.

Nothing here holds state: every function is a function of tensors and the scheduler's numbers, so
the same step can be replayed in inversion and sampling without a stateful scheduler's step index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class NoiseSchedule:
    """The numbers the math needs, read once from a diffusers scheduler config.

    Attributes:
        alphas_cumprod: ``abar[t]`` for t = 0..num_train_timesteps-1, float64 on CPU.
        final_alpha_cumprod: ``abar`` used after the last step (``abar[0]`` unless set_alpha_to_one).
        num_train_timesteps: usually 1000.
        steps_offset: added to every timestep (1 for SD).
        timestep_spacing: ``"leading"`` (SD 1.x/2.x), ``"trailing"`` or ``"linspace"``.
        prediction_type: ``"epsilon"`` or ``"v_prediction"``.
    """

    alphas_cumprod: torch.Tensor
    final_alpha_cumprod: float
    num_train_timesteps: int = 1000
    steps_offset: int = 1
    timestep_spacing: str = "leading"
    prediction_type: str = "epsilon"

    @classmethod
    def from_config(cls, config) -> "NoiseSchedule":
        """Build from a diffusers scheduler config (a dict or FrozenDict); only betas and spacing are read."""
        cfg = dict(config)
        n = int(cfg.get("num_train_timesteps", 1000))
        start, end = float(cfg.get("beta_start", 0.00085)), float(cfg.get("beta_end", 0.012))
        kind = cfg.get("beta_schedule", "scaled_linear")
        if cfg.get("trained_betas") is not None:
            betas = torch.tensor(cfg["trained_betas"], dtype=torch.float32)
        elif kind == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2
        elif kind == "linear":
            betas = torch.linspace(start, end, n, dtype=torch.float32)
        else:
            raise ValueError(f"unsupported beta_schedule {kind!r}: use scaled_linear or linear")
        # float32 like diffusers, so abar equals the library's to the last bit
        abar = torch.cumprod(1.0 - betas, dim=0).double()
        final = 1.0 if cfg.get("set_alpha_to_one", False) else float(abar[0])
        return cls(
            alphas_cumprod=abar,
            final_alpha_cumprod=final,
            num_train_timesteps=n,
            steps_offset=int(cfg.get("steps_offset", 0)),
            timestep_spacing=str(cfg.get("timestep_spacing", "leading")),
            prediction_type=str(cfg.get("prediction_type", "epsilon")),
        )

    def timesteps(self, num_steps: int) -> list[int]:
        """The ``num_steps`` timesteps from high to low (SD, leading, offset 1, 50 steps: 981, 961, ..., 1)."""
        n = self.num_train_timesteps
        if not 1 <= num_steps <= n:
            raise ConfigError("steps", f"must be between 1 and {n}, got {num_steps}")
        if self.timestep_spacing == "leading":
            ratio = n // num_steps
            ts = [i * ratio + self.steps_offset for i in range(num_steps)]
        elif self.timestep_spacing == "trailing":
            ratio = n / num_steps
            ts = [round(n - i * ratio) - 1 for i in range(num_steps)][::-1]
        elif self.timestep_spacing == "linspace":
            ts = torch.linspace(0, n - 1, num_steps, dtype=torch.float64).round().long().tolist()
        else:
            raise ValueError(f"unsupported timestep_spacing {self.timestep_spacing!r}")
        return [min(int(t), n - 1) for t in reversed(ts)]

    def abar(self, t: int) -> float:
        """``abar[t]``; for t < 0 (the step after the last) the final value."""
        return float(self.alphas_cumprod[t]) if t >= 0 else self.final_alpha_cumprod

    # -- the step protocol the loop, the inversion and DATE call (the flow schedule has the same methods) --------
    # ``pred`` is what the denoiser returns: eps here (v-models are converted by the backbone).

    def x0(self, x_t: torch.Tensor, pred: torch.Tensor, t: int) -> torch.Tensor:
        """The Tweedie estimate ``x0_hat`` of ``x_t`` at ``t``."""
        return tweedie_x0(x_t, pred, self.abar(t))

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """A draw of the forward process, ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
        abar_t = self.abar(t)
        return abar_t**0.5 * x0 + (1.0 - abar_t) ** 0.5 * noise

    def ddim(self, x_t: torch.Tensor, pred: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        """The deterministic step from ``t`` to ``t_prev`` (DDIM, eta 0)."""
        return ddim_step(x_t, pred, self.abar(t), self.abar(t_prev))

    def ddpm(self, x_t: torch.Tensor, pred: torch.Tensor, t: int, t_prev: int, z: torch.Tensor) -> torch.Tensor:
        """The DDPM (eta 1) step from ``t`` to ``t_prev`` with noise map ``z``."""
        return ddpm_step(x_t, pred, self.abar(t), self.abar(t_prev), z)

    def noise_map(self, x_t: torch.Tensor, x_prev: torch.Tensor, pred: torch.Tensor, t: int,
                  t_prev: int) -> torch.Tensor:
        """The edit-friendly noise map that carries ``x_t`` to ``x_prev`` under :meth:`ddpm`."""
        return noise_map_for(x_t, x_prev, pred, self.abar(t), self.abar(t_prev))

    def next_timestep(self, timesteps: list[int], i: int) -> int:
        """The timestep that step ``i`` lands on: the next one, or one stride lower (-1 once past zero)."""
        if i + 1 < len(timesteps):
            return timesteps[i + 1]
        stride = timesteps[i - 1] - timesteps[i] if len(timesteps) > 1 else self.num_train_timesteps
        nxt = timesteps[i] - stride
        return nxt if nxt >= 0 else -1


def tweedie_x0(x_t: torch.Tensor, eps: torch.Tensor, abar_t: float) -> torch.Tensor:
    """Tweedie / x0-prediction: ``x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
    return (x_t - (1.0 - abar_t) ** 0.5 * eps) / abar_t**0.5


def v_to_eps(x_t: torch.Tensor, v: torch.Tensor, abar_t: float) -> torch.Tensor:
    """Convert a v-prediction to eps (Salimans & Ho 2022): ``eps = sqrt(abar) v + sqrt(1 - abar) x_t``."""
    return abar_t**0.5 * v + (1.0 - abar_t) ** 0.5 * x_t


def ddpm_variance(abar_t: float, abar_prev: float) -> float:
    """Posterior variance ``(1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)`` (DDIM eq. 16, eta 1)."""
    return (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)


def posterior_mean(x_t: torch.Tensor, eps: torch.Tensor, abar_t: float, abar_prev: float, eta: float) -> torch.Tensor:
    """``mu_t = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - eta^2 var_t) eps`` (DDIM eq. 12)."""
    var = ddpm_variance(abar_t, abar_prev)
    x0_hat = tweedie_x0(x_t, eps, abar_t)
    direction = max(1.0 - abar_prev - eta**2 * var, 0.0) ** 0.5
    return abar_prev**0.5 * x0_hat + direction * eps


def ddpm_step(
    x_t: torch.Tensor, eps: torch.Tensor, abar_t: float, abar_prev: float, noise: torch.Tensor
) -> torch.Tensor:
    """One DDPM (eta = 1) step with a given noise map: ``x_{t-1} = mu_t + sqrt(var_t) z_t``."""
    sigma = ddpm_variance(abar_t, abar_prev) ** 0.5
    return posterior_mean(x_t, eps, abar_t, abar_prev, eta=1.0) + sigma * noise


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, abar_t: float, abar_prev: float) -> torch.Tensor:
    """One deterministic DDIM (eta = 0) step: ``x_{t-1} = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps``."""
    return posterior_mean(x_t, eps, abar_t, abar_prev, eta=0.0)


def noise_map_for(
    x_t: torch.Tensor, x_prev: torch.Tensor, eps: torch.Tensor, abar_t: float, abar_prev: float
) -> torch.Tensor:
    """Edit-friendly noise map ``z_t = (x_{t-1} - mu_t) / sqrt(var_t)`` (Huberman-Spiegelglas et al., eq. 5)."""
    sigma = ddpm_variance(abar_t, abar_prev) ** 0.5
    if sigma == 0.0:
        return torch.zeros_like(x_prev)
    return (x_prev - posterior_mean(x_t, eps, abar_t, abar_prev, eta=1.0)) / sigma
