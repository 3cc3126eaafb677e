"""DATE's objective: the score of the decoded Tweedie estimate, ``h(decode(x0_hat(x_t, c)), prompt)``, and its
gradient with respect to the condition's tensors.

As the official code (aailab-kaist/DATE): ``x0_hat`` comes from the step's guided eps, the unconditional branch
evaluated without gradients (:class:`~date_edit.cfg.ClassifierFreeGuidance` keeps it for the sampling step), and
the scorer sees the decoded image through the reference preprocessing unless the config asks for the PIL path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from .cfg import ClassifierFreeGuidance
from .conditioning import Condition, Conditioning, as_conditioning
from .date_config import DateConfig, GradPreprocess, Objective
from .date_update import Targets
from .scorers.preprocess import reference_grad_preprocessing


@dataclass
class TweedieObjective:
    """What DATE differentiates (see the module docstring).

    Attributes:
        guidance: the denoiser and its CFG; the conditional branch must let gradients flow to the condition.
        decode: latents -> images ``(B, 3, H, W)``, nominally in ``[0, 1]`` (unclamped, as in the reference
            implementation, unless ``config.clamp_decoded``), differentiable.
        score: ``(images, prompts) -> (B,)`` differentiable, higher is better.
        prompts: the target prompts the score compares against.
        schedule / timesteps: the step math, for ``x0_hat`` (and the next latent of the ``xt`` ablation).
        noise_maps: the edit's noise maps (only needed for the ``xt`` ablation of an edit).
    """

    guidance: ClassifierFreeGuidance
    decode: Callable[[torch.Tensor], torch.Tensor]
    score: Callable[[torch.Tensor, Sequence[str]], torch.Tensor]
    prompts: Sequence[str]
    schedule: object
    timesteps: Sequence
    noise_maps: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        self.prompts, self.timesteps = list(self.prompts), list(self.timesteps)

    def gradients(self, state, cond: Condition, config: DateConfig,
                  names: Sequence[str] = ("tokens",)) -> tuple[Targets, float]:
        """``d h / d c`` of the ``names`` tensors of ``cond`` (float32 leaves) at the step ``state``, and ``h``
        (the batch mean).

        The denoiser gets the kind of condition the loop gives it (``state.cond``): a plain tensor stays a tensor.
        ``config`` picks the ablations: ``objective`` (``x0_hat`` or the next latent) and ``grad_preprocess``.
        """
        given = as_conditioning(cond)
        x_t, t = state.x_t.detach(), state.t
        eps_u = self.guidance.unconditional(state.x_t, t)  # kept for the sampling step of this x_t
        leaves = {n: given[n].detach().float().requires_grad_(True) for n in names}
        with torch.enable_grad():
            leaf_cond = given.replace(**leaves)
            plain = not isinstance(state.cond, Conditioning)
            eps_c = self.guidance.denoiser(x_t, t, leaf_cond["tokens"] if plain else leaf_cond)
            eps = self.guidance.combine(eps_c, eps_u)
            target = self._scored_latent(state, x_t, eps, config.objective)
            with reference_grad_preprocessing(config.grad_preprocess == GradPreprocess.REFERENCE):
                h = self.score(self.decode(target), self.prompts)
            grads = torch.autograd.grad(h.sum(), [leaves[n] for n in names])
        return {n: g.detach() for n, g in zip(names, grads)}, float(h.detach().float().mean())

    def _scored_latent(self, state, x_t: torch.Tensor, eps: torch.Tensor, objective: Objective) -> torch.Tensor:
        """``x0_hat`` (DATE), or the noisy next latent (the ``xt`` ablation: DDPM with the edit's map, else DDIM)."""
        if objective == Objective.X0:
            return self.schedule.x0(x_t, eps, state.t)
        t_prev = self.schedule.next_timestep(self.timesteps, state.index)
        if self.noise_maps is not None:
            return self.schedule.ddpm(x_t, eps, state.t, t_prev, self.noise_maps[state.index])
        return self.schedule.ddim(x_t, eps, state.t, t_prev)
