"""Universal Guidance (Bansal et al., 2023), forward guidance only: the paper's strongest DATE baseline.

Guidance in data space from the same scorer DATE uses: the guided eps is corrected by the gradient of
the score of the decoded Tweedie estimate with respect to ``x_t``,
``eps_hat = eps - s * sqrt(1 - abar_t) * grad_{x_t} h(D(x0_hat(x_t, eps)))``,
so the step moves towards latents whose predicted clean image scores higher.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .conditioning import Condition
from .sampling import Denoiser, guided_eps
from .schedule import NoiseSchedule


class UniversalGuidance:
    """A denoiser wrapper: CFG, then the forward universal-guidance correction (every ``every``-th call).

    Call it as ``eps = ug(x_t, t, cond)`` and pass ``uncond=None, guidance_scale=1`` to the loop: CFG
    happens inside with the wrapped ``uncond`` and ``guidance_scale``.
    """

    def __init__(self, denoiser: Denoiser, *, uncond: Optional[Condition], guidance_scale: float,
                 decode: Callable[[torch.Tensor], torch.Tensor], score, prompts: Sequence[str],
                 schedule: NoiseSchedule, strength: float = 1.0, steps: Optional[set[int]] = None) -> None:
        self.denoiser, self.uncond, self.w = denoiser, uncond, guidance_scale
        self.decode, self.score, self.prompts = decode, score, list(prompts)
        self.schedule, self.strength, self.steps = schedule, strength, steps
        self.calls = 0

    def __call__(self, x_t: torch.Tensor, t: int, cond: Condition) -> torch.Tensor:
        """Guided eps with the data-space score gradient folded in."""
        index = self.calls
        self.calls += 1
        abar = self.schedule.abar(t)
        if self.strength == 0 or (self.steps is not None and index not in self.steps):
            with torch.no_grad():
                return guided_eps(self.denoiser, x_t, t, cond, self.uncond, self.w)
        x = x_t.detach().requires_grad_(True)
        with torch.enable_grad():
            eps = guided_eps(self.denoiser, x, t, cond, self.uncond, self.w)
            h = self.score(self.decode(self.schedule.x0(x, eps, t)), self.prompts)
            (grad,) = torch.autograd.grad(h.sum(), x)
        return (eps - self.strength * (1.0 - abar) ** 0.5 * grad).detach()
